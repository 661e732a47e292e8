//! The embedded SQLite store with group commit.
//!
//! Layout (see `SCHEMA`): `messages` holds one row of metadata per message, `bodies` the
//! raw bytes (kept apart so that listings scan small rows), and `mailbox_messages` files a
//! message under each distinct recipient mailbox. A message is stored once however many
//! recipients it has.
//!
//! Writes: sessions send an [`Incoming`] with a oneshot over a bounded channel to the writer
//! thread. The writer takes everything queued (up to `max_batch`), waits up to
//! `commit_delay` for more when the batch is small, writes it in one `BEGIN IMMEDIATE ...
//! COMMIT`, and only after the commit has returned (WAL, `synchronous=FULL`: the WAL is
//! fsync'd) completes the oneshots. While one batch commits, the next one queues.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use intake_core::{
    Arrivals, Envelope, Incoming, MailStore, MessageId, Page, ParsedMeta, StoreError,
    StoredMessage, Summary, TlsInfo,
};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

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
    attachments  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bodies (
    seq INTEGER PRIMARY KEY,
    raw BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS mailbox_messages (
    mailbox TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    PRIMARY KEY (mailbox, seq)
) WITHOUT ROWID;
"#;

/// Settings of the SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// The data directory; the database is `intake.db` inside it.
    pub path: PathBuf,
    /// Most messages in one commit.
    pub max_batch: usize,
    /// How long the writer lingers for more messages before a commit, when the previous
    /// commit held more than one message (concurrent senders). Zero: commit what is queued
    /// at once (batches still form while the previous commit runs).
    pub commit_delay: Duration,
    /// How long a write waits for a lock held by another process before failing.
    pub busy_timeout: Duration,
}

impl SqliteConfig {
    /// Defaults for a data directory.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteConfig {
            path: path.into(),
            max_batch: 256,
            commit_delay: Duration::from_millis(1),
            busy_timeout: Duration::from_secs(5),
        }
    }

    /// The database file.
    pub fn db_file(&self) -> PathBuf {
        self.path.join("intake.db")
    }
}

struct WriteRequest {
    msg: Incoming,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The embedded store. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    cfg: SqliteConfig,
    tx: Mutex<Option<mpsc::Sender<WriteRequest>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    arrivals: Arrivals,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn open(cfg: &SqliteConfig, read_only: bool) -> rusqlite::Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(cfg.db_file(), flags)?;
    conn.busy_timeout(cfg.busy_timeout)?;
    if !read_only {
        // Large pages: a 4 KB message no longer spills into overflow pages, and a batch
        // commit writes far fewer WAL frames (one pwrite each). Only takes effect when the
        // database is created.
        conn.pragma_update(None, "page_size", 16384)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
    }
    conn.pragma_update(None, "cache_size", -16_000)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `cfg.path` and starts its writer thread.
    pub fn open(cfg: SqliteConfig) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(&cfg.path)
            .map_err(|e| unavailable(format!("cannot create {}: {e}", cfg.path.display())))?;
        let conn = open(&cfg, false).map_err(unavailable)?;
        conn.execute_batch(SCHEMA).map_err(unavailable)?;
        let (tx, rx) = mpsc::channel::<WriteRequest>(cfg.max_batch.max(1) * 4);
        let wcfg = cfg.clone();
        let arrivals = Arrivals::default();
        let warr = arrivals.clone();
        let writer = std::thread::Builder::new()
            .name("intake-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, wcfg, warr))
            .map_err(unavailable)?;
        Ok(SqliteStore {
            cfg,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            readers: Arc::new(Mutex::new(Vec::new())),
            arrivals,
        })
    }

    /// The database file.
    pub fn db_file(&self) -> PathBuf {
        self.cfg.db_file()
    }

    /// Runs `f` on a read connection from the pool, off the async runtime.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.readers.clone();
        let cfg = self.cfg.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.lock().expect("reader pool").pop();
            let conn = match conn {
                Some(c) => c,
                None => open(&cfg, true).map_err(unavailable)?,
            };
            let out = f(&conn);
            let mut pool = pool.lock().expect("reader pool");
            if pool.len() < 8 {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(unavailable)?
    }
}

