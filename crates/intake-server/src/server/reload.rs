//! SIGHUP: the configuration read again and applied to every SMTP listener for new
//! connections, over the same live objects. A reload swaps settings, never counters: the
//! per-client limits, the failed-login counts, the greylist state, the targets and the store
//! are the ones built at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::listeners::{self, Shared};
use super::policy::policy_profiles;
use crate::config::Settings;

/// Applies a new configuration to the running listeners.
pub struct Reloader {
    /// What the checks keep across reloads (greylist records, resolver, caches).
    pub(super) policy: Arc<intake_policy::PolicyShared>,
    pub(super) shared: Shared,
    /// Each running listener's live settings, by name and configured address.
    pub(super) live: Vec<((String, SocketAddr), Arc<intake_smtp::LiveConfig>)>,
    /// The settings the process started with (what a restart would change).
    pub(super) started: Settings,
    /// The settings in force (the last reload's).
    pub(super) current: Mutex<Settings>,
}

impl Reloader {
    /// Applies `new` (already validated) to every listener: new sessions take it, sessions
    /// already open keep theirs. Logs what changed and what needs a restart.
    pub fn apply(&self, new: &Settings) -> anyhow::Result<()> {
        // The checks are built again from the new settings (a resolver that cannot be made
        // refuses the reload; the old checks stay).
        let profiles = policy_profiles(new, &self.policy)?;
        let mut updates = Vec::new();
        for spec in listeners::specs(new) {
            let key = listeners::key(&spec);
            match self.live.iter().find(|(k, _)| *k == key) {
                Some((_, live)) => {
                    let svc = listeners::service(new, &spec, &self.shared, &profiles)?;
                    updates.push((live.clone(), svc.cfg));
                }
                None => tracing::warn!(listener = %spec.name, address = %spec.address,
                    "SIGHUP: a new listener starts after a restart"),
            }
        }
        for ((name, _), _) in &self.live {
            if !listeners::specs(new).iter().any(|s| &s.name == name) {
                tracing::warn!(listener = %name,
                    "SIGHUP: listener removed from the configuration; it runs until a restart");
            }
        }
        for (live, cfg) in updates {
            live.set(cfg);
        }
        // The checks were built with or without chaos; the API and AUTH follow.
        self.policy.chaos.set_enabled(new.policy.chaos);
        // The same counters under the new caps and rates: nothing starts again.
        let limits = self
            .shared
            .limits
            .reconfigure(new.limits, new.limits_exempt.clone());
        let mut current = self.current.lock().expect("reload lock");
        let mut applied = changed_sections(&current, new);
        applied.extend(limits);
        applied.dedup();
        if applied.is_empty() {
            tracing::info!("SIGHUP: configuration read again; nothing changed");
        } else {
            tracing::info!(changed = %applied.join(", "),
                "SIGHUP: applied to new connections (limits to the counts already there)");
        }
        for key in restart_needed(&self.started, new) {
            tracing::warn!(
                key,
                "SIGHUP: this setting changed and takes effect after a restart"
            );
        }
        *current = new.clone();
        Ok(())
    }
}

/// The sections a reload applies that differ between `old` and `new`.
fn changed_sections(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut differs = |name, a: String, b: String| {
        if a != b {
            out.push(name);
        }
    };
    differs("smtp", format!("{:?}", old.smtp), format!("{:?}", new.smtp));
    differs(
        "policy checks",
        format!("{:?}", old.policy),
        format!("{:?}", new.policy),
    );
    differs("auth", format!("{:?}", old.auth), format!("{:?}", new.auth));
    differs(
        "listener settings",
        format!("{:?}", old.listeners),
        format!("{:?}", new.listeners),
    );
    out
}

/// Settings a reload does not apply, by key.
fn restart_needed(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut differs = |key, a: String, b: String| {
        if a != b {
            keys.push(key);
        }
    };
    let pairs: [(&'static str, String, String); 10] = [
        (
            "smtp.listen",
            format!("{:?}", old.smtp_listen),
            format!("{:?}", new.smtp_listen),
        ),
        (
            "smtp.tls_listen",
            format!("{:?}", old.smtps_listen),
            format!("{:?}", new.smtps_listen),
        ),
        (
            "smtp.max_connections",
            old.smtp.max_connections.to_string(),
            new.smtp.max_connections.to_string(),
        ),
        (
            "store",
            format!("{:?}", old.store),
            format!("{:?}", new.store),
        ),
        // mailpit.chaos is applied by a reload; the rest of [http] and [mailpit] is not.
        (
            "http",
            format!("{:?}", http_but_chaos(old)),
            format!("{:?}", http_but_chaos(new)),
        ),
        (
            "delivery",
            format!("{:?}", old.delivery),
            format!("{:?}", new.delivery),
        ),
        (
            "listener",
            format!(
                "{:?}",
                old.listeners
                    .iter()
                    .map(|l| (&l.name, l.address))
                    .collect::<Vec<_>>()
            ),
            format!(
                "{:?}",
                new.listeners
                    .iter()
                    .map(|l| (&l.name, l.address))
                    .collect::<Vec<_>>()
            ),
        ),
        (
            "tls",
            format!("{:?}", old.tls_files),
            format!("{:?}", new.tls_files),
        ),
        ("run", format!("{:?}", old.run), format!("{:?}", new.run)),
        (
            "cluster",
            format!("{:?}", old.cluster),
            format!("{:?}", new.cluster),
        ),
    ];
    for (key, a, b) in pairs {
        differs(key, a, b);
    }
    keys
}

/// Reads the configuration again on every SIGHUP (the file and the environment) and the TLS
/// certificates, and applies it; a configuration with errors is refused and logged, and the
/// old one stays in force. Each outcome is counted in `intake_config_reloads_total{result}`.
pub fn on_sighup(
    reloader: Arc<Reloader>,
    certs: Option<Arc<intake_smtp::tls::TlsCerts>>,
    config: Option<PathBuf>,
) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            if let Some(certs) = &certs {
                match certs.reload() {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                    Err(e) => tracing::error!(error = %e,
                        "SIGHUP: TLS certificate not reloaded; the old one stays in use"),
                }
            }
            let result = match crate::cli::load_settings(config.as_deref()) {
                Err(errors) => {
                    for e in &errors {
                        tracing::error!("SIGHUP: config error: {e}");
                    }
                    tracing::error!(
                        errors = errors.len(),
                        "SIGHUP: configuration refused; the old one stays in force"
                    );
                    "refused"
                }
                Ok(new) => match reloader.apply(&new) {
                    Ok(()) => "applied",
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"),
                            "SIGHUP: configuration not applied; the old one stays in force");
                        "refused"
                    }
                },
            };
            metrics::counter!("intake_config_reloads_total", "result" => result).increment(1);
        }
    });
}

/// `[http]` and `[mailpit]` without what a reload applies (`mailpit.chaos`).
fn http_but_chaos(s: &Settings) -> intake_http::settings::HttpSettings {
    intake_http::settings::HttpSettings {
        mailpit_chaos: false,
        ..s.http.clone()
    }
}
