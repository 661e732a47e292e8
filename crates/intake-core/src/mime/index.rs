//! The text the search index holds for a message: its first text body and the values of
//! the header fields that have no column of their own.

use std::borrow::Cow;
use std::sync::OnceLock;

use mail_parser::{HeaderName, MessageParser, MimeHeaders};

use super::format_addresses;

/// Most body text indexed for search per message, in bytes: the start of the body (every
/// engine indexes this much at most, so that one huge message cannot make indexing slow or
/// its memory large).
pub const INDEX_BODY_MAX: usize = 1 << 20;

/// Text for the search index: (the first text body, up to [`INDEX_BODY_MAX`] bytes; the
/// values of the header fields that have no column of their own).
///
/// The subject and the `From:`, `To:` and `Cc:` addresses are indexed from the parsed
/// fields ([`ParsedMeta`](super::ParsedMeta)), so they are left out here rather than
/// indexed twice; so are the trace fields (`Received:`), `Date:`, and signatures
/// (`DKIM-Signature:`, `ARC-*`), whose values are base64 or machine text nobody searches.
/// Every other field is read as text (encoded words decoded), not parsed into structured
/// values ([`index_parser`]). A one-part plain-text body is taken as stored
/// ([`index_plain_text`]); any other body through the full parse.
///
/// The body text of a plain-text message is borrowed from `raw` (no copy); a decoded body
/// is owned.
pub fn index_text(raw: &[u8]) -> (Cow<'_, str>, String) {
    index_plain_text(raw).unwrap_or_else(|| {
        let (body, headers) = index_text_parsed(raw);
        (Cow::Owned(body), headers)
    })
}

/// [`index_text`] through the full parse: any message.
fn index_text_parsed(raw: &[u8]) -> (String, String) {
    let Some(msg) = index_parser().parse(raw) else {
        let text = String::from_utf8_lossy(raw);
        return (prefix(&text, INDEX_BODY_MAX).to_string(), String::new());
    };
    let body = msg
        .body_text(0)
        .map(|t| prefix(&t, INDEX_BODY_MAX).to_string())
        .unwrap_or_default();
    (body, header_values(&msg))
}

/// [`index_text`] without decoding the body, for the commonest message: one part of plain
/// text (no `Content-Type:`, or `text/plain` in UTF-8 or US-ASCII), not transfer-encoded,
/// whose body is valid in its charset. Its body is then the text as stored, so only the
/// header is parsed (mail-parser's body pass validates UTF-8 a character at a time, and
/// costs as much as the rest of the indexing text). Any other message answers `None` and
/// takes the full parse; for these messages both give the same text.
fn index_plain_text(raw: &[u8]) -> Option<(Cow<'_, str>, String)> {
    let end = memchr::memmem::find(raw, b"\r\n\r\n")?;
    // The parser ends the header at the first line holding only white space: with such a
    // line before the blank one, the header is not `raw[..end]`. A message that is plainly
    // not one part of plain text (another type, an encoding, a disposition) is told by its
    // field lines before anything is parsed, so that the full parse is its only one.
    if raw[..end]
        .split(|&b| b == b'\n')
        .any(|line| line.trim_ascii().is_empty() || surely_not_plain(line))
    {
        return None;
    }
    let body_at = end + 4;
    let msg = index_parser().parse_headers(&raw[..body_at])?;
    // As mail-parser decodes a text part: no charset or UTF-8 as UTF-8, US-ASCII through
    // its single-byte table (the same text only for ASCII).
    let mut ascii_only = false;
    if let Some(ct) = msg.content_type() {
        let plain = ct.c_type.eq_ignore_ascii_case("text")
            && ct
                .c_subtype
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("plain"));
        if !plain {
            return None;
        }
        match ct.attribute("charset") {
            None => {}
            Some(c) if c.eq_ignore_ascii_case("utf-8") || c.eq_ignore_ascii_case("utf8") => {}
            Some(c) if c.eq_ignore_ascii_case("us-ascii") || c.eq_ignore_ascii_case("ascii") => {
                ascii_only = true;
            }
            Some(_) => return None,
        }
    }
    // A part marked as an attachment is no body text to the full parse.
    if msg.header(HeaderName::ContentDisposition).is_some() {
        return None;
    }
    let identity = match msg.header(HeaderName::ContentTransferEncoding) {
        None => true,
        Some(h) => h.as_text().is_some_and(|e| {
            ["7bit", "8bit", "binary"]
                .iter()
                .any(|i| e.trim().eq_ignore_ascii_case(i))
        }),
    };
    let body = &raw[body_at..];
    if !identity || (ascii_only && !body.is_ascii()) {
        return None;
    }
    let body = std::str::from_utf8(body).ok()?;
    Some((
        Cow::Borrowed(prefix(body, INDEX_BODY_MAX)),
        header_values(&msg),
    ))
}