fn writer_loop(
    conn: Connection,
    rx: mpsc::Receiver<WriteRequest>,
    cfg: SqliteConfig,
    arrivals: Arrivals,
) {
    // The writer owns its thread; a small runtime only for waiting on the channel with a
    // deadline. All SQLite work blocks this thread, which is what it is for.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("writer runtime");
    rt.block_on(write_loop(conn, rx, cfg, arrivals));
}

async fn write_loop(
    mut conn: Connection,
    mut rx: mpsc::Receiver<WriteRequest>,
    cfg: SqliteConfig,
    arrivals: Arrivals,
) {
    let mut batch: Vec<WriteRequest> = Vec::with_capacity(cfg.max_batch);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        drain(&mut rx, &mut batch, cfg.max_batch);
        // Linger for more only while other sessions are receiving content (their messages
        // are moments away): a lone client, or clients all waiting on this commit, never wait.
        if arrivals.pending() > 0 && !cfg.commit_delay.is_zero() {
            let deadline = tokio::time::Instant::now() + cfg.commit_delay;
            while batch.len() < cfg.max_batch && arrivals.pending() > 0 {
                // Short waits, so that the batch closes soon after the last arrival.
                let step = (tokio::time::Instant::now() + Duration::from_micros(250)).min(deadline);
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                match tokio::time::timeout_at(step, rx.recv()).await {
                    Ok(Some(r)) => {
                        batch.push(r);
                        drain(&mut rx, &mut batch, cfg.max_batch);
                    }
                    Ok(None) => break,
                    Err(_) => {}
                }
            }
        }
        let started = Instant::now();
        let result = write_batch(&mut conn, &batch);
        let n = batch.len();
        match &result {
            Ok(()) => tracing::trace!(
                messages = n,
                micros = started.elapsed().as_micros() as u64,
                "committed"
            ),
            Err(e) => {
                tracing::error!(messages = n, error = %e, "commit failed; answering 451")
            }
        }
        for req in batch.drain(..) {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(unavailable(e)),
            };
            let _ = req.done.send(r);
        }
    }
    // Channel closed: flush the WAL into the database for a tidy shutdown.
    let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
}

fn drain(rx: &mut mpsc::Receiver<WriteRequest>, batch: &mut Vec<WriteRequest>, max: usize) {
    while batch.len() < max {
        match rx.try_recv() {
            Ok(r) => batch.push(r),
            Err(_) => break,
        }
    }
}

fn write_batch(conn: &mut Connection, batch: &[WriteRequest]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut ins_msg = tx.prepare_cached(
            "INSERT INTO messages (id, received_at, mail_from, rcpt_to, helo, client_ip, client_port,
                tls_version, tls_cipher, size, sha256, message_id, from_addr, to_addr, cc_addr,
                subject, date, content_type, charset, attachments)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
        )?;
        let mut ins_body = tx.prepare_cached("INSERT INTO bodies (seq, raw) VALUES (?1, ?2)")?;
        let mut ins_box = tx.prepare_cached(
            "INSERT OR IGNORE INTO mailbox_messages (mailbox, seq) VALUES (?1, ?2)",
        )?;
        for req in batch {
            let m = &req.msg;
            let rcpt = serde_json::to_string(&m.envelope.rcpt_to).expect("strings serialize");
            let attachments =
                serde_json::to_string(&m.meta.attachments).expect("attachments serialize");
            ins_msg.execute(params![
                &m.id.as_bytes()[..],
                m.received_at,
                m.envelope.mail_from,
                rcpt,
                m.session.helo,
                m.session.client.ip().to_string(),
                m.session.client.port(),
                m.session.tls.as_ref().map(|t| t.version.as_str()),
                m.session.tls.as_ref().map(|t| t.cipher.as_str()),
                m.size as i64,
                m.sha256,
                m.meta.message_id,
                m.meta.from,
                m.meta.to,
                m.meta.cc,
                m.meta.subject,
                m.meta.date,
                m.meta.content_type,
                m.meta.charset,
                attachments,
            ])?;
            let seq = tx.last_insert_rowid();
            ins_body.execute(params![seq, &m.raw[..]])?;
            for mailbox in m.mailboxes() {
                ins_box.execute(params![mailbox, seq])?;
            }
        }
    }
    tx.commit()
}

