//! The policy checks of every profile and the one authenticator of the process.

use std::sync::Arc;

use anyhow::Context;
use intake_core::MailStore;

use crate::config::Settings;

/// The one authenticator of the process (users from the store), shared by every listener
/// so that failed logins count wherever they happen.
pub(super) fn authenticator(
    settings: &Settings,
    store: &Arc<dyn MailStore>,
) -> Arc<dyn intake_core::Authenticator> {
    let a = &settings.auth;
    Arc::new(intake_core::StoreAuthenticator::new(
        store.clone(),
        a.per_client,
        a.per_account,
    ))
}

/// Every policy profile's checks, built once from the settings (one resolver for all).
/// In a cluster, greylist records are kept in its Redis rather than in the store.
pub(super) fn policy_profiles(
    settings: &Settings,
    store: &Arc<dyn MailStore>,
    cluster: Option<&Arc<intake_cluster::Cluster>>,
) -> anyhow::Result<intake_policy::Profiles> {
    let grey: Arc<dyn intake_core::GreyState> = match cluster {
        Some(c) => c.grey_state(),
        None => Arc::new(intake_core::StoreGreyState(store.clone())),
    };
    intake_policy::Profiles::build_with(
        &settings.policy,
        store.clone(),
        grey,
        settings.smtp.clock.clone(),
    )
    .map_err(anyhow::Error::msg)
    .context("setting up the policy checks")
}
