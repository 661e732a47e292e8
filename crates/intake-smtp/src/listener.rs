//! The accept loop: connection limit, one task per connection, TLS, graceful shutdown.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::FutureExt;
use futures_util::future::Either;
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
    let shared = Arc::new(Listening {
        svc: svc.clone(),
        services: std::sync::Mutex::new(None),
    });
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
        tracing::debug!(client = %peer, "connected");
        metrics::gauge!("intake_smtp_connections_open").increment(1);
        // An I/O error that ends a session is logged by the session (`Connection::run`).
        let connection = handle(sock, peer, shared.clone(), shutdown.clone()).map(move |_| {
            metrics::gauge!("intake_smtp_connections_open").decrement(1);
            drop(permit);
        });
        tracker.spawn(connection);
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

/// A listener's service as its connections share it: with the [`Services`] of the
/// settings in force, built once (not once per connection) and rebuilt when a reload
/// replaces the settings.
struct Listening {
    svc: Service,
    services: std::sync::Mutex<Option<(Arc<SessionConfig>, Arc<Services>)>>,
}

impl Listening {
    /// What connections with settings `cfg` run their effects with.
    fn services(&self, cfg: &Arc<SessionConfig>) -> Arc<Services> {
        let mut cached = self.services.lock().expect("services lock");
        match &*cached {
            Some((c, s)) if Arc::ptr_eq(c, cfg) => s.clone(),
            _ => {
                let s = Arc::new(self.svc.services(cfg));
                *cached = Some((cfg.clone(), s.clone()));
                s
            }
        }
    }
}

/// Runs one connection: the PROXY header if expected, the per-client limits, then SMTP in
/// plaintext and TLS if the client asks (or TLS from the start).
///
/// Built from combinators rather than written as one `async` block: an idle connection's
/// task holds this future for as long as the client stays, and a block keeps what it
/// captured (the socket, the addresses) in its state even after moving it into the
/// session's future, next to that future. Each stage here ends before the next begins.
fn handle(
    sock: TcpStream,
    peer: SocketAddr,
    svc: Arc<Listening>,
    token: CancellationToken,
) -> impl Future<Output = std::io::Result<()>> {
    if svc.svc.proxy.is_none() {
        return Either::Left(serve(
            Prefixed::new(BytesMut::new(), sock),
            peer,
            svc,
            token,
        ));
    }
    // Boxed: the header is read once, and its future need not stay in the task.
    let listening = svc.clone();
    let header = Box::pin(async move {
        let p = listening.svc.proxy.as_ref().expect("checked above");
        let mut sock = sock;
        if !p.trusts(peer.ip()) {
            tracing::info!(peer = %peer, "PROXY header expected from an untrusted address: closed");
            return None;
        }
        match crate::proxy::read_header(&mut sock, peer, p.timeout).await {
            Ok((client, early)) => Some((Prefixed::new(early, sock), client)),
            Err(crate::proxy::ProxyError::Probe) => {
                // The balancer's health check, every few seconds: not worth a line.
                tracing::debug!(peer = %peer, "health check (connected, closed)");
                None
            }
            Err(e) => {
                tracing::info!(peer = %peer, error = %e, "no valid PROXY header: closed");
                None
            }
        }
    });
    Either::Right(header.then(move |found| match found {
        Some((sock, client)) => Either::Left(serve(sock, client, svc, token)),
        None => Either::Right(std::future::ready(Ok(()))),
    }))
}

/// Serves SMTP to `client` on `sock` (after its PROXY header, if any): the per-client
/// limits, then the plaintext session and the TLS one it may ask for, or TLS from the
/// start.
fn serve(
    mut sock: Prefixed<TcpStream>,
    client: SocketAddr,
    svc: Arc<Listening>,
    token: CancellationToken,
) -> impl Future<Output = std::io::Result<()>> {
    type Boxed = Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>;
    let cfg = svc.svc.config();
    let guard = match cfg.limits.as_ref().map(|l| l.admit(client.ip())) {
        None => None,
        Some(Ok(g)) => g,
        Some(Err(refusal)) => {
            tracing::info!(client = %client, ?refusal, "client over its connection limit");
            metrics::counter!("intake_smtp_connections_refused_total", "reason" => "client_limit")
                .increment(1);
            let reply = match refusal {
                Refusal::Rate => replies::CONNECTION_RATE,
                Refusal::PerIp | Refusal::PerNetwork => replies::TOO_MANY_CONNECTIONS_FROM_CLIENT,
            };
            let refuse: Boxed = Box::pin(async move {
                let _ = sock.write_all(reply.to_wire().as_bytes()).await;
                let _ = sock.shutdown().await;
                Ok(())
            });
            return Either::Left(refuse);
        }
    };
    if svc.svc.implicit_tls {
        // The TLS state is as large as the rest of the session: boxed with it.
        let tls: Boxed = Box::pin(async move {
            let certs = svc
                .svc
                .tls
                .as_ref()
                .expect("implicit TLS listeners have certificates");
            let session = Session::new(cfg, client);
            let r = encrypted(sock, session, &svc, certs, token).await;
            drop(guard);
            r
        });
        return Either::Left(tls);
    }
    let services = svc.services(&cfg);
    let plain = Connection::resume(sock, Session::new(cfg, client), services);
    Either::Right(plain.run(token.clone()).then(move |ended| async move {
        let r = match ended? {
            Ended::Closed => Ok(()),
            Ended::StartTls(sock, session) => {
                let certs = svc
                    .svc
                    .tls
                    .as_ref()
                    .expect("STARTTLS is only offered with certificates");
                // Boxed: the TLS state only costs memory in sessions that use it.
                Box::pin(encrypted(sock, *session, &svc, certs, token)).await
            }
        };
        drop(guard);
        r
    }))
}

async fn encrypted(
    sock: Prefixed<TcpStream>,
    mut session: Session,
    svc: &Listening,
    certs: &TlsCerts,
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
    let services = svc.services(session.shared_config());
    Connection::resume(stream, session, services)
        .run(token)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection's task holds this future for as long as the client stays: what it
    /// keeps inline, every idle connection pays for. tokio's task is this future plus 128
    /// bytes of its own (the tracker's token, the permit, the task's header and trailer),
    /// rounded up to a multiple of 128: at 640 bytes or less the task takes 768 bytes, one
    /// byte more and it takes 896 (1.2 MiB more at 10,000 idle connections). 632 bytes in
    /// a release build when this was written (a test build is a little larger). Past the
    /// bound, something held across an await in `Connection::run` (a timer, a reply, a
    /// drop flag) is in every task: keep it in a boxed or plain function, or out of the
    /// wait (see `Connection::flush`, `Connection::next_wait`).
    #[tokio::test]
    async fn a_connection_task_stays_small() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (sock, peer) = listener.accept().await.unwrap();
        let svc = Arc::new(Listening {
            svc: Service {
                cfg: Arc::new(SessionConfig::default()),
                targets: Targets::new(vec![]),
                arrivals: None,
                tls: None,
                implicit_tls: false,
                proxy: None,
                live: None,
            },
            services: std::sync::Mutex::new(None),
        });
        let task = handle(sock, peer, svc, CancellationToken::new());
        let size = std::mem::size_of_val(&task);
        assert!(size <= 640, "a connection's future is {size} bytes");
    }
}
