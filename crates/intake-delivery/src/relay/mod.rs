//! The relay target: hands each message to a downstream SMTP or LMTP server while the
//! client waits, so the client's 250 means the downstream has it (no local queue).
//!
//! - The downstream's 5xx for a recipient is a permanent failure for it; its 4xx, a
//!   timeout, a refused or lost connection are temporary ([`RcptOutcome`]).
//! - LMTP (`lmtp = true`): LHLO, and one reply per recipient after the final dot.
//! - Connections are pooled and limited: at most `max_connections` open at once (busy or
//!   idle). When all are busy the message fails temporarily *at once* (the client gets a
//!   4xx and retries), never waits in a queue. Idle connections are reused (after a RSET)
//!   for `idle_timeout`.
//! - STARTTLS (`tls`) and AUTH PLAIN (`auth`) to the downstream.

mod client;
mod verify;

pub use verify::RecipientVerify;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use intake_client::Trust;
use intake_core::net::Repeated;
use intake_core::{DeliveryTarget, Handoff, RcptOutcome};
use rustls_pki_types::ServerName;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use client::Client;

use crate::target::{Built, SetupError, TargetContext, Verifier};

/// The registry's constructor: the `[relay]` section, with its recipient verification
/// when `verify_recipients` is set.
pub(crate) fn build(cfg: &RelayConfig, _cx: &TargetContext) -> Result<Built, SetupError> {
    let cfg = cfg.clone();
    let relay = Arc::new(RelayTarget::new(cfg.clone()).map_err(|e| SetupError {
        target: "relay",
        keys: "relay.tls_ca",
        source: Box::new(e),
    })?);
    let verifier = cfg.verify_recipients.then(|| {
        let relay = relay.clone();
        Verifier {
            // A connection, MAIL, RCPT and RSET, each within the command timeout.
            deadline: cfg.connect_timeout + cfg.command_timeout * 4,
            make: Arc::new(move |skip| Arc::new(RecipientVerify::new(relay.clone(), skip))),
        }
    });
    Ok(Built {
        target: relay,
        verifier,
    })
}

/// STARTTLS to the downstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayTls {
    /// Never.
    Off,
    /// When the downstream offers it.
    Optional,
    /// Always: a downstream without STARTTLS gets nothing (temporary failure).
    Required,
}

/// Where and how to relay.
#[derive(Clone)]
pub struct RelayConfig {
    /// `host:port` of the downstream.
    pub server: String,
    /// Speak LMTP (RFC 2033) instead of SMTP.
    pub lmtp: bool,
    /// Our name in EHLO/LHLO.
    pub helo: String,
    /// STARTTLS policy.
    pub tls: RelayTls,
    /// The name to check the downstream's certificate against.
    pub tls_name: ServerName<'static>,
    /// Certificates (PEM) to verify the downstream with; `None`: the certificate is not
    /// verified (encryption against passive eavesdropping only, as Postfix's `may` and
    /// `encrypt` levels).
    pub tls_ca: Option<std::path::PathBuf>,
    /// AUTH PLAIN user and password.
    pub auth: Option<(String, String)>,
    /// Open connections at most (busy and idle).
    pub max_connections: usize,
    /// How long a TCP connect may take.
    pub connect_timeout: Duration,
    /// How long each command's reply may take.
    pub command_timeout: Duration,
    /// How long the reply(ies) after the final dot may take.
    pub data_timeout: Duration,
    /// How long an idle connection is kept for reuse (0: not kept).
    pub idle_timeout: Duration,
    /// Ask the downstream about each recipient at RCPT time ([`RecipientVerify`]).
    pub verify_recipients: bool,
}

impl RelayConfig {
    /// Settings for `server` (`host:port`), everything else at its default.
    pub fn new(server: impl Into<String>) -> RelayConfig {
        let server = server.into();
        let host = server
            .rsplit_once(':')
            .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_string())
            .unwrap_or_else(|| server.clone());
        RelayConfig {
            tls_name: ServerName::try_from(host)
                .unwrap_or_else(|_| ServerName::try_from("localhost").expect("valid name")),
            server,
            lmtp: false,
            helo: "localhost".into(),
            tls: RelayTls::Optional,
            tls_ca: None,
            auth: None,
            max_connections: 20,
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(30),
            data_timeout: Duration::from_secs(50),
            idle_timeout: Duration::from_secs(30),
            verify_recipients: false,
        }
    }
}

impl std::fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayConfig")
            .field("server", &self.server)
            .field("lmtp", &self.lmtp)
            .field("tls", &self.tls)
            .field("tls_ca", &self.tls_ca)
            .field(
                "auth",
                &self
                    .auth
                    .as_ref()
                    .map(|(u, p)| (u, intake_core::redact::Redacted(p.as_bytes()))),
            )
            .field("max_connections", &self.max_connections)
            .field("verify_recipients", &self.verify_recipients)
            .finish_non_exhaustive()
    }
}

