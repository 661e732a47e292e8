//! Recipient verification against the downstream at RCPT time (`relay.verify_recipients`):
//! the gateway asks the downstream (MAIL, RCPT, RSET over a pooled connection) before it
//! answers the client's RCPT, so a recipient the downstream refuses is refused *per
//! recipient* with the downstream's own words, and the one reply after DATA rarely has to
//! cover a mix of accepted and refused recipients.

use std::sync::Arc;

use async_trait::async_trait;
use intake_core::{Check, CheckCtx, CheckError, Reason, Stage, Verdict};

use super::RelayTarget;

/// A [`Check`] at [`Stage::RcptTo`] that asks the relay's downstream about each recipient.
pub struct RecipientVerify {
    relay: Arc<RelayTarget>,
    /// Recipients this says nothing about (routed to other targets).
    skip: Arc<dyn Fn(&str) -> bool + Send + Sync>,
}

impl RecipientVerify {
    /// Verifies recipients with `relay`'s downstream, except those `skip` says go elsewhere.
    pub fn new(relay: Arc<RelayTarget>, skip: Arc<dyn Fn(&str) -> bool + Send + Sync>) -> Self {
        RecipientVerify { relay, skip }
    }
}

/// The downstream's text, for our reply (its enhanced status dropped: ours is written
/// in front).
fn text(r: &super::client::Response) -> String {
    let t = r.text.trim();
    let t = match t.split_once(' ') {
        Some((first, rest))
            if first.split('.').count() == 3
                && first
                    .split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) =>
        {
            rest
        }
        _ => t,
    };
    format!("Downstream: {t}")
}

#[async_trait]
impl Check for RecipientVerify {
    fn name(&self) -> &'static str {
        "relay_verify"
    }

    fn stage(&self) -> Stage {
        Stage::RcptTo
    }

    async fn check(&self, cx: &CheckCtx) -> Result<Verdict, CheckError> {
        let Some(rcpt) = cx.rcpt_to.as_deref() else {
            return Ok(Verdict::Pass);
        };
        if (self.skip)(rcpt) {
            return Ok(Verdict::Pass);
        }
        let from = cx.mail_from.as_deref().unwrap_or("");
        let (mut client, permit) = self
            .relay
            .checkout()
            .await
            .map_err(|_| CheckError::Backend("no downstream connection".into()))?;
        let r = match client.probe(from, rcpt).await {
            Ok(r) => r,
            Err(e) => return Err(CheckError::Backend(e.to_string())),
        };
        self.relay.checkin(client, permit).await;
        Ok(match r.code {
            200..=299 => Verdict::Pass,
            500..=599 if r.text.starts_with("5.1.1") => Verdict::Reject {
                reason: Reason::UnknownRecipient,
            },
            500..=599 => Verdict::Reject {
                reason: Reason::Policy(text(&r)),
            },
            _ => Verdict::Defer {
                reason: Reason::Policy(text(&r)),
            },
        })
    }
}
