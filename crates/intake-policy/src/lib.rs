//! Intake's policy checks, each an [`intake_core::Check`] for one stage of the session.
//!
//! | check | stage | module |
//! |---|---|---|
//! | `chaos_sender`, `chaos_recipient` | MAIL, RCPT | [`chaos`]: Mailpit's chaos triggers (`mailpit.chaos`) |
//! | `dnsbl` | connect | [`dnsbl`]: DNS block- and allowlists, postscreen-style weights |
//! | `helo` | HELO | [`helo`]: refuse non-FQDN or bare-IP names |
//! | `recipients` | RCPT | [`recipients`]: valid recipients (config, file, store), `550 5.1.1` |
//! | `greylist` | RCPT | [`greylist`]: defer a new (network, sender, recipient) triplet |
//! | `sender_auth` | end of data | [`auth`]: SPF, DKIM, DMARC, ARC; `Authentication-Results:` |
//! | `rspamd` | end of data | [`rspamd`]: rspamd's `/checkv2` action |
//! | `spamd` | end of data | [`spamd`]: SpamAssassin's score, by our thresholds |
//!
//! The DNS checks share one caching resolver ([`dns`]). Which checks a listener runs is its
//! *profile* ([`Profiles`]): a named list of checks (`[policy.profiles.mx] checks = [..]`);
//! the default listener uses `default`, which unless configured is every enabled check.
//! Within a stage checks always run in the order of [`CHECKS`], the [`registry`].
//!
//! To add a check: implement `Check` in a module here with a config struct (a field of
//! [`PolicyConfig`]), add one [`registry::CheckEntry`] to [`CHECKS`], and read its settings
//! in `intake-server`'s configuration. A check reads the time through the injected
//! [`intake_core::Clock`] so that its tests need not sleep, keeps durable state in the store
//! (`MailStore` methods), never in files of its own, and takes whatever must outlive a
//! reload (caches, shared records) from [`PolicyShared`], which the wiring builds once.
#![warn(missing_docs)]

pub mod auth;
pub mod chaos;
pub mod clamav;
pub mod dns;
pub mod dnsbl;
mod error;
pub mod greylist;
pub mod helo;
pub mod recipients;
pub mod registry;
#[cfg(test)]
mod reload_tests;
pub mod rspamd;
pub mod settings;
pub mod shared;
pub mod spamd;
pub mod spamd_report;
pub mod spf;
#[cfg(feature = "test-clamd")]
pub mod testclamd;
#[cfg(any(test, feature = "test-dns"))]
pub mod testdns;
#[cfg(feature = "test-spamd")]
pub mod testspamd;
#[cfg(any(feature = "test-clamd", feature = "test-spamd"))]
pub mod testsupport;

use std::collections::HashMap;
use std::sync::Arc;

use intake_core::Pipeline;

pub use auth::{AuthConfig, SenderAuth};
pub use clamav::{Clamav, ClamavAction, ClamavConfig, ClamdAddress};
pub use dns::DnsConfig;
pub use dnsbl::{Dnsbl, DnsblAction, DnsblConfig};
pub use greylist::{Greylist, GreylistConfig};
pub use helo::{HeloCheck, HeloConfig};
pub use recipients::{RecipientExists, RecipientsConfig};
pub use registry::{BuiltCheck, CHECKS, CheckEntry, DEFAULT_PROFILE, PolicyConfig, PolicyError};
pub use rspamd::{Rspamd, RspamdConfig};
pub use shared::PolicyShared;
pub use spamd::{Spamd, SpamdConfig};

/// The pipelines of every profile, by name. Checks are built once and shared.
#[derive(Debug, Default)]
pub struct Profiles {
    pipelines: HashMap<String, Arc<Pipeline>>,
}

impl Profiles {
    /// Builds every configured profile (and `default`), each check once, shared by the
    /// profiles that use it. State that outlives this build (the resolver and its caches,
    /// greylist records) comes from `shared`, so a reload builds again from new settings
    /// and keeps it. Fails on an unknown check name or when a DNS check is wanted and no
    /// resolver can be made.
    pub fn build(cfg: &PolicyConfig, shared: &PolicyShared) -> Result<Profiles, PolicyError> {
        let mut names: Vec<String> = cfg.profiles.keys().cloned().collect();
        if !names.iter().any(|n| n == DEFAULT_PROFILE) {
            names.push(DEFAULT_PROFILE.into());
        }
        let wanted: Vec<(String, Vec<String>)> = names
            .into_iter()
            .map(|n| {
                let checks = cfg.profile(&n).expect("listed above");
                (n, checks)
            })
            .collect();
        for (profile, checks) in &wanted {
            if let Some(bad) = checks.iter().find(|c| registry::find(c).is_none()) {
                return Err(PolicyError::UnknownCheck {
                    profile: profile.clone(),
                    check: bad.clone(),
                    known: registry::known_names(),
                });
            }
        }
        let uses = |c: &str| wanted.iter().any(|(_, cs)| cs.iter().any(|x| x == c));
        let mut built: HashMap<&str, BuiltCheck> = HashMap::new();
        for entry in CHECKS.iter().filter(|e| uses(e.name)) {
            built.insert(entry.name, (entry.build)(cfg, shared)?);
        }
        let mut pipelines = HashMap::new();
        for (profile, checks) in wanted {
            let mut p = Pipeline::new();
            for entry in CHECKS.iter().filter(|e| checks.iter().any(|x| x == e.name)) {
                let b = &built[entry.name];
                p.add(b.check.clone(), b.deadline, b.on_error);
            }
            pipelines.insert(profile, Arc::new(p));
        }
        Ok(Profiles { pipelines })
    }

    /// The pipeline of profile `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Pipeline>> {
        self.pipelines.get(name).cloned()
    }

    /// The pipeline of the `default` profile.
    pub fn default_pipeline(&self) -> Arc<Pipeline> {
        self.get(DEFAULT_PROFILE).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_profile_is_the_enabled_checks_unless_given() {
        let mut cfg = PolicyConfig::default();
        assert_eq!(cfg.profile(DEFAULT_PROFILE).unwrap(), ["recipients"]);
        cfg.greylist.enabled = true;
        cfg.helo.reject_bare_ip = true;
        cfg.rspamd.enabled = true;
        assert_eq!(
            cfg.profile(DEFAULT_PROFILE).unwrap(),
            ["helo", "recipients", "greylist", "rspamd"]
        );
        cfg.profiles
            .insert("gateway".into(), vec!["recipients".into()]);
        assert_eq!(cfg.profile("gateway").unwrap(), ["recipients"]);
        assert!(cfg.profile("nope").is_none());
    }
}
