//! Delivery targets (one instance of each configured kind, shared by the listeners that
//! use it, so that a relay's connection limit holds for the whole process) and the checks
//! that ask a target (the relay's recipient verification).

use std::sync::Arc;

use anyhow::Context;
use intake_core::MailStore;
use intake_delivery::TargetSet;

use crate::config::Settings;

/// The checks of a listener whose targets are `names`: its profile's, then each target's
/// recipient verification (the relay's `verify_recipients`) for the recipients that go there
/// (by `names` or a `[[route]]`).
pub(super) fn checks_for(
    profiles: &intake_policy::Profiles,
    profile: &str,
    targets: &TargetSet,
    names: &[crate::config::TargetName],
) -> anyhow::Result<intake_core::Pipeline> {
    let mut checks = (*profiles
        .get(profile)
        .with_context(|| format!("no policy profile {profile:?} (policy.profiles)"))?)
    .clone();
    targets.add_recipient_checks(&mut checks, names);
    Ok(checks)
}

/// Every configured delivery target and the `[[route]]`s.
pub(super) fn target_set(
    settings: &Settings,
    store: &Arc<dyn MailStore>,
) -> anyhow::Result<TargetSet> {
    let routes = settings
        .routes
        .iter()
        .map(|r| {
            let domains = r.domains.clone();
            intake_delivery::RouteSpec {
                matches: Arc::new(move |d: &str| domains.accepts(d)),
                targets: r.targets.clone(),
            }
        })
        .collect();
    let cx = intake_delivery::TargetContext {
        store: store.clone(),
    };
    Ok(TargetSet::build(&settings.delivery.sections, &cx, routes)?)
}
