//! EHLO and HELO (RFC 5321 §4.1.1.1).

use intake_core::Stage;
use intake_proto::{Extensions, ehlo::ehlo_reply, replies};

use super::{Pending, Session, Step};

impl Session {
    pub(super) fn handle_helo(&mut self, name: String, esmtp: bool) -> Step {
        if name.is_empty() && !self.cfg.lenient_helo {
            return self.client_error(replies::HELO_NEEDS_NAME);
        }
        if self.cfg.checks.has(Stage::Helo) {
            // A new EHLO/HELO ends any transaction whatever the checks say.
            self.end_transaction();
            let pending = Pending::Helo { name, esmtp };
            return self.ask(pending, Stage::Helo, None).expect("checked above");
        }
        self.accept_helo(name, esmtp)
    }

    /// The name passed: remember it and answer.
    pub(super) fn accept_helo(&mut self, name: String, esmtp: bool) -> Step {
        // A new EHLO/HELO resets any transaction (RFC 5321 §4.1.4).
        self.end_transaction();
        self.esmtp = esmtp;
        let reply = if esmtp {
            ehlo_reply(
                &self.cfg.hostname,
                &name,
                self.cfg.max_message_size,
                Extensions {
                    starttls: self.offers_starttls(),
                    auth: self.offers_auth(),
                },
            )
        } else if name.is_empty() {
            intake_proto::Reply::plain(250, format!("{} Hello", self.cfg.hostname))
        } else {
            intake_proto::Reply::plain(250, format!("{} Hello {}", self.cfg.hostname, name))
        };
        self.helo = Some(name.into_boxed_str());
        Step::Reply(reply)
    }
}
