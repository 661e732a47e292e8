//! The PostgreSQL store (`store.type = "postgres"`): several nodes on one database.
//!
//! Layout (`migrations/postgres/`, applied with `sqlx::migrate!` under sqlx's advisory lock,
//! so nodes starting at once migrate once): `messages` (one small row of metadata per
//! message), `bodies` (the raw bytes as `bytea`, apart so listings scan small rows),
//! `mailbox_messages (mailbox, seq)`, `search_index` (a `tsvector` per message, GIN index),
//! `message_checks`, `aliases`, `meta` (the alias secret), and the policy state:
//! `recipients`, `greylist`, `users`. Deleting a `messages` row cascades to the rest.
//!
//! Writes of mail ([`writer`]): one task with a dedicated connection (`synchronous_commit =
//! on`, set explicitly) commits the deliveries of many sessions in one transaction (group
//! commit), answers each session only after `COMMIT` returned, and isolates a message the
//! database refuses with savepoints so that it alone fails. A lost connection is replaced on
//! the next batch; a batch that failed before `COMMIT` was sent is retried once on the new
//! connection (nothing of it can have been committed).
//!
//! Reads, deletes, flags, aliases, policy state and users go through a small pool
//! (`store.pool_size`), every wait bounded by `store.connect_timeout`: with the database
//! down an operation fails with [`StoreError::Unavailable`] (SMTP: `451 4.3.0`) at once
//! rather than hanging, and the next one after it came back succeeds.
//!
//! Events between nodes ([`feed`]): `NOTIFY intake_events` after each committed change, and
//! a `LISTEN`ing task that publishes the other nodes' changes on this node's bus.

mod feed;
mod policy;
mod read;
#[cfg(any(test, feature = "testing"))]
pub mod scratch;
mod tags;
mod writer;

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use intake_core::{
    Arrivals, DirectoryBackend, EventBus, Eviction, GreyRecord, Incoming, Listing, MailBackend,
    MessageId, Page, PolicyBackend, Query, Removal, Retention, SearchMode, StoreError,
    StoredMessage, User,
};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::common::{Mode, PoolOptions, redact};
use crate::evict::{EVICT_CHUNK, EvictSteps};
use crate::queue::WriterQueue;
pub use feed::PgFeed;

/// Settings of the PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// `store.url`, parsed.
    pub connect: PgConnectOptions,
    /// `store.url` without its password, for messages.
    pub described: String,
    /// Most messages in one commit.
    pub max_batch: usize,
    /// How long the writer lingers for more messages while other sessions are receiving.
    pub commit_delay: Duration,
    /// What the search document holds (`store.search`; `Off`: nothing).
    pub search: SearchMode,
    /// Connections in the pool.
    pub pool_size: u32,
    /// Bound on every wait for a connection.
    pub connect_timeout: Duration,
}

impl PostgresConfig {
    /// For `url` (`store.url`) and the pool, with the default group commit (`max_batch`
    /// 256, `commit_delay` 1 ms; set the fields to change them).
    pub fn new(url: &str, pool: &PoolOptions) -> Result<Self, StoreError> {
        let described = format!("postgres at {}", redact(url));
        let connect = PgConnectOptions::from_str(url).map_err(|e| {
            StoreError::Unavailable(format!(
                "store.url is not a PostgreSQL URL ({described}): {e}"
            ))
        })?;
        // TLS to a server on this machine protects nothing, and costs: sqlx 0.9.0 leaves
        // Nagle's algorithm on (sqlx issue #4335), so a batch written as several TLS records
        // waits for the server's delayed ACK (40 ms) before its last segment leaves. Without
        // an `sslmode` in the URL, loopback connections go in plain text; any other host keeps
        // sqlx's default (`prefer`), and an explicit `sslmode` is always obeyed.
        let explicit_tls = url.contains("sslmode=");
        let connect = if !explicit_tls && is_loopback(connect.get_host()) {
            connect.ssl_mode(sqlx::postgres::PgSslMode::Disable)
        } else {
            connect
        };
        Ok(PostgresConfig {
            connect: connect
                .application_name("intake")
                // Every commit of ours waits for the WAL flush, whatever the server's or the
                // database's default: a 250 (or a delete reported done) must survive a crash.
                .options([("synchronous_commit", "on")]),
            described,
            max_batch: 256,
            commit_delay: Duration::from_millis(1),
            search: SearchMode::Full,
            pool_size: pool.pool_size.max(1),
            connect_timeout: pool.connect_timeout,
        })
    }
}

/// Whether `host` is this machine: `localhost`, a loopback address, or a Unix socket path.
fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.starts_with('/')
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The PostgreSQL backend. Cheap to share behind an `Arc`.
pub struct PostgresBackend {
    cfg: PostgresConfig,
    pool: PgPool,
    tx: WriterQueue<writer::Queued>,
    writer: Mutex<Option<JoinHandle<()>>>,
    arrivals: Arrivals,
    read_only: bool,
    /// Stops the feed's tasks at `close`.
    stop: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A database error as the store reports it (never with the URL: it may hold a password).
pub(crate) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Text as PostgreSQL takes it: `text` cannot hold NUL, which a hostile message may put in
/// a header; it is stored as U+FFFD rather than failing the delivery.
pub(crate) fn pg_text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{fffd}"))
    } else {
        Cow::Borrowed(s)
    }
}

