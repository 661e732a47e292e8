//! The accept loop: connection limit, one task per connection, TLS, graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use intake_core::net::{AcceptBackoff, LogEvery};
use intake_core::{Arrivals, Targets};
use intake_proto::replies;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::SessionConfig;
use crate::conn::{Connection, Ended, Services};
use crate::effects::LiveEffects;
use crate::limits::Refusal;
use crate::proxy::Prefixed;
use crate::session::Session;
use crate::tls::{TlsCerts, tls_info};

/// What a listener serves.
#[derive(Clone)]
pub struct Service {
    /// Session settings.
    pub cfg: Arc<SessionConfig>,
    /// Where accepted mail goes: the store, a relay, ... ([`Targets::store`] for the store
    /// alone).
    pub targets: Targets,
    /// The store's count of sessions receiving content, for its group commit (`None`
    /// when the store does not batch). Used only when the store is one of `targets`.
    pub arrivals: Option<Arrivals>,
    /// Certificates, for STARTTLS and implicit TLS.
    pub tls: Option<Arc<TlsCerts>>,
    /// Implicit TLS (port 465 style): the handshake comes before the greeting.
    pub implicit_tls: bool,
    /// Expect a PROXY protocol header from a trusted load balancer first.
    pub proxy: Option<crate::proxy::ProxySettings>,
    /// Settings replaced at run time (SIGHUP); None: `cfg` for good.
    pub live: Option<Arc<LiveConfig>>,
}

/// A listener's session settings, replaceable while it runs: each new connection takes the
/// current ones, sessions already open keep theirs. The connection cap (`max_connections`)
/// is fixed when the listener starts.
#[derive(Default)]
pub struct LiveConfig(std::sync::RwLock<Option<Arc<SessionConfig>>>);

impl LiveConfig {
    /// Settings for new connections from now on.
    pub fn set(&self, cfg: Arc<SessionConfig>) {
        *self.0.write().expect("live config lock") = Some(cfg);
    }

    fn get(&self) -> Option<Arc<SessionConfig>> {
        self.0.read().expect("live config lock").clone()
    }
}

impl Service {
    /// The settings a new connection gets.
    pub fn config(&self) -> Arc<SessionConfig> {
        self.live
            .as_ref()
            .and_then(|l| l.get())
            .unwrap_or_else(|| self.cfg.clone())
    }

    /// What a connection with settings `cfg` runs its effects with: `cfg`'s checks and
    /// authenticator, this listener's targets.
    pub fn services(&self, cfg: &SessionConfig) -> Services {
        Services {
            effects: Arc::new(LiveEffects {
                checks: cfg.checks.clone(),
                targets: self.targets.clone(),
                authenticator: cfg.auth.authenticator.clone(),
            }),
            arrivals: (self.arrivals.clone()).filter(|_| self.targets.has_store()),
        }
    }
}

/// Serves SMTP on `listener` until `shutdown` is cancelled, then waits (up to
/// `cfg.shutdown_timeout`) for sessions in a transaction to finish.
///
/// The caller binds the listener (port 0 in tests) and picks the shutdown signal.
pub async fn serve_with(
    listener: TcpListener,
    svc: Service,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limit = Arc::new(Semaphore::new(svc.cfg.max_connections));
    let tracker = TaskTracker::new();
    if svc.cfg.limits.is_some() || svc.live.is_some() {
        // Forget the rate state of clients not seen lately, so memory stays bounded (the
        // limits in force now: a reload may have replaced them).
        let token = shutdown.clone();
        let svc = svc.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = tick.tick() => if let Some(l) = svc.config().limits.clone() { l.forget_idle() },
                    _ = token.cancelled() => break,
                }
            }
        });
    }
    // One copy of the listener's service, shared by its connections (a pointer each).
    let shared = Arc::new(svc.clone());
    let mut backoff = AcceptBackoff::new("SMTP");
    let mut at_limit = LogEvery::new(std::time::Duration::from_secs(10));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        let (mut sock, peer) = match accepted {
            Ok(x) => {
                backoff.succeeded();
                x
            }
            Err(e) => {
                // Out of file descriptors and similar: back off, log now and then, keep serving.
                backoff.failed(&e).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        metrics::counter!("intake_smtp_connections_total").increment(1);
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            metrics::counter!("intake_smtp_connections_refused_total", "reason" => "limit")
                .increment(1);
            if let Some(refused) = at_limit.hit() {
                tracing::warn!(client = %peer, refused, limit = svc.cfg.max_connections,
                    "SMTP connection limit reached (smtp.max_connections)");
            }
            tracker.spawn(async move {
                let _ = sock
                    .write_all(replies::TOO_MANY_CONNECTIONS.to_wire().as_bytes())
                    .await;
                let _ = sock.shutdown().await;
            });
            continue;
        };
        let svc = shared.clone();
        let token = shutdown.clone();
        tracker.spawn(async move {
            tracing::debug!(client = %peer, "connected");
            metrics::gauge!("intake_smtp_connections_open").increment(1);
            if let Err(e) = handle(sock, peer, svc, token).await {
                tracing::debug!(client = %peer, error = %e, "connection ended with an error");
            }
            metrics::gauge!("intake_smtp_connections_open").decrement(1);
            drop(permit);
        });
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(svc.cfg.shutdown_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = tracker.len(),
            "shutdown deadline passed with sessions still open"
        );
    }
    Ok(())
}

