//! Search queries: `words from:alice to:bob subject:"weekly report" has:attachment
//! is:unread after:2026-11-01 before:2026-11-22 mailbox:bob@example.com`.
//!
//! [`Query::parse`] turns the text into a [`Query`]; stores translate it to their own search
//! (SQLite: FTS5 for words, SQL for filters), and [`Query::matches`] evaluates it on one
//! message in memory (wait-for-mail checks each new message as it arrives).

use crate::message::{StoredMessage, mailbox_key};

/// A parsed query. All parts must hold (AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Free words or quoted phrases, matched in subject, addresses, body and headers.
    pub words: Vec<String>,
    /// `from:` values.
    pub from: Vec<String>,
    /// `to:` values.
    pub to: Vec<String>,
    /// `subject:` values.
    pub subject: Vec<String>,
    /// `mailbox:` (lower-cased).
    pub mailbox: Option<String>,
    /// `has:attachment`.
    pub has_attachment: bool,
    /// `is:unread` (Some(false)) / `is:read` (Some(true)).
    pub seen: Option<bool>,
    /// `after:`, Unix ms (exclusive).
    pub after: Option<i64>,
    /// `before:`, Unix ms (exclusive).
    pub before: Option<i64>,
}

/// What a store indexes for full-text search (`store.search`). Filters (`from:`, `to:`,
/// `subject:`, `mailbox:`, `has:`, `is:`, `after:`, `before:`) work on stored fields and do
/// not depend on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SearchMode {
    /// Words are found in the subject, the addresses, the other header values and the body
    /// text (the default).
    #[default]
    Full,
    /// Words are found in the subject, the addresses and the other header values, not in
    /// the body: the message is not decoded for the index.
    Headers,
    /// No index is kept: searching for words is refused ([`SearchMode::refusal`]); filters
    /// still work.
    Off,
}

impl SearchMode {
    /// Every mode, as `store.search` spells it.
    pub const NAMES: &'static [&'static str] = &["full", "headers", "off"];

    /// The mode a `store.search` value names.
    pub fn parse(name: &str) -> Option<SearchMode> {
        match name.trim().to_ascii_lowercase().as_str() {
            "full" => Some(SearchMode::Full),
            "headers" => Some(SearchMode::Headers),
            "off" => Some(SearchMode::Off),
            _ => None,
        }
    }

    /// Its `store.search` name.
    pub fn name(self) -> &'static str {
        match self {
            SearchMode::Full => "full",
            SearchMode::Headers => "headers",
            SearchMode::Off => "off",
        }
    }

    /// Whether message bodies are indexed.
    pub fn indexes_body(self) -> bool {
        self == SearchMode::Full
    }

    /// Why `query` cannot run under this mode: words need an index, and with `off` there
    /// is none. `None` when it can run.
    pub fn refusal(self, query: &Query) -> Option<String> {
        (self == SearchMode::Off && !query.words.is_empty()).then(|| {
            format!(
                "full-text search is off on this server (store.search = \"off\"), so words ({}) \
                 cannot be searched; filters still work: from:, to:, subject:, mailbox:, \
                 has:attachment, is:read, is:unread, after:, before:",
                query.words.join(" ")
            )
        })
    }
}

/// Why a query could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub String);

fn tokens(text: &str) -> Result<Vec<String>, QueryError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if quoted {
        return Err(QueryError("unbalanced double quote".into()));
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// `2026-11-01` or RFC 3339 to Unix ms.
fn parse_time(v: &str) -> Option<i64> {
    if let Ok(ts) = v.parse::<jiff::Timestamp>() {
        return Some(ts.as_millisecond());
    }
    let d: jiff::civil::Date = v.parse().ok()?;
    d.to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp().as_millisecond())
}

