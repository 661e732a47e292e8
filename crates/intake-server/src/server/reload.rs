//! SIGHUP: the configuration read again and applied to every SMTP listener for new
//! connections, over the same live objects. A reload swaps settings, never counters: the
//! per-client limits, the failed-login counts, the greylist state, the targets and the store
//! are the ones built at start; the caps and the failed-login limits are replaced over the
//! counts already there. What is applied and what needs a restart is decided, for every
//! setting, in `changes.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::changes::changes;
use super::listeners::{self, Shared};
use super::policy::{login_limits, policy_profiles};
use crate::config::Settings;

/// Applies a new configuration to the running listeners.
pub struct Reloader {
    /// What the checks keep across reloads (greylist records, resolver, caches).
    pub(super) policy: Arc<intake_policy::PolicyShared>,
    pub(super) shared: Shared,
    /// The failed-login limiter of SMTP AUTH (its limits follow `[auth]`).
    pub(super) logins: Arc<intake_core::LoginLimiter>,
    /// Each running listener's live settings, by name and configured address.
    pub(super) live: Vec<((String, SocketAddr), Arc<intake_smtp::LiveConfig>)>,
    /// The settings the process started with (what a restart would change).
    pub(super) started: Settings,
    /// The settings in force (the last reload's).
    pub(super) current: Mutex<Settings>,
}

impl Reloader {
    /// Applies `new` (already validated) to every listener: new sessions take it, sessions
    /// already open keep theirs. Logs what changed and what needs a restart
    /// ([`changes`]: every setting is on one side or the other).
    pub fn apply(&self, new: &Settings) -> anyhow::Result<()> {
        // The checks are built again from the new settings (a resolver that cannot be made
        // refuses the reload; the old checks stay).
        let profiles = policy_profiles(new, &self.policy)?;
        let started = listeners::specs(&self.started);
        let mut updates = Vec::new();
        for mut spec in listeners::specs(new) {
            let key = listeners::key(&spec);
            let Some((_, live)) = self.live.iter().find(|(k, _)| *k == key) else {
                // A new listener: named by `changes` as needing a restart.
                continue;
            };
            // A listener's targets are picked once, when it starts: its recipient checks
            // keep asking the same ones until a restart.
            if let Some(s) = started.iter().find(|s| listeners::key(s) == key) {
                spec.targets = s.targets.clone();
            }
            let svc = listeners::service(new, &spec, &self.shared, &profiles)?;
            updates.push((live.clone(), svc.cfg));
        }
        for (live, cfg) in updates {
            live.set(cfg);
        }
        // The checks were built with or without chaos; the API and AUTH follow.
        self.policy.chaos.set_enabled(new.policy.chaos);
        // The same counters under the new caps, rates and failed-login limits: nothing
        // starts again.
        self.shared
            .limits
            .reconfigure(new.limits, new.limits_exempt.clone());
        self.logins.reconfigure(login_limits(new));
        let mut current = self.current.lock().expect("reload lock");
        let applied = changes(&current, new).applied;
        let restart = changes(&self.started, new).restart;
        if !applied.is_empty() {
            tracing::info!(changed = %applied.join(", "),
                "SIGHUP: applied to new connections (limits to the counts already there)");
        } else if restart.is_empty() {
            tracing::info!("SIGHUP: configuration read again; nothing changed");
        }
        for key in &restart {
            tracing::warn!(key = %key, "SIGHUP: changed; needs a restart");
        }
        *current = new.clone();
        Ok(())
    }
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
