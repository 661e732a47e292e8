//! Everything Intake asks of mail-parser, in one module (see docs/ARCHITECTURE.md: the
//! mail-parser 0.11 to 1.0 upgrade should touch nothing else).

use std::sync::OnceLock;

use mail_parser::decoders::base64::base64_decode;
use mail_parser::decoders::quoted_printable::quoted_printable_decode;
use mail_parser::{Address, HeaderName, MessageParser, MessagePart, MimeHeaders};

use serde::{Deserialize, Serialize};

/// An attachment, as listed with a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// File name, if the part has one.
    pub name: Option<String>,
    /// MIME type, e.g. `application/pdf`.
    pub content_type: String,
    /// Decoded size in octets.
    pub size: u64,
}

/// Header fields parsed from a message, for listing and search.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParsedMeta {
    /// `Message-ID:` without angle brackets.
    pub message_id: Option<String>,
    /// `From:` addresses, as `Name <addr>` or `addr`, comma-separated.
    pub from: Option<String>,
    /// `To:` addresses.
    pub to: Option<String>,
    /// `Cc:` addresses.
    pub cc: Option<String>,
    /// Decoded `Subject:`.
    pub subject: Option<String>,
    /// `Date:` as RFC 3339, when it parses.
    pub date: Option<String>,
    /// Top-level MIME type, e.g. `multipart/mixed`.
    pub content_type: Option<String>,
    /// `charset` parameter of the top-level Content-Type.
    pub charset: Option<String>,
    /// Attachments.
    pub attachments: Vec<Attachment>,
}

mod index;
pub mod parts;

pub use index::{INDEX_BODY_MAX, index_headers, index_text};

/// Parses the header fields Intake indexes. Never fails: unparsable mail gives empty fields.
pub fn parse_meta(content: &[u8]) -> ParsedMeta {
    let Some(msg) = meta_parser().parse_headers(content) else {
        return ParsedMeta::default();
    };
    let content_type = msg.content_type();
    let attachments = if content_type.is_some_and(|ct| ct.ctype().eq_ignore_ascii_case("multipart"))
    {
        // Attachments need the body structure: parse the whole message only then, without
        // decoding its parts (see `structure_parser`).
        structure_parser()
            .parse(content)
            .map(|full| {
                full.attachments()
                    .map(|part| Attachment {
                        name: part.attachment_name().map(str::to_string),
                        content_type: content_type_of(part),
                        size: decoded_len(content, part),
                    })
                    .collect()
            })
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    ParsedMeta {
        message_id: msg.message_id().map(str::to_string),
        from: msg.from().map(format_addresses),
        to: msg.to().map(format_addresses),
        cc: msg.cc().map(format_addresses),
        subject: msg.subject().map(str::to_string),
        date: msg.date().map(|d| d.to_rfc3339()),
        content_type: content_type.map(|ct| match ct.subtype() {
            Some(st) => format!("{}/{}", ct.ctype(), st).to_ascii_lowercase(),
            None => ct.ctype().to_ascii_lowercase(),
        }),
        charset: content_type
            .and_then(|ct| ct.attribute("charset"))
            .map(str::to_string),
        attachments,
    }
}

/// A parser for only the header fields [`parse_meta`] reads; every other field (`Received`,
/// DKIM signatures, ...) is skipped rather than parsed into values nobody reads. Built once:
/// it is a table of field parsers.
fn meta_parser() -> &'static MessageParser {
    static PARSER: OnceLock<MessageParser> = OnceLock::new();
    PARSER.get_or_init(|| {
        MessageParser::new()
            .header_id(HeaderName::MessageId)
            .header_address(HeaderName::From)
            .header_address(HeaderName::To)
            .header_address(HeaderName::Cc)
            .header_text(HeaderName::Subject)
            .header_date(HeaderName::Date)
            .header_content_type(HeaderName::ContentType)
            .default_header_ignore()
    })
}

