//! What a session waits for, behind one seam: policy checks, delivery, AUTH.
//!
//! The driver ([`crate::conn`]) carries out each [`crate::session::Effect`] through an
//! [`Effects`] and enforces the deadlines (`smtp.deliver_timeout` for a delivery, the
//! command timeout for a login); checks keep their own deadlines in the pipeline.
//! Production uses [`LiveEffects`] (the listener's checks, targets and authenticator);
//! driver tests use small fakes of the trait.

use std::sync::Arc;

use async_trait::async_trait;
use intake_core::{
    AuthResult, Authenticator, CheckCtx, Credentials, DeliveryReport, Handoff, Pipeline,
    RcptOutcome, Targets, Verdict,
};

/// The work a session asks the driver for.
#[async_trait]
pub trait Effects: Send + Sync {
    /// Runs the checks of `cx.stage` and returns their verdicts (stopping at the first
    /// deferral or rejection; a check that could not decide is already a pass or a
    /// deferral).
    async fn check(&self, cx: &CheckCtx) -> Vec<Verdict>;

    /// Hands a message to the delivery targets: one outcome per envelope recipient.
    async fn deliver(&self, msg: &Handoff) -> DeliveryReport;

    /// What a delivery that missed its deadline counts as: a temporary failure for each
    /// of `rcpts` recipients.
    fn delivery_timed_out(&self, rcpts: usize) -> DeliveryReport {
        DeliveryReport::all(rcpts, RcptOutcome::TEMP, false)
    }

    /// Checks a login.
    async fn authenticate(&self, creds: &Credentials) -> AuthResult;

    /// Where deliveries go, for log lines.
    fn targets(&self) -> Vec<&'static str> {
        Vec::new()
    }
}

/// The production [`Effects`]: a listener's check pipeline, delivery targets and
/// authenticator.
#[derive(Clone)]
pub struct LiveEffects {
    /// The policy checks.
    pub checks: Arc<Pipeline>,
    /// Where accepted messages go.
    pub targets: Targets,
    /// Checks logins (`None`: AUTH is not offered, and a login attempt is "unavailable").
    pub authenticator: Option<Arc<dyn Authenticator>>,
}

#[async_trait]
impl Effects for LiveEffects {
    async fn check(&self, cx: &CheckCtx) -> Vec<Verdict> {
        Box::pin(self.checks.run(cx)).await
    }

    async fn deliver(&self, msg: &Handoff) -> DeliveryReport {
        self.targets.deliver(msg).await
    }

    fn delivery_timed_out(&self, rcpts: usize) -> DeliveryReport {
        DeliveryReport::all(rcpts, RcptOutcome::TEMP, self.targets.has_store())
    }

    async fn authenticate(&self, creds: &Credentials) -> AuthResult {
        match &self.authenticator {
            Some(a) => a.authenticate(creds).await,
            None => AuthResult::Unavailable,
        }
    }

    fn targets(&self) -> Vec<&'static str> {
        self.targets.names()
    }
}