fn summary_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Summary> {
    let id: Vec<u8> = row.get(0)?;
    Ok(Summary {
        id: MessageId::from_slice(&id).unwrap_or(MessageId(uuid::Uuid::nil())),
        received_at: row.get(1)?,
        mail_from: row.get(2)?,
        subject: row.get(3)?,
        size: row.get::<_, i64>(4)? as u64,
    })
}

#[async_trait]
impl MailStore for SqliteStore {
    async fn deliver(&self, msg: Incoming) -> Result<(), StoreError> {
        let tx = self
            .tx
            .lock()
            .expect("sender")
            .clone()
            .ok_or(StoreError::Closed)?;
        let (done, wait) = oneshot::channel();
        tx.send(WriteRequest { msg, done })
            .await
            .map_err(|_| StoreError::Closed)?;
        wait.await.map_err(|_| StoreError::Closed)?
    }

    async fn list_mailbox(&self, mailbox: &str, page: Page) -> Result<Vec<Summary>, StoreError> {
        let mailbox = intake_core::mailbox_key(mailbox);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT m.id, m.received_at, m.mail_from, m.subject, m.size
                     FROM mailbox_messages b JOIN messages m ON m.seq = b.seq
                     WHERE b.mailbox = ?1 ORDER BY b.seq DESC LIMIT ?2 OFFSET ?3",
                )
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(
                    params![mailbox, page.limit as i64, page.offset as i64],
                    summary_from_row,
                )
                .map_err(unavailable)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
        })
        .await
    }

    async fn fetch(&self, id: MessageId) -> Result<Option<StoredMessage>, StoreError> {
        self.read(move |conn| fetch_sync(conn, id)).await
    }

    fn arrivals(&self) -> Option<Arrivals> {
        Some(self.arrivals.clone())
    }

    async fn close(&self) {
        let tx = self.tx.lock().expect("sender").take();
        drop(tx);
        let writer = self.writer.lock().expect("writer").take();
        if let Some(w) = writer {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
    }
}

fn fetch_sync(conn: &Connection, id: MessageId) -> Result<Option<StoredMessage>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT m.received_at, m.mail_from, m.rcpt_to, m.helo, m.client_ip, m.client_port,
                    m.tls_version, m.tls_cipher, m.size, m.sha256, m.message_id, m.from_addr,
                    m.to_addr, m.cc_addr, m.subject, m.date, m.content_type, m.charset,
                    m.attachments, b.raw
             FROM messages m JOIN bodies b ON b.seq = m.seq WHERE m.id = ?1",
        )
        .map_err(unavailable)?;
    let row = stmt
        .query_row(params![&id.as_bytes()[..]], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, u16>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, Option<String>>(7)?,
                r.get::<_, i64>(8)?,
                r.get::<_, String>(9)?,
                (
                    r.get::<_, Option<String>>(10)?,
                    r.get::<_, Option<String>>(11)?,
                    r.get::<_, Option<String>>(12)?,
                    r.get::<_, Option<String>>(13)?,
                    r.get::<_, Option<String>>(14)?,
                    r.get::<_, Option<String>>(15)?,
                    r.get::<_, Option<String>>(16)?,
                    r.get::<_, Option<String>>(17)?,
                    r.get::<_, String>(18)?,
                ),
                r.get::<_, Vec<u8>>(19)?,
            ))
        })
        .optional()
        .map_err(unavailable)?;
    let Some((received_at, mail_from, rcpt, helo, ip, port, tls_v, tls_c, size, sha256, meta, raw)) =
        row
    else {
        return Ok(None);
    };
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("message {id}: {e}"));
    let rcpt_to: Vec<String> = serde_json::from_str(&rcpt).map_err(|e| corrupt(&e))?;
    let attachments = serde_json::from_str(&meta.8).map_err(|e| corrupt(&e))?;
    let ip: std::net::IpAddr = ip.parse().map_err(|e| corrupt(&e))?;
    Ok(Some(StoredMessage {
        id,
        received_at,
        envelope: Envelope { mail_from, rcpt_to },
        helo,
        client: std::net::SocketAddr::new(ip, port),
        tls: match (tls_v, tls_c) {
            (Some(version), Some(cipher)) => Some(TlsInfo { version, cipher }),
            _ => None,
        },
        size: size as u64,
        sha256,
        meta: ParsedMeta {
            message_id: meta.0,
            from: meta.1,
            to: meta.2,
            cc: meta.3,
            subject: meta.4,
            date: meta.5,
            content_type: meta.6,
            charset: meta.7,
            attachments,
        },
        raw: raw.into(),
    }))
}

