//! Search queries: `words from:alice to:bob subject:"weekly report" has:attachment
//! is:unread after:2026-11-01 before:2026-11-22 mailbox:bob@example.com`, and Mailpit's
//! filters on top: `cc:`, `bcc:` (envelope recipients not in the headers), `reply-to:`,
//! `addressed:` (any address field), `message-id:`, `larger:`/`smaller:` (`10k`, `2M`),
//! `tag:`, `is:tagged`, and any term negated with `!` or `-` (`-from:bot`, `!is:read`).
//!
//! [`Query::parse`] turns the text into a [`Query`]. Storage engines index the core part
//! (the named fields); Mailpit's filters and negations are [`Term`]s in [`Query::extra`]
//! and [`Query::not`], which the store layer evaluates on the core part's matches
//! ([`Query::needs_scan`], [`Query::core`]). [`Query::matches`] evaluates a whole query on
//! one message in memory (wait-for-mail checks each new message as it arrives). An unknown
//! `name:value` filter is an error that names it, never a query that matches nothing.

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
    /// Mailpit's filters engines do not index: all must hold.
    pub extra: Vec<Term>,
    /// Negated terms (`-term`, `!term`): none may hold.
    pub not: Vec<Term>,
}

/// One filter of a query, as evaluated on a message in memory (values lower-cased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// A word or phrase anywhere (subject, addresses, body, headers).
    Word(String),
    /// `from:`.
    From(String),
    /// `to:` (envelope recipients, `To` and `Cc`).
    To(String),
    /// `subject:`.
    Subject(String),
    /// `mailbox:` (as filed).
    Mailbox(String),
    /// `cc:`.
    Cc(String),
    /// `bcc:`: an envelope recipient not named in `To` or `Cc`.
    Bcc(String),
    /// `reply-to:`.
    ReplyTo(String),
    /// `addressed:`: From, To, Cc, Bcc or Reply-To.
    Addressed(String),
    /// `message-id:`.
    MessageId(String),
    /// `larger:`, octets (exclusive).
    Larger(u64),
    /// `smaller:`, octets (exclusive).
    Smaller(u64),
    /// `tag:` (any case).
    Tag(String),
    /// `is:tagged`.
    Tagged,
    /// `has:attachment`.
    HasAttachment,
    /// `is:read` (true) / `is:unread` (false).
    Seen(bool),
    /// `after:`, Unix ms (exclusive).
    After(i64),
    /// `before:`, Unix ms (exclusive).
    Before(i64),
}

