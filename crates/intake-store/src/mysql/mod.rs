//! MariaDB and MySQL (`store.type = "mysql"` or `"mariadb"`), through sqlx.
//!
//! Layout (`migrations/mysql/`, applied by [`schema`]): `messages` holds one row of metadata
//! per message, keyed by its id (a UUIDv7, so listings sort by id, newest first); `bodies`
//! the raw bytes in parts of at most one chunk (so no row or statement comes near the
//! server's `max_allowed_packet`); `mailbox_messages` files a message under each distinct
//! mailbox; `search_text` is what search looks at, under an InnoDB `FULLTEXT` index;
//! `message_checks`, `aliases`, `meta`, and the policy state (`recipients`, `greylist`,
//! `users`). InnoDB, `utf8mb4`.
//!
//! Writes of mail go through one writer task ([`writer`]) on a connection of its own:
//! sessions send a message with a oneshot over a bounded channel; the writer takes what is
//! queued (up to `max_batch`), lingers up to `commit_delay` while other sessions are still
//! receiving content, writes the batch in one transaction (one multi-row `INSERT` per
//! table), and answers the oneshots only after `COMMIT` returned. A message the server
//! refuses is isolated with savepoints: only its sender gets the 451.
//!
//! Everything else (reads, deletes, the read flag, aliases, eviction, policy state, users)
//! runs on a pool ([`read`], [`policy`]). A lost connection is replaced on the next use: a
//! pool connection is tested before use, the writer reconnects before its next batch. While
//! the server is unreachable every call fails within `store.connect_timeout`.
//!
//! Durability is the server's: the writer's `COMMIT` returns once InnoDB has flushed its
//! log when `innodb_flush_log_at_trx_commit = 1` (and the binary log, if any, with
//! `sync_binlog = 1`). Both are checked at start ([`schema::check_server`]).

mod options;
mod policy;
mod read;
mod rows;
mod schema;
mod tags;
mod writer;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use intake_core::{
    Arrivals, DirectoryBackend, Eviction, GreyRecord, Incoming, Listing, MailBackend, MessageId,
    Page, PolicyBackend, Query, Removal, Retention, SearchMode, StoreError, StoredMessage, User,
    mime,
};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor, MySqlConnection};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::common::{Mode, PoolOptions};
use crate::evict::{EVICT_CHUNK, EvictSteps};
use crate::queue::WriterQueue;
pub use options::MysqlOptions;

/// Settings of the MariaDB/MySQL store.
#[derive(Debug, Clone)]
pub struct MysqlConfig {
    /// `mysql://user:password@host:3306/database` (never logged with its password).
    pub url: String,
    /// Most messages in one commit.
    pub max_batch: usize,
    /// How long the writer lingers for more messages while other sessions are receiving
    /// content.
    pub commit_delay: Duration,
    /// Pool connections (reads and short writes), besides the writer's own.
    pub pool_size: u32,
    /// How long a connection (new, or from the pool) may take before the call fails.
    pub connect_timeout: Duration,
    /// Refuse to start when commits are not flushed (else warn).
    pub require_durable_commit: bool,
    /// What the FULLTEXT index gets (`store.search`; `Off`: nothing).
    pub search: SearchMode,
}

impl MysqlConfig {
    /// Defaults for a URL.
    pub fn new(url: impl Into<String>) -> Self {
        let pool = PoolOptions::default();
        MysqlConfig {
            url: url.into(),
            max_batch: 256,
            commit_delay: Duration::from_millis(1),
            pool_size: pool.pool_size,
            connect_timeout: pool.connect_timeout,
            require_durable_commit: MysqlOptions::default().require_durable_commit,
            search: SearchMode::Full,
        }
    }
}

/// Row and lock waits on our connections: a write stuck behind another session's lock
/// fails after this (and answers 451) instead of holding the writer.
const LOCK_WAIT_SECS: u32 = 10;

/// What the server told us at start that shapes how we write and search.
#[derive(Debug, Clone)]
pub(crate) struct ServerLimits {
    /// Bytes of one body part (and at most of one row of search text).
    pub chunk: usize,
    /// Bytes of data one statement may carry (a multi-row insert is split under it).
    pub statement_budget: usize,
    /// `innodb_ft_min_token_size`: shorter words are searched with `LIKE`.
    pub ft_min_token: usize,
}

