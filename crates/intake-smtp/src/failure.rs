//! Our own failures to SMTP replies: the single mapping.
//!
//! When the store, a delivery target, a policy check or the authenticator fails, the
//! client never sees our error's text (that goes to the log); it gets a 4xx so that it
//! retries later. A 5xx would make the sender bounce mail we merely failed to take.

use intake_proto::{Reply, replies};

/// One of our own failures, as the client hears of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The store did not take a message (it failed, or missed `smtp.deliver_timeout`).
    Store,
    /// A delivery target other than the store did not answer in time or could not be
    /// reached, and left no reply of its own to pass on.
    Downstream,
    /// A policy check could not decide and is configured to defer.
    Check,
    /// The authenticator could not check a login (its store failed or was too slow).
    Authenticator,
}

impl Failure {
    /// The reply the client gets: always a 4xx.
    pub fn reply(self) -> Reply {
        match self {
            Failure::Store => replies::STORE_FAILED,
            Failure::Downstream => replies::DELIVERY_DEFERRED,
            Failure::Check => replies::CHECK_UNAVAILABLE,
            Failure::Authenticator => replies::AUTH_TEMPORARY,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_failures_are_always_temporary() {
        for f in [
            Failure::Store,
            Failure::Downstream,
            Failure::Check,
            Failure::Authenticator,
        ] {
            assert_eq!(f.reply().code / 100, 4, "{f:?}");
        }
        assert!(Failure::Store.reply().to_wire().starts_with("451 4.3.0 "));
    }
}
