//! Delivery targets (one instance of each kind, shared by the listeners that use it) and
//! the checks that ask a target (relay recipient verification).

use std::sync::Arc;

use anyhow::Context;
use intake_core::MailStore;

use crate::config::Settings;

/// Delivery targets of these kinds (one instance of each kind, shared by the listeners
/// that use it, so that a relay's connection limit holds for the whole process).
pub(super) struct TargetSet {
    routes: Vec<intake_core::Route>,
    /// The relay itself (for recipient verification).
    relay_target: Option<Arc<intake_smtp::relay::RelayTarget>>,
    store: Arc<dyn intake_core::DeliveryTarget>,
    relay: Option<Arc<dyn intake_core::DeliveryTarget>>,
    webhook: Option<Arc<dyn intake_core::DeliveryTarget>>,
    program: Option<Arc<dyn intake_core::DeliveryTarget>>,
}

impl TargetSet {
    /// The targets of these kinds, with the `[[route]]`s tried first.
    pub(super) fn pick(
        &self,
        kinds: &[crate::config::TargetKind],
    ) -> anyhow::Result<intake_core::Targets> {
        Ok(intake_core::Targets::new(self.list(kinds)?).with_routes(self.routes.clone()))
    }

    fn list(
        &self,
        kinds: &[crate::config::TargetKind],
    ) -> anyhow::Result<Vec<Arc<dyn intake_core::DeliveryTarget>>> {
        use crate::config::TargetKind;
        let mut list = Vec::new();
        for k in kinds {
            let t = match k {
                TargetKind::Store => Some(self.store.clone()),
                TargetKind::Relay => self.relay.clone(),
                TargetKind::Webhook => self.webhook.clone(),
                TargetKind::Program => self.program.clone(),
            };
            list.push(t.with_context(|| format!("delivery target {k:?} is not configured"))?);
        }
        Ok(list)
    }
}

/// The checks of a listener whose targets are `kinds`: the profile's checks, then, with
/// `relay.verify_recipients`, the downstream's word on each recipient that goes to the relay
/// (by `kinds` or a `[[route]]`).
pub(super) fn checks_for(
    settings: &Settings,
    profiles: &intake_policy::Profiles,
    profile: &str,
    targets: &TargetSet,
    kinds: &[crate::config::TargetKind],
) -> anyhow::Result<intake_core::Pipeline> {
    use crate::config::TargetKind;
    // The profile's checks, then (for relayed mail) recipient verification.
    let mut checks = (*profiles
        .get(profile)
        .with_context(|| format!("no policy profile {profile:?} (policy.profiles)"))?)
    .clone();
    let relays = |k: &[TargetKind]| k.contains(&TargetKind::Relay);
    let any_relay = relays(kinds) || settings.routes.iter().any(|r| relays(&r.targets));
    if let (true, true, Some(relay)) = (
        settings.delivery.relay_verify,
        any_relay,
        targets.relay_target.clone(),
    ) {
        let routes: Vec<(intake_smtp::DomainPolicy, bool)> = settings
            .routes
            .iter()
            .map(|r| (r.domains.clone(), relays(&r.targets)))
            .collect();
        let default = relays(kinds);
        let skip = Arc::new(move |rcpt: &str| {
            let domain = rcpt.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            let relayed = routes
                .iter()
                .find(|(d, _)| d.accepts(domain))
                .map(|(_, r)| *r)
                .unwrap_or(default);
            !relayed
        });
        let c = settings
            .delivery
            .relay
            .as_ref()
            .expect("a relay target has settings");
        let deadline = c.connect_timeout + c.command_timeout * 4;
        checks.add(
            Arc::new(intake_smtp::relay::RecipientVerify::new(relay, skip)),
            deadline,
            intake_core::OnError::Defer,
        );
    }
    Ok(checks)
}

/// Every configured delivery target.
pub(super) fn target_set(
    settings: &Settings,
    store: &Arc<dyn MailStore>,
) -> anyhow::Result<TargetSet> {
    let mut set = TargetSet {
        routes: Vec::new(),
        relay_target: None,
        store: Arc::new(intake_core::StoreTarget(store.clone())),
        relay: None,
        webhook: None,
        program: None,
    };
    let d = &settings.delivery;
    if let Some(cfg) = d.relay.clone() {
        let server = cfg.server.clone();
        let relay = Arc::new(
            intake_smtp::relay::RelayTarget::new(cfg)
                .with_context(|| format!("setting up the relay to {server} (relay.tls_ca)"))?,
        );
        set.relay_target = Some(relay.clone());
        set.relay = Some(relay);
    }
    if let Some(cfg) = d.webhook.clone() {
        set.webhook = Some(Arc::new(
            intake_smtp::webhook::WebhookTarget::new(cfg)
                .context("setting up the webhook (webhook.url, webhook.tls_ca)")?,
        ));
    }
    if let Some(cfg) = d.program.clone() {
        set.program = Some(Arc::new(intake_smtp::program::ProgramTarget::new(cfg)));
    }
    for r in &settings.routes {
        let domains = r.domains.clone();
        set.routes.push(intake_core::Route {
            matches: Arc::new(move |d: &str| domains.accepts(d)),
            targets: set.list(&r.targets)?,
        });
    }
    Ok(set)
}
