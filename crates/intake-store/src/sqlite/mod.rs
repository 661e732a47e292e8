//! The embedded SQLite store with group commit.
//!
//! Layout ([`schema`]): `messages` holds one row of metadata per message, `bodies` the raw
//! bytes (kept apart so that listings scan small rows), `mailbox_messages` files a message
//! under each distinct recipient mailbox (a message is stored once however many recipients
//! it has), `aliases` maps alias addresses to mailboxes, `meta` keeps the alias secret,
//! `search_index` is a contentless FTS5 index filled after the commit, off the SMTP path.
//!
//! A [`MailBackend`], [`DirectoryBackend`] and [`PolicyBackend`]: storage only. Alias resolution, events and the retention schedule are the
//! layer's (`crate::Store`).
//!
//! Writes: every write goes to one writer thread ([`writer`]). Sessions send an
//! [`Incoming`] with a oneshot over a bounded channel; the writer takes everything queued
//! (up to `max_batch`), lingers up to `commit_delay` while other sessions are still
//! receiving content, writes the batch in one `BEGIN IMMEDIATE ... COMMIT`, and only after
//! the commit has returned (WAL, `synchronous=FULL`: the WAL is fsync'd) completes the
//! oneshots. While one batch commits, the next one queues.
//!
//! Reads ([`read`]) use a small pool of read-only connections on `spawn_blocking`; WAL lets
//! them run while the writer commits.
//!
//! Policy state ([`policy`]: valid recipients, greylisting) is written on a connection of
//! its own, not by the writer thread: a greylist update per RCPT must not wait for a group
//! commit, and losing the last of it in a crash costs a retry, so it is not fsync'd.

mod index;
mod options;
mod policy;
mod read;
mod schema;
mod search;
mod tags;
mod users;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use intake_core::{
    Arrivals, DirectoryBackend, Eviction, GreyRecord, Incoming, Listing, MailBackend, MessageId,
    Page, PolicyBackend, Query, Removal, Retention, SearchMode, StoreError, StoredMessage,
    TagBackend,
};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use crate::evict::EvictSteps;
use crate::queue::WriterQueue;
pub use options::SqliteOptions;
use writer::Job;

/// Settings of the SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// The data directory; the database is `intake.db` inside it.
    pub path: PathBuf,
    /// Most messages in one commit.
    pub max_batch: usize,
    /// How long the writer lingers for more messages before a commit while other sessions
    /// are receiving content. Zero: commit what is queued at once (batches still form while
    /// the previous commit runs).
    pub commit_delay: Duration,
    /// How long a write waits for a lock held by another process before failing.
    pub busy_timeout: Duration,
    /// Under sustained load, index new mail for search at least this often (otherwise the
    /// index is updated whenever the writer is idle).
    pub index_max_lag: Duration,
    /// What is indexed for full-text search (`store.search`); `Off`: nothing.
    pub search: SearchMode,
}

impl SqliteConfig {
    /// Defaults for a data directory.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteConfig {
            path: path.into(),
            max_batch: 256,
            commit_delay: Duration::from_millis(1),
            busy_timeout: Duration::from_secs(5),
            index_max_lag: Duration::from_secs(5),
            search: SearchMode::Full,
        }
    }

    /// The database file.
    pub fn db_file(&self) -> PathBuf {
        self.path.join("intake.db")
    }
}

/// The embedded store. Cheap to share behind an `Arc`.
pub struct SqliteBackend {
    cfg: SqliteConfig,
    tx: WriterQueue<Job>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    /// Sessions receiving content (the writer lingers for them); `None` without a writer.
    arrivals: Option<Arrivals>,
    /// The connection for policy state, opened on first use (never for a read-only store).
    policy: Arc<Mutex<Option<Connection>>>,
    read_only: bool,
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// The writer connection's page cache, KiB (readers keep 16 MB each).
const WRITER_CACHE_KIB: i64 = 3_000;

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
        // Large pages: a 4 KB message does not spill into overflow pages, and a batch
        // commit writes fewer WAL frames. Only takes effect when the database is created.
        conn.pragma_update(None, "page_size", 16384)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
    }
    conn.pragma_update(None, "cache_size", -16_000)?;
    Ok(conn)
}