impl PostgresBackend {
    /// Connects, and as `mode` asks: the server (`ReadWrite`) and the CLI's admin commands
    /// (`Admin`) create or upgrade the schema; `ReadOnly` (the CLI's listings) changes
    /// nothing and fails when there is no Intake schema yet. Only `ReadWrite` starts the
    /// group-commit writer; the others answer deliveries with [`StoreError::Closed`].
    pub async fn connect(cfg: PostgresConfig, mode: Mode) -> Result<PostgresBackend, StoreError> {
        let read_only = mode == Mode::ReadOnly;
        let mut connect = cfg.connect.clone();
        if read_only {
            connect = connect.options([("default_transaction_read_only", "on")]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(cfg.pool_size)
            .acquire_timeout(cfg.connect_timeout)
            .idle_timeout(Duration::from_secs(300))
            .connect_lazy_with(connect);
        let at = |e: &dyn std::fmt::Display| {
            StoreError::Unavailable(format!("opening {}: {e}", cfg.described))
        };
        match mode {
            Mode::ReadWrite | Mode::Admin => migrate(&pool).await.map_err(|e| at(&e))?,
            Mode::ReadOnly => {
                let present: bool =
                    sqlx::query_scalar("SELECT to_regclass('messages') IS NOT NULL")
                        .fetch_one(&pool)
                        .await
                        .map_err(|e| at(&e))?;
                if !present {
                    return Err(StoreError::Unavailable(format!(
                        "no Intake data in {} (store.url); has `intake serve` run with the same settings?",
                        cfg.described
                    )));
                }
            }
        }
        let arrivals = Arrivals::default();
        let (tx, writer) = if mode == Mode::ReadWrite {
            let w = writer::Writer::connect(&cfg, arrivals.clone())
                .await
                .map_err(|e| at(&e))?;
            let (tx, rx) = mpsc::channel(cfg.max_batch * 4);
            (Some(tx), Some(tokio::spawn(w.run(rx))))
        } else {
            (None, None)
        };
        Ok(PostgresBackend {
            cfg,
            pool,
            tx: WriterQueue::new(tx),
            writer: Mutex::new(writer),
            arrivals,
            read_only,
            stop: CancellationToken::new(),
            tasks: Mutex::default(),
        })
    }

    /// Starts the feed between nodes: announces this node's changes, and publishes the other
    /// nodes' on `bus`. Listening has begun when this returns.
    pub async fn start_feed(&self, bus: EventBus) -> Result<Arc<PgFeed>, StoreError> {
        let (feed, tasks) = PgFeed::start(&self.cfg, self.pool.clone(), bus, self.stop.clone())
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "listening for other nodes' events on {}: {e}",
                    self.cfg.described
                ))
            })?;
        self.tasks.lock().expect("tasks").extend(tasks);
        Ok(feed)
    }

    /// The pool, for tests that look at the database directly.
    #[cfg(test)]
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn writable(&self) -> Result<&PgPool, StoreError> {
        if self.read_only {
            Err(StoreError::Unavailable(
                "the store is open read-only".into(),
            ))
        } else {
            Ok(&self.pool)
        }
    }
}

/// Creates or upgrades the schema. sqlx's migrator holds an advisory lock (keyed by the
/// database name) while it checks and applies migrations, so nodes starting together
/// apply each migration once.
async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("migrations/postgres").run(pool).await
}

#[async_trait]
impl MailBackend for PostgresBackend {
    async fn deliver(&self, msg: Incoming, mailboxes: Vec<String>) -> Result<(), StoreError> {
        let tx = self.tx.sender()?;
        // The search text is made here, on the session's task, so the writer only writes.
        let search = self.cfg.search;
        let row = if msg.raw.len() > 256 * 1024 && search.indexes_body() {
            tokio::task::spawn_blocking(move || writer::Row::new(msg, mailboxes, search))
                .await
                .map_err(unavailable)?
        } else {
            writer::Row::new(msg, mailboxes, search)
        };
        let (done, wait) = oneshot::channel();
        tx.send((Box::new(row), done))
            .await
            .map_err(|_| StoreError::Closed)?;
        wait.await.map_err(|_| StoreError::Closed)?
    }

    async fn list_mailbox(&self, mailbox: &str, page: Page) -> Result<Listing, StoreError> {
        read::list_mailbox(&self.pool, mailbox, page).await
    }

    async fn list_all(&self, page: Page) -> Result<Listing, StoreError> {
        read::search(&self.pool, &Query::default(), page).await
    }

    async fn search(&self, query: &Query, page: Page) -> Result<Listing, StoreError> {
        read::search(&self.pool, query, page).await
    }

