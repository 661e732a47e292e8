//! Intake's POP3 server: mail clients read stored mail (RFC 1939, CAPA from RFC 2449, STLS
//! from RFC 2595). USER/PASS only (no APOP, no SASL).
//!
//! # Layout
//!
//! ```text
//! proto.rs     the wire format: CommandDecoder (255-octet lines, resync at the line end),
//!              Reply (+OK/-ERR, response codes, multi-line with dot-stuffing). No I/O.
//! session.rs   the state machine (AUTHORIZATION, TRANSACTION, UPDATE): synchronous; asks the
//!              driver for logins, listings, messages and deletions through Steps.
//! maildrop.rs  the seams: Authenticator (login -> Grant: all mail or some mailboxes) and
//!              Maildrop (list, fetch, delete); StoreMaildrop over intake_core::MailStore.
//! access.rs    AccessAuthenticator: the HTTP side's access modes over a Credentials check.
//! conn.rs      the driver: the only code that touches the socket.
//! lib.rs       Pop3Settings and serve(): accept loop, connection cap, STLS, shutdown.
//! ```
//!
//! Depends on intake-core only; the server binary wires it (`[pop3]` in the configuration).
//! The messages a session lists at login are its snapshot: numbers and sizes stay the same
//! for the session, new mail shows at the next login, and DELE marks are applied at QUIT
//! (the UPDATE state) and nowhere else: a dropped connection deletes nothing.

#![warn(missing_docs)]

pub mod access;
mod conn;
pub mod maildrop;
pub mod proto;
pub mod session;
mod settings;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use access::{AccessAuthenticator, AccessMode, Checked, Credentials, Rights};
pub use maildrop::{
    AuthError, Authenticator, Entry, Grant, Maildrop, MaildropError, Reach, StoreMaildrop,
};

use conn::{Connection, Ctx, Ended};
use session::{Session, SessionRules};

/// Where STLS gets its certificate: called once per handshake, so a reloaded certificate
/// (SIGHUP) is used by the next one. The same shape as `intake_http::TlsSource`.
pub type TlsSource = Arc<dyn Fn() -> tokio_rustls::TlsAcceptor + Send + Sync>;

/// POP3 settings (`[pop3]`).
#[derive(Debug, Clone)]
pub struct Pop3Settings {
    /// Address to listen on; `None` (the default) leaves POP3 off. [`serve`] takes a bound
    /// listener, so this is for the caller.
    pub listen: Option<SocketAddr>,
    /// A session idle this long is closed without applying its deletions (RFC 1939 §3
    /// asks for at least 10 minutes). Also the limit on writing one reply to a slow client.
    pub idle_timeout: Duration,
    /// Longest TLS handshake after STLS.
    pub tls_handshake_timeout: Duration,
    /// Deadline for each call to the authenticator or the maildrop.
    pub store_timeout: Duration,
    /// Wait before answering a failed login.
    pub login_failure_delay: Duration,
    /// Failed logins before the connection is closed.
    pub max_login_failures: u32,
    /// Concurrent connections; more wait in the listen backlog.
    pub max_connections: usize,
    /// Most messages a session lists (the newest), for [`StoreMaildrop::new`].
    pub max_messages: usize,
    /// USER/PASS allowed before STLS when a certificate is configured. Without a
    /// certificate logins are always plaintext.
    pub plaintext_login: bool,
    /// Offer STLS with the `[tls]` certificate (when one is configured): for the caller,
    /// which passes a TLS source to [`serve`] or not.
    pub stls: bool,
}

impl Default for Pop3Settings {
    fn default() -> Self {
        Pop3Settings {
            listen: None,
            idle_timeout: Duration::from_secs(600),
            tls_handshake_timeout: Duration::from_secs(10),
            store_timeout: Duration::from_secs(30),
            login_failure_delay: Duration::from_secs(2),
            max_login_failures: 3,
            max_connections: 100,
            max_messages: 10_000,
            plaintext_login: true,
            stls: true,
        }
    }
}

/// Serves POP3 on `listener` until `shutdown` is cancelled, then waits for the open
/// sessions to end (each is told `-ERR [SYS/TEMP] server shutting down` at its next read
/// and closed without applying its deletions; a QUIT already applying them finishes).
///
/// `tls`: STLS is offered when given. Errors from `accept` are retried with backoff, so
/// this returns `Ok` once shut down.
pub async fn serve(
    listener: TcpListener,
    settings: Pop3Settings,
    auth: Arc<dyn Authenticator>,
    maildrop: Arc<dyn Maildrop>,
    tls: Option<TlsSource>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let settings = Arc::new(settings);
    let permits = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let tracker = TaskTracker::new();
    let mut backoff = intake_core::net::AcceptBackoff::new("POP3");
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, stls = tls.is_some(), "POP3 listening");
    }
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = shutdown.cancelled() => break,
        };
        let (sock, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    backoff.failed(&e).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        backoff.succeeded();
        metrics::counter!("intake_pop3_connections_total").increment(1);
        let cx = Ctx {
            client: peer,
            auth: auth.clone(),
            maildrop: maildrop.clone(),
            idle_timeout: settings.idle_timeout,
            store_timeout: settings.store_timeout,
            login_failure_delay: settings.login_failure_delay,
            shutdown: shutdown.clone(),
        };
        let settings = settings.clone();
        let tls = tls.clone();
        let span = tracing::debug_span!("pop3", client = %peer);
        tracker.spawn(
            async move {
                let _permit = permit;
                if let Err(e) = Box::pin(connection(sock, &settings, tls, cx)).await {
                    tracing::debug!(error = %e, "POP3 connection ended with an error");
                }
            }
            .instrument(span),
        );
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// One connection: the plaintext session, then (after STLS) the same session inside TLS.
async fn connection(
    sock: TcpStream,
    settings: &Pop3Settings,
    tls: Option<TlsSource>,
    cx: Ctx,
) -> io::Result<()> {
    let _ = sock.set_nodelay(true);
    let rules = SessionRules {
        tls_available: tls.is_some(),
        plaintext_login: settings.plaintext_login,
        max_login_failures: settings.max_login_failures.max(1),
    };
    let plain = Connection::new(sock, Session::new(rules));
    let (sock, mut session) = match plain.run(&cx, true).await? {
        Ended::Closed => return Ok(()),
        Ended::StartTls(sock, session) => (sock, session),
    };
    let Some(tls) = tls else {
        // The session offers STLS only with a certificate.
        return Ok(());
    };
    let stream =
        match tokio::time::timeout(settings.tls_handshake_timeout, tls().accept(sock)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::info!(client = %cx.client, error = %e, "POP3: TLS handshake failed");
                return Ok(());
            }
            Err(_) => {
                tracing::info!(client = %cx.client, "POP3: TLS handshake timed out");
                return Ok(());
            }
        };
    session.tls_started();
    // Inside TLS a second STLS is refused by the session, so this run ends the connection.
    Connection::new(stream, *session).run(&cx, false).await?;
    Ok(())
}