impl SqliteBackend {
    /// Opens (creating or upgrading if needed) the store in `cfg.path` and starts its
    /// writer thread.
    pub fn open(cfg: SqliteConfig) -> Result<SqliteBackend, StoreError> {
        std::fs::create_dir_all(&cfg.path)
            .map_err(|e| unavailable(format!("cannot create {}: {e}", cfg.path.display())))?;
        let conn = open(&cfg, false).map_err(unavailable)?;
        schema::migrate(&conn).map_err(unavailable)?;
        // The writer's own page cache stays small: it needs the B-trees' inner pages, while
        // a large body streamed through it would otherwise fill a big cache with pages it
        // never reads again (memory a message in flight costs on top of its own size).
        conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)
            .map_err(unavailable)?;
        let (tx, rx) = mpsc::channel::<Job>(cfg.max_batch.max(1) * 4);
        let wcfg = cfg.clone();
        let arrivals = Arrivals::default();
        let warr = arrivals.clone();
        let writer = std::thread::Builder::new()
            .name("intake-sqlite-writer".into())
            .spawn(move || writer::run(conn, rx, wcfg, warr))
            .map_err(unavailable)?;
        Ok(SqliteBackend {
            cfg,
            tx: WriterQueue::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            readers: Arc::new(Mutex::new(Vec::new())),
            arrivals: Some(arrivals),
            policy: Arc::new(Mutex::new(None)),
            read_only: false,
        })
    }

    /// Opens a store for administration while a server may be running (the CLI's
    /// `recipient add`): creates or upgrades the schema and writes policy state, but has no
    /// writer thread, so message writes answer [`StoreError::Closed`].
    pub fn open_admin(cfg: SqliteConfig) -> Result<SqliteBackend, StoreError> {
        std::fs::create_dir_all(&cfg.path)
            .map_err(|e| unavailable(format!("cannot create {}: {e}", cfg.path.display())))?;
        let conn = open(&cfg, false).map_err(unavailable)?;
        schema::migrate(&conn).map_err(unavailable)?;
        policy::tune(&conn).map_err(unavailable)?;
        Ok(SqliteBackend {
            cfg,
            tx: WriterQueue::new(None),
            writer: Mutex::new(None),
            readers: Arc::new(Mutex::new(Vec::new())),
            arrivals: None,
            policy: Arc::new(Mutex::new(Some(conn))),
            read_only: false,
        })
    }

    /// Opens an existing store for reading only (the CLI, while a server may be writing):
    /// no writer thread, no schema change; every write answers [`StoreError::Closed`].
    pub fn open_read_only(cfg: SqliteConfig) -> Result<SqliteBackend, StoreError> {
        // Fail early and clearly if the file cannot be read.
        open(&cfg, true).map_err(unavailable)?;
        Ok(SqliteBackend {
            cfg,
            tx: WriterQueue::new(None),
            writer: Mutex::new(None),
            readers: Arc::new(Mutex::new(Vec::new())),
            arrivals: None,
            policy: Arc::new(Mutex::new(None)),
            read_only: true,
        })
    }

    /// The database file.
    pub fn db_file(&self) -> PathBuf {
        self.cfg.db_file()
    }

    /// Sends a job to the writer and waits for its answer.
    async fn write<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
    ) -> Result<T, StoreError> {
        let tx = self.tx.sender()?;
        let (done, wait) = oneshot::channel();
        tx.send(job(done)).await.map_err(|_| StoreError::Closed)?;
        wait.await.map_err(|_| StoreError::Closed)?
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

impl SqliteBackend {
    /// Runs `f` on the policy connection, off the async runtime.
    async fn policy<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        if self.read_only {
            return Err(StoreError::Unavailable(
                "the store is open read-only".into(),
            ));
        }
        let slot = self.policy.clone();
        let cfg = self.cfg.clone();
        tokio::task::spawn_blocking(move || {
            let mut slot = slot.lock().expect("policy connection");
            if slot.is_none() {
                let conn = open(&cfg, false).map_err(unavailable)?;
                policy::tune(&conn).map_err(unavailable)?;
                *slot = Some(conn);
            }
            f(slot.as_mut().expect("opened above")).map_err(unavailable)
        })
        .await
        .map_err(unavailable)?
    }
}

