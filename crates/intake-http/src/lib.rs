//! Intake's HTTP side: the JSON API under `/api/v1`, live updates (Server-Sent Events),
//! wait-for-mail, the OpenAPI document and its offline docs page, and the web inbox at `/`.
//!
//! [`router`] builds the whole app from an [`AppState`], so tests can drive it in-process;
//! [`serve`] runs it on a listener until shutdown. Every error leaves through
//! [`error::ApiError`], the one place that picks a status and the client-visible text.
#![warn(missing_docs)]

mod api;
pub mod error;
mod events;
mod ratelimit;
mod ui;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use intake_core::{EventBus, MailStore};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use ratelimit::RateLimit;

/// HTTP settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Per-client request rate on `/api` (None: unlimited).
    pub rate_limit: Option<RateLimit>,
    /// Origins allowed by CORS; `*` allows any; empty turns CORS off.
    pub cors_origins: Vec<String>,
    /// Longest `timeout` a `/wait` request may ask for.
    pub max_wait: Duration,
    /// Largest page size a listing may ask for.
    pub max_per_page: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            rate_limit: Some(RateLimit {
                per_second: 20,
                burst: 100,
            }),
            cors_origins: Vec::new(),
            max_wait: Duration::from_secs(300),
            max_per_page: 500,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The mail store.
    pub store: Arc<dyn MailStore>,
    /// Committed changes (new and deleted mail).
    pub events: EventBus,
    /// The secret aliases are derived with.
    pub alias_secret: Arc<[u8]>,
    /// Settings.
    pub config: Arc<HttpConfig>,
    /// Aliases already registered with the store (saves a write per listing).
    registered_aliases: Arc<Mutex<HashSet<String>>>,
}

impl AppState {
    /// A state for a store and its event bus.
    pub fn new(
        store: Arc<dyn MailStore>,
        events: EventBus,
        alias_secret: Vec<u8>,
        config: HttpConfig,
    ) -> Self {
        AppState {
            store,
            events,
            alias_secret: alias_secret.into(),
            config: Arc::new(config),
            registered_aliases: Arc::default(),
        }
    }
}

/// The whole HTTP app.
pub fn router(state: AppState) -> Router {
    let (api, openapi) = api::routes(state.clone());
    let docs = utoipa_swagger_ui::SwaggerUi::new("/api/docs").url("/api/v1/openapi.json", openapi);
    let api = ratelimit::layer(api, &state.config);
    let app = Router::new().merge(api).merge(docs).merge(ui::routes());
    let app = match ui::cors(&state.config.cors_origins) {
        Some(cors) => app.layer(cors),
        None => app,
    };
    app.fallback(|| async { error::ApiError::NotFound("no such route".into()) })
        .layer(axum::middleware::from_fn(limit_body))
}

/// No route takes more than a small body: refuse larger ones before reading them.
const MAX_BODY: u64 = 64 * 1024;

async fn limit_body(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return error::ApiError::TooLarge(format!(
            "request bodies are limited to {MAX_BODY} octets"
        ))
        .into_response();
    }
    let (parts, body) = req.into_parts();
    let body = axum::body::Body::new(http_body_util::Limited::new(body, MAX_BODY as usize));
    next.run(axum::extract::Request::from_parts(parts, body))
        .await
}

/// Serves `app` on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
}
