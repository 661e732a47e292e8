//! The recipient check on a directory: at RCPT, `550 5.1.1` for an address the directory
//! does not know; `postmaster@` is always accepted (RFC 5321 §4.5.1). A directory that
//! cannot answer is an error, so the pipeline applies the check's `on_error` (defer, for
//! recipients): never a rejection.

use std::sync::Arc;

use async_trait::async_trait;
use intake_core::{Check, CheckCtx, CheckError, Reason, Stage, Verdict};

use crate::Directory;

/// Recipients looked up in a directory.
pub struct DirectoryRecipients {
    directory: Arc<dyn Directory>,
}

impl DirectoryRecipients {
    /// The check, asking `directory` (normally a [`crate::Guarded`] one).
    pub fn new(directory: Arc<dyn Directory>) -> DirectoryRecipients {
        DirectoryRecipients { directory }
    }
}

#[async_trait]
impl Check for DirectoryRecipients {
    fn name(&self) -> &'static str {
        "directory_recipients"
    }

    fn stage(&self) -> Stage {
        Stage::RcptTo
    }

    async fn check(&self, cx: &CheckCtx) -> Result<Verdict, CheckError> {
        let Some(rcpt) = cx.rcpt_to.as_deref() else {
            return Ok(Verdict::Pass);
        };
        if rcpt
            .rsplit_once('@')
            .is_some_and(|(local, _)| local.eq_ignore_ascii_case("postmaster"))
        {
            return Ok(Verdict::Pass);
        }
        match self.directory.recipient_exists(rcpt).await {
            Ok(true) => Ok(Verdict::Pass),
            Ok(false) => Ok(Verdict::Reject {
                reason: Reason::UnknownRecipient,
            }),
            Err(e) => Err(CheckError::Backend(format!("directory: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DirectoryError, LoginResult};

    struct Only(&'static str);

    #[async_trait]
    impl Directory for Only {
        async fn recipient_exists(&self, address: &str) -> Result<bool, DirectoryError> {
            match self.0 {
                "down" => Err(DirectoryError::Timeout(std::time::Duration::from_secs(1))),
                known => Ok(address == known),
            }
        }
        async fn verify_login(&self, _: &str, _: &str) -> Result<LoginResult, DirectoryError> {
            Ok(LoginResult::Invalid)
        }
        async fn senders(&self, _: &str) -> Result<Vec<String>, DirectoryError> {
            Ok(Vec::new())
        }
    }

    fn cx(rcpt: &str) -> CheckCtx {
        let mut cx = CheckCtx::new(Stage::RcptTo, "192.0.2.1:25".parse().unwrap());
        cx.rcpt_to = Some(rcpt.into());
        cx
    }

    #[tokio::test]
    async fn unknown_is_rejected_known_and_postmaster_pass_down_is_an_error() {
        let check = DirectoryRecipients::new(Arc::new(Only("alice@example.test")));
        assert_eq!(
            check.check(&cx("alice@example.test")).await.unwrap(),
            Verdict::Pass
        );
        assert_eq!(
            check.check(&cx("bob@example.test")).await.unwrap(),
            Verdict::Reject {
                reason: Reason::UnknownRecipient
            }
        );
        assert_eq!(
            check.check(&cx("PostMaster@example.test")).await.unwrap(),
            Verdict::Pass
        );
        let down = DirectoryRecipients::new(Arc::new(Only("down")));
        assert!(matches!(
            down.check(&cx("bob@example.test")).await,
            Err(CheckError::Backend(_))
        ));
    }
}