/// Whether a data directory holds an Intake database (for the CLI's messages).
pub fn database_exists(path: &Path) -> bool {
    path.join("intake.db").exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use intake_core::SessionInfo;

    fn incoming(rcpts: &[&str], subject: &str) -> Incoming {
        Incoming::new(
            MessageId::new(),
            1_700_000_000_000,
            Envelope {
                mail_from: "s@example.net".into(),
                rcpt_to: rcpts.iter().map(|s| s.to_string()).collect(),
            },
            SessionInfo {
                helo: "client.example".into(),
                client: "192.0.2.1:4567".parse().unwrap(),
                tls: None,
            },
            "Received: test\r\n",
            format!("Subject: {subject}\r\n\r\nbody\r\n").as_bytes(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deliver_list_fetch_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(SqliteConfig::new(dir.path())).unwrap());
        let mut handles = Vec::new();
        for i in 0..50 {
            let store = store.clone();
            handles.push(tokio::spawn(async move {
                let m = incoming(
                    &["A@Example.com", "a@example.com", "b@example.com"],
                    &format!("n{i}"),
                );
                let id = m.id;
                store.deliver(m).await.map(|_| id)
            }));
        }
        let mut ids = Vec::new();
        for h in handles {
            ids.push(h.await.unwrap().unwrap());
        }
        let list = store
            .list_mailbox(
                "a@EXAMPLE.com",
                Page {
                    offset: 0,
                    limit: 100,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            list.len(),
            50,
            "stored once per mailbox even with two spellings"
        );
        let mut listed: Vec<_> = list.iter().map(|s| s.id).collect();
        listed.sort();
        ids.sort();
        assert_eq!(listed, ids);
        // Sequential deliveries come back newest first.
        let (m1, m2) = (
            incoming(&["a@example.com"], "first"),
            incoming(&["a@example.com"], "second"),
        );
        store.deliver(m1).await.unwrap();
        store.deliver(m2).await.unwrap();
        let top = store
            .list_mailbox(
                "a@example.com",
                Page {
                    offset: 0,
                    limit: 2,
                },
            )
            .await
            .unwrap();
        assert_eq!(top[0].subject.as_deref(), Some("second"));
        assert_eq!(top[1].subject.as_deref(), Some("first"));
        let b = store
            .list_mailbox(
                "b@example.com",
                Page {
                    offset: 10,
                    limit: 5,
                },
            )
            .await
            .unwrap();
        assert_eq!(b.len(), 5);
        let one = store.fetch(ids[7]).await.unwrap().unwrap();
        assert_eq!(one.meta.subject.as_deref(), Some("n7"));
        assert!(one.raw.starts_with(b"Received: test\r\nSubject: n7"));
        assert_eq!(one.envelope.rcpt_to.len(), 3);
        assert_eq!(one.client.to_string(), "192.0.2.1:4567");
        store.close().await;
        assert!(matches!(
            store.deliver(incoming(&["x@y"], "late")).await,
            Err(StoreError::Closed)
        ));
        drop(store);
        let store = SqliteStore::open(SqliteConfig::new(dir.path())).unwrap();
        let list = store
            .list_mailbox(
                "a@example.com",
                Page {
                    offset: 0,
                    limit: 100,
                },
            )
            .await
            .unwrap();
        assert_eq!(list.len(), 52);
        assert!(store.fetch(MessageId::new()).await.unwrap().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_locked_database_fails_the_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = SqliteConfig::new(dir.path());
        cfg.busy_timeout = Duration::from_millis(50);
        let store = SqliteStore::open(cfg.clone()).unwrap();
        let other = Connection::open(cfg.db_file()).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let r = store.deliver(incoming(&["a@b"], "x")).await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
        other.execute_batch("ROLLBACK").unwrap();
        store.deliver(incoming(&["a@b"], "y")).await.unwrap();
        assert_eq!(
            store
                .list_mailbox("a@b", Page::default())
                .await
                .unwrap()
                .len(),
            1
        );
    }
}
