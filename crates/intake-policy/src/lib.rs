//! Intake's policy checks, each an [`intake_core::Check`] for one stage of the session.
//!
//! | check | stage | module |
//! |---|---|---|
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
//! Within a stage checks always run in the order of [`CHECKS`].
//!
//! To add a check: implement `Check` in a module here, give it a config struct, add it to
//! [`CHECKS`] and [`Profiles::build`], and read its settings in `intake-server`'s
//! `settings.rs`. A check reads the time through the injected [`intake_core::Clock`] so
//! that its tests need not sleep, and keeps durable state in the store (through the trait
//! of the capability it needs: `RecipientTable`, `PolicyState`), never in files of its own.
#![warn(missing_docs)]

pub mod auth;
pub mod dns;
pub mod dnsbl;
pub mod greylist;
pub mod helo;
pub mod recipients;
pub mod rspamd;
pub mod spamd;
#[cfg(any(test, feature = "test-dns"))]
pub mod testdns;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use intake_core::{Clock, GreyState, Pipeline, PolicyState, RecipientTable};

pub use auth::{AuthConfig, SenderAuth};
pub use dns::DnsConfig;
pub use dnsbl::{Dnsbl, DnsblAction, DnsblConfig};
pub use greylist::{Greylist, GreylistConfig};
pub use helo::{HeloCheck, HeloConfig};
pub use recipients::{RecipientExists, RecipientsConfig};
pub use rspamd::{Rspamd, RspamdConfig};
pub use spamd::{Spamd, SpamdConfig};

/// Every check's name, in the order checks of one stage run.
pub const CHECKS: &[&str] = &[
    "dnsbl",
    "helo",
    "recipients",
    "greylist",
    "sender_auth",
    "rspamd",
    "spamd",
];

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
    /// Named profiles: the checks each runs. `default` is the enabled checks unless given.
    pub profiles: BTreeMap<String, Vec<String>>,
}

impl PolicyConfig {
    /// The checks of the `default` profile when it is not configured: the enabled ones.
    pub fn enabled_checks(&self) -> Vec<String> {
        let on = [
            self.dnsbl.enabled && !self.dnsbl.zones.is_empty(),
            self.helo.enabled(),
            true, // recipients: accepts everyone until a source lists someone
            self.greylist.enabled,
            self.sender_auth.enabled,
            self.rspamd.enabled,
            self.spamd.enabled,
        ];
        CHECKS
            .iter()
            .zip(on)
            .filter(|(_, on)| *on)
            .map(|(c, _)| c.to_string())
            .collect()
    }

    /// The checks of profile `name`, or `None` when there is no such profile.
    pub fn profile(&self, name: &str) -> Option<Vec<String>> {
        match self.profiles.get(name) {
            Some(checks) => Some(checks.clone()),
            None if name == DEFAULT_PROFILE => Some(self.enabled_checks()),
            None => None,
        }
    }
}

/// A check with its deadline and what to do when it cannot decide.
type Built = (
    Arc<dyn intake_core::Check>,
    std::time::Duration,
    intake_core::OnError,
);

/// The pipelines of every profile, by name. Checks are built once and shared.
#[derive(Debug, Default)]
pub struct Profiles {
    pipelines: HashMap<String, Arc<Pipeline>>,
}

impl Profiles {
    /// Builds every configured profile (and `default`). Fails on an unknown check name or
    /// when a DNS check is wanted and no resolver can be made. The recipient check reads
    /// the store's table in `recipients`; greylisting keeps its records in `state`.
    pub fn build(
        cfg: &PolicyConfig,
        recipients: Arc<dyn RecipientTable>,
        state: Arc<dyn PolicyState>,
        clock: Arc<dyn Clock>,
    ) -> Result<Profiles, String> {
        let grey = Arc::new(intake_core::StoreGreyState(state));
        Profiles::build_with(cfg, recipients, grey, clock)
    }

    /// As [`Profiles::build`], with greylist records in `grey` (Redis, for a cluster).
    pub fn build_with(
        cfg: &PolicyConfig,
        recipients: Arc<dyn RecipientTable>,
        grey: Arc<dyn GreyState>,
        clock: Arc<dyn Clock>,
    ) -> Result<Profiles, String> {
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
            if let Some(bad) = checks.iter().find(|c| !CHECKS.contains(&c.as_str())) {
                return Err(format!(
                    "policy.profiles.{profile}: unknown check {bad:?} (known: {})",
                    CHECKS.join(", ")
                ));
            }
        }
        let uses = |c: &str| wanted.iter().any(|(_, cs)| cs.iter().any(|x| x == c));
        let dns = if uses("dnsbl") || uses("sender_auth") {
            Some(dns::resolver(&cfg.dns)?)
        } else {
            None
        };
        // mail-auth's parsed-record caches, only when sender authentication runs.
        let caches = uses("sender_auth").then(|| Arc::new(dns::Caches::new(cfg.dns.cache_size)));
        // One instance of each check, shared by the profiles that use it.
        let mut built: HashMap<&str, Built> = HashMap::new();
        for name in CHECKS.iter().copied().filter(|c| uses(c)) {
            let entry: Built = match name {
                "dnsbl" => (
                    Arc::new(Dnsbl::new(cfg.dnsbl.clone(), dns.clone().expect("built"))),
                    cfg.dnsbl.timeout,
                    cfg.dnsbl.on_error,
                ),
                "helo" => (
                    Arc::new(HeloCheck::new(cfg.helo.clone())),
                    std::time::Duration::from_secs(1),
                    intake_core::OnError::FailOpen,
                ),
                "recipients" => (
                    Arc::new(RecipientExists::new(&cfg.recipients, recipients.clone())),
                    cfg.recipients.timeout,
                    cfg.recipients.on_error,
                ),
                "greylist" => (
                    Arc::new(Greylist::with_state(
                        cfg.greylist.clone(),
                        grey.clone(),
                        clock.clone(),
                    )),
                    cfg.greylist.timeout,
                    cfg.greylist.on_error,
                ),
                "sender_auth" => (
                    Arc::new(SenderAuth::new(
                        cfg.sender_auth.clone(),
                        dns.clone().expect("built"),
                        caches.clone().expect("built"),
                    )),
                    cfg.sender_auth.timeout,
                    cfg.sender_auth.on_error,
                ),
                "rspamd" => (
                    Arc::new(Rspamd::new(cfg.rspamd.clone())),
                    cfg.rspamd.timeout,
                    cfg.rspamd.on_error,
                ),
                "spamd" => (
                    Arc::new(Spamd::new(cfg.spamd.clone())),
                    cfg.spamd.timeout,
                    cfg.spamd.on_error,
                ),
                _ => unreachable!("CHECKS lists every check"),
            };
            built.insert(name, entry);
        }
        let mut pipelines = HashMap::new();
        for (profile, checks) in wanted {
            let mut p = Pipeline::new();
            for name in CHECKS.iter().filter(|c| checks.iter().any(|x| x == **c)) {
                let (check, deadline, on_error) = &built[name];
                p.add(check.clone(), *deadline, *on_error);
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

/// The checks of the `default` profile (see [`Profiles::build`]).
pub fn pipeline(
    cfg: &PolicyConfig,
    recipients: Arc<dyn RecipientTable>,
    state: Arc<dyn PolicyState>,
    clock: Arc<dyn Clock>,
) -> Result<Arc<Pipeline>, String> {
    Profiles::build(cfg, recipients, state, clock).map(|p| p.default_pipeline())
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