/// The MariaDB/MySQL store. Cheap to share behind an `Arc`.
pub struct MysqlBackend {
    pool: MySqlPool,
    mode: Mode,
    limits: Arc<ServerLimits>,
    search: SearchMode,
    tx: WriterQueue<writer::Delivery>,
    writer: Mutex<Option<JoinHandle<()>>>,
    arrivals: Arrivals,
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// The server's error number, for a database error.
pub(crate) fn error_number(e: &sqlx::Error) -> Option<u16> {
    e.as_database_error()
        .and_then(|d| d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .map(|d| d.number())
}

/// Duplicate key.
pub(crate) const ER_DUP_ENTRY: u16 = 1062;

/// Session settings of every connection we open: strict (a value that does not fit is an
/// error, never silently truncated), READ COMMITTED (no gap locks between deliveries and
/// deletes), bounded lock waits.
async fn setup_session(conn: &mut MySqlConnection, read_only: bool) -> Result<(), sqlx::Error> {
    conn.execute(sqlx::AssertSqlSafe(format!(
        "SET SESSION sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES'), \
         SESSION innodb_lock_wait_timeout = {LOCK_WAIT_SECS}, \
         SESSION lock_wait_timeout = {LOCK_WAIT_SECS}"
    )))
    .await?;
    conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await?;
    if read_only {
        conn.execute("SET SESSION TRANSACTION READ ONLY").await?;
    }
    Ok(())
}

/// Opens one connection (the writer's, the migrator's), set up, within the timeout.
pub(crate) async fn connect_one(
    opts: &MySqlConnectOptions,
    timeout: Duration,
    read_only: bool,
) -> Result<MySqlConnection, StoreError> {
    let fut = async {
        let mut conn = opts.connect().await?;
        setup_session(&mut conn, read_only).await?;
        Ok::<_, sqlx::Error>(conn)
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(unavailable(e)),
        Err(_) => Err(StoreError::Unavailable(format!(
            "no connection within {timeout:?} (store.connect_timeout)"
        ))),
    }
}

impl MysqlBackend {
    /// Connects to the server of `cfg` for `mode`: the server (ReadWrite) checks the
    /// server's durability settings, creates or upgrades the schema and starts the writer;
    /// Admin upgrades the schema and takes no mail; ReadOnly changes nothing and fails when
    /// there is no Intake schema in the database.
    pub async fn open(cfg: MysqlConfig, mode: Mode) -> Result<MysqlBackend, StoreError> {
        let opts: MySqlConnectOptions = cfg
            .url
            .parse()
            .map_err(|e| StoreError::Unavailable(format!("store.url: {e}")))?;
        let read_only = mode == Mode::ReadOnly;
        let mut first = connect_one(&opts, cfg.connect_timeout, read_only).await?;
        let limits = schema::check_server(&mut first, &cfg, mode).await?;
        match mode {
            Mode::ReadWrite | Mode::Admin => {
                schema::migrate(&mut first, cfg.connect_timeout).await?
            }
            Mode::ReadOnly => schema::require_schema(&mut first).await?,
        }
        let _ = first.close().await;
        let pool = MySqlPoolOptions::new()
            .max_connections(cfg.pool_size)
            .min_connections(0)
            .acquire_timeout(cfg.connect_timeout)
            .test_before_acquire(true)
            .idle_timeout(Some(Duration::from_secs(300)))
            .after_connect(move |conn, _meta| {
                Box::pin(async move { setup_session(conn, read_only).await })
            })
            .connect_lazy_with(opts.clone());
        let limits = Arc::new(limits);
        let arrivals = Arrivals::default();
        let (tx, handle) = if mode == Mode::ReadWrite {
            let (tx, rx) = mpsc::channel(cfg.max_batch * 4);
            let w = writer::Writer::new(opts, cfg.clone(), limits.clone(), arrivals.clone());
            (Some(tx), Some(tokio::spawn(w.run(rx))))
        } else {
            (None, None)
        };
        Ok(MysqlBackend {
            pool,
            mode,
            limits,
            search: cfg.search,
            tx: WriterQueue::new(tx),
            writer: Mutex::new(handle),
            arrivals,
        })
    }

    /// The pool, for a write that the mode allows.
    fn writable(&self) -> Result<&MySqlPool, StoreError> {
        match self.mode {
            Mode::ReadOnly => Err(StoreError::Unavailable(
                "the store is open read-only".into(),
            )),
            _ => Ok(&self.pool),
        }
    }

    /// The pool, for a change to mail (not for the CLI's handles).
    fn mail_writable(&self) -> Result<&MySqlPool, StoreError> {
        match self.mode {
            Mode::ReadWrite => Ok(&self.pool),
            _ => Err(StoreError::Closed),
        }
    }
}

#[async_trait]
impl MailBackend for MysqlBackend {
    async fn deliver(&self, msg: Incoming, mailboxes: Vec<String>) -> Result<(), StoreError> {
        let tx = self.tx.sender()?;
        // A message whose header fields alone do not fit in one statement could never be
        // stored (and would fail its whole batch): refuse it here, alone. (Bodies of any size
        // fit: they are stored in parts.)
        let row = rows::row_size(&msg);
        if row > self.limits.statement_budget {
            tracing::error!(id = %msg.id, bytes = row,
                "message not stored: its header fields exceed half the server's max_allowed_packet");
            return Err(StoreError::Unavailable(format!(
                "the message's header fields ({row} bytes) do not fit in max_allowed_packet"
            )));
        }
        // The search text is made here, on the session's own task (in parallel with other
        // sessions), so that the writer does no parsing.
        let chunk = self.limits.chunk;
        let words = match self.search {
            SearchMode::Full => {
                let raw = msg.raw.clone();
                let words = tokio::task::spawn_blocking(move || rows::search_words(&raw, chunk))
                    .await
                    .map_err(unavailable)?;
                format!("{}\n{words}", rows::header_words(&msg))
            }
            SearchMode::Headers => format!(
                "{}\n{}",
                rows::header_words(&msg),
                mime::index_headers(&msg.raw)
            ),
            SearchMode::Off => String::new(),
        };
        let (done, wait) = oneshot::channel();
        let d = writer::Delivery {
            msg,
            mailboxes,
            words: rows::truncate(words, chunk),
            done,
        };
        tx.send(d).await.map_err(|_| StoreError::Closed)?;
        wait.await.map_err(|_| StoreError::Closed)?
    }

    async fn list_mailbox(&self, mailbox: &str, page: Page) -> Result<Listing, StoreError> {
        read::list_mailbox(&self.pool, mailbox, page).await
    }

    async fn list_all(&self, page: Page) -> Result<Listing, StoreError> {
        read::search(&self.pool, &self.limits, &Query::default(), page).await
    }

    async fn search(&self, query: &Query, page: Page) -> Result<Listing, StoreError> {
        read::search(&self.pool, &self.limits, query, page).await
    }

    async fn fetch(&self, id: MessageId) -> Result<Option<StoredMessage>, StoreError> {
        read::fetch(&self.pool, id).await
    }

    async fn delete(&self, id: MessageId) -> Result<Option<Removal>, StoreError> {
        let pool = self.mail_writable()?;
        Ok(read::delete_ids(pool, &[id]).await?.pop())
    }

    async fn delete_mailbox(&self, mailbox: &str) -> Result<Vec<Removal>, StoreError> {
        let pool = self.mail_writable()?;
        let ids = read::mailbox_ids(pool, mailbox).await?;
        let mut removed = Vec::new();
        for chunk in ids.chunks(EVICT_CHUNK) {
            let links: Vec<(String, MessageId)> =
                chunk.iter().map(|id| (mailbox.to_string(), *id)).collect();
            removed.extend(read::unlink(pool, &links).await?.1);
        }
        Ok(removed)
    }

    async fn set_seen(&self, id: MessageId, seen: bool) -> Result<bool, StoreError> {
        let pool = self.mail_writable()?;
        // The connection reports rows matched (CLIENT_FOUND_ROWS), not rows changed.
        sqlx::query("UPDATE messages SET seen = ? WHERE id = ?")
            .bind(seen)
            .bind(&id.as_bytes()[..])
            .execute(pool)
            .await
            .map(|r| r.rows_affected() > 0)
            .map_err(unavailable)
    }

    async fn evict(&self, policy: &Retention, now_ms: i64) -> Result<Eviction, StoreError> {
        crate::evict::evict(&Evicting(self.mail_writable()?), policy, now_ms).await
    }

    async fn alias_put(&self, alias: &str, mailbox: &str) -> Result<(), StoreError> {
        let pool = self.mail_writable()?;
        sqlx::query(
            "INSERT INTO aliases (alias, mailbox) VALUES (?, ?)
             ON DUPLICATE KEY UPDATE mailbox = VALUES(mailbox)",
        )
        .bind(alias)
        .bind(mailbox)
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(unavailable)
    }

    async fn alias_get(&self, alias: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar::<_, String>("SELECT mailbox FROM aliases WHERE alias = ?")
            .bind(alias)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)
    }

    async fn meta_get_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError> {
        policy::meta_get_or_insert(self.writable()?, key, value).await
    }

    async fn close(&self) {
        self.tx.close();
        let writer = self.writer.lock().expect("writer").take();
        if let Some(w) = writer {
            let _ = w.await;
        }
    }
}

#[async_trait]
impl DirectoryBackend for MysqlBackend {
    async fn recipient_add(&self, address: &str) -> Result<bool, StoreError> {
        policy::recipient_add(self.writable()?, address).await
    }

