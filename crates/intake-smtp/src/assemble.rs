//! Message assembly: from the content a client sent to the message the checks and the
//! delivery targets see.
//!
//! The content is read into one buffer that keeps room in front of it ([`HEADROOM`]). Our
//! header fields (`Received:` first, then those added by checks) are written into that room,
//! so the message handed to the checks and to the targets is that same buffer, not a copy.
//! Before anyone sees it, `Authentication-Results:` fields that claim our host name are
//! removed (RFC 8601 §5: they are forgeries). Assembly ends with [`Content::message`]:
//! the content is hashed and its header fields parsed into an [`Incoming`].

use bytes::{Buf, Bytes, BytesMut};
use intake_core::{Handoff, Incoming};

use crate::session::Delivery;

/// Keep at most this much spare capacity in the content buffer between messages.
const KEEP_CAPACITY: usize = 1 << 20;

/// Room in front of message content for the header fields we prepend (our `Received:`,
/// those added by checks). Fields longer than that together cost one copy of the message.
pub const HEADROOM: usize = 2048;

/// Content room a new buffer starts with; larger messages grow it.
const INITIAL_CONTENT: usize = 16 * 1024;

/// Message content as it arrives, behind room for our header fields.
#[derive(Default)]
pub struct Content {
    /// [`HEADROOM`] bytes, then the content; empty until the first call to `sink`.
    buf: BytesMut,
    /// Forged `Authentication-Results:` fields were looked for (and removed).
    cleaned: bool,
}

/// The message as the content checks see it, lent from a [`Content`]: hand it back with
/// [`Content::give_back`] once they are done.
pub struct Lent {
    /// Our header fields, then the content.
    pub message: Bytes,
    /// The whole buffer, room included.
    whole: Bytes,
}

impl Content {
    /// Where the DATA and BDAT decoders append.
    pub fn sink(&mut self) -> &mut BytesMut {
        if self.buf.is_empty() {
            // Room for a typical message at once: growing from nothing copies it several
            // times over (and the allocator's work showed in the receive profile).
            self.buf.reserve(HEADROOM + INITIAL_CONTENT);
            self.buf.resize(HEADROOM, 0);
        }
        &mut self.buf
    }

    /// The content received so far.
    pub fn body(&self) -> &[u8] {
        self.buf.get(HEADROOM..).unwrap_or_default()
    }

    /// Whether no content is held.
    pub fn is_empty(&self) -> bool {
        self.buf.len() <= HEADROOM
    }

    /// Forgets the content, keeping a moderate buffer for the next message.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.cleaned = false;
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = BytesMut::new();
        }
    }

    /// Removes `Authentication-Results:` fields that claim to be `hostname`'s (once per
    /// message; the usual message has none and is not copied).
    pub fn strip_forged_results(&mut self, hostname: &str) {
        if self.cleaned {
            return;
        }
        self.cleaned = true;
        if let std::borrow::Cow::Owned(cleaned) =
            intake_core::mime::without_auth_results(self.body(), hostname)
        {
            self.buf.truncate(HEADROOM);
            self.buf.extend_from_slice(&cleaned);
        }
    }

    /// The message as it will be stored so far, `header` then the content, as shared
    /// bytes without a copy of the content (unless `header` does not fit in the room).
    pub fn lend(&mut self, header: &[u8]) -> Lent {
        self.sink();
        match HEADROOM.checked_sub(header.len()) {
            Some(start) => {
                self.buf[start..HEADROOM].copy_from_slice(header);
                let whole = std::mem::take(&mut self.buf).freeze();
                Lent {
                    message: whole.slice(start..),
                    whole,
                }
            }
            None => {
                let whole = std::mem::take(&mut self.buf).freeze();
                let mut message = BytesMut::with_capacity(header.len() + whole.len() - HEADROOM);
                message.extend_from_slice(header);
                message.extend_from_slice(&whole[HEADROOM..]);
                Lent {
                    message: message.freeze(),
                    whole,
                }
            }
        }
    }

    /// Takes back what [`Content::lend`] lent (the checks must have dropped their copies
    /// of [`Lent::message`], or the content is copied).
    pub fn give_back(&mut self, lent: Lent) {
        drop(lent.message);
        self.buf = lent
            .whole
            .try_into_mut()
            .unwrap_or_else(|kept| BytesMut::from(&kept[..]));
    }

    /// The message for the delivery targets: the delivery's header fields, then the
    /// content, hashed and parsed. The buffer moves into the message (the header is
    /// written into the room in front of the content) unless the header does not fit.
    /// Leaves this empty; hand the message's bytes back with [`Content::reuse`].
    pub fn message(&mut self, d: Delivery, hostname: &str) -> Handoff {
        self.strip_forged_results(hostname);
        let header = d.headers.concat();
        let raw = self.take_message(header.as_bytes());
        let mut message = Incoming::from_raw(
            d.id,
            d.received_at.as_millisecond(),
            d.envelope,
            d.session,
            raw,
            header.len(),
        );
        message.findings = *d.findings;
        Handoff {
            message,
            params: d.params,
        }
    }

    /// `header`, then the content, leaving this empty.
    fn take_message(&mut self, header: &[u8]) -> Bytes {
        self.sink();
        self.cleaned = false;
        let buf = std::mem::take(&mut self.buf);
        match HEADROOM.checked_sub(header.len()) {
            Some(start) => {
                let mut buf = buf;
                buf[start..HEADROOM].copy_from_slice(header);
                let mut raw = buf.freeze();
                raw.advance(start);
                raw
            }
            None => {
                let mut raw = BytesMut::with_capacity(header.len() + buf.len() - HEADROOM);
                raw.extend_from_slice(header);
                raw.extend_from_slice(&buf[HEADROOM..]);
                raw.freeze()
            }
        }
    }

    /// Takes a delivered message's buffer back for the next message, if no target kept it.
    pub fn reuse(&mut self, raw: Bytes) {
        if let Ok(mut buf) = raw.try_into_mut()
            && buf.capacity() <= KEEP_CAPACITY
        {
            buf.clear();
            self.buf = buf;
        }
    }
}

