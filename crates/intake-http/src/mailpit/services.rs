//! What the Mailpit API reaches beyond the store, built once by the server and handed in
//! with [`crate::AppState::with_mailpit`]: the chaos triggers (shared with the SMTP
//! checks), the delivery targets `POST /api/v1/send` delivers through, the downstream a
//! caught message may be released to, and SpamAssassin for `sa-check`. Each is absent (or
//! off) unless the settings configure it.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use intake_core::{Chaos, DeliveryTarget, Targets};

/// The Mailpit API's live objects.
#[derive(Clone)]
pub struct MailpitServices {
    /// Mailpit's chaos triggers (`mailpit.chaos`; off: the chaos routes answer 400).
    pub chaos: Arc<Chaos>,
    /// Where `POST /api/v1/send` delivers: the default listener's targets (`None`: the
    /// store alone).
    pub targets: Option<Targets>,
    /// Which recipient domains `send` takes, as the default listener (`smtp.domains`;
    /// `None`: every domain).
    pub domains: Option<Domains>,
    /// Our host name: `Authentication-Results:` fields claiming it are removed from what
    /// `send` delivers, as from SMTP mail.
    pub hostname: String,
    /// Where `POST /api/v1/message/{ID}/release` sends (`mailpit.release` with `[relay]`).
    pub release: Option<Release>,
    /// SpamAssassin's spamd (`[spamd]`), for `GET /api/v1/message/{ID}/sa-check`.
    pub spamassassin: Option<SpamAssassin>,
}

impl Default for MailpitServices {
    fn default() -> Self {
        MailpitServices {
            chaos: Arc::new(Chaos::new(false)),
            targets: None,
            domains: None,
            hostname: String::new(),
            release: None,
            spamassassin: None,
        }
    }
}

/// Whether mail for a recipient domain is taken (`smtp.domains`).
pub type Domains = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The one downstream caught messages are released to: the `[relay]` target.
#[derive(Clone)]
pub struct Release {
    /// The relay target.
    pub relay: Arc<dyn DeliveryTarget>,
    /// Its address, as `/api/v1/webui` shows it (`host:port`).
    pub server: String,
}

/// Asks spamd for its report on a message (SpamAssassin's `REPORT`).
pub type SpamAssassin =
    Arc<dyn Fn(bytes::Bytes) -> BoxFuture<'static, Result<SpamReport, String>> + Send + Sync>;

/// What spamd reported.
#[derive(Debug, Clone, PartialEq)]
pub struct SpamReport {
    /// spamd's verdict (its score at or over its threshold).
    pub spam: bool,
    /// The score.
    pub score: f64,
    /// The rules that hit.
    pub rules: Vec<SpamRule>,
}

/// One rule that hit.
#[derive(Debug, Clone, PartialEq)]
pub struct SpamRule {
    /// Its name (`MISSING_DATE`).
    pub name: String,
    /// Its points.
    pub score: f64,
    /// spamd's description of it.
    pub description: String,
}