/// Runs one connection: the PROXY header if expected, the per-client limits, then SMTP in
/// plaintext and TLS if the client asks (or TLS from the start).
///
/// An async block, not an `async fn`, and no named session: an idle connection's task holds
/// this future for as long as the client stays, so nothing is kept in it twice (see
/// [`Connection::run`]).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would hold its arguments twice"
)]
fn handle(
    mut sock: TcpStream,
    peer: SocketAddr,
    svc: Arc<Service>,
    token: CancellationToken,
) -> impl Future<Output = std::io::Result<()>> {
    async move {
        let (client, early) = match &svc.proxy {
            None => (peer, bytes::BytesMut::new()),
            Some(p) => {
                if !p.trusts(peer.ip()) {
                    tracing::info!(peer = %peer, "PROXY header expected from an untrusted address: closed");
                    return Ok(());
                }
                match Box::pin(crate::proxy::read_header(&mut sock, peer, p.timeout)).await {
                    Ok(x) => x,
                    Err(crate::proxy::ProxyError::Probe) => {
                        // The balancer's health check, every few seconds: not worth a line.
                        tracing::debug!(peer = %peer, "health check (connected, closed)");
                        return Ok(());
                    }
                    Err(e) => {
                        tracing::info!(peer = %peer, error = %e, "no valid PROXY header: closed");
                        return Ok(());
                    }
                }
            }
        };
        let mut sock = Prefixed::new(early, sock);
        let cfg = svc.config();
        let _guard = match cfg.limits.as_ref().map(|l| l.admit(client.ip())) {
            None => None,
            Some(Ok(g)) => g,
            Some(Err(refusal)) => {
                tracing::info!(client = %client, ?refusal, "client over its connection limit");
                metrics::counter!("intake_smtp_connections_refused_total", "reason" => "client_limit")
                    .increment(1);
                let reply = match refusal {
                    Refusal::Rate => replies::CONNECTION_RATE,
                    Refusal::PerIp | Refusal::PerNetwork => {
                        replies::TOO_MANY_CONNECTIONS_FROM_CLIENT
                    }
                };
                let _ = sock.write_all(reply.to_wire().as_bytes()).await;
                let _ = sock.shutdown().await;
                return Ok(());
            }
        };
        if svc.implicit_tls {
            let certs = svc
                .tls
                .as_ref()
                .expect("implicit TLS listeners have certificates");
            let session = Session::new(cfg, client);
            return Box::pin(encrypted(sock, session, &svc, certs, true, token)).await;
        }
        let services = svc.services(&cfg);
        let plain = Connection::resume(sock, Session::new(cfg, client), services, true);
        match plain.run(token.clone()).await? {
            Ended::Closed => Ok(()),
            Ended::StartTls(sock, session) => {
                let certs = svc
                    .tls
                    .as_ref()
                    .expect("STARTTLS is only offered with certificates");
                // Boxed: the TLS state only costs memory in sessions that use it.
                Box::pin(encrypted(sock, *session, &svc, certs, false, token)).await
            }
        }
    }
}

async fn encrypted(
    sock: Prefixed<TcpStream>,
    mut session: Session,
    svc: &Service,
    certs: &TlsCerts,
    greet: bool,
    token: CancellationToken,
) -> std::io::Result<()> {
    let peer = session.client();
    let handshake = tokio::time::timeout(
        session.config().tls_handshake_timeout,
        certs.acceptor().accept(sock),
    )
    .await;
    let stream = match handshake {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            metrics::counter!("intake_smtp_tls_failures_total").increment(1);
            tracing::info!(client = %peer, error = %e, "TLS handshake failed");
            return Ok(());
        }
        Err(_) => {
            tracing::info!(client = %peer, "TLS handshake timed out");
            return Ok(());
        }
    };
    let info = tls_info(stream.get_ref().1);
    metrics::counter!("intake_smtp_tls_sessions_total", "version" => info.version.clone())
        .increment(1);
    session.tls_started(info);
    // Inside TLS a second STARTTLS is refused by the session, so this ends the connection.
    let services = svc.services(session.config());
    Connection::resume(stream, session, services, greet)
        .run(token)
        .await?;
    Ok(())
}
