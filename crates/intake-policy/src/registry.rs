//! The registry of policy checks: one [`CheckEntry`] per check, in the order the checks
//! of one stage run.
//!
//! Adding a check: its module (an `intake_core::Check` and its config struct), one line in
//! [`CHECKS`] (and its field in [`crate::PolicyConfig`]), and its section read in the
//! server's configuration. State that must outlive a reload (caches, counters, shared
//! records) comes from [`PolicyShared`], never from the constructor itself.

use std::sync::Arc;
use std::time::Duration;

use intake_core::{Check, OnError, Stage};

use crate::shared::PolicyShared;
use crate::{Dnsbl, Greylist, HeloCheck, PolicyConfig, RecipientExists, Rspamd, SenderAuth, Spamd};

/// Every check, in the order checks of one stage run.
pub const CHECKS: &[CheckEntry] = &[
    CheckEntry {
        name: "dnsbl",
        stage: Stage::Connect,
        enabled: |c| c.dnsbl.enabled && !c.dnsbl.zones.is_empty(),
        build: |c, s| {
            let check = Dnsbl::new(c.dnsbl.clone(), s.resolver(&c.dns)?);
            Ok(BuiltCheck::new(check, c.dnsbl.timeout, c.dnsbl.on_error))
        },
    },
    CheckEntry {
        name: "helo",
        stage: Stage::Helo,
        enabled: |c| c.helo.enabled(),
        build: |c, _| {
            let check = HeloCheck::new(c.helo.clone());
            Ok(BuiltCheck::new(
                check,
                Duration::from_secs(1),
                OnError::FailOpen,
            ))
        },
    },
    CheckEntry {
        name: "recipients",
        stage: Stage::RcptTo,
        // Accepts everyone until a source lists someone.
        enabled: |_| true,
        build: |c, s| {
            let check = RecipientExists::new(&c.recipients, s.store.clone());
            Ok(BuiltCheck::new(
                check,
                c.recipients.timeout,
                c.recipients.on_error,
            ))
        },
    },
    CheckEntry {
        name: "greylist",
        stage: Stage::RcptTo,
        enabled: |c| c.greylist.enabled,
        build: |c, s| {
            let check = Greylist::with_state(c.greylist.clone(), s.grey.clone(), s.clock.clone());
            Ok(BuiltCheck::new(
                check,
                c.greylist.timeout,
                c.greylist.on_error,
            ))
        },
    },
    CheckEntry {
        name: "sender_auth",
        stage: Stage::Data,
        enabled: |c| c.sender_auth.enabled,
        build: |c, s| {
            let check = SenderAuth::new(
                c.sender_auth.clone(),
                s.resolver(&c.dns)?,
                s.caches(c.dns.cache_size),
            );
            Ok(BuiltCheck::new(
                check,
                c.sender_auth.timeout,
                c.sender_auth.on_error,
            ))
        },
    },
    CheckEntry {
        name: "rspamd",
        stage: Stage::Data,
        enabled: |c| c.rspamd.enabled,
        build: |c, _| {
            let check = Rspamd::new(c.rspamd.clone());
            Ok(BuiltCheck::new(check, c.rspamd.timeout, c.rspamd.on_error))
        },
    },
    CheckEntry {
        name: "spamd",
        stage: Stage::Data,
        enabled: |c| c.spamd.enabled,
        build: |c, _| {
            let check = Spamd::new(c.spamd.clone());
            Ok(BuiltCheck::new(check, c.spamd.timeout, c.spamd.on_error))
        },
    },
];

/// One policy check.
pub struct CheckEntry {
    /// Its name in profiles (`[policy.profiles.<name>] checks`), logs and metrics.
    pub name: &'static str,
    /// When it runs.
    pub stage: Stage,
    /// Whether the settings switch it on (the `default` profile, unless configured).
    pub enabled: fn(&PolicyConfig) -> bool,
    /// Builds it from the settings, with the state kept across reloads.
    pub build: fn(&PolicyConfig, &PolicyShared) -> Result<BuiltCheck, PolicyError>,
}

/// A built check with its deadline and what to do when it cannot decide.
#[derive(Clone)]
pub struct BuiltCheck {
    /// The check.
    pub check: Arc<dyn Check>,
    /// How long it may take.
    pub deadline: Duration,
    /// What a failure or a missed deadline means.
    pub on_error: OnError,
}

impl BuiltCheck {
    /// `check` with its deadline and failure policy.
    pub fn new(check: impl Check + 'static, deadline: Duration, on_error: OnError) -> BuiltCheck {
        BuiltCheck {
            check: Arc::new(check),
            deadline,
            on_error,
        }
    }
}

/// The check called `name`.
pub fn find(name: &str) -> Option<&'static CheckEntry> {
    CHECKS.iter().find(|e| e.name == name)
}

/// Every check's name, separated by commas (for error messages).
pub fn known_names() -> String {
    CHECKS.iter().map(|e| e.name).collect::<Vec<_>>().join(", ")
}

/// Why the checks could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A profile names a check that does not exist.
    #[error("policy.profiles.{profile}: unknown check {check:?} (known: {known})", known = known_names())]
    UnknownCheck {
        /// The profile.
        profile: String,
        /// The name it gave.
        check: String,
    },
    /// The resolver of the DNS checks could not be made.
    #[error("{0}")]
    Dns(String),
}