#[cfg(test)]
mod tests {
    use intake_core::{Envelope, MailParams, MessageId, SessionInfo};

    use super::*;

    fn delivery(headers: &[&str]) -> Delivery {
        Delivery {
            envelope: Envelope {
                mail_from: "a@b.test".into(),
                rcpt_to: vec!["x@y.test".into()],
            },
            session: SessionInfo {
                helo: "c".into(),
                client: "192.0.2.9:1234".parse().unwrap(),
                tls: None,
            },
            headers: headers.iter().map(|h| h.to_string()).collect(),
            params: MailParams::default(),
            id: MessageId::new(),
            received_at: "2026-03-04T05:06:07Z".parse().unwrap(),
            findings: Box::default(),
        }
    }

    fn content(text: &[u8]) -> Content {
        let mut c = Content::default();
        c.sink().extend_from_slice(text);
        c
    }

    const RECEIVED: &str = "Received: from c ([192.0.2.9] port 1234)\r\n\tby mx.test\r\n";

    #[test]
    fn the_message_is_our_header_then_the_content_hashed_and_parsed() {
        let body = b"Subject: hello\r\n\r\nhi\r\n";
        let mut c = content(body);
        let h = c.message(delivery(&[RECEIVED, "X-Tag: 1\r\n"]), "mx.test");
        let m = &h.message;
        assert_eq!(m.raw, [RECEIVED.as_bytes(), b"X-Tag: 1\r\n", body].concat());
        assert_eq!(m.size, body.len() as u64, "our fields are not counted");
        assert_eq!(m.meta.subject.as_deref(), Some("hello"));
        // SHA-256 of the content alone, not of our fields.
        use sha2::Digest;
        assert_eq!(m.sha256, hex::encode(sha2::Sha256::digest(body)));
        assert!(c.is_empty(), "the buffer moved into the message");
        c.reuse(h.message.raw.clone());
    }

    #[test]
    fn header_fields_longer_than_the_room_are_copied_in_front() {
        let body = b"Subject: long\r\n\r\nbody\r\n";
        let long = format!("X-Long: {}\r\n", "x".repeat(HEADROOM));
        let mut c = content(body);
        let h = c.message(delivery(&[RECEIVED, &long]), "mx.test");
        assert_eq!(
            h.message.raw,
            [RECEIVED.as_bytes(), long.as_bytes(), body].concat()
        );
        assert_eq!(h.message.size, body.len() as u64);
    }

    #[test]
    fn results_that_claim_our_name_are_removed_others_kept() {
        let body = b"Authentication-Results: mx.test; dkim=pass\r\nAuthentication-Results: other.test; spf=pass\r\nSubject: s\r\n\r\nhi\r\n";
        let mut c = content(body);
        let h = c.message(delivery(&[RECEIVED]), "mx.test");
        let raw = String::from_utf8_lossy(&h.message.raw).into_owned();
        assert!(!raw.contains("mx.test; dkim=pass"), "{raw}");
        assert!(
            raw.contains("Authentication-Results: other.test; spf=pass"),
            "{raw}"
        );
        assert!(raw.starts_with(RECEIVED), "{raw}");
    }

    #[test]
    fn checks_see_our_header_first_and_the_content_comes_back_unchanged() {
        let body = b"Authentication-Results: mx.test; dkim=pass\r\nSubject: s\r\n\r\nhi\r\n";
        let mut c = content(body);
        c.strip_forged_results("mx.test");
        let lent = c.lend(RECEIVED.as_bytes());
        assert!(lent.message.starts_with(RECEIVED.as_bytes()));
        assert!(lent.message.ends_with(b"Subject: s\r\n\r\nhi\r\n"));
        assert!(!String::from_utf8_lossy(&lent.message).contains("dkim=pass"));
        c.give_back(lent);
        assert_eq!(c.body(), b"Subject: s\r\n\r\nhi\r\n");
        // A header longer than the room: the checks get a copy, the content stays.
        let long = format!("Received: {}\r\n", "y".repeat(HEADROOM));
        let lent = c.lend(long.as_bytes());
        assert!(lent.message.starts_with(long.as_bytes()));
        assert_eq!(lent.message.len(), long.len() + c_len(&lent));
        c.give_back(lent);
        assert_eq!(c.body(), b"Subject: s\r\n\r\nhi\r\n");
    }

    fn c_len(lent: &Lent) -> usize {
        lent.whole.len() - HEADROOM
    }
}
