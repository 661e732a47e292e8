//! Intake's HTTP side: the JSON API under `/api/v1`, live updates (Server-Sent Events),
//! wait-for-mail, the OpenAPI document and its offline docs page, and the web inbox at `/`.
//!
//! [`router`] builds the whole app from an [`AppState`], so tests can drive it in-process;
//! [`serve`] runs it on a listener until shutdown. Every error leaves through
//! [`error::ApiError`], the one place that picks a status and the client-visible text.
#![warn(missing_docs)]

pub mod admin;
mod api;
mod conn;
pub mod error;
mod events;
mod listen;
mod model;
mod ratelimit;
mod slots;
mod ui;

use std::collections::HashSet;
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
    /// Open HTTP connections, all clients together; past it new ones get `503` and are closed.
    pub max_connections: usize,
    /// Open HTTP connections per client IP (`0`: no limit).
    pub max_connections_per_ip: usize,
    /// Open event streams and `/wait` requests per client IP (`0`: no limit).
    pub max_streams_per_ip: usize,
    /// A request header must be complete this long after its first byte (or after connect).
    pub header_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request, and how long a
    /// response may make no progress because the client stopped reading.
    pub idle_timeout: Duration,
    /// A request body must be complete this long after its header.
    pub body_timeout: Duration,
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
            max_connections: 512,
            max_connections_per_ip: 64,
            max_streams_per_ip: 8,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
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
    /// Open event streams and `/wait` requests per client IP.
    streams: slots::PerIp,
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
            streams: slots::PerIp::new(config.max_streams_per_ip),
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
    let body_timeout = state.config.body_timeout;
    app.fallback(|| async { error::ApiError::NotFound("no such route".into()) })
        .layer(axum::middleware::from_fn(move |req, next| {
            limit_body(body_timeout, req, next)
        }))
}

/// No route takes more than a small body: refuse larger ones before reading them.
const MAX_BODY: u64 = 64 * 1024;

/// Request bodies: at most [`MAX_BODY`] octets, complete within `timeout` of the header.
async fn limit_body(
    timeout: Duration,
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
    let body = axum::body::Body::new(tower_http::timeout::DeadlineBody::new(
        timeout,
        http_body_util::Limited::new(body, MAX_BODY as usize),
    ));
    next.run(axum::extract::Request::from_parts(parts, body))
        .await
}

/// Serves `app` on `listener` until `shutdown` is cancelled, with the connection caps and
/// timeouts of `config` (see `listen.rs` and `conn.rs`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: &HttpConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    listen::serve(listener, app, config, shutdown).await
}
