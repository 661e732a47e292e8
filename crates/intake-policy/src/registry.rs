//! The registry of policy checks: one [`CheckEntry`] per check, in the order the checks
//! of one stage run.
//!
//! Adding a check: its module (an `intake_core::Check` and its config struct), one line in
//! [`CHECKS`] and its field in [`PolicyConfig`] (both here), and its section read in the
//! server's configuration. State that must outlive a reload (caches, counters, shared
//! records) comes from [`PolicyShared`], never from the constructor itself.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use intake_core::{Check, Hook, OnError, Stage};

pub use crate::error::PolicyError;
use crate::shared::PolicyShared;
use crate::spf::{SpfAtMail, SpfAtMailCheck};
use crate::{
    AuthConfig, Clamav, ClamavConfig, DnsConfig, Dnsbl, DnsblConfig, Greylist, GreylistConfig,
    HeloCheck, HeloConfig, RecipientExists, RecipientsConfig, Rspamd, RspamdConfig, SenderAuth,
    Spamd, SpamdConfig,
};

/// Every check, in the order checks of one stage run.
pub const CHECKS: &[CheckEntry] = &[
    // Mailpit's chaos triggers come first in their stage: a fired trigger answers at once.
    CheckEntry {
        name: "chaos_sender",
        stage: Stage::MailFrom,
        enabled: |c| c.chaos,
        build: |_, s| Ok(chaos_check(s, Hook::Sender)),
    },
    CheckEntry {
        name: "chaos_recipient",
        stage: Stage::RcptTo,
        enabled: |c| c.chaos,
        build: |_, s| Ok(chaos_check(s, Hook::Recipient)),
    },
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
        name: "directory_recipients",
        stage: Stage::RcptTo,
        enabled: |c| c.recipients.directory,
        build: |c, s| {
            let directory = s.directory.clone().ok_or(PolicyError::NoDirectory)?;
            Ok(BuiltCheck::new(
                intake_directory::DirectoryRecipients::new(directory),
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
        name: "spf_at_mail",
        stage: Stage::MailFrom,
        enabled: |c| c.sender_auth.spf_at_mail != SpfAtMail::Off,
        build: |c, s| {
            let check = SpfAtMailCheck::new(
                c.sender_auth.spf_at_mail,
                c.sender_auth.hostname.clone(),
                c.sender_auth.timeout,
                s.resolver(&c.dns)?,
                s.caches(c.dns.cache_size),
                s.spf_results.clone(),
            );
            // The check itself gives up after `sender_auth.timeout` (a temperror, which
            // `spf_at_mail` decides); the pipeline's deadline is only a backstop behind it.
            Ok(BuiltCheck::new(
                check,
                c.sender_auth.timeout + Duration::from_secs(1),
                OnError::FailOpen,
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
            )
            .with_spf_results(s.spf_results.clone());
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
    CheckEntry {
        name: "clamav",
        stage: Stage::Data,
        enabled: |c| c.clamav.enabled,
        build: |c, _| {
            let check = Clamav::new(c.clamav.clone());
            Ok(BuiltCheck::new(check, c.clamav.timeout, c.clamav.on_error))
        },
    },
];

/// A chaos trigger's check: it decides at once, never fails.
fn chaos_check(s: &PolicyShared, hook: Hook) -> BuiltCheck {
    let check = crate::chaos::ChaosCheck::new(s.chaos.clone(), hook);
    BuiltCheck::new(check, Duration::from_secs(1), OnError::FailOpen)
}

/// The profile of the default listener.
pub const DEFAULT_PROFILE: &str = "default";

/// Every policy setting.
#[derive(Debug, Clone, Default)]
pub struct PolicyConfig {
    /// The resolver of the DNS checks.
    pub dns: DnsConfig,
    /// DNS block- and allowlists.
    pub dnsbl: DnsblConfig,
    /// HELO name checks.
    pub helo: HeloConfig,
    /// Valid recipients.
    pub recipients: RecipientsConfig,
    /// Greylisting.
    pub greylist: GreylistConfig,
    /// SPF, DKIM, DMARC, ARC.
    pub sender_auth: AuthConfig,
    /// rspamd.
    pub rspamd: RspamdConfig,
    /// SpamAssassin's spamd.
    pub spamd: SpamdConfig,
    /// ClamAV's clamd.
    pub clamav: ClamavConfig,
    /// Named profiles: the checks each runs. `default` is the enabled checks unless given.
    pub profiles: BTreeMap<String, Vec<String>>,
    /// Mailpit's chaos triggers (`mailpit.chaos`): in every profile when on.
    pub chaos: bool,
}

impl PolicyConfig {
    /// The checks of the `default` profile when it is not configured: the enabled ones.
    pub fn enabled_checks(&self) -> Vec<String> {
        CHECKS
            .iter()
            .filter(|e| (e.enabled)(self))
            .map(|e| e.name.to_string())
            .collect()
    }

    /// The checks of profile `name`, or `None` when there is no such profile.
    /// With `chaos` on, every profile has the chaos triggers (Mailpit's apply to all mail).
    pub fn profile(&self, name: &str) -> Option<Vec<String>> {
        let mut checks = match self.profiles.get(name) {
            Some(checks) => checks.clone(),
            None if name == DEFAULT_PROFILE => self.enabled_checks(),
            None => return None,
        };
        for c in ["chaos_sender", "chaos_recipient"] {
            if self.chaos && !checks.iter().any(|x| x == c) {
                checks.push(c.to_string());
            }
        }
        Some(checks)
    }
}

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
