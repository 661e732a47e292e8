//! Search and the all-mail listing on read connections.
//!
//! Three shapes, chosen so that no query reads every message row when it need not:
//! - free words only: the count comes from the FTS index alone, the unread count from the
//!   index's rowids merged with the (few) read messages (`messages_read`, a partial index);
//! - free words and filters: the FTS index drives the join, newest first, so a page stops
//!   after its rows and the count looks up only the matching messages;
//! - filters only: the messages table is scanned (the page newest first, stopping early).
//!
//! Unread counts are always "matches minus read matches": read messages are indexed by
//! `messages_read` (`seen != 0`), which new mail never enters, so receiving pays nothing.

use intake_core::{Listing, Page, Query, StoreError};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params_from_iter};

use super::read::{SUMMARY_COLS, collect};
use super::unavailable;

/// Every message, newest first.
pub(super) fn list_all(conn: &Connection, page: Page) -> Result<Listing, StoreError> {
    search(conn, &Query::default(), page)
}

pub(super) fn search(conn: &Connection, q: &Query, page: Page) -> Result<Listing, StoreError> {
    let filter = Filter::of(q);
    let words = (!q.words.is_empty()).then(|| fts_match(&q.words));
    // FROM and WHERE, and the arguments WHERE binds.
    let (from, mut args) = match &words {
        Some(m) => (
            "search_index f CROSS JOIN messages m ON m.seq = f.rowid",
            vec![Value::Text(m.clone())],
        ),
        None => ("messages m", Vec::new()),
    };
    let mut clauses: Vec<&str> = Vec::new();
    if words.is_some() {
        clauses.push("f.search_index MATCH ?");
    }
    clauses.extend(filter.clauses.iter().map(String::as_str));
    args.extend(filter.args.iter().cloned());
    let filter_sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };

    let (total, read) = match (&words, filter.clauses.is_empty()) {
        (Some(m), true) => (fts_count(conn, m)?, read_matches(conn, m)?),
        _ if q.seen == Some(false) => (count(conn, from, &filter_sql, &args)?, 0),
        _ => {
            let known = if filter_sql.is_empty() {
                stored(conn)?
            } else {
                None
            };
            let total = match known {
                Some(n) => n,
                None => count(conn, from, &filter_sql, &args)?,
            };
            let read = if q.seen == Some(true) {
                total
            } else {
                let sql = if filter_sql.is_empty() {
                    "WHERE m.seen != 0".to_owned()
                } else {
                    format!("{filter_sql} AND m.seen != 0")
                };
                count(conn, from, &sql, &args)?
            };
            (total, read)
        }
    };

    let order = if words.is_some() { "f.rowid" } else { "m.seq" };
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {SUMMARY_COLS} FROM {from} {filter_sql} ORDER BY {order} DESC LIMIT ? OFFSET ?"
        ))
        .map_err(bad_query)?;
    args.push(Value::Integer(page.limit as i64));
    args.push(Value::Integer(page.offset as i64));
    let messages = collect(&mut stmt, &args)?;
    Ok(Listing {
        total,
        unread: total.saturating_sub(read),
        messages,
    })
}

/// The filters on message columns, as SQL over `m` with their arguments.
struct Filter {
    clauses: Vec<String>,
    args: Vec<Value>,
}

impl Filter {
    /// `LIKE` folds ASCII case as `lower()` does (neither folds more without ICU), and a
    /// NULL column simply does not match: no function call per row.
    fn of(q: &Query) -> Filter {
        let mut clauses = Vec::new();
        let mut args = Vec::new();
        for v in &q.from {
            clauses
                .push(r"(m.mail_from LIKE ? ESCAPE '\' OR m.from_addr LIKE ? ESCAPE '\')".into());
            args.extend([like(v), like(v)]);
        }
        for v in &q.to {
            clauses.push(
                r"(m.rcpt_to LIKE ? ESCAPE '\' OR m.to_addr LIKE ? ESCAPE '\' OR m.cc_addr LIKE ? ESCAPE '\')"
                    .into(),
            );
            args.extend([like(v), like(v), like(v)]);
        }
        for v in &q.subject {
            clauses.push(r"m.subject LIKE ? ESCAPE '\'".into());
            args.push(like(v));
        }
        if let Some(mb) = &q.mailbox {
            clauses.push(
                "EXISTS (SELECT 1 FROM mailbox_messages b WHERE b.seq = m.seq AND b.mailbox = ?)"
                    .into(),
            );
            args.push(Value::Text(mb.clone()));
        }
        if q.has_attachment {
            clauses.push("json_array_length(m.attachments) > 0".into());
        }
        if let Some(seen) = q.seen {
            clauses.push(if seen { "m.seen != 0" } else { "m.seen = 0" }.into());
        }
        if let Some(t) = q.after {
            clauses.push("m.received_at > ?".into());
            args.push(Value::Integer(t));
        }
        if let Some(t) = q.before {
            clauses.push("m.received_at < ?".into());
            args.push(Value::Integer(t));
        }
        Filter { clauses, args }
    }
}

