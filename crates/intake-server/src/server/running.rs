//! A running server: its addresses, the store it writes, and how it stops.

use std::net::SocketAddr;
use std::sync::Arc;

use intake_core::{EventBus, MailStore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::reload::Reloader;

/// A running server.
pub struct Running {
    /// Applies a new configuration to the running listeners (SIGHUP).
    pub reloader: Arc<Reloader>,
    /// Where SMTP listens (the real port when the configured one was 0).
    pub smtp_addr: SocketAddr,
    /// Where implicit-TLS SMTP listens, if it does.
    pub smtps_addr: Option<SocketAddr>,
    /// The `[[listener]]`s: name and where each listens.
    pub listener_addrs: Vec<(String, SocketAddr)>,
    /// Where HTTP listens, if it does.
    pub http_addr: Option<SocketAddr>,
    /// Where the Mailpit-compatible API listens, if it does.
    pub mailpit_addr: Option<SocketAddr>,
    /// Where POP3 listens, if it does.
    pub pop3_addr: Option<SocketAddr>,
    /// The TLS certificates in use (reloaded on SIGHUP).
    pub tls: Option<Arc<intake_smtp::tls::TlsCerts>>,
    /// The store the server writes.
    pub store: Arc<dyn MailStore>,
    /// Committed changes.
    pub events: EventBus,
    pub(super) shutdown: CancellationToken,
    /// Every SMTP listener's task, named for the log: the default one first.
    pub(super) smtp_tasks: Vec<(String, JoinHandle<std::io::Result<()>>)>,
    /// The HTTP listeners' tasks (the API, the Mailpit API).
    pub(super) http_tasks: Vec<(String, JoinHandle<std::io::Result<()>>)>,
    /// The cluster's sync task: at shutdown it removes this node's counts from Redis.
    pub(super) cluster: Option<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets sessions finish (up to the shutdown timeout), then closes the
    /// store after its last commit.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the server has stopped (after [`Running::shutdown_token`] is cancelled),
    /// then closes the store after its last commit.
    ///
    /// A listener task that ends on its own (an error, a panic) stops the whole server: it
    /// is logged, the other listeners stop accepting and let the transactions in flight
    /// finish, the store is closed as on any shutdown, and the error says which listener
    /// ended and why (`intake serve` exits non-zero with it).
    pub async fn wait(self) -> anyhow::Result<()> {
        use futures_util::StreamExt;
        let smtp = self
            .smtp_tasks
            .into_iter()
            .map(|(name, h)| (ListenerTask::new(name, h), false));
        let http = self
            .http_tasks
            .into_iter()
            .map(|(name, h)| (ListenerTask::new(name, h), true));
        let tasks: Vec<_> = smtp.chain(http).collect();
        let token = self.shutdown.clone();
        let mut running: futures_util::stream::FuturesUnordered<_> = tasks
            .into_iter()
            .map(|(task, http)| task.finish(http, token.clone()))
            .collect();
        let mut failure: Option<anyhow::Error> = None;
        // Until shutdown is asked for, any listener that ends is a failure.
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => {}
            Some(ended) = running.next() => {
                let early = !self.shutdown.is_cancelled();
                let error = ended.failure().or_else(|| {
                    early.then(|| anyhow::anyhow!("{} stopped accepting", ended.name))
                });
                if let Some(e) = error {
                    tracing::error!(error = %format!("{e:#}"), "a listener ended: shutting down");
                    failure = Some(e);
                }
                self.shutdown.cancel();
            }
        }
        // The others stop accepting and finish their sessions (SMTP: up to
        // smtp.shutdown_timeout); HTTP gives open requests a short grace.
        while let Some(ended) = running.next().await {
            if let Some(e) = ended.failure() {
                tracing::error!(error = %format!("{e:#}"), "listener failed");
                failure.get_or_insert(e);
            }
        }
        if let Some(h) = self.cluster {
            let _ = h.await;
        }
        // Whatever happened above: queued writes are finished and the store closed.
        self.store.close().await;
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The token that stops the server.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// A listener's task, named for the log.
struct ListenerTask {
    name: String,
    handle: JoinHandle<std::io::Result<()>>,
}

/// How a listener task ended.
struct Ended {
    name: String,
    /// None: the HTTP grace after shutdown ran out first (open requests are left).
    result: Option<Result<std::io::Result<()>, tokio::task::JoinError>>,
}

/// How long HTTP requests may go on after shutdown (event streams never end by themselves).
const HTTP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

impl ListenerTask {
    fn new(name: impl Into<String>, handle: JoinHandle<std::io::Result<()>>) -> Self {
        ListenerTask {
            name: name.into(),
            handle,
        }
    }

    /// Waits for the task; an HTTP one only until `HTTP_GRACE` after `shutdown`.
    async fn finish(self, http: bool, shutdown: CancellationToken) -> Ended {
        let ListenerTask { name, handle } = self;
        let result = if http {
            let grace = async {
                shutdown.cancelled().await;
                tokio::time::sleep(HTTP_GRACE).await;
            };
            tokio::select! {
                r = handle => Some(r),
                _ = grace => None,
            }
        } else {
            Some(handle.await)
        };
        Ended { name, result }
    }
}

impl Ended {
    /// The error, if the task failed (an error returned, or a panic).
    fn failure(&self) -> Option<anyhow::Error> {
        match &self.result {
            None | Some(Ok(Ok(()))) => None,
            Some(Ok(Err(e))) => Some(anyhow::anyhow!("{}: {e}", self.name)),
            Some(Err(e)) => Some(anyhow::anyhow!("{} task: {e}", self.name)),
        }
    }
}