#[async_trait]
impl MailBackend for SqliteBackend {
    async fn deliver(&self, msg: Incoming, mailboxes: Vec<String>) -> Result<(), StoreError> {
        self.write(|done| Job::Deliver(Box::new((msg, mailboxes)), done))
            .await
    }

    async fn list_mailbox(&self, mailbox: &str, page: Page) -> Result<Listing, StoreError> {
        let mailbox = mailbox.to_string();
        self.read(move |c| read::list_mailbox(c, &mailbox, page))
            .await
    }

    async fn list_all(&self, page: Page) -> Result<Listing, StoreError> {
        self.read(move |c| search::list_all(c, page)).await
    }

    async fn search(&self, query: &Query, page: Page) -> Result<Listing, StoreError> {
        let q = query.clone();
        self.read(move |c| search::search(c, &q, page)).await
    }

    async fn fetch(&self, id: MessageId) -> Result<Option<StoredMessage>, StoreError> {
        self.read(move |c| read::fetch(c, id)).await
    }

    async fn delete(&self, id: MessageId) -> Result<Option<Removal>, StoreError> {
        self.write(|done| Job::Delete(id, done)).await
    }

    async fn delete_mailbox(&self, mailbox: &str) -> Result<Vec<Removal>, StoreError> {
        let mailbox = mailbox.to_string();
        self.write(|done| Job::DeleteMailbox(mailbox, done)).await
    }

    async fn set_seen(&self, id: MessageId, seen: bool) -> Result<bool, StoreError> {
        self.write(|done| Job::SetSeen(id, seen, done)).await
    }

    async fn alias_put(&self, alias: &str, mailbox: &str) -> Result<(), StoreError> {
        let (alias, mailbox) = (alias.to_string(), mailbox.to_string());
        self.write(|done| Job::RegisterAlias(alias, mailbox, done))
            .await
    }

    async fn alias_get(&self, alias: &str) -> Result<Option<String>, StoreError> {
        let alias = alias.to_string();
        self.read(move |c| read::alias_get(c, &alias)).await
    }

    async fn meta_get_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError> {
        let (key, value) = (key.to_string(), value.to_string());
        self.write(|done| Job::MetaInit(key, value, done)).await
    }

    async fn evict(&self, policy: &Retention, now_ms: i64) -> Result<Eviction, StoreError> {
        crate::evict::evict(&Evicting(self), policy, now_ms).await
    }

    fn size_on_disk(&self) -> Option<u64> {
        // The database and its write-ahead log (the -shm index is a few KiB).
        let db = self.cfg.db_file();
        let wal = db.with_extension("db-wal");
        let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        Some(size(&db) + size(&wal))
    }

    async fn close(&self) {
        self.tx.close();
        let writer = self.writer.lock().expect("writer").take();
        if let Some(w) = writer {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
    }
}

#[async_trait]
impl DirectoryBackend for SqliteBackend {
    async fn recipient_add(&self, address: &str) -> Result<bool, StoreError> {
        let a = policy::recipient_key(address);
        self.policy(move |c| policy::recipient_add(c, &a)).await
    }

    async fn recipient_remove(&self, address: &str) -> Result<bool, StoreError> {
        let a = policy::recipient_key(address);
        self.policy(move |c| policy::recipient_remove(c, &a)).await
    }

    async fn recipient_list(&self) -> Result<Vec<String>, StoreError> {
        self.read(|c| policy::recipient_list(c).map_err(unavailable))
            .await
    }

    async fn recipient_lookup(&self, address: &str) -> Result<Option<bool>, StoreError> {
        let a = policy::recipient_key(address);
        self.read(move |c| policy::recipient_lookup(c, &a).map_err(unavailable))
            .await
    }

    async fn user_get(&self, address: &str) -> Result<Option<intake_core::User>, StoreError> {
        let a = users::key(address);
        self.read(move |c| users::get(c, &a).map_err(unavailable))
            .await
    }

    async fn user_add(&self, user: intake_core::User) -> Result<bool, StoreError> {
        self.policy(move |c| users::add(c, &user)).await
    }

