//! The HTTP listeners: the API and web inbox (`http.listen`) and the Mailpit-compatible API
//! (`mailpit.listen`), both over the same store, events and state.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use intake_core::EventBus;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::gated;
use crate::config::Settings;

/// What the HTTP listeners read.
pub(super) struct Sources {
    pub store: Arc<intake_store::Store>,
    pub events: EventBus,
    pub secret: Vec<u8>,
    pub tls: Option<Arc<intake_smtp::tls::TlsCerts>>,
    /// The cluster link, which shares HTTP's failed-login counts between nodes.
    pub cluster: Option<Arc<intake_cluster::Cluster>>,
    /// What the Mailpit API reaches beyond the store (chaos, targets, release, spamd).
    pub mailpit: intake_http::MailpitServices,
}

/// A bound HTTP listener, its task and address.
pub(super) type Started = (String, JoinHandle<std::io::Result<()>>, SocketAddr);

/// Binds and starts (behind the start gate `go`) each HTTP listener the settings ask for;
/// returns their one state too (POP3 checks its logins with it).
pub(super) async fn start(
    settings: &Settings,
    src: &Sources,
    go: &CancellationToken,
    shutdown: &CancellationToken,
) -> anyhow::Result<(intake_http::AppState, Option<Started>, Option<Started>)> {
    // One HTTP state for both listeners: one rate budget per client, one failed-login
    // count, one set of stream slots.
    let mut state = intake_http::AppState::new(
        src.store.clone(),
        src.events.clone(),
        src.secret.clone(),
        settings.http.config.clone(),
    )
    .with_draining(shutdown.clone())
    .with_mailpit(src.mailpit.clone());
    if let (Some(c), Some(l)) = (&src.cluster, state.login_limiter()) {
        c.share_logins("http", l);
    }
    if let Some(render) = crate::metrics::render() {
        state = state.with_metrics(render);
    }
    let api = match settings.http.listen {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding HTTP to {addr} (http.listen)"))?;
            let bound = l.local_addr()?;
            let app = intake_http::router(state.clone());
            let cfg = settings.http.config.clone();
            let token = shutdown.clone();
            let https = match (&settings.http.tls, &src.tls) {
                (true, Some(certs)) => {
                    let certs = certs.clone();
                    Some(Arc::new(move || certs.acceptor()) as intake_http::TlsSource)
                }
                _ => None,
            };
            let task = tokio::spawn(gated(go.clone(), async move {
                intake_http::serve(l, app, &cfg, https, token).await
            }));
            Some(("HTTP listener".to_string(), task, bound))
        }
        None => None,
    };
    let mailpit = match settings.http.mailpit_listen {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the Mailpit API to {addr} (mailpit.listen)"))?;
            let bound = l.local_addr()?;
            let app = intake_http::mailpit_router(state.clone());
            let cfg = settings.http.config.clone();
            let token = shutdown.clone();
            let task = tokio::spawn(gated(go.clone(), async move {
                intake_http::serve(l, app, &cfg, None, token).await
            }));
            Some(("Mailpit API listener".to_string(), task, bound))
        }
        None => None,
    };
    Ok((state, api, mailpit))
}