/// Whether one header line rules out [`index_plain_text`] by itself: a `Content-Type:`
/// whose value does not start `text/plain`, a `Content-Disposition:`, or a
/// `Content-Transfer-Encoding:` that is not an identity. Only a shortcut: a line it lets
/// pass is judged again from the parsed field.
fn surely_not_plain(line: &[u8]) -> bool {
    let Some(colon) = memchr::memchr(b':', line) else {
        return false;
    };
    let (name, value) = (line[..colon].trim_ascii(), line[colon + 1..].trim_ascii());
    let starts = |prefix: &[u8]| {
        value
            .get(..prefix.len())
            .is_some_and(|v| v.eq_ignore_ascii_case(prefix))
    };
    if name.eq_ignore_ascii_case(b"content-type") {
        !starts(b"text/plain")
    } else if name.eq_ignore_ascii_case(b"content-transfer-encoding") {
        !(starts(b"7bit") || starts(b"8bit") || starts(b"binary"))
    } else {
        name.eq_ignore_ascii_case(b"content-disposition")
    }
}

/// The header part of [`index_text`] alone, without reading the body (`store.search =
/// "headers"`).
pub fn index_headers(raw: &[u8]) -> String {
    index_parser()
        .parse_headers(raw)
        .map(|msg| header_values(&msg))
        .unwrap_or_default()
}

/// The values of the header fields [`index_text`] indexes, one per line.
fn header_values(msg: &mail_parser::Message<'_>) -> String {
    let mut headers = String::new();
    for h in msg.headers() {
        let name = h.name();
        if h.name == HeaderName::ContentTransferEncoding
            || name.eq_ignore_ascii_case("dkim-signature")
            || name
                .get(..4)
                .is_some_and(|p| p.eq_ignore_ascii_case("arc-"))
        {
            continue;
        }
        let mut push = |t: &str| {
            if !headers.is_empty() {
                headers.push('\n');
            }
            headers.push_str(t);
        };
        match h.value() {
            mail_parser::HeaderValue::Text(t) => push(t),
            mail_parser::HeaderValue::TextList(list) => list.iter().for_each(|t| push(t)),
            mail_parser::HeaderValue::Address(a) => push(&format_addresses(a)),
            _ => {}
        }
    }
    headers
}

