//! Intake's HTTP side: the JSON API under `/api/v1`, live updates (Server-Sent Events),
//! wait-for-mail, the OpenAPI document and its offline docs page, and the web inbox at `/`.
//!
//! [`router`] builds the whole app from an [`AppState`], so tests can drive it in-process;
//! [`serve`] runs it on a listener until shutdown. Every error leaves through
//! [`error::ApiError`], the one place that picks a status and the client-visible text.
#![warn(missing_docs)]

pub mod access;
pub mod admin;
mod api;
mod conn;
pub mod error;
mod events;
mod listen;
mod mailpit;
mod model;
mod ops;
mod ratelimit;
mod slots;
#[cfg(test)]
mod tests;
mod ui;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use intake_core::{EventBus, MailStore, UserDirectory};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use access::{AccessConfig, AccessMode, Scopes, Token};
pub use ratelimit::RateLimit;

/// Where HTTPS gets its certificate: called once per connection, so a reloaded certificate
/// (SIGHUP) is used by the next handshake.
pub type TlsSource = Arc<dyn Fn() -> tokio_rustls::TlsAcceptor + Send + Sync>;

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
    /// Who may read what.
    pub access: AccessConfig,
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
            access: AccessConfig::default(),
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The mail store.
    pub store: Arc<dyn MailStore>,
    /// The SMTP AUTH users (the admin API).
    pub users: Arc<dyn UserDirectory>,
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
    /// Renders the metrics (`/metrics`), when the process has a recorder.
    metrics: Option<MetricsRender>,
    /// Cancelled when the server starts draining (`/readyz` turns 503).
    draining: CancellationToken,
    /// Tokens of the users admin API (`admin.tokens`), beside the `admin` scope.
    admin_tokens: Vec<String>,
}

/// Renders the process's metrics in Prometheus' text format.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

impl AppState {
    /// A state for a store (its mail and its users) and its event bus.
    pub fn new<S: MailStore + UserDirectory>(
        store: Arc<S>,
        events: EventBus,
        alias_secret: Vec<u8>,
        config: HttpConfig,
    ) -> Self {
        AppState {
            users: store.clone(),
            store,
            events,
            alias_secret: alias_secret.into(),
            streams: slots::PerIp::new(config.max_streams_per_ip),
            config: Arc::new(config),
            registered_aliases: Arc::default(),
            metrics: None,
            draining: CancellationToken::new(),
            admin_tokens: Vec::new(),
        }
    }

    /// The users admin API also accepts these tokens (`admin.tokens`).
    pub fn with_admin_tokens(mut self, tokens: Vec<String>) -> Self {
        self.admin_tokens = tokens;
        self
    }

    /// Serves `/metrics` with this renderer.
    pub fn with_metrics(mut self, render: MetricsRender) -> Self {
        self.metrics = Some(render);
        self
    }

    /// `/readyz` answers 503 once `token` is cancelled.
    pub fn with_draining(mut self, token: CancellationToken) -> Self {
        self.draining = token;
        self
    }
}

/// The whole HTTP app.
pub fn router(state: AppState) -> Router {
    let (api, openapi) = api::routes(state.clone());
    let docs = utoipa_swagger_ui::SwaggerUi::new("/api/docs").url("/api/v1/openapi.json", openapi);
    let api = ratelimit::layer(api, &state.config);
    let app = Router::new()
        .merge(api)
        .merge(docs)
        .merge(ui::routes())
        .merge(ops::routes(state.clone()))
        .merge(admin::router(
            state.users.clone(),
            state.admin_tokens.clone(),
        ));
    let app = match ui::cors(&state.config.cors_origins) {
        Some(cors) => app.layer(cors),
        None => app,
    };
    let body_timeout = state.config.body_timeout;
    let guard = access::Guard::new(state.config.access.clone(), access::classify);
    app.fallback(|| async { error::ApiError::NotFound("no such route".into()) })
        .layer(axum::middleware::from_fn_with_state(guard, access::check))
        .layer(axum::middleware::from_fn(move |req, next| {
            limit_body(body_timeout, req, next)
        }))
}

/// The Mailpit-compatible API (`mailpit.rs`), for a listener of its own.
pub fn mailpit_router(state: AppState) -> Router {
    let body_timeout = state.config.body_timeout;
    let guard = access::Guard::new(state.config.access.clone(), mailpit::classify);
    let app = ratelimit::layer(mailpit::routes(state.clone()), &state.config);
    app.fallback(|| async { error::ApiError::NotFound("no such route".into()) })
        .layer(axum::middleware::from_fn_with_state(guard, access::check))
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
/// timeouts of `config` (see `listen.rs` and `conn.rs`); HTTPS when `tls` is given.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: &HttpConfig,
    tls: Option<TlsSource>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    listen::serve(listener, app, config, tls, shutdown).await
}
