//! The `Received:` trace header (RFC 5321 §4.4, protocol names RFC 3848 and RFC 6531).

use intake_core::MessageId;

use super::Session;

impl Session {
    /// Builds the `Received:` header for a message, folded, CRLF-terminated.
    pub(super) fn received_header(
        &self,
        id: MessageId,
        rcpt_to: &[String],
        smtputf8: bool,
        now: jiff::Timestamp,
    ) -> String {
        let helo = self
            .helo
            .as_deref()
            .filter(|h| !h.is_empty())
            .unwrap_or("unknown");
        let helo: String = helo
            .chars()
            .filter(|c| !c.is_control() && *c != '(' && *c != ')')
            .collect();
        let protocol = match (smtputf8, self.esmtp, self.tls.is_some()) {
            (true, _, false) => "UTF8SMTP",
            (true, _, true) => "UTF8SMTPS",
            (false, true, false) => "ESMTP",
            (false, true, true) => "ESMTPS",
            (false, false, false) => "SMTP",
            (false, false, true) => "SMTPS",
        };
        // One buffer written in place (this runs for every message).
        use std::fmt::Write as _;
        let mut h = String::with_capacity(256);
        let _ = write!(
            h,
            "Received: from {helo} ([{}] port {})\r\n\tby {} (Intake) with {protocol}",
            self.client.ip(),
            self.client.port(),
            self.cfg.hostname
        );
        if let Some(tls) = &self.tls {
            let _ = write!(
                h,
                "\r\n\t(using {} with cipher {})",
                tls.version, tls.cipher
            );
        }
        let _ = write!(h, "\r\n\tid {id}");
        if let [only] = rcpt_to {
            let _ = write!(h, "\r\n\tfor <{only}>");
        }
        let date = jiff::fmt::rfc2822::to_string(&now.to_zoned(jiff::tz::TimeZone::UTC))
            .unwrap_or_else(|_| now.to_string());
        let _ = write!(h, ";\r\n\t{date}\r\n");
        h
    }
}