/// A parser for the MIME structure only: the MIME fields are parsed, every other field is
/// skipped, and `Content-Transfer-Encoding` is skipped too, so that a part's contents are
/// its encoded octets, borrowed from the message rather than decoded into new memory. (A
/// 20 MB base64 attachment would otherwise cost 15 MB more while the message is in
/// flight.) [`transfer_encoding`] reads the skipped field where a part needs decoding.
fn structure_parser() -> &'static MessageParser {
    static PARSER: OnceLock<MessageParser> = OnceLock::new();
    PARSER.get_or_init(|| {
        MessageParser::new()
            .with_mime_headers()
            .ignore_header(HeaderName::ContentTransferEncoding)
            .default_header_ignore()
    })
}

/// A part's transfer encoding, lower-cased, from its raw header field in `raw` (the field
/// is not parsed by [`structure_parser`]). `None` when the part has no such field.
fn transfer_encoding(raw: &[u8], part: &MessagePart<'_>) -> Option<String> {
    let field = part
        .headers
        .iter()
        .find(|h| h.name == HeaderName::ContentTransferEncoding)?;
    let value = raw.get(field.offset_start() as usize..field.offset_end() as usize)?;
    let value = String::from_utf8_lossy(value);
    let token = value.split(['(', ';']).next().unwrap_or_default().trim();
    Some(token.to_ascii_lowercase())
}

