//! MAIL FROM (RFC 5321 §4.1.1.2; SIZE RFC 1870, BODY RFC 6152, SMTPUTF8 RFC 6531).

use intake_core::Stage;
use intake_proto::{Body, MailFrom, replies};

use super::{ContentMode, Pending, Phase, Session, Step, Transaction};

impl Session {
    pub(super) fn handle_mail_from(&mut self, from: MailFrom) -> Step {
        if self.helo.is_none() {
            return self.client_error(replies::HELO_FIRST);
        }
        if self.in_transaction() {
            return self.client_error(replies::NESTED_MAIL);
        }
        if self.cfg.tls == crate::config::TlsMode::Required && self.tls.is_none() {
            return self.client_error(replies::TLS_REQUIRED);
        }
        if let Some(refusal) = self.mail_allowed(&from.address) {
            return self.client_error(refusal);
        }
        if from.body == Body::BinaryMime {
            return self.client_error(
                replies::UNSUPPORTED_PARAMETER.with_text("BODY=BINARYMIME is not supported"),
            );
        }
        if !from.address.is_ascii() && !from.smtputf8 {
            return self.client_error(replies::NEEDS_SMTPUTF8);
        }
        if from.size.is_some_and(|s| s > self.cfg.max_message_size) {
            return self.client_error(replies::SIZE_EXCEEDED_DECLARED);
        }
        if self.cfg.max_messages_per_connection > 0
            && self.messages >= self.cfg.max_messages_per_connection
        {
            return Step::Close(replies::TOO_MANY_MESSAGES_PER_CONNECTION);
        }
        if let Some(limits) = &self.cfg.limits
            && !limits.allow_message(self.client.ip())
        {
            tracing::info!(client = %self.client, "message rate limit reached");
            return Step::Reply(replies::MESSAGE_RATE);
        }
        if self.cfg.checks.has(Stage::MailFrom) {
            // Boxed while the checks run: a session waits for them in every task's room.
            return self
                .ask(Pending::Mail(Box::new(from)), Stage::MailFrom, None)
                .expect("checked above");
        }
        self.start_transaction(from);
        Step::Reply(replies::SENDER_OK)
    }

    /// MAIL FROM was accepted: the transaction starts.
    pub(super) fn start_transaction(&mut self, from: MailFrom) {
        self.messages += 1;
        self.phase = Phase::Mail(Box::new(Transaction {
            mail_from: from.address,
            rcpt_to: Vec::new(),
            smtputf8: from.smtputf8,
            body: from.body,
            mode: ContentMode::None,
            bdat_size: 0,
            bdat_error: None,
            headers: Vec::new(),
            score: 0.0,
            findings: intake_core::Findings::default(),
        }));
    }
}
