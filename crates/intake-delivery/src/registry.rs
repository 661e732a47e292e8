//! The registry of delivery targets: one [`TargetEntry`] per kind, by the name used in the
//! configuration (`delivery.targets`, a `[[listener]]`'s or `[[route]]`'s `targets`, and
//! the target's own section).
//!
//! Adding a target: its module (a [`DeliveryTarget`] and a `build` function reading its
//! section of [`TargetsConfig`]), one line in [`TARGETS`] and its field in
//! [`TargetsConfig`], and its section read in the server's configuration.

use std::sync::Arc;

use intake_core::{DeliveryTarget, OnError, Pipeline, StoreTarget, Targets};

pub use crate::target::{Built, SetupError, Skip, TargetContext, Verifier};

use crate::program::ProgramConfig;
use crate::relay::RelayConfig;
use crate::webhook::WebhookConfig;

/// Every target kind, in the order they are listed in errors and docs.
pub const TARGETS: &[TargetEntry] = &[
    TargetEntry {
        name: "store",
        configured: |_| true,
        build: |_, cx| Ok(Built::target(Arc::new(StoreTarget(cx.store.clone())))),
    },
    TargetEntry {
        name: "relay",
        configured: |c| c.relay.is_some(),
        build: |c, cx| Ok(crate::relay::build(section(&c.relay, "relay")?, cx)?),
    },
    TargetEntry {
        name: "webhook",
        configured: |c| c.webhook.is_some(),
        build: |c, cx| Ok(crate::webhook::build(section(&c.webhook, "webhook")?, cx)?),
    },
    TargetEntry {
        name: "program",
        configured: |c| c.program.is_some(),
        build: |c, cx| Ok(crate::program::build(section(&c.program, "program")?, cx)?),
    },
];

/// A target's section, or why it cannot be built without one.
fn section<'a, T>(c: &'a Option<T>, name: &str) -> Result<&'a T, TargetError> {
    c.as_ref().ok_or_else(|| {
        TargetError::NotConfigured(TargetName::parse(name).expect("a registered name"))
    })
}

/// One kind of delivery target.
pub struct TargetEntry {
    /// Its name in the configuration.
    pub name: &'static str,
    /// Whether its section is configured (a listener or route may only name it then).
    pub configured: fn(&TargetsConfig) -> bool,
    /// Builds it from its section; called once per process, only when configured.
    pub build: fn(&TargetsConfig, &TargetContext) -> Result<Built, TargetError>,
}

/// The settings of every target's section; `None`: the section is not configured.
#[derive(Debug, Clone, Default)]
pub struct TargetsConfig {
    /// `[relay]`: a downstream SMTP/LMTP server.
    pub relay: Option<RelayConfig>,
    /// `[webhook]`: an HTTP POST.
    pub webhook: Option<WebhookConfig>,
    /// `[program]`: a command, the message on its standard input.
    pub program: Option<ProgramConfig>,
}

/// A target kind's name, known to the registry.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TargetName(&'static str);

impl TargetName {
    /// The local store.
    pub const STORE: TargetName = TargetName("store");

    /// The registered name `name`, or `None` when no target is called that.
    pub fn parse(name: &str) -> Option<TargetName> {
        TARGETS
            .iter()
            .find(|e| e.name == name)
            .map(|e| TargetName(e.name))
    }

    /// The name.
    pub fn as_str(self) -> &'static str {
        self.0
    }

    /// Whether its section is configured in `cfg`.
    pub fn is_configured(self, cfg: &TargetsConfig) -> bool {
        (self.entry().configured)(cfg)
    }

    fn entry(self) -> &'static TargetEntry {
        TARGETS
            .iter()
            .find(|e| e.name == self.0)
            .expect("made from the registry")
    }
}

