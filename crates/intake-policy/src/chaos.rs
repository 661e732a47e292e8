//! Mailpit's chaos triggers in the SMTP path ([`intake_core::chaos`]): [`ChaosCheck`] rolls
//! the `sender` trigger at MAIL FROM and the `recipient` trigger at each RCPT TO (first of
//! their stage, so that a fired trigger answers before any other check runs), and
//! [`ChaosAuthenticator`] rolls the `authentication` trigger before a login is checked.
//! Both read the one [`Chaos`] of the process ([`crate::PolicyShared::chaos`]), which the
//! Mailpit API sets; a reload keeps it.

use std::sync::Arc;

use async_trait::async_trait;
use intake_core::{
    AuthResult, Authenticator, Chaos, Check, CheckCtx, CheckError, Credentials, Hook, Reason,
    Stage, Verdict,
};

/// The `sender` (MAIL FROM) or `recipient` (RCPT TO) trigger as a check.
pub struct ChaosCheck {
    chaos: Arc<Chaos>,
    hook: Hook,
}

impl ChaosCheck {
    /// The check of `hook` (`Sender` or `Recipient`).
    pub fn new(chaos: Arc<Chaos>, hook: Hook) -> ChaosCheck {
        ChaosCheck { chaos, hook }
    }
}

#[async_trait]
impl Check for ChaosCheck {
    fn name(&self) -> &'static str {
        match self.hook {
            Hook::Sender => "chaos_sender",
            _ => "chaos_recipient",
        }
    }

    fn stage(&self) -> Stage {
        match self.hook {
            Hook::Sender => Stage::MailFrom,
            _ => Stage::RcptTo,
        }
    }

    async fn check(&self, _cx: &CheckCtx) -> Result<Verdict, CheckError> {
        Ok(match self.chaos.fire(self.hook) {
            None => Verdict::Pass,
            Some(code) if code < 500 => Verdict::Defer {
                reason: Reason::Chaos(code),
            },
            Some(code) => Verdict::Reject {
                reason: Reason::Chaos(code),
            },
        })
    }
}

/// An authenticator that answers the `authentication` trigger's code when it fires, and
/// asks `inner` otherwise.
pub struct ChaosAuthenticator {
    inner: Arc<dyn Authenticator>,
    chaos: Arc<Chaos>,
}

impl ChaosAuthenticator {
    /// `inner` behind the `authentication` trigger of `chaos`.
    pub fn wrap(inner: Arc<dyn Authenticator>, chaos: Arc<Chaos>) -> Arc<dyn Authenticator> {
        Arc::new(ChaosAuthenticator { inner, chaos })
    }
}

#[async_trait]
impl Authenticator for ChaosAuthenticator {
    async fn authenticate(&self, c: &Credentials) -> AuthResult {
        match self.chaos.fire(Hook::Authentication) {
            Some(code) => AuthResult::Chaos(code),
            None => self.inner.authenticate(c).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use intake_core::{Trigger, Triggers};

    #[tokio::test]
    async fn a_fired_trigger_defers_or_rejects_with_its_code() {
        let chaos = Arc::new(Chaos::new(true));
        let cx = CheckCtx::new(Stage::MailFrom, "127.0.0.1:25".parse().unwrap());
        let sender = ChaosCheck::new(chaos.clone(), Hook::Sender);
        let rcpt = ChaosCheck::new(chaos.clone(), Hook::Recipient);
        assert_eq!(sender.check(&cx).await.unwrap(), Verdict::Pass);
        chaos
            .set(Triggers {
                sender: Trigger {
                    code: 421,
                    probability: 100,
                },
                recipient: Trigger {
                    code: 550,
                    probability: 100,
                },
                ..Triggers::default()
            })
            .unwrap();
        assert_eq!(
            sender.check(&cx).await.unwrap(),
            Verdict::Defer {
                reason: Reason::Chaos(421)
            }
        );
        assert_eq!(
            rcpt.check(&cx).await.unwrap(),
            Verdict::Reject {
                reason: Reason::Chaos(550)
            }
        );
        assert_eq!(
            (sender.stage(), rcpt.stage()),
            (Stage::MailFrom, Stage::RcptTo)
        );
    }
}
