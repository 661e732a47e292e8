//! The policy checks of every profile and the one authenticator of the process.

use std::sync::Arc;

use anyhow::Context;

use crate::config::Settings;

/// The authenticator of Intake's own users (from the store), shared by every listener so
/// that failed logins count wherever they happen.
pub(super) fn authenticator(
    users: Arc<dyn intake_core::UserDirectory>,
    limiter: Arc<intake_core::LoginLimiter>,
) -> Arc<dyn intake_core::Authenticator> {
    Arc::new(intake_core::StoreAuthenticator::new(users, limiter))
}

/// The one failed-login limiter of SMTP AUTH, whichever the users' source; in a cluster its
/// counts are shared through the cluster's Redis.
pub(super) fn login_limiter(
    settings: &Settings,
    cluster: Option<&Arc<intake_cluster::Cluster>>,
) -> Arc<intake_core::LoginLimiter> {
    let limiter = Arc::new(intake_core::LoginLimiter::new(login_limits(settings)));
    if let Some(c) = cluster {
        c.share_logins("smtp", limiter.clone());
    }
    limiter
}

/// The failed-login limits of `[auth]` (a reload hands them to the limiter built at start).
pub(super) fn login_limits(settings: &Settings) -> intake_core::LoginLimits {
    let a = &settings.auth;
    intake_core::LoginLimits::new(a.per_client, a.per_account)
}

/// The `[directory]` (LDAP or SQL), opened once: its answers cache and circuit breaker are
/// kept for the life of the process.
pub(super) fn directory(
    settings: &Settings,
) -> anyhow::Result<Option<Arc<dyn intake_directory::Directory>>> {
    let Some(d) = &settings.directory else {
        return Ok(None);
    };
    let guarded = d.open().context("setting up the directory ([directory])")?;
    Ok(Some(Arc::new(guarded)))
}

/// What the policy checks keep across reloads (built once): the store, the greylist
/// records (in a cluster, in its Redis rather than in the store), the resolver and caches.
pub(super) fn policy_shared(
    settings: &Settings,
    store: &Arc<intake_store::Store>,
    cluster: Option<&Arc<intake_cluster::Cluster>>,
) -> Arc<intake_policy::PolicyShared> {
    let grey: Arc<dyn intake_core::GreyState> = match cluster {
        Some(c) => c.grey_state(),
        None => Arc::new(intake_core::StoreGreyState(store.clone())),
    };
    Arc::new(intake_policy::PolicyShared::new(
        store.clone(),
        grey,
        settings.smtp.clock.clone(),
    ))
}

/// Every policy profile's checks, built from the settings with the state in `shared`.
pub(super) fn policy_profiles(
    settings: &Settings,
    shared: &intake_policy::PolicyShared,
) -> anyhow::Result<intake_policy::Profiles> {
    intake_policy::Profiles::build(&settings.policy, shared).context("setting up the policy checks")
}