    async fn fetch(&self, id: MessageId) -> Result<Option<StoredMessage>, StoreError> {
        read::fetch(&self.pool, id).await
    }

    async fn delete(&self, id: MessageId) -> Result<Option<Removal>, StoreError> {
        let pool = self.writable()?;
        Ok(read::delete_ids(pool, &[id]).await?.pop())
    }

    async fn delete_mailbox(&self, mailbox: &str) -> Result<Vec<Removal>, StoreError> {
        let pool = self.writable()?;
        let seqs: Vec<i64> =
            sqlx::query_scalar("SELECT seq FROM mailbox_messages WHERE mailbox = $1 ORDER BY seq")
                .bind(mailbox)
                .fetch_all(pool)
                .await
                .map_err(unavailable)?;
        let mut removed = Vec::new();
        for chunk in seqs.chunks(EVICT_CHUNK) {
            let links: Vec<(String, i64)> =
                chunk.iter().map(|&s| (mailbox.to_string(), s)).collect();
            removed.extend(read::unlink(pool, &links).await?.1);
        }
        Ok(removed)
    }

    async fn set_seen(&self, id: MessageId, seen: bool) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE messages SET seen = $1 WHERE id = $2::uuid")
            .bind(seen)
            .bind(id.to_string())
            .execute(self.writable()?)
            .await
            .map_err(unavailable)?;
        Ok(r.rows_affected() > 0)
    }

    async fn evict(&self, policy: &Retention, now_ms: i64) -> Result<Eviction, StoreError> {
        crate::evict::evict(&Evicting(self.writable()?), policy, now_ms).await
    }

    async fn alias_put(&self, alias: &str, mailbox: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO aliases (alias, mailbox) VALUES ($1, $2)
             ON CONFLICT (alias) DO UPDATE SET mailbox = excluded.mailbox",
        )
        .bind(pg_text(alias))
        .bind(pg_text(mailbox))
        .execute(self.writable()?)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn alias_get(&self, alias: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT mailbox FROM aliases WHERE alias = $1")
            .bind(pg_text(alias))
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)
    }

    async fn meta_get_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError> {
        let pool = self.writable()?;
        // Two statements, so the SELECT takes a snapshot after the INSERT: when another node
        // inserted first, its row is committed by then (ON CONFLICT waited for it).
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(pool)
            .await
            .map_err(unavailable)?;
        sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_one(pool)
            .await
            .map_err(unavailable)
    }

    async fn close(&self) {
        self.tx.close();
        let writer = self.writer.lock().expect("writer").take();
        if let Some(w) = writer {
            let _ = w.await;
        }
        // The feed sends what is queued, then stops listening.
        self.stop.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("tasks"));
        for t in tasks {
            let _ = tokio::time::timeout(self.cfg.connect_timeout, t).await;
        }
    }
}

#[async_trait]
impl DirectoryBackend for PostgresBackend {
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
impl intake_core::TagBackend for PostgresBackend {
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
impl PolicyBackend for PostgresBackend {
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

impl PostgresBackend {
    /// The counter of sessions receiving content this engine's group commit lingers
    /// for; `open` hands it to the wiring ([`crate::Opened`]).
    pub fn arrivals(&self) -> Option<Arrivals> {
        let writing = self.writer.lock().expect("writer").is_some();
        writing.then(|| self.arrivals.clone())
    }
}

#[cfg(test)]
mod tests;

/// Retention's steps on PostgreSQL (`crate::evict`): messages by `seq`.
struct Evicting<'a>(&'a PgPool);

#[async_trait]
impl EvictSteps for Evicting<'_> {
    type Link = (String, i64);
    type Key = i64;

    async fn over_mailbox_cap(&self, keep: u64) -> Result<Vec<(String, i64)>, StoreError> {
        read::over_mailbox_cap(self.0, keep).await
    }

    async fn unlink(&self, links: &[(String, i64)]) -> Result<(u64, Vec<Removal>), StoreError> {
        read::unlink(self.0, links).await
    }

    async fn older_than(&self, before_ms: i64) -> Result<Vec<i64>, StoreError> {
        sqlx::query_scalar("SELECT seq FROM messages WHERE received_at < $1 ORDER BY seq")
            .bind(before_ms)
            .fetch_all(self.0)
            .await
            .map_err(unavailable)
    }

    async fn over_size_cap(&self, max_bytes: u64) -> Result<Vec<i64>, StoreError> {
        // The oldest messages beyond what fits, counting from the newest.
        sqlx::query_scalar(
            "SELECT seq FROM (SELECT seq, sum(size) OVER (ORDER BY seq DESC) AS kept
                              FROM messages) t
             WHERE kept > $1 ORDER BY seq",
        )
        .bind(i64::try_from(max_bytes).unwrap_or(i64::MAX))
        .fetch_all(self.0)
        .await
        .map_err(unavailable)
    }

    async fn delete(&self, seqs: &[i64]) -> Result<Vec<Removal>, StoreError> {
        read::delete_seqs(self.0, seqs).await
    }
}