/// The start of `s`, at most `max` bytes, cut at a character boundary.
fn prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A parser for [`index_text`]: the MIME fields (to find and decode the text body), every
/// other field as unstructured text, and the fields indexed elsewhere or not at all skipped
/// unparsed (a `Received:` field parsed into its parts cost more than the rest of the
/// header together).
fn index_parser() -> &'static MessageParser {
    static PARSER: OnceLock<MessageParser> = OnceLock::new();
    PARSER.get_or_init(|| {
        MessageParser::new()
            .with_mime_headers()
            .ignore_header(HeaderName::Received)
            .ignore_header(HeaderName::Date)
            .ignore_header(HeaderName::ResentDate)
            .ignore_header(HeaderName::Subject)
            .ignore_header(HeaderName::From)
            .ignore_header(HeaderName::To)
            .ignore_header(HeaderName::Cc)
            .ignore_header(HeaderName::MimeVersion)
            .default_header_text()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_text_reads_other_fields_and_the_body_once() {
        let raw = b"Received: from a.example (a.example [192.0.2.1])\r\n\tby b.example; Sat, 21 Nov 2026 10:00:00 +0000\r\n\
              DKIM-Signature: v=1; a=rsa-sha256; d=example.org; b=c2lnbmF0dXJl\r\n\
              ARC-Seal: i=1; cv=none; b=YXJjc2VhbA==\r\n\
              From: Alice <alice@example.org>\r\nTo: bob@example.com\r\nSubject: quarterly numbers\r\n\
              Reply-To: Helpdesk <help@example.org>\r\nX-Ticket: =?utf-8?q?caf=C3=A9?= 4711\r\n\
              Message-ID: <abc@example.org>\r\nDate: Sat, 21 Nov 2026 10:00:00 +0000\r\n\
              Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
              na=C3=AFve body=\r\n text\r\n";
        let (body, headers) = index_text(raw);
        assert_eq!(body.trim_end(), "na\u{ef}ve body text");
        let lines: Vec<&str> = headers.lines().collect();
        assert_eq!(
            lines,
            [
                "Helpdesk <help@example.org>",
                "caf\u{e9} 4711",
                "<abc@example.org>"
            ],
            "subject, From/To (indexed from their own columns), Received, Date, signatures \
             and the transfer encoding are left out"
        );
        assert_eq!(index_headers(raw), headers);
    }

    #[test]
    fn indexed_body_text_is_a_bounded_prefix() {
        let mut raw = b"Subject: big\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n".to_vec();
        // Two-byte characters, so that the cut falls inside one and must move back.
        raw.extend("\u{e9}".repeat(INDEX_BODY_MAX).as_bytes());
        let (body, _) = index_text(&raw);
        assert!(body.len() <= INDEX_BODY_MAX && body.len() >= INDEX_BODY_MAX - 1);
        assert!(body.chars().all(|c| c == '\u{e9}'));
    }

    #[test]
    fn plain_text_needs_no_body_parse_and_reads_the_same() {
        let smtp_source = {
            let mut m = b"Received: from client.example.test ([127.0.0.1] port 43488)\r\n\tby vm (Intake) with SMTP\r\n\
                From: <s@example.test>\r\nTo: <bench@example.test>\r\nMessage-Id: <4d55.0003@client.example.test>\r\n\
                Subject: intake core bench\r\n\r\n".to_vec();
            for i in 1..=52 {
                m.extend(format!("{i}{}\r\n", "X".repeat(78)).as_bytes());
            }
            m
        };
        let taken: [&[u8]; 6] = [
            &smtp_source,
            b"Subject: a\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\ncaf\xc3\xa9 au lait\r\n",
            b"Subject: a\r\nContent-Type: TEXT/Plain; format=flowed\r\nContent-Transfer-Encoding: 8bit\r\n\r\nna\xc3\xafve\r\n",
            b"Subject: a\r\nContent-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\nplain words\r\n",
            b"Subject: a\r\nX-Ticket: =?utf-8?q?caf=C3=A9?= 4711\r\nReply-To: Help <h@example.org>\r\n\r\nbody\r\n",
            b"Subject: folded\r\n value\r\nComments: one\r\n\ttwo\r\n\r\nbody\r\n\r\nafter a blank line\r\n",
        ];
        for raw in taken {
            let (body, headers) = index_plain_text(raw).expect("plain text takes the short way");
            assert!(
                matches!(body, Cow::Borrowed(_)),
                "a plain body is read in place"
            );
            assert_eq!(
                (body.into_owned(), headers),
                index_text_parsed(raw),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        let parsed: [&[u8]; 9] = [
            // Transfer-encoded, another charset, ASCII declared but not, not UTF-8, not text,
            // several parts, a header ended early by a line of white space, no blank line,
            // a text attachment.
            b"Subject: a\r\nContent-Transfer-Encoding: base64\r\n\r\nY2Fmw6k=\r\n",
            b"Subject: a\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\ncaf\xe9\r\n",
            b"Subject: a\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\ncaf\xc3\xa9\r\n",
            b"Subject: a\r\n\r\ncaf\xe9 \xff\r\n",
            b"Subject: a\r\nContent-Type: text/html\r\n\r\n<p>hello</p>\r\n",
            b"Subject: a\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b--\r\n",
            b"Subject: a\r\n \r\nX-Late: field\r\n\r\nbody\r\n",
            b"Subject: no body at all\r\n",
            b"Subject: a\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=a.txt\r\n\r\nnotes\r\n",
        ];
        for raw in parsed {
            assert_eq!(
                index_plain_text(raw),
                None,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        // Whichever way is taken, the text is the full parse's.
        for raw in taken.iter().chain(parsed.iter()) {
            let (body, headers) = index_text(raw);
            assert_eq!((body.into_owned(), headers), index_text_parsed(raw));
        }
    }
}
