//! RCPT TO (RFC 5321 §4.1.1.3): recipient domains and the recipient limit.

use intake_core::Stage;
use intake_proto::{RcptTo, replies};

use super::{Pending, Session, Step};

impl Session {
    pub(super) fn handle_rcpt_to(&mut self, to: RcptTo) -> Step {
        let Some(tx) = self.tx() else {
            return self.client_error(replies::MAIL_FIRST);
        };
        let smtputf8 = tx.smtputf8;
        let count = tx.rcpt_to.len();
        if to.address.is_empty() {
            return self.client_error(replies::BAD_DESTINATION);
        }
        let address = if to.address.eq_ignore_ascii_case("postmaster") {
            // RFC 5321 §4.5.1: <Postmaster> without a domain is always accepted.
            let domain = self
                .cfg
                .domains
                .first_domain()
                .unwrap_or(&self.cfg.hostname);
            format!("postmaster@{domain}")
        } else {
            if !to.address.is_ascii() && !smtputf8 {
                return self.client_error(replies::NEEDS_SMTPUTF8);
            }
            let Some((_, domain)) = to.address.rsplit_once('@') else {
                return self.client_error(replies::BAD_RECIPIENT);
            };
            if !self.cfg.domains.accepts(domain) && !self.may_relay() {
                tracing::debug!(recipient = %to.address, "relay denied");
                return self.client_error(replies::RELAY_DENIED);
            }
            to.address
        };
        if count >= self.cfg.max_recipients {
            return Step::Reply(replies::TOO_MANY_RECIPIENTS);
        }
        if let Some(limits) = &self.cfg.limits
            && !limits.allow_recipient(self.client.ip())
        {
            tracing::info!(client = %self.client, "recipient rate limit reached");
            return Step::Reply(replies::RECIPIENT_RATE);
        }
        let already = self
            .tx()
            .is_some_and(|tx| tx.rcpt_to.iter().any(|r| r.eq_ignore_ascii_case(&address)));
        if !already {
            let rcpt = address.clone();
            if let Some(step) = self.ask(Pending::Rcpt(address.clone()), Stage::RcptTo, Some(&rcpt))
            {
                return step;
            }
        }
        self.add_recipient(address)
    }

    /// The recipient passed every check: add it (once).
    pub(super) fn add_recipient(&mut self, address: String) -> Step {
        let Some(tx) = self.tx_mut() else {
            return self.client_error(replies::MAIL_FIRST);
        };
        if !tx.rcpt_to.iter().any(|r| r.eq_ignore_ascii_case(&address)) {
            tx.rcpt_to.push(address);
        }
        Step::Reply(replies::RECIPIENT_OK)
    }
}
