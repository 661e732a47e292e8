//! The reply after DATA (or the last BDAT): what the delivery targets said, per recipient,
//! folded into the one reply SMTP allows.
//!
//! An LMTP server answers each recipient after DATA; an SMTP server has a single reply for
//! the whole message. The rule, in order:
//!
//! 1. every recipient accepted (by every target) → `250`;
//! 2. any recipient failed temporarily → `4xx` for the message (the downstream's own 4xx
//!    when it gave one; `451 4.3.0` when the store failed, else `451 4.4.0`: a downstream
//!    that timed out or could not be reached), so the client retries;
//! 3. every recipient failed permanently → `5xx` (the downstream's own 5xx when it gave
//!    one), so the client bounces;
//! 4. some accepted, the others refused for good → `451 4.5.0`: the client retries, and
//!    the recipients that were accepted may get the message again. Refusing bad recipients
//!    at RCPT time (`policy.recipients`) keeps this case rare.
//!
//! A 250 never hides a recipient that did not get the message, and a 5xx never makes the
//! client bounce a message some recipient received.

use std::borrow::Cow;

use intake_core::{DeliveryReport, DownstreamReply, MessageId, RcptOutcome};
use intake_proto::{EnhancedStatus, Reply, replies};

use super::Session;
use crate::failure::Failure;

impl Session {
    /// The targets answered for message `id`: ends the transaction and gives the final
    /// reply (see the module documentation for the rule).
    pub(super) fn delivered(&mut self, id: MessageId, report: &DeliveryReport) -> Reply {
        self.end_transaction();
        final_reply(id, report)
    }
}

/// The one reply for a message, from its per-recipient outcomes.
pub fn final_reply(id: MessageId, report: &DeliveryReport) -> Reply {
    let rcpts = &report.rcpts;
    if !rcpts.is_empty() && rcpts.iter().all(RcptOutcome::is_accepted) {
        let verb = if report.stored { "stored" } else { "accepted" };
        return Reply::dynamic(
            250,
            EnhancedStatus(2, 0, 0),
            format!("Message {verb} as {id}"),
        );
    }
    if let Some(temp) = rcpts.iter().find_map(|o| match o {
        RcptOutcome::TempFail(r) => Some(r),
        _ => None,
    }) {
        return match temp {
            Some(r) => passed_on(r, 4),
            // Nothing from a downstream: our own failure (the store's 451 4.3.0 when the
            // store is a target), or a downstream that timed out or was unreachable.
            None if report.store_failed => Failure::Store.reply(),
            None => Failure::Downstream.reply(),
        };
    }
    if rcpts.iter().any(RcptOutcome::is_accepted) || rcpts.is_empty() {
        return replies::DELIVERY_PARTIAL;
    }
    match rcpts.iter().find_map(|o| match o {
        RcptOutcome::PermFail(Some(r)) => Some(r),
        _ => None,
    }) {
        Some(r) => passed_on(r, 5),
        None => replies::DELIVERY_REFUSED,
    }
}

/// A downstream's reply as ours, in the class the rule chose: its code when it is a
/// plain 4xx/5xx of that class (421 and the 50x syntax codes are about *its* session, not
/// our client's: 451 and 554 instead), its enhanced status when it gave one of that class,
/// and its text on one clean line.
fn passed_on(r: &DownstreamReply, class: u16) -> Reply {
    let code = match r.code {
        421 | 500..=504 => class * 100 + if class == 4 { 51 } else { 54 },
        c if c / 100 == class => c,
        _ => class * 100 + 51,
    };
    let (status, rest) = split_status(&r.text, class as u8);
    let text: String = rest
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    let text = text.trim();
    Reply {
        code,
        status: Some(status),
        text: Cow::Owned(if text.is_empty() {
            "Downstream refused the message".into()
        } else {
            format!("Downstream: {text}")
        }),
    }
}

