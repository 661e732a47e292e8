//! What a delivery target's constructor gets and gives: the context built once by the
//! wiring, and the built target with its optional recipient verification.

use std::sync::Arc;
use std::time::Duration;

use intake_core::{Check, DeliveryTarget, MailStore};

/// What a target's constructor may use besides its settings: built once by the wiring.
#[derive(Clone)]
pub struct TargetContext {
    /// The store (the `store` target).
    pub store: Arc<dyn MailStore>,
}

/// A recipient's way past verification: true for recipients a verifier says nothing about.
pub type Skip = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// A target's RCPT-time check (the relay's `verify_recipients`): asks the target about each
/// recipient before the client's RCPT is answered.
#[derive(Clone)]
pub struct Verifier {
    /// How long one verification may take (it then defers: `451`).
    pub deadline: Duration,
    /// The check for one listener, told which recipients go elsewhere.
    pub make: Arc<dyn Fn(Skip) -> Arc<dyn Check> + Send + Sync>,
}

/// A built target and what else it offers.
pub struct Built {
    /// The target.
    pub target: Arc<dyn DeliveryTarget>,
    /// Its recipient verification, when configured.
    pub verifier: Option<Verifier>,
}

impl Built {
    /// A target without verification.
    pub fn target(target: Arc<dyn DeliveryTarget>) -> Built {
        Built {
            target,
            verifier: None,
        }
    }
}

/// A target whose section is configured but cannot be set up (an unreadable CA file, say).
#[derive(Debug, thiserror::Error)]
#[error("setting up the {target} target ({keys}): {source}")]
pub struct SetupError {
    /// The target.
    pub target: &'static str,
    /// The settings to look at.
    pub keys: &'static str,
    /// Why.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}
