//! STARTTLS (RFC 3207).

use intake_core::TlsInfo;
use intake_proto::replies;

use super::{Session, Step};
use crate::config::TlsMode;

impl Session {
    /// Whether EHLO lists STARTTLS: configured, and not already encrypted.
    pub(super) fn offers_starttls(&self) -> bool {
        self.cfg.tls != TlsMode::Off && self.tls.is_none()
    }

    pub(super) fn handle_starttls(&mut self) -> Step {
        if self.tls.is_some() {
            return self.client_error(replies::TLS_ALREADY_ACTIVE);
        }
        if self.cfg.tls == TlsMode::Off {
            return self.client_error(replies::NOT_IMPLEMENTED);
        }
        if self.in_transaction() {
            return self.client_error(replies::BAD_SEQUENCE);
        }
        Step::StartTls(replies::READY_FOR_TLS)
    }

    /// The handshake succeeded: everything learnt before it is forgotten (RFC 3207 §4.2),
    /// so the client must say EHLO again.
    pub fn tls_started(&mut self, tls: TlsInfo) {
        self.helo = None;
        self.esmtp = false;
        self.end_transaction();
        self.user = None;
        self.tls = Some(Box::new(tls));
    }
}