impl Query {
    /// Parses query text. An empty query matches everything.
    pub fn parse(text: &str) -> Result<Query, QueryError> {
        let mut q = Query::default();
        for tok in tokens(text)? {
            let Some((key, value)) = tok.split_once(':').filter(|(k, _)| {
                matches!(
                    k.to_ascii_lowercase().as_str(),
                    "from" | "to" | "subject" | "mailbox" | "has" | "is" | "after" | "before"
                )
            }) else {
                q.words.push(tok);
                continue;
            };
            if value.is_empty() {
                return Err(QueryError(format!("{key}: needs a value")));
            }
            match key.to_ascii_lowercase().as_str() {
                "from" => q.from.push(value.to_lowercase()),
                "to" => q.to.push(value.to_lowercase()),
                "subject" => q.subject.push(value.to_lowercase()),
                "mailbox" => q.mailbox = Some(mailbox_key(value)),
                "has"
                    if value.eq_ignore_ascii_case("attachment")
                        || value.eq_ignore_ascii_case("attachments") =>
                {
                    q.has_attachment = true
                }
                "has" => {
                    return Err(QueryError(format!(
                        "has:{value}: only has:attachment is known"
                    )));
                }
                "is" if value.eq_ignore_ascii_case("unread") => q.seen = Some(false),
                "is" if value.eq_ignore_ascii_case("read") => q.seen = Some(true),
                "is" => return Err(QueryError(format!("is:{value}: use is:unread or is:read"))),
                "after" | "before" => {
                    let t = parse_time(value).ok_or_else(|| {
                        QueryError(format!(
                            "{key}:{value}: use a date (2026-11-01) or an RFC 3339 time"
                        ))
                    })?;
                    if key.eq_ignore_ascii_case("after") {
                        q.after = Some(t);
                    } else {
                        q.before = Some(t);
                    }
                }
                _ => unreachable!("filtered above"),
            }
        }
        Ok(q)
    }

    /// Evaluates the query on one message. `body_text` is the message's text (plain, or
    /// HTML converted); words match case-insensitively as substrings of the subject,
    /// addresses, body and header values.
    pub fn matches(&self, m: &StoredMessage, mailboxes: &[String], body_text: &str) -> bool {
        let lc = |o: &Option<String>| o.as_deref().unwrap_or("").to_lowercase();
        let from = format!(
            "{} {}",
            m.envelope.mail_from.to_lowercase(),
            lc(&m.meta.from)
        );
        let to = format!(
            "{} {} {}",
            m.envelope.rcpt_to.join(" ").to_lowercase(),
            lc(&m.meta.to),
            lc(&m.meta.cc)
        );
        let subject = lc(&m.meta.subject);
        if !self.from.iter().all(|v| from.contains(v.as_str()))
            || !self.to.iter().all(|v| to.contains(v.as_str()))
            || !self.subject.iter().all(|v| subject.contains(v.as_str()))
        {
            return false;
        }
        if let Some(mb) = &self.mailbox
            && !mailboxes.iter().any(|x| x == mb)
        {
            return false;
        }
        if self.has_attachment && m.meta.attachments.is_empty() {
            return false;
        }
        if self.seen.is_some_and(|s| s != m.seen) {
            return false;
        }
        if self.after.is_some_and(|t| m.received_at <= t)
            || self.before.is_some_and(|t| m.received_at >= t)
        {
            return false;
        }
        if self.words.is_empty() {
            return true;
        }
        let haystack = format!(
            "{subject} {from} {to} {} {}",
            body_text.to_lowercase(),
            String::from_utf8_lossy(header_block(&m.raw)).to_lowercase()
        );
        self.words
            .iter()
            .all(|w| haystack.contains(w.trim_end_matches('*').to_lowercase().as_str()))
    }
}

/// The header section of a raw message.
fn header_block(raw: &[u8]) -> &[u8] {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    &raw[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_filters_and_words() {
        let q = Query::parse(r#"invoice "due date" from:Alice to:bob@x.test subject:"weekly report" has:attachment is:unread after:2026-11-01 mailbox:Bob@X.test"#).unwrap();
        assert_eq!(q.words, ["invoice", "due date"]);
        assert_eq!(q.from, ["alice"]);
        assert_eq!(q.to, ["bob@x.test"]);
        assert_eq!(q.subject, ["weekly report"]);
        assert!(q.has_attachment);
        assert_eq!(q.seen, Some(false));
        assert_eq!(q.mailbox.as_deref(), Some("bob@x.test"));
        assert_eq!(q.after, Some(1_793_491_200_000));
        assert_eq!(Query::parse("").unwrap(), Query::default());
        assert_eq!(Query::parse("http://x").unwrap().words, ["http://x"]);
    }

    #[test]
    fn rejects_bad_filters() {
        for bad in [
            "is:maybe",
            "has:kittens",
            "after:yesterday",
            "from:",
            "\"open",
        ] {
            assert!(Query::parse(bad).is_err(), "{bad}");
        }
    }
}
