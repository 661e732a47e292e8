//! SMTP replies (RFC 5321 §4.2) with enhanced status codes (RFC 3463, RFC 2034).

use std::borrow::Cow;
use std::fmt;

/// An enhanced status code `class.subject.detail` (RFC 3463).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnhancedStatus(pub u8, pub u16, pub u16);

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One SMTP reply: a code, an optional enhanced status and human-readable text.
///
/// Per RFC 2034 §3 the greeting and the replies to EHLO/HELO carry no enhanced status;
/// every other reply Intake sends does. Text may contain `\n` to make a multi-line reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// The enhanced status code, written after the reply code on every line.
    pub status: Option<EnhancedStatus>,
    /// The text; lines separated by `\n`.
    pub text: Cow<'static, str>,
}

impl Reply {
    /// A reply with an enhanced status code.
    pub const fn new(code: u16, status: EnhancedStatus, text: &'static str) -> Reply {
        Reply {
            code,
            status: Some(status),
            text: Cow::Borrowed(text),
        }
    }

    /// A reply with an enhanced status code and computed text.
    pub fn dynamic(code: u16, status: EnhancedStatus, text: impl Into<String>) -> Reply {
        Reply {
            code,
            status: Some(status),
            text: Cow::Owned(text.into()),
        }
    }

    /// A reply without an enhanced status (greeting, EHLO/HELO).
    pub fn plain(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            status: None,
            text: Cow::Owned(text.into()),
        }
    }

    /// The same reply with other text (keeps code and status).
    pub fn with_text(&self, text: impl Into<String>) -> Reply {
        Reply {
            code: self.code,
            status: self.status,
            text: Cow::Owned(text.into()),
        }
    }

    /// True for 2xx and 3xx replies.
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// True for 4xx and 5xx replies.
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// Appends the wire form (one or more CRLF-terminated lines) to `out`. Written byte by
    /// byte rather than through `write!`: four replies a message, and the formatting
    /// machinery cost several times the bytes it wrote.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        // `split` yields at least one line (empty text: one empty line, `354 \r\n`).
        let mut lines = self.text.split('\n').peekable();
        while let Some(line) = lines.next() {
            push_number(out, self.code);
            out.push(if lines.peek().is_some() { b'-' } else { b' ' });
            if let Some(EnhancedStatus(class, subject, detail)) = self.status {
                push_number(out, class.into());
                out.push(b'.');
                push_number(out, subject);
                out.push(b'.');
                push_number(out, detail);
                out.push(b' ');
            }
            out.extend_from_slice(line.trim_end_matches('\r').as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The wire form as a string (for logs and tests).
    pub fn to_wire(&self) -> String {
        let mut v = Vec::new();
        self.write_to(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    }
}

/// Appends `n` in decimal.
fn push_number(out: &mut Vec<u8>, mut n: u16) {
    let mut digits = [0u8; 5];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(st) => write!(f, "{} {} {}", self.code, st, self.text.replace('\n', " / ")),
            None => write!(f, "{} {}", self.code, self.text.replace('\n', " / ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_multi_line() {
        let r = Reply::new(250, EnhancedStatus(2, 0, 0), "OK");
        assert_eq!(r.to_wire(), "250 2.0.0 OK\r\n");
        let r = Reply::plain(250, "mx.example\nPIPELINING\nSIZE 10");
        assert_eq!(
            r.to_wire(),
            "250-mx.example\r\n250-PIPELINING\r\n250 SIZE 10\r\n"
        );
        let r = Reply::new(214, EnhancedStatus(2, 0, 0), "a\nb");
        assert_eq!(r.to_wire(), "214-2.0.0 a\r\n214 2.0.0 b\r\n");
        let r = Reply::dynamic(550, EnhancedStatus(5, 7, 26), "DMARC\r\npolicy");
        assert_eq!(r.to_wire(), "550-5.7.26 DMARC\r\n550 5.7.26 policy\r\n");
        assert_eq!(Reply::plain(354, "").to_wire(), "354 \r\n");
        let r = Reply::new(421, EnhancedStatus(4, 100, 999), "x");
        assert_eq!(r.to_wire(), "421 4.100.999 x\r\n");
    }
}