/// The filters [`Query::parse`] knows (for the error naming an unknown one).
pub const FILTERS: &str = "from: to: cc: bcc: reply-to: addressed: subject: message-id: \
     mailbox: tag: has:attachment is:read is:unread is:tagged after: before: larger: smaller:";

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
            let (negated, body) = match tok.strip_prefix(['-', '!']) {
                Some(rest) if !rest.is_empty() => (true, rest.to_string()),
                _ => (false, tok),
            };
            let term = term(&body)?;
            if negated {
                q.not.push(term);
                continue;
            }
            match term {
                Term::Word(w) => q.words.push(w),
                Term::From(v) => q.from.push(v),
                Term::To(v) => q.to.push(v),
                Term::Subject(v) => q.subject.push(v),
                Term::Mailbox(v) => q.mailbox = Some(v),
                Term::HasAttachment => q.has_attachment = true,
                Term::Seen(v) => q.seen = Some(v),
                Term::After(t) => q.after = Some(t),
                Term::Before(t) => q.before = Some(t),
                other => q.extra.push(other),
            }
        }
        Ok(q)
    }

    /// Whether the query has terms a storage engine does not index ([`Query::extra`],
    /// [`Query::not`]): then the layer runs [`Query::core`] and filters its matches.
    pub fn needs_scan(&self) -> bool {
        !self.extra.is_empty() || !self.not.is_empty()
    }

    /// Whether evaluating [`Query::extra`] and [`Query::not`] needs the message's tags.
    pub fn needs_tags(&self) -> bool {
        self.extra
            .iter()
            .chain(&self.not)
            .any(|t| matches!(t, Term::Tag(_) | Term::Tagged))
    }

    /// Whether evaluating [`Query::extra`] and [`Query::not`] needs the body text.
    pub fn needs_body(&self) -> bool {
        self.extra
            .iter()
            .chain(&self.not)
            .any(|t| matches!(t, Term::Word(_)))
    }

    /// The part an engine indexes (without [`Query::extra`] and [`Query::not`]).
    pub fn core(&self) -> Query {
        Query {
            extra: Vec::new(),
            not: Vec::new(),
            ..self.clone()
        }
    }

    /// Whether `m` passes [`Query::extra`] and [`Query::not`] (`tags`: the message's tags;
    /// `body_text`: as for [`Query::matches`]).
    pub fn matches_rest(
        &self,
        m: &StoredMessage,
        mailboxes: &[String],
        body_text: &str,
        tags: &[String],
    ) -> bool {
        let f = Fields::of(m, mailboxes, body_text, tags);
        self.extra.iter().all(|t| f.holds(t)) && !self.not.iter().any(|t| f.holds(t))
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
        if self.needs_scan() && !self.matches_rest(m, mailboxes, body_text, &[]) {
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

/// One token (without its negation) as a term.
fn term(tok: &str) -> Result<Term, QueryError> {
    let Some((key, value)) = tok.split_once(':') else {
        return Ok(Term::Word(tok.to_string()));
    };
    let k = key.to_ascii_lowercase();
    let filter_shaped = !k.is_empty()
        && k.chars().all(|c| c.is_ascii_lowercase() || c == '-')
        && !value.is_empty()
        && !value.starts_with('/');
    let known = matches!(
        k.as_str(),
        "from"
            | "to"
            | "subject"
            | "mailbox"
            | "has"
            | "is"
            | "after"
            | "before"
            | "cc"
            | "bcc"
            | "reply-to"
            | "addressed"
            | "message-id"
            | "larger"
            | "smaller"
            | "tag"
    );
    if !known {
        if filter_shaped {
            return Err(QueryError(format!(
                "unknown filter {k}: (known: {FILTERS})"
            )));
        }
        return Ok(Term::Word(tok.to_string()));
    }
    if value.is_empty() {
        return Err(QueryError(format!("{key}: needs a value")));
    }
    let lc = value.to_lowercase();
    Ok(match k.as_str() {
        "from" => Term::From(lc),
        "to" => Term::To(lc),
        "subject" => Term::Subject(lc),
        "mailbox" => Term::Mailbox(mailbox_key(value)),
        "cc" => Term::Cc(lc),
        "bcc" => Term::Bcc(lc),
        "reply-to" => Term::ReplyTo(lc),
        "addressed" => Term::Addressed(lc),
        "message-id" => Term::MessageId(lc.trim_matches(['<', '>']).to_string()),
        "tag" => Term::Tag(lc),
        "larger" | "smaller" => {
            let n = parse_size(value).ok_or_else(|| {
                QueryError(format!("{key}:{value}: use a size such as 500, 10k or 2M"))
            })?;
            if k == "larger" {
                Term::Larger(n)
            } else {
                Term::Smaller(n)
            }
        }
        "has" if lc == "attachment" || lc == "attachments" => Term::HasAttachment,
        "has" => {
            return Err(QueryError(format!(
                "has:{value}: only has:attachment is known"
            )));
        }
        "is" if lc == "unread" => Term::Seen(false),
        "is" if lc == "read" => Term::Seen(true),
        "is" if lc == "tagged" => Term::Tagged,
        "is" => {
            return Err(QueryError(format!(
                "is:{value}: use is:unread, is:read or is:tagged"
            )));
        }
        _ => {
            let t = parse_time(value).ok_or_else(|| {
                QueryError(format!(
                    "{key}:{value}: use a date (2026-11-01) or an RFC 3339 time"
                ))
            })?;
            if k == "after" {
                Term::After(t)
            } else {
                Term::Before(t)
            }
        }
    })
}

/// `500`, `10k`, `10KB`, `2M`, `1G` (binary multiples) to octets.
fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim().to_ascii_lowercase();
    let v = v.strip_suffix('b').unwrap_or(&v);
    let (num, mult) = match v.chars().last()? {
        'k' => (&v[..v.len() - 1], 1u64 << 10),
        'm' => (&v[..v.len() - 1], 1 << 20),
        'g' => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    let n: f64 = num.trim().parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some((n * mult as f64) as u64)
}

/// A message's fields as terms see them (lower-cased).
struct Fields<'a> {
    m: &'a StoredMessage,
    mailboxes: &'a [String],
    body: &'a str,
    tags: &'a [String],
    from: String,
    to: String,
    cc: String,
    bcc: String,
    reply_to: String,
}

impl<'a> Fields<'a> {
    fn of(
        m: &'a StoredMessage,
        mailboxes: &'a [String],
        body: &'a str,
        tags: &'a [String],
    ) -> Self {
        let lc = |o: &Option<String>| o.as_deref().unwrap_or("").to_lowercase();
        let (to_h, cc) = (lc(&m.meta.to), lc(&m.meta.cc));
        let bcc: Vec<String> = m
            .envelope
            .rcpt_to
            .iter()
            .map(|r| r.to_lowercase())
            .filter(|r| !to_h.contains(r.as_str()) && !cc.contains(r.as_str()))
            .collect();
        let reply_to = crate::mime::headers(&m.raw)
            .into_iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("reply-to"))
            .map(|(_, v)| v.to_lowercase())
            .collect::<Vec<_>>()
            .join(" ");
        Fields {
            m,
            mailboxes,
            body,
            tags,
            from: format!(
                "{} {}",
                m.envelope.mail_from.to_lowercase(),
                lc(&m.meta.from)
            ),
            to: format!(
                "{} {to_h} {cc}",
                m.envelope.rcpt_to.join(" ").to_lowercase()
            ),
            cc,
            bcc: bcc.join(" "),
            reply_to,
        }
    }

    fn holds(&self, t: &Term) -> bool {
        let m = self.m;
        match t {
            Term::Word(w) => {
                let w = w.trim_end_matches('*').to_lowercase();
                let subject = m.meta.subject.as_deref().unwrap_or("").to_lowercase();
                [&subject, &self.from, &self.to, &self.body.to_lowercase()]
                    .iter()
                    .any(|h| h.contains(w.as_str()))
                    || String::from_utf8_lossy(header_block(&m.raw))
                        .to_lowercase()
                        .contains(w.as_str())
            }
            Term::From(v) => self.from.contains(v.as_str()),
            Term::To(v) => self.to.contains(v.as_str()),
            Term::Subject(v) => m
                .meta
                .subject
                .as_deref()
                .unwrap_or("")
                .to_lowercase()
                .contains(v.as_str()),
            Term::Mailbox(v) => self.mailboxes.iter().any(|x| x == v),
            Term::Cc(v) => self.cc.contains(v.as_str()),
            Term::Bcc(v) => self.bcc.contains(v.as_str()),
            Term::ReplyTo(v) => self.reply_to.contains(v.as_str()),
            Term::Addressed(v) => [&self.from, &self.to, &self.bcc, &self.reply_to]
                .iter()
                .any(|h| h.contains(v.as_str())),
            Term::MessageId(v) => m
                .meta
                .message_id
                .as_deref()
                .unwrap_or("")
                .to_lowercase()
                .contains(v.as_str()),
            Term::Larger(n) => m.size > *n,
            Term::Smaller(n) => m.size < *n,
            Term::Tag(v) => self.tags.iter().any(|t| t.eq_ignore_ascii_case(v)),
            Term::Tagged => !self.tags.is_empty(),
            Term::HasAttachment => !m.meta.attachments.is_empty(),
            Term::Seen(s) => m.seen == *s,
            Term::After(t) => m.received_at > *t,
            Term::Before(t) => m.received_at < *t,
        }
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
    fn parses_mailpit_filters_and_negations() {
        let q = Query::parse(r#"cc:Ann bcc:b reply-to:r addressed:a message-id:<x@y> larger:10k smaller:2M tag:Urgent is:tagged -from:bot !"weekly report" -is:read"#).unwrap();
        assert_eq!(
            q.extra,
            vec![
                Term::Cc("ann".into()),
                Term::Bcc("b".into()),
                Term::ReplyTo("r".into()),
                Term::Addressed("a".into()),
                Term::MessageId("x@y".into()),
                Term::Larger(10 * 1024),
                Term::Smaller(2 * 1024 * 1024),
                Term::Tag("urgent".into()),
                Term::Tagged,
            ]
        );
        assert_eq!(
            q.not,
            vec![
                Term::From("bot".into()),
                Term::Word("weekly report".into()),
                Term::Seen(true),
            ]
        );
        assert!(q.needs_scan() && q.needs_tags() && q.needs_body());
        assert!(!q.core().needs_scan());
        assert!(!Query::parse("from:a is:unread").unwrap().needs_scan());
        assert_eq!(Query::parse("-").unwrap().words, ["-"]);
    }

    #[test]
    fn an_unknown_filter_is_named() {
        let e = Query::parse("kittens:yes").unwrap_err();
        assert!(e.0.contains("kittens:"), "{e}");
        assert!(Query::parse("larger:lots").is_err());
        // Not filters: times, URLs, a colon at the end.
        assert_eq!(
            Query::parse("10:30 Re: a:").unwrap().words,
            ["10:30", "Re:", "a:"]
        );
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