    async fn recipient_remove(&self, address: &str) -> Result<bool, StoreError> {
        policy::recipient_remove(self.writable()?, address).await
    }

    async fn recipient_list(&self) -> Result<Vec<String>, StoreError> {
        policy::recipient_list(&self.pool).await
    }

    async fn recipient_lookup(&self, address: &str) -> Result<Option<bool>, StoreError> {
        policy::recipient_lookup(&self.pool, address).await
    }

    async fn user_get(&self, address: &str) -> Result<Option<User>, StoreError> {
        policy::user_get(&self.pool, address).await
    }

    async fn user_add(&self, user: User) -> Result<bool, StoreError> {
        policy::user_add(self.writable()?, &user).await
    }

    async fn user_set_password(&self, address: &str, hash: &str) -> Result<bool, StoreError> {
        policy::user_set_password(self.writable()?, address, hash).await
    }

    async fn user_set_enabled(&self, address: &str, enabled: bool) -> Result<bool, StoreError> {
        policy::user_set_enabled(self.writable()?, address, enabled).await
    }

    async fn user_list(&self) -> Result<Vec<User>, StoreError> {
        policy::user_list(&self.pool).await
    }
}

#[async_trait]
impl intake_core::TagBackend for MysqlBackend {
    async fn tags_get(
        &self,
        id: intake_core::MessageId,
    ) -> Result<Option<Vec<String>>, StoreError> {
        tags::get(&self.pool, id).await
    }