impl RelayConfig {
    /// Sets the name the downstream's certificate is checked against; false if it is
    /// not a host name or address.
    pub fn set_tls_name(&mut self, name: &str) -> bool {
        match ServerName::try_from(name.to_string()) {
            Ok(n) => {
                self.tls_name = n;
                true
            }
            Err(_) => false,
        }
    }
}

/// An idle pooled connection, holding its place under the limit.
struct Idle {
    client: Client,
    permit: OwnedSemaphorePermit,
    since: Instant,
}

/// The relay [`DeliveryTarget`].
pub struct RelayTarget {
    cfg: RelayConfig,
    slots: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
    tls: Option<tokio_rustls::TlsConnector>,
    /// Failures of the downstream, logged once then summarized (an outage under load
    /// fails every message the same way).
    failures: Repeated,
}

/// How often a failure that goes on is summarized in the log.
const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

impl RelayTarget {
    /// A relay with these settings (reads `tls_ca` now).
    pub fn new(cfg: RelayConfig) -> std::io::Result<RelayTarget> {
        let tls = match cfg.tls {
            RelayTls::Off => None,
            _ => Some(intake_client::tls::connector(
                match cfg.tls_ca.as_deref() {
                    Some(ca) => Trust::CaFile(ca),
                    None => Trust::Any,
                },
            )?),
        };
        Ok(RelayTarget {
            slots: Arc::new(Semaphore::new(cfg.max_connections.max(1))),
            idle: Mutex::new(Vec::new()),
            cfg,
            tls,
            failures: Repeated::new(SUMMARY_INTERVAL),
        })
    }

    /// A working connection and its slot, or why there is none.
    async fn checkout(&self) -> Result<(Client, OwnedSemaphorePermit), RcptOutcome> {
        let idle = self.idle.lock().expect("pool lock").pop();
        if let Some(mut i) = idle {
            if i.since.elapsed() < self.cfg.idle_timeout && i.client.reset().await.is_ok() {
                return Ok((i.client, i.permit));
            }
            // Stale or broken: its slot serves a new connection.
            drop(i.client);
            return self.open(i.permit).await;
        }
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => self.open(permit).await,
            Err(_) => {
                if let Some(n) = self.failures.hit("limit") {
                    tracing::warn!(server = %self.cfg.server, limit = self.cfg.max_connections, messages = n,
                        "relay connection limit reached (relay.max_connections): deferred");
                }
                Err(RcptOutcome::TEMP)
            }
        }
    }

    /// Puts a connection back for reuse (or closes it when nothing is kept idle).
    async fn checkin(&self, client: Client, permit: OwnedSemaphorePermit) {
        if self.cfg.idle_timeout.is_zero() {
            client.quit().await;
        } else {
            self.idle.lock().expect("pool lock").push(Idle {
                client,
                permit,
                since: Instant::now(),
            });
        }
    }

    async fn open(
        &self,
        permit: OwnedSemaphorePermit,
    ) -> Result<(Client, OwnedSemaphorePermit), RcptOutcome> {
        match Client::connect(&self.cfg, self.tls.as_ref()).await {
            Ok(c) => Ok((c, permit)),
            Err(e) => {
                if let Some(n) = self.failures.hit(&format!("connect: {e}")) {
                    tracing::warn!(server = %self.cfg.server, error = %e, messages = n,
                        "relay: no session with the downstream (logged once per 10 s while it goes on)");
                }
                Err(e.outcome())
            }
        }
    }
}

#[async_trait]
impl DeliveryTarget for RelayTarget {
    fn name(&self) -> &'static str {
        "relay"
    }

    async fn deliver(&self, msg: &Handoff) -> Vec<RcptOutcome> {
        let n = msg.message.envelope.rcpt_to.len();
        let (mut client, permit) = match self.checkout().await {
            Ok(x) => x,
            Err(outcome) => return vec![outcome; n],
        };
        match client.send(msg, self.cfg.lmtp, self.cfg.data_timeout).await {
            Ok(outcomes) => {
                tracing::debug!(id = %msg.message.id, server = %self.cfg.server, ?outcomes, "relayed");
                self.checkin(client, permit).await;
                outcomes
            }
            Err(e) => {
                if let Some(n) = self.failures.hit(&format!("send: {e}")) {
                    tracing::warn!(id = %msg.message.id, server = %self.cfg.server, error = %e, messages = n,
                        "relay: the downstream session failed during the transaction (logged once per 10 s while it goes on)");
                }
                vec![e.outcome(); n]
            }
        }
    }
}