/// The size of a part once its transfer encoding is undone, from its encoded octets:
/// base64 is counted, not decoded; quoted-printable (text, rarely large) is decoded.
fn decoded_len(raw: &[u8], part: &MessagePart<'_>) -> u64 {
    let encoded = part.contents();
    match transfer_encoding(raw, part).as_deref() {
        Some("base64") => {
            let symbols = encoded
                .iter()
                .filter(|&&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
                .count() as u64;
            symbols * 3 / 4
        }
        Some("quoted-printable") => {
            quoted_printable_decode(encoded).map_or(encoded.len(), |d| d.len()) as u64
        }
        _ => encoded.len() as u64,
    }
}

/// A part's contents with its transfer encoding undone (the encoded octets when they do
/// not decode, as mail-parser does).
fn decoded(raw: &[u8], part: &MessagePart<'_>) -> Vec<u8> {
    let encoded = part.contents();
    let out = match transfer_encoding(raw, part).as_deref() {
        Some("base64") => base64_decode(encoded),
        Some("quoted-printable") => quoted_printable_decode(encoded),
        _ => None,
    };
    out.unwrap_or_else(|| encoded.to_vec())
}

fn content_type_of(part: &MessagePart<'_>) -> String {
    part.content_type()
        .map(|ct| match ct.subtype() {
            Some(st) => format!("{}/{}", ct.ctype(), st),
            None => ct.ctype().to_string(),
        })
        .unwrap_or_else(|| "application/octet-stream".into())
}

/// The message's first text body (HTML converted to text when there is no plain part).
pub fn text_body(raw: &[u8]) -> Option<String> {
    let msg = MessageParser::default().parse(raw)?;
    msg.body_text(0).map(|t| t.into_owned())
}

/// The message's first HTML body, if it has one.
pub fn html_body(raw: &[u8]) -> Option<String> {
    let msg = MessageParser::default().parse(raw)?;
    if msg.html_body_count() == 0 {
        return None;
    }
    // mail-parser converts text to HTML when there is no HTML part; only a real one counts.
    let part = msg.html_part(0)?;
    if !part.is_text_html() {
        return None;
    }
    msg.body_html(0).map(|t| t.into_owned())
}

/// The message's plain-text body (HTML converted when there is no plain part).
pub fn plain_text(raw: &[u8]) -> Option<String> {
    text_body(raw)
}

/// The header fields in order, values decoded where they are encoded words, else raw.
pub fn headers(raw: &[u8]) -> Vec<(String, String)> {
    let Some(msg) = MessageParser::default().parse_headers(raw) else {
        return Vec::new();
    };
    msg.headers()
        .iter()
        .map(|h| {
            let name = h.name().to_string();
            let value = raw
                .get(h.offset_start() as usize..h.offset_end() as usize)
                .map(|v| {
                    String::from_utf8_lossy(v)
                        .trim()
                        .replace("\r\n", "")
                        .replace(['\r', '\n'], "")
                })
                .unwrap_or_default();
            let decoded = match h.value() {
                mail_parser::HeaderValue::Text(t) => t.to_string(),
                _ => value,
            };
            (name, decoded)
        })
        .collect()
}

/// The header fields in order, values as sent (unfolded, encoded words left as they are).
pub fn raw_headers(raw: &[u8]) -> Vec<(String, String)> {
    let Some(msg) = MessageParser::default().parse_headers(raw) else {
        return Vec::new();
    };
    msg.headers()
        .iter()
        .map(|h| {
            let value = raw
                .get(h.offset_start() as usize..h.offset_end() as usize)
                .map(|v| {
                    let unfolded = String::from_utf8_lossy(v).replace("\r\n", "");
                    unfolded.replace(['\r', '\n'], "").trim().to_string()
                })
                .unwrap_or_default();
            (h.name().to_string(), value)
        })
        .collect()
}

/// One attachment by its index in [`ParsedMeta::attachments`] order: (content type, file
/// name, decoded bytes). Found with the same parser that listed it, so the index means the
/// same part; only that part is decoded.
pub fn attachment(raw: &[u8], index: usize) -> Option<(String, Option<String>, Vec<u8>)> {
    let msg = structure_parser().parse(raw)?;
    let part = msg.attachment(index as u32)?;
    Some((
        content_type_of(part),
        part.attachment_name().map(str::to_string),
        decoded(raw, part),
    ))
}

/// The Content-ID of every attachment that has one, by its index in [`attachment`]'s order,
/// without angle brackets: what a `cid:` URL in the HTML body names (RFC 2392). Inline
/// images of a `multipart/related` message are attachments in that order too.
pub fn content_ids(raw: &[u8]) -> Vec<(usize, String)> {
    let Some(msg) = structure_parser().parse(raw) else {
        return Vec::new();
    };
    msg.attachments()
        .enumerate()
        .filter_map(|(i, part)| {
            let id = part
                .content_id()?
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>');
            (!id.is_empty()).then(|| (i, id.to_string()))
        })
        .collect()
}

pub(crate) fn format_addresses(addr: &Address<'_>) -> String {
    let mut out = String::new();
    for a in addr.iter() {
        let (name, email) = (a.name(), a.address());
        if name.is_none() && email.is_none() {
            continue;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        match (name, email) {
            (Some(n), Some(e)) => {
                out.push_str(n);
                out.push_str(" <");
                out.push_str(e);
                out.push('>');
            }
            (Some(s), None) | (None, Some(s)) => out.push_str(s),
            (None, None) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_message() {
        let m = parse_meta(
            b"From: Alice <alice@example.org>\r\nTo: bob@example.com, Carol <c@example.com>\r\n\
              Subject: =?utf-8?q?caf=C3=A9?=\r\nMessage-ID: <abc@example.org>\r\n\
              Date: Sat, 21 Nov 2026 10:00:00 +0000\r\n\
              Content-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n",
        );
        assert_eq!(m.from.as_deref(), Some("Alice <alice@example.org>"));
        assert_eq!(
            m.to.as_deref(),
            Some("bob@example.com, Carol <c@example.com>")
        );
        assert_eq!(m.subject.as_deref(), Some("café"));
        assert_eq!(m.message_id.as_deref(), Some("abc@example.org"));
        assert_eq!(m.date.as_deref(), Some("2026-11-21T10:00:00Z"));
        assert_eq!(m.content_type.as_deref(), Some("text/plain"));
        assert_eq!(m.charset.as_deref(), Some("utf-8"));
        assert!(m.attachments.is_empty());
    }

    #[test]
    fn fields_after_skipped_ones_are_found() {
        // The fields parse_meta does not read (trace fields, signatures, folded unknown
        // ones) are skipped, not parsed; those after them are still read.
        let m = parse_meta(
            b"Received: from a.example (a.example [192.0.2.1])\r\n\tby b.example; Sat, 21 Nov 2026 10:00:00 +0000\r\n\
              DKIM-Signature: v=1; a=rsa-sha256; d=example.org;\r\n b=abc=\r\n\
              X-Folded: one\r\n two: <not@an.address>\r\n\
              From: \"Doe, Jane\" <jane@example.org>, bob@example.org\r\n\
              Cc: Team: x@example.org, y@example.org;\r\n\
              Subject: hello\r\n\r\nFrom: body@example.org\r\n",
        );
        assert_eq!(
            m.from.as_deref(),
            Some("Doe, Jane <jane@example.org>, bob@example.org")
        );
        assert_eq!(m.cc.as_deref(), Some("x@example.org, y@example.org"));
        assert_eq!(m.subject.as_deref(), Some("hello"));
        assert_eq!(m.to, None);
    }

    #[test]
    fn attachments_are_listed() {
        let m = parse_meta(
            b"Subject: files\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n\
              --XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
              --XX\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n\
              Content-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n--XX--\r\n",
        );
        assert_eq!(m.content_type.as_deref(), Some("multipart/mixed"));
        assert_eq!(
            m.attachments,
            vec![Attachment {
                name: Some("a.pdf".into()),
                content_type: "application/pdf".into(),
                size: 5
            }]
        );
    }

    /// A message with a multi-line base64 attachment, a quoted-printable one, a plain one
    /// and an inline image in a related part; the bodies are not attachments.
    fn many_parts() -> Vec<u8> {
        let binary: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 256) as u8).collect();
        let mut b64 = String::new();
        let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &binary);
        for line in encoded.as_bytes().chunks(76) {
            b64.push_str(std::str::from_utf8(line).unwrap());
            b64.push_str("\r\n");
        }
        format!(
            "Subject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"out\"\r\n\r\n\
             --out\r\nContent-Type: multipart/related; boundary=\"rel\"\r\n\r\n\
             --rel\r\nContent-Type: text/html\r\n\r\n<p>hi <img src=cid:logo></p>\r\n\
             --rel\r\nContent-Type: image/png; name=logo.png\r\nContent-ID: <logo>\r\n\
             Content-Transfer-Encoding: BASE64 (binary)\r\n\r\niVBORw0KGgo=\r\n--rel--\r\n\
             --out\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\n\
             Content-Disposition: attachment; filename=\"data.bin\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{b64}\
             --out\r\nContent-Type: text/plain; charset=utf-8; name=notes.txt\r\n\
             Content-Disposition: attachment; filename=notes.txt\r\n\
             Content-Transfer-Encoding: quoted-printable\r\n\r\n\
             caf=C3=A9 and a soft=\r\n break\r\n\
             --out\r\nContent-Type: text/csv; name=t.csv\r\nContent-Disposition: attachment\r\n\r\n\
             a,b\r\n1,2\r\n--out--\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn attachments_are_listed_and_served_as_mail_parser_decodes_them() {
        let raw = many_parts();
        let listed = parse_meta(&raw).attachments;
        let full = MessageParser::default().parse(&raw[..]).unwrap();
        assert_eq!(listed.len(), full.attachment_count(), "{listed:?}");
        assert_eq!(listed.len(), 4);
        for (i, a) in listed.iter().enumerate() {
            let expected = full.attachment(i as u32).unwrap();
            let (ct, name, bytes) = attachment(&raw, i).unwrap();
            if i == 0 {
                // "BASE64 (binary)": a comment after the encoding (RFC 2045 allows it),
                // which mail-parser does not decode; we do.
                assert_eq!(bytes, b"\x89PNG\r\n\x1a\n");
            } else {
                assert_eq!(bytes, expected.contents(), "attachment {i}");
            }
            assert_eq!(a.size, bytes.len() as u64, "attachment {i}: listed size");
            assert_eq!(a.content_type, ct);
            assert_eq!(a.name, name);
            assert_eq!(name.as_deref(), expected.attachment_name());
        }
        assert_eq!(listed[1].name.as_deref(), Some("data.bin"));
        assert_eq!(listed[1].size, 3000);
        assert_eq!(
            attachment(&raw, 2).unwrap().2,
            "café and a soft break".as_bytes()
        );
        assert!(attachment(&raw, 4).is_none());
    }

    #[test]
    fn inline_images_are_found_by_their_content_id() {
        let raw = many_parts();
        assert_eq!(content_ids(&raw), vec![(0, "logo".to_string())]);
        assert_eq!(attachment(&raw, 0).unwrap().0, "image/png");
        assert!(content_ids(b"Subject: plain\r\n\r\nno parts\r\n").is_empty());
    }

    #[test]
    fn garbage_gives_empty_fields() {
        let m = parse_meta(b"\x00\xff\xfe not a message");
        assert_eq!(m.subject, None);
        assert!(m.attachments.is_empty());
    }
}

/// The content without the `Authentication-Results:` header fields whose authserv-id is
/// `hostname` (RFC 8601 §5: only we may claim our name; such fields arriving from outside
/// are forged or stale). Borrowed, without copying, when there are none.
pub fn without_auth_results<'a>(content: &'a [u8], hostname: &str) -> std::borrow::Cow<'a, [u8]> {
    const NAME: &[u8] = b"authentication-results:";
    // One pass over the header lines (up to the first empty line); nothing is copied until
    // a field to drop is found.
    let mut out: Option<Vec<u8>> = None;
    let mut dropping = false;
    let mut pos = 0;
    while pos < content.len() {
        let line_end = content[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(content.len(), |i| pos + i + 1);
        let line = &content[pos..line_end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if !matches!(line.first(), Some(b' ' | b'\t')) {
            dropping = line.len() >= NAME.len()
                && line[..NAME.len()].eq_ignore_ascii_case(NAME)
                && authserv_id(&content[pos + NAME.len()..]).eq_ignore_ascii_case(hostname);
            if dropping && out.is_none() {
                out = Some(content[..pos].to_vec());
            }
        }
        if let Some(o) = &mut out
            && !dropping
        {
            o.extend_from_slice(line);
        }
        pos = line_end;
    }
    match out {
        None => std::borrow::Cow::Borrowed(content),
        Some(mut o) => {
            o.extend_from_slice(&content[pos..]);
            std::borrow::Cow::Owned(o)
        }
    }
}

/// The authserv-id at the start of an `Authentication-Results` value (it may be folded).
fn authserv_id(value: &[u8]) -> &str {
    let value = value.trim_ascii_start();
    let id_end = value
        .iter()
        .position(|&b| b == b';' || b.is_ascii_whitespace() || b == b'(')
        .unwrap_or(value.len());
    std::str::from_utf8(&value[..id_end]).unwrap_or("")
}

#[cfg(test)]
mod auth_results_tests {
    use super::without_auth_results;

    #[test]
    fn only_fields_claiming_our_name_are_removed() {
        let m = b"Authentication-Results: MX.example.test;\r\n  spf=pass smtp.mailfrom=a@b\r\n\
                  Authentication-Results: other.test; dkim=pass\r\n\
                  Subject: x\r\n\r\nAuthentication-Results: mx.example.test; body\r\n";
        let out = without_auth_results(m, "mx.example.test");
        assert_eq!(
            &out[..],
            &b"Authentication-Results: other.test; dkim=pass\r\nSubject: x\r\n\r\n\
               Authentication-Results: mx.example.test; body\r\n"[..]
        );
        // The authserv-id folded onto the next line; a message with no body.
        let folded = b"Authentication-Results:\r\n mx.example.test; spf=pass\r\nSubject: z\r\n";
        assert_eq!(
            &without_auth_results(folded, "mx.example.test")[..],
            &b"Subject: z\r\n"[..]
        );
        let clean = b"Subject: y\r\n\r\nbody\r\n";
        assert!(matches!(
            without_auth_results(clean, "mx.example.test"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
