//! Infrastructure failures to SMTP replies: the single mapping.
//!
//! The client never sees our error's text, which goes to the log; it gets a 4xx so that it
//! retries later. A 5xx would make the sender bounce mail we merely failed to store.

use intake_core::StoreError;
use intake_proto::{Reply, replies};

/// The reply for a failed store write.
pub fn store_error(_e: &StoreError) -> Reply {
    replies::STORE_FAILED
}

/// The reply for a delivery that failed on our side with no downstream reply to pass on
/// (the store failed or a target missed `smtp.deliver_timeout`); the detail is in the log.
pub fn delivery_failed() -> Reply {
    replies::STORE_FAILED
}