fn count(conn: &Connection, from: &str, filter: &str, args: &[Value]) -> Result<u64, StoreError> {
    conn.prepare_cached(&format!("SELECT count(*) FROM {from} {filter}"))
        .and_then(|mut s| s.query_row(params_from_iter(args.iter()), |r| r.get::<_, i64>(0)))
        .map(|n| n as u64)
        .map_err(bad_query)
}

/// Every stored message, as the writer keeps count of them (see `schema::migrate`);
/// `None` in a database no writer of this version has opened yet.
fn stored(conn: &Connection) -> Result<Option<u64>, StoreError> {
    conn.prepare_cached("SELECT value FROM state WHERE key = 'messages'")
        .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)).optional())
        .map(|n| n.map(|n| n.max(0) as u64))
        .map_err(unavailable)
}

/// Matches of an FTS query, counted in the index alone. The index holds only stored
/// messages (a message and its index row are deleted in one transaction).
fn fts_count(conn: &Connection, fts: &str) -> Result<u64, StoreError> {
    conn.prepare_cached("SELECT count(*) FROM search_index WHERE search_index MATCH ?")
        .and_then(|mut s| s.query_row([fts], |r| r.get::<_, i64>(0)))
        .map(|n| n as u64)
        .map_err(bad_query)
}

/// Read messages among an FTS query's matches: both lists come sorted by seq (the index's
/// rowids, and `messages_read`), so one merge counts them. SQLite would instead build a
/// temporary b-tree of every match, or look each match up in the messages table.
fn read_matches(conn: &Connection, fts: &str) -> Result<u64, StoreError> {
    let mut read_stmt = conn
        .prepare_cached("SELECT seq FROM messages WHERE seen != 0 ORDER BY seq")
        .map_err(unavailable)?;
    let mut read = read_stmt
        .query_map([], |r| r.get::<_, i64>(0))
        .map_err(unavailable)?;
    let Some(first) = read.next().transpose().map_err(unavailable)? else {
        return Ok(0);
    };
    let mut hits_stmt = conn
        .prepare_cached("SELECT rowid FROM search_index WHERE search_index MATCH ? ORDER BY rowid")
        .map_err(bad_query)?;
    let mut hits = hits_stmt
        .query_map([fts], |r| r.get::<_, i64>(0))
        .map_err(bad_query)?;
    let mut read_next = || read.next().transpose().map_err(unavailable);
    let mut hits_next = || hits.next().transpose().map_err(bad_query);
    let (mut r, mut h) = (Some(first), hits_next()?);
    let mut found = 0;
    while let (Some(a), Some(b)) = (r, h) {
        match a.cmp(&b) {
            std::cmp::Ordering::Less => r = read_next()?,
            std::cmp::Ordering::Greater => h = hits_next()?,
            std::cmp::Ordering::Equal => {
                found += 1;
                (r, h) = (read_next()?, hits_next()?);
            }
        }
    }
    Ok(found)
}

/// Turns free words into an FTS5 query: each word a quoted string (AND), `word*` a prefix.
fn fts_match(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            let (w, prefix) = match w.strip_suffix('*') {
                Some(stem) if !stem.is_empty() => (stem, true),
                _ => (w.as_str(), false),
            };
            let quoted = format!("\"{}\"", w.replace('"', "\"\""));
            if prefix { format!("{quoted}*") } else { quoted }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn like(v: &str) -> Value {
    let escaped = v
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    Value::Text(format!("%{escaped}%"))
}

/// An FTS syntax problem is the client's; anything else is ours.
fn bad_query(e: rusqlite::Error) -> StoreError {
    let text = e.to_string();
    if text.contains("fts5") {
        StoreError::BadQuery(text)
    } else {
        unavailable(e)
    }
}