    async fn user_set_password(&self, address: &str, hash: &str) -> Result<bool, StoreError> {
        let (a, h) = (users::key(address), hash.to_string());
        self.policy(move |c| users::set_password(c, &a, &h)).await
    }

    async fn user_set_enabled(&self, address: &str, enabled: bool) -> Result<bool, StoreError> {
        let a = users::key(address);
        self.policy(move |c| users::set_enabled(c, &a, enabled))
            .await
    }

    async fn user_list(&self) -> Result<Vec<intake_core::User>, StoreError> {
        self.read(|c| users::list(c).map_err(unavailable)).await
    }
}

#[async_trait]
impl TagBackend for SqliteBackend {
    async fn tags_get(&self, id: MessageId) -> Result<Option<Vec<String>>, StoreError> {
        self.read(move |c| tags::get(c, id).map_err(unavailable))
            .await
    }

    async fn tags_put(&self, id: MessageId, tags: &[String]) -> Result<bool, StoreError> {
        let tags = tags.to_vec();
        self.policy(move |c| tags::put(c, id, &tags)).await
    }

    async fn tags_all(&self) -> Result<Vec<String>, StoreError> {
        self.read(|c| tags::all(c).map_err(unavailable)).await
    }

    async fn tags_rename(&self, from: &str, to: &str) -> Result<u64, StoreError> {
        let (from, to) = (from.to_string(), to.to_string());
        self.policy(move |c| tags::rename(c, &from, &to)).await
    }

    async fn tags_remove(&self, tag: &str) -> Result<u64, StoreError> {
        let tag = tag.to_string();
        self.policy(move |c| tags::remove(c, &tag)).await
    }
}

#[async_trait]
impl PolicyBackend for SqliteBackend {
    async fn greylist_get(&self, key: &str) -> Result<Option<GreyRecord>, StoreError> {
        let key = key.to_string();
        self.read(move |c| policy::greylist_get(c, &key).map_err(unavailable))
            .await
    }

    async fn greylist_put(&self, key: &str, record: GreyRecord) -> Result<(), StoreError> {
        let key = key.to_string();
        self.policy(move |c| policy::greylist_put(c, &key, record))
            .await
    }

    async fn greylist_expire(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.policy(move |c| policy::greylist_expire(c, before_ms))
            .await
    }
}

impl SqliteBackend {
    /// The counter of sessions receiving content this engine's group commit lingers
    /// for; `open` hands it to the wiring ([`crate::Opened`]).
    pub fn arrivals(&self) -> Option<Arrivals> {
        self.arrivals.clone()
    }
}

/// Whether a data directory holds an Intake database (for the CLI's messages).
pub fn database_exists(path: &Path) -> bool {
    path.join("intake.db").exists()
}

#[cfg(test)]
mod tests;

/// Retention's steps on SQLite (`crate::evict`): found on a reader, deleted by the writer.
struct Evicting<'a>(&'a SqliteBackend);

#[async_trait]
impl EvictSteps for Evicting<'_> {
    type Link = (String, i64);
    type Key = i64;

    async fn over_mailbox_cap(&self, keep: u64) -> Result<Vec<(String, i64)>, StoreError> {
        self.0.read(move |c| read::over_mailbox_cap(c, keep)).await
    }

    async fn unlink(&self, links: &[(String, i64)]) -> Result<(u64, Vec<Removal>), StoreError> {
        let links = links.to_vec();
        self.0.write(|done| Job::Unlink(links, done)).await
    }

    async fn older_than(&self, before_ms: i64) -> Result<Vec<i64>, StoreError> {
        self.0.read(move |c| read::older_than(c, before_ms)).await
    }

    async fn over_size_cap(&self, max_bytes: u64) -> Result<Vec<i64>, StoreError> {
        self.0
            .read(move |c| read::over_size_cap(c, max_bytes))
            .await
    }

    async fn delete(&self, seqs: &[i64]) -> Result<Vec<Removal>, StoreError> {
        let seqs = seqs.to_vec();
        self.0.write(|done| Job::DeleteSeqs(seqs, done)).await
    }
}