    async fn tags_put(&self, id: intake_core::MessageId, t: &[String]) -> Result<bool, StoreError> {
        tags::put(self.writable()?, id, t).await
    }

    async fn tags_all(&self) -> Result<Vec<String>, StoreError> {
        tags::all(&self.pool).await
    }

    async fn tags_rename(&self, from: &str, to: &str) -> Result<u64, StoreError> {
        tags::rename(self.writable()?, from, to).await
    }

    async fn tags_remove(&self, tag: &str) -> Result<u64, StoreError> {
        tags::remove(self.writable()?, tag).await
    }
}

#[async_trait]
impl PolicyBackend for MysqlBackend {
    async fn greylist_get(&self, key: &str) -> Result<Option<GreyRecord>, StoreError> {
        policy::greylist_get(&self.pool, key).await
    }

    async fn greylist_put(&self, key: &str, record: GreyRecord) -> Result<(), StoreError> {
        policy::greylist_put(self.writable()?, key, record).await
    }

    async fn greylist_expire(&self, before_ms: i64) -> Result<u64, StoreError> {
        policy::greylist_expire(self.writable()?, before_ms).await
    }
}

impl MysqlBackend {
    /// The counter of sessions receiving content this engine's group commit lingers
    /// for; `open` hands it to the wiring ([`crate::Opened`]).
    pub fn arrivals(&self) -> Option<Arrivals> {
        (self.mode == Mode::ReadWrite).then(|| self.arrivals.clone())
    }
}

#[cfg(test)]
mod lost_commit;
#[cfg(any(test, feature = "testing"))]
pub mod scratch;
#[cfg(test)]
mod tests;

/// Retention's steps on MariaDB/MySQL (`crate::evict`): messages by id.
struct Evicting<'a>(&'a MySqlPool);

#[async_trait]
impl EvictSteps for Evicting<'_> {
    type Link = (String, MessageId);
    type Key = MessageId;

    async fn over_mailbox_cap(&self, keep: u64) -> Result<Vec<(String, MessageId)>, StoreError> {
        read::over_mailbox_cap(self.0, keep).await
    }

    async fn unlink(
        &self,
        links: &[(String, MessageId)],
    ) -> Result<(u64, Vec<Removal>), StoreError> {
        read::unlink(self.0, links).await
    }

    async fn older_than(&self, before_ms: i64) -> Result<Vec<MessageId>, StoreError> {
        read::older_than(self.0, before_ms).await
    }

    async fn over_size_cap(&self, max_bytes: u64) -> Result<Vec<MessageId>, StoreError> {
        read::over_size_cap(self.0, max_bytes).await
    }

    async fn delete(&self, ids: &[MessageId]) -> Result<Vec<Removal>, StoreError> {
        read::delete_ids(self.0, ids).await
    }
}