impl std::fmt::Debug for TargetName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::fmt::Display for TargetName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl PartialEq<&str> for TargetName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// Every registered name, quoted and separated by commas (for error messages).
pub fn known_names() -> String {
    TARGETS
        .iter()
        .map(|e| format!("{:?}", e.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why the targets could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// A name no target has.
    #[error("{0:?} is not a delivery target (known: {known})", known = known_names())]
    Unknown(String),
    /// A target named without its section.
    #[error("delivery target {0} is not configured (its section [{0}] is missing)")]
    NotConfigured(TargetName),
    /// A target that could not be built (an unreadable CA file, say).
    #[error(transparent)]
    Setup(#[from] SetupError),
}

/// Recipients whose domain `matches` go to `targets` instead of a listener's own (the
/// first route that matches).
#[derive(Clone)]
pub struct RouteSpec {
    /// Whether a recipient's domain is routed here.
    pub matches: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    /// Where its recipients' mail goes.
    pub targets: Vec<TargetName>,
}

/// Every configured target, built once and shared by the listeners that use it (so that a
/// relay's connection limit holds for the whole process), and the routes.
pub struct TargetSet {
    built: Vec<(TargetName, Built)>,
    routes: Vec<RouteSpec>,
    built_routes: Vec<intake_core::Route>,
}

impl TargetSet {
    /// Builds every target whose section is configured, and the routes.
    pub fn build(
        cfg: &TargetsConfig,
        cx: &TargetContext,
        routes: Vec<RouteSpec>,
    ) -> Result<TargetSet, TargetError> {
        let mut set = TargetSet {
            built: Vec::new(),
            routes: Vec::new(),
            built_routes: Vec::new(),
        };
        for entry in TARGETS.iter().filter(|e| (e.configured)(cfg)) {
            set.built
                .push((TargetName(entry.name), (entry.build)(cfg, cx)?));
        }
        for r in &routes {
            set.built_routes.push(intake_core::Route {
                matches: r.matches.clone(),
                targets: set.list(&r.targets)?,
            });
        }
        set.routes = routes;
        Ok(set)
    }

    /// The targets `names`, in that order, with the routes tried first: one listener's.
    pub fn pick(&self, names: &[TargetName]) -> Result<Targets, TargetError> {
        Ok(Targets::new(self.list(names)?).with_routes(self.built_routes.clone()))
    }

    /// The one target `name`, if configured (the Mailpit API releases through the relay).
    pub fn target(&self, name: &str) -> Option<Arc<dyn DeliveryTarget>> {
        let n = TargetName::parse(name)?;
        self.list(&[n]).ok()?.pop()
    }

    fn list(&self, names: &[TargetName]) -> Result<Vec<Arc<dyn DeliveryTarget>>, TargetError> {
        names
            .iter()
            .map(|n| {
                self.built
                    .iter()
                    .find(|(b, _)| b == n)
                    .map(|(_, b)| b.target.clone())
                    .ok_or(TargetError::NotConfigured(*n))
            })
            .collect()
    }

    /// Adds to `checks` the recipient verification of every target a listener whose targets
    /// are `names` may hand a recipient to (by `names` or a route). Each verifier asks
    /// only about the recipients that go to its target, and defers when it cannot tell.
    pub fn add_recipient_checks(&self, checks: &mut Pipeline, names: &[TargetName]) {
        for (name, built) in &self.built {
            let Some(v) = &built.verifier else { continue };
            let name = *name;
            let used =
                names.contains(&name) || self.routes.iter().any(|r| r.targets.contains(&name));
            if !used {
                continue;
            }
            let routes = self.routes.clone();
            let default = names.contains(&name);
            let skip: Skip = Arc::new(move |rcpt: &str| {
                let domain = rcpt.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
                let goes_there = routes
                    .iter()
                    .find(|r| (r.matches)(domain))
                    .map(|r| r.targets.contains(&name))
                    .unwrap_or(default);
                !goes_there
            });
            checks.add((v.make)(skip), v.deadline, OnError::Defer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_registry() {
        assert_eq!(TargetName::parse("relay").unwrap(), "relay");
        assert_eq!(TargetName::parse("store"), Some(TargetName::STORE));
        assert!(TargetName::parse("fax").is_none());
        assert_eq!(
            known_names(),
            "\"store\", \"relay\", \"webhook\", \"program\""
        );
        let cfg = TargetsConfig::default();
        assert!(TargetName::STORE.is_configured(&cfg));
        assert!(!TargetName::parse("webhook").unwrap().is_configured(&cfg));
    }

    #[test]
    fn a_listener_may_only_pick_what_is_configured() {
        let cx = TargetContext {
            store: intake_store::memory::store(),
        };
        let set = TargetSet::build(&TargetsConfig::default(), &cx, Vec::new()).unwrap();
        assert!(set.pick(&[TargetName::STORE]).is_ok());
        let relay = TargetName::parse("relay").unwrap();
        let e = set.pick(&[relay]).err().unwrap();
        assert_eq!(
            e.to_string(),
            "delivery target relay is not configured (its section [relay] is missing)"
        );
    }
}
