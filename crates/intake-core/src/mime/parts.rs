//! A message's parts as Mailpit lists them: each part that is not the message's text or
//! HTML body, with its MIME path (`2`, `1.2`: the position among its parent's parts, from
//! 1, joined by dots), split into inline parts (`Content-ID` and not
//! `Content-Disposition: attachment`) and attachments.

use mail_parser::{MimeHeaders, PartType};

use super::{content_type_of, decoded, structure_parser};

/// One part of a message, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MimePart {
    /// The MIME path (`1.2`).
    pub path: String,
    /// `type/subtype`.
    pub content_type: String,
    /// The file name, if the part has one.
    pub file_name: Option<String>,
    /// The `Content-ID`, without angle brackets.
    pub content_id: Option<String>,
    /// Shown inside the message (referenced by `cid:`) rather than attached.
    pub inline: bool,
    /// The decoded content.
    pub bytes: Vec<u8>,
}

/// Every part that is not the text or HTML body, in MIME order.
pub fn parts(raw: &[u8]) -> Vec<MimePart> {
    let Some(msg) = structure_parser().parse(raw) else {
        return Vec::new();
    };
    let mut leaves = Vec::new();
    walk(&msg, 0, String::new(), &mut leaves);
    let body: Vec<u32> = msg
        .text_body
        .iter()
        .chain(msg.html_body.iter())
        .copied()
        .collect();
    let mut out = Vec::new();
    for (index, path) in leaves {
        let Some(part) = msg.parts.get(index as usize) else {
            continue;
        };
        let disposition = part
            .content_disposition()
            .map(|d| d.ctype().to_ascii_lowercase());
        let attached = disposition.as_deref() == Some("attachment");
        let text = matches!(part.body, PartType::Text(_) | PartType::Html(_));
        if text && !attached && body.contains(&index) {
            continue;
        }
        let content_id = part
            .content_id()
            .map(|c| c.trim().trim_matches(['<', '>']).to_string())
            .filter(|c| !c.is_empty());
        out.push(MimePart {
            path,
            content_type: content_type_of(part),
            file_name: part.attachment_name().map(str::to_string),
            inline: content_id.is_some() && !attached,
            content_id,
            bytes: decoded(raw, part),
        });
    }
    out
}

/// The part at `path`, if there is one (body parts included).
pub fn part(raw: &[u8], path: &str) -> Option<MimePart> {
    parts(raw).into_iter().find(|p| p.path == path)
}

/// Collects (part index, path) of every leaf under part `index`.
fn walk(msg: &mail_parser::Message<'_>, index: u32, path: String, out: &mut Vec<(u32, String)>) {
    let Some(part) = msg.parts.get(index as usize) else {
        return;
    };
    match &part.body {
        PartType::Multipart(children) => {
            for (n, child) in children.iter().enumerate() {
                let p = if path.is_empty() {
                    (n + 1).to_string()
                } else {
                    format!("{path}.{}", n + 1)
                };
                walk(msg, *child, p, out);
            }
        }
        _ => out.push((index, if path.is_empty() { "1".into() } else { path })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_have_mime_paths_and_inline_images_are_not_attachments() {
        let raw = b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=A\r\n\r\n\
--A\r\nContent-Type: multipart/related; boundary=B\r\n\r\n\
--B\r\nContent-Type: text/html\r\n\r\n<img src=\"cid:logo@x\">\r\n\
--B\r\nContent-Type: image/png\r\nContent-ID: <logo@x>\r\nContent-Disposition: inline\r\n\
Content-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n--B--\r\n\
--A\r\nContent-Type: application/pdf; name=r.pdf\r\nContent-Disposition: attachment; filename=r.pdf\r\n\r\nPDF\r\n--A--\r\n";
        let ps = parts(raw);
        let got: Vec<(&str, bool, Option<&str>)> = ps
            .iter()
            .map(|p| (p.path.as_str(), p.inline, p.content_id.as_deref()))
            .collect();
        assert_eq!(got, vec![("1.2", true, Some("logo@x")), ("2", false, None)]);
        assert_eq!(ps[0].bytes, b"hello");
        assert_eq!(ps[1].file_name.as_deref(), Some("r.pdf"));
        assert_eq!(part(raw, "2").unwrap().bytes, b"PDF");
        assert!(part(raw, "9").is_none());
    }
}