/// The enhanced status at the start of `text` if it is of `class`, and the rest.
fn split_status(text: &str, class: u8) -> (EnhancedStatus, &str) {
    let default = EnhancedStatus(class, if class == 4 { 4 } else { 0 }, 0);
    let (first, rest) = text
        .trim_start()
        .split_once(' ')
        .unwrap_or((text.trim(), ""));
    let parts: Vec<&str> = first.split('.').collect();
    if let [c, s, d] = parts.as_slice()
        && let (Ok(c), Ok(s), Ok(d)) = (c.parse::<u8>(), s.parse::<u16>(), d.parse::<u16>())
        && s < 1000
        && d < 1000
    {
        if c == class {
            return (EnhancedStatus(c, s, d), rest);
        }
        return (default, rest);
    }
    (default, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> MessageId {
        "01900000-0000-7000-8000-000000000001".parse().unwrap()
    }

    fn report(rcpts: Vec<RcptOutcome>) -> DeliveryReport {
        DeliveryReport {
            rcpts,
            stored: false,
            store_failed: false,
        }
    }

    fn wire(rcpts: Vec<RcptOutcome>) -> String {
        final_reply(id(), &report(rcpts)).to_wire()
    }

    const OK: RcptOutcome = RcptOutcome::Accepted;

    fn from(code: u16, text: &str) -> RcptOutcome {
        RcptOutcome::from_reply(code, text)
    }

    #[test]
    fn all_accepted_is_250_and_says_whether_it_was_stored() {
        assert_eq!(
            wire(vec![OK, OK]),
            "250 2.0.0 Message accepted as 01900000-0000-7000-8000-000000000001\r\n"
        );
        let stored = DeliveryReport {
            rcpts: vec![OK],
            stored: true,
            store_failed: false,
        };
        assert!(
            final_reply(id(), &stored)
                .to_wire()
                .starts_with("250 2.0.0 Message stored as ")
        );
    }

    #[test]
    fn any_temporary_failure_defers_the_message_with_the_downstream_text() {
        assert_eq!(
            wire(vec![
                OK,
                from(452, "4.2.2 Mailbox full"),
                from(550, "5.1.1 x")
            ]),
            "452 4.2.2 Downstream: Mailbox full\r\n"
        );
        assert_eq!(
            wire(vec![OK, RcptOutcome::TEMP]),
            replies::DELIVERY_DEFERRED.to_wire()
        );
        // A downstream closing its own session (421) is a plain 451 for our client.
        assert_eq!(
            wire(vec![from(421, "4.3.2 shutting down")]),
            "451 4.3.2 Downstream: shutting down\r\n"
        );
    }

    #[test]
    fn all_permanent_is_the_downstream_5xx() {
        assert_eq!(
            wire(vec![
                from(550, "5.1.1 <bob@x> User unknown"),
                from(550, "5.1.1 other")
            ]),
            "550 5.1.1 Downstream: <bob@x> User unknown\r\n"
        );
        // No enhanced status downstream: a generic one of the right class.
        assert_eq!(
            wire(vec![from(554, "no thanks")]),
            "554 5.0.0 Downstream: no thanks\r\n"
        );
        // A syntax code is the downstream's business: 554 for our client.
        assert_eq!(
            wire(vec![from(501, "5.5.4 bad")]),
            "554 5.5.4 Downstream: bad\r\n"
        );
        assert_eq!(
            wire(vec![RcptOutcome::PermFail(None)]),
            replies::DELIVERY_REFUSED.to_wire()
        );
    }

    #[test]
    fn some_accepted_and_others_refused_is_a_4xx_never_250_nor_5xx() {
        let r = final_reply(id(), &report(vec![OK, from(550, "5.1.1 unknown"), OK]));
        assert_eq!(r, replies::DELIVERY_PARTIAL);
        assert_eq!(r.code / 100, 4);
    }

    #[test]
    fn downstream_text_is_one_clean_line() {
        let r = wire(vec![from(550, "5.7.1 evil\r\n250 2.0.0 smuggled")]);
        assert_eq!(r.matches("\r\n").count(), 1, "{r}");
        assert!(r.starts_with("550 5.7.1 Downstream: evil"), "{r}");
    }
}
