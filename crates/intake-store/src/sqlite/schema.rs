//! The database schema and its upgrades.

use rusqlite::Connection;

/// Current schema version (`PRAGMA user_version`).
const VERSION: i64 = 10; // 4 added the `users` table; 5 `message_checks`; 6 `meta`; 7 `message_tags`;
// 8 `messages_read`; 9 the count of messages in `state`; 10 the search index's merge fan-out

/// Segments of one size the search index gathers before merging them into one (FTS5's
/// `automerge`; its default is 4). Each merge rewrites the postings it takes, so a larger
/// fan-out rewrites each message's postings fewer times as the index grows (about a third
/// fewer at 100,000 messages), and a word's lookup reads a few more segments (see
/// docs/performance.md, "The search index's merges").
const INDEX_AUTOMERGE: i64 = 8;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS messages (
    seq          INTEGER PRIMARY KEY,
    id           BLOB NOT NULL UNIQUE,
    received_at  INTEGER NOT NULL,
    mail_from    TEXT NOT NULL,
    rcpt_to      TEXT NOT NULL,
    helo         TEXT NOT NULL,
    client_ip    TEXT NOT NULL,
    client_port  INTEGER NOT NULL,
    tls_version  TEXT,
    tls_cipher   TEXT,
    size         INTEGER NOT NULL,
    sha256       TEXT NOT NULL,
    message_id   TEXT,
    from_addr    TEXT,
    to_addr      TEXT,
    cc_addr      TEXT,
    subject      TEXT,
    date         TEXT,
    content_type TEXT,
    charset      TEXT,
    attachments  TEXT NOT NULL,
    seen         INTEGER NOT NULL DEFAULT 0,
    mailboxes    TEXT NOT NULL DEFAULT '[]'
);
-- Read messages (version 8), for unread counts without reading every row. New mail is
-- unread, so receiving never touches this index.
CREATE INDEX IF NOT EXISTS messages_read ON messages (seq) WHERE seen != 0;
CREATE TABLE IF NOT EXISTS bodies (
    seq INTEGER PRIMARY KEY,
    raw BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS mailbox_messages (
    mailbox TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    PRIMARY KEY (mailbox, seq)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS aliases (
    alias   TEXT PRIMARY KEY,
    mailbox TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
-- Small settings shared by every process on this database (version 6): the alias secret.
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
-- Policy state (version 3). Valid recipients: lower-cased addresses, or `@domain` for
-- every address of a domain.
CREATE TABLE IF NOT EXISTS recipients (
    address TEXT PRIMARY KEY
) WITHOUT ROWID;
-- Greylisting: `t <network> <sender> <recipient>` triplets and `c <network>` clients.
CREATE TABLE IF NOT EXISTS greylist (
    key        TEXT PRIMARY KEY,
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    passes     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS greylist_last_seen ON greylist (last_seen);
-- SMTP AUTH users (version 4): lower-cased address, password hash (argon2id, or an
-- imported bcrypt / SHA-512-crypt / Dovecot {SCHEME} one), enabled flag, and the envelope
-- senders the user may use as a JSON array.
CREATE TABLE IF NOT EXISTS users (
    address       TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    enabled       INTEGER NOT NULL DEFAULT 1,
    senders       TEXT NOT NULL DEFAULT '[]'
) WITHOUT ROWID;
CREATE VIRTUAL TABLE IF NOT EXISTS search_index USING fts5(
    subject, addresses, body, headers,
    content = '', contentless_delete = 1,
    tokenize = 'unicode61 remove_diacritics 2'
);
-- What the policy checks found about a message (version 5): JSON (score, symbols, lists,
-- spf, dkim, dmarc, arc, scanner), for messages some check recorded something about.
-- Created by `IF NOT EXISTS` on open, so older databases are upgraded in place.
CREATE TABLE IF NOT EXISTS message_checks (
    seq      INTEGER PRIMARY KEY,
    findings TEXT NOT NULL
);
"#;

/// Creates or upgrades the schema.
pub fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let has_messages: bool = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'messages'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if has_messages && version < 2 {
        // Version 1 (the first release) had no read flag.
        let has_seen: bool = conn.query_row(
            "SELECT count(*) FROM pragma_table_info('messages') WHERE name = 'seen'",
            [],
            |r| r.get::<_, i64>(0).map(|n| n > 0),
        )?;
        if !has_seen {
            // Version 1 also lacked the list of mailboxes on each message.
            conn.execute_batch(
                "ALTER TABLE messages ADD COLUMN seen INTEGER NOT NULL DEFAULT 0;
                 ALTER TABLE messages ADD COLUMN mailboxes TEXT NOT NULL DEFAULT '[]';
                 UPDATE messages SET mailboxes = (SELECT json_group_array(mailbox) FROM mailbox_messages b
                                                  WHERE b.seq = messages.seq);",
            )?;
        }
    }
    conn.execute_batch(SCHEMA)?;
    // Version 7: tags (self-contained: `IF NOT EXISTS`, nothing else changes).
    conn.execute_batch(super::tags::SCHEMA)?;
    // Version 9: how many messages are stored, kept by the writer in the transaction that
    // adds or deletes them, so that the all-mail listing and the metrics do not count the
    // whole table (a million rows take tens of milliseconds). Counted here (one statement:
    // no message can arrive in between) for a new database, one from before version 9, or
    // one a release before version 9 opened last (it stored and deleted mail without
    // counting, and set the version back). Without the row, listings count the table.
    if version < 9 {
        conn.execute(
            "INSERT INTO state (key, value) VALUES ('messages', (SELECT count(*) FROM messages))
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [],
        )?;
    }
    // Version 10: the merge fan-out, kept in the index's own configuration table. Merges
    // from then on follow it; the segments already written stay as they are.
    if version < 10 {
        conn.execute(
            "INSERT INTO search_index (search_index, rank) VALUES ('automerge', ?1)",
            [INDEX_AUTOMERGE],
        )?;
    }
    conn.pragma_update(None, "user_version", VERSION)?;
    Ok(())
}
