//! The POP3 listener (`pop3.listen`): logins checked by the HTTP side's tokens and htpasswd
//! users under its access mode and failed-login limits, the mail they may read from the
//! store, STLS with the `[tls]` certificate.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::gated;
use crate::config::Settings;

/// POP3 logins checked as HTTP credentials are ([`intake_http::AppState::login`]).
struct HttpCredentials(intake_http::AppState);

#[async_trait]
impl intake_pop3::Credentials for HttpCredentials {
    async fn check(
        &self,
        user: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<intake_pop3::Checked, intake_pop3::AuthError> {
        use intake_http::{Login, Scopes};
        Ok(match self.0.login(user, password, client).await {
            Login::Valid(s) => intake_pop3::Checked::Valid(intake_pop3::Rights {
                read: s.covers(Scopes::READ),
                delete: s.covers(Scopes::DELETE),
            }),
            Login::Wrong => intake_pop3::Checked::Wrong,
            Login::Unknown => intake_pop3::Checked::Unknown,
        })
    }
}

/// Binds and starts (behind the start gate `go`) the POP3 listener, if `pop3.listen` is set.
pub(super) async fn start(
    settings: &Settings,
    http: &intake_http::AppState,
    tls: Option<&Arc<intake_smtp::tls::TlsCerts>>,
    go: &CancellationToken,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<(String, JoinHandle<std::io::Result<()>>, SocketAddr)>> {
    let Some(addr) = settings.pop3.listen else {
        return Ok(None);
    };
    let l = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding POP3 to {addr} (pop3.listen)"))?;
    let bound = l.local_addr()?;
    let access = &settings.http.config.access;
    let mode = match access.mode {
        intake_http::AccessMode::Open => intake_pop3::AccessMode::Open,
        intake_http::AccessMode::Public => intake_pop3::AccessMode::Public,
        intake_http::AccessMode::Private => intake_pop3::AccessMode::Private,
    };
    let auth = Arc::new(intake_pop3::AccessAuthenticator::new(
        mode,
        access.public_delete,
        Arc::new(HttpCredentials(http.clone())),
    ));
    let maildrop = Arc::new(intake_pop3::StoreMaildrop::new(
        http.store.clone(),
        settings.pop3.max_messages,
    ));
    let stls = match (settings.pop3.stls, tls) {
        (true, Some(certs)) => {
            let certs = certs.clone();
            Some(Arc::new(move || certs.acceptor()) as intake_pop3::TlsSource)
        }
        _ => None,
    };
    let cfg = settings.pop3.clone();
    let token = shutdown.clone();
    let task = tokio::spawn(gated(go.clone(), async move {
        intake_pop3::serve(l, cfg, auth, maildrop, stls, token).await
    }));
    tracing::info!(address = %bound, stls = settings.pop3.stls && tls.is_some(), "POP3 listener");
    Ok(Some(("POP3 listener".to_string(), task, bound)))
}
