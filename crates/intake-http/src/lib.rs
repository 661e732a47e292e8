//! Intake's HTTP side: the JSON API under `/api/v1`, live updates (Server-Sent Events),
//! wait-for-mail, the OpenAPI document and its offline docs page, and the web inbox at `/`.
//!
//! [`router`] builds the whole app from an [`AppState`], so tests can drive it in-process;
//! [`serve`] runs it on a listener until shutdown. Every error leaves through
//! [`error::ApiError`], the one place that picks a status and the client-visible text.
#![warn(missing_docs)]

pub mod access;
mod admin;
mod api;
mod batch;
mod checks_api;
mod conn;
mod docs;
pub mod error;
mod events;
mod html_view;
mod listen;
mod lookup;
mod mailpit;
pub use mailpit::services::{MailpitServices, Release, SpamAssassin, SpamReport, SpamRule};
mod model;
mod ops;
mod ratelimit;
pub mod settings;
mod slots;
mod tags;
#[cfg(test)]
mod tests;
mod ui;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use intake_core::{EventBus, MailStore, MailTags, UserDirectory};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use access::{AccessConfig, AccessMode, Login, Scopes, Token};
pub use mailpit::LinkCheck;
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
    /// What the Mailpit link check may reach (`mailpit.link_check`, off by default).
    pub link_check: LinkCheck,
    /// Whether the Mailpit HTML check answers (`mailpit.html_check`).
    pub html_check: bool,
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
            link_check: LinkCheck::default(),
            html_check: true,
        }
    }
}

/// What every handler shares, and the live objects of the HTTP side: the per-client rate
/// limiter, the access guard (credentials, failed-login counts, verified-password cache),
/// the open-stream slots and the alias cache. Build it once ([`AppState::new`] and the
/// `with_*` calls) and give clones to [`router`] and [`mailpit_router`]: both listeners
/// then share one budget per client, and a reload that keeps the state keeps the counts.
#[derive(Clone)]
pub struct AppState {
    /// The mail store.
    pub store: Arc<dyn MailStore>,
    /// The SMTP AUTH users (the admin API).
    pub users: Arc<dyn UserDirectory>,
    /// Tags on messages (the Mailpit API).
    pub tags: Arc<dyn MailTags>,
    /// Committed changes (new and deleted mail).
    pub events: EventBus,
    /// The secret aliases are derived with.
    pub alias_secret: Arc<[u8]>,
    /// Settings.
    pub config: Arc<HttpConfig>,
    /// Aliases already registered with the store (saves a write per listing).
    registered_aliases: moka::sync::Cache<String, ()>,
    /// Open event streams and `/wait` requests per client IP.
    streams: slots::PerIp,
    /// Requests per client IP, one budget for every listener of this state.
    rate: Option<ratelimit::Limiter>,
    /// Credentials, failed logins.
    guard: access::Guard,
    /// Renders the metrics (`/metrics`), when the process has a recorder.
    metrics: Option<MetricsRender>,
    /// Cancelled when the server starts draining (`/readyz` turns 503).
    draining: CancellationToken,
    /// The Mailpit listener's run-time counters (uptime, deletions).
    mailpit: Arc<mailpit::Runtime>,
    /// The Mailpit API's chaos triggers, delivery targets, release relay and spamd.
    mailpit_services: Arc<MailpitServices>,
}

/// Renders the process's metrics in Prometheus' text format.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// Aliases remembered as registered; the least recently used leave first when full.
const ALIAS_CACHE: u64 = 100_000;

impl AppState {
    /// Checks a login made outside HTTP (POP3) against the same tokens and htpasswd users,
    /// under the same failed-login limits, as HTTP's credentials.
    pub async fn login(&self, user: &str, password: &str, client: std::net::IpAddr) -> Login {
        self.guard.login(user, password, client).await
    }

    /// The failed-login limiter of HTTP credentials (and POP3 logins), if limits are on:
    /// the server shares its counts between the nodes of a cluster.
    pub fn login_limiter(&self) -> Option<Arc<intake_core::LoginLimiter>> {
        self.guard.login_limiter()
    }

    /// A state for a store (its mail and its users) and its event bus. Must be called within
    /// a tokio runtime (the rate limiter forgets idle clients on a timer).
    pub fn new<S: MailStore + UserDirectory + MailTags>(
        store: Arc<S>,
        events: EventBus,
        alias_secret: Vec<u8>,
        config: HttpConfig,
    ) -> Self {
        AppState {
            users: store.clone(),
            tags: store.clone(),
            store,
            events,
            alias_secret: alias_secret.into(),
            streams: slots::PerIp::new(config.max_streams_per_ip),
            rate: config.rate_limit.map(ratelimit::limiter),
            guard: access::Guard::new(config.access.clone()),
            config: Arc::new(config),
            registered_aliases: moka::sync::Cache::new(ALIAS_CACHE),
            metrics: None,
            draining: CancellationToken::new(),
            mailpit: Arc::default(),
            mailpit_services: Arc::default(),
        }
    }

    /// The Mailpit API's chaos triggers, delivery targets, release relay and spamd.
    pub fn with_mailpit(mut self, services: MailpitServices) -> Self {
        self.mailpit_services = Arc::new(services);
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

/// Wraps `app` (whose routes declared `rules`) with what every listener has: the access
/// guard, then the body limit; errors leave through `errors`.
fn finish(app: Router, state: &AppState, rules: access::Rules, errors: error::Dialect) -> Router {
    let body_timeout = state.config.body_timeout;
    let checker = access::Checker {
        guard: state.guard.clone(),
        rules: Arc::new(rules),
    };
    app.fallback(|| async { error::ApiError::NotFound("no such route".into()) })
        .layer(axum::middleware::from_fn_with_state(checker, access::check))
        .layer(axum::middleware::from_fn(move |req, next| {
            limit_body(body_timeout, req, next)
        }))
        .layer(axum::middleware::from_fn(move |req, next| {
            error::uniform(errors, req, next)
        }))
}

/// The whole HTTP app: the API, its docs, the web inbox, the probes and metrics, and the
/// users admin API.
pub fn router(state: AppState) -> Router {
    let (api, mut rules) = api::routes().split();
    let (docs, docs_rules) = docs::routes().split();
    let (ui, ui_rules) = ui::routes().split();
    let (ops, ops_rules) = ops::routes().split();
    let (admin, admin_rules) = admin::routes().split();
    for r in [docs_rules, ui_rules, ops_rules, admin_rules] {
        rules.merge(r);
    }
    let api = ratelimit::layer(api.with_state(state.clone()), &state.rate);
    let app = Router::new()
        .merge(api)
        .merge(docs.with_state(state.clone()))
        .merge(ui.with_state(state.clone()))
        .merge(ops.with_state(state.clone()))
        .merge(
            admin
                .layer(axum::extract::DefaultBodyLimit::max(admin::MAX_BODY))
                .with_state(state.clone()),
        );
    let app = finish(app, &state, rules, error::Dialect::Json);
    // Outside the guard: a browser's preflight carries no credential.
    match ui::cors(&state.config.cors_origins) {
        Some(cors) => app.layer(cors),
        None => app,
    }
}

/// The Mailpit-compatible API (`mailpit/`), for a listener of its own; errors in plain
/// text, as Mailpit writes them.
pub fn mailpit_router(state: AppState) -> Router {
    let (app, rules) = mailpit::routes().split();
    let app = ratelimit::layer(app.with_state(state.clone()), &state.rate);
    finish(app, &state, rules, error::Dialect::PlainText)
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
