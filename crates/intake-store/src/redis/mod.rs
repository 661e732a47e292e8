//! The Redis store (`store.type = "redis"`): mailboxes as sorted sets, messages as hashes,
//! bodies as strings, every multi-key change in one atomic Lua script ([`scripts`]).
//!
//! # Key layout
//!
//! Under `store.redis_key_prefix` (`intake:store:` by default), written `P`:
//!
//! | key | type | what |
//! |---|---|---|
//! | `P m:<id>` | hash | one message: `sum` (the listing line, JSON), `doc` (envelope, HELO, client, TLS, parsed fields, findings; JSON), `head` (the raw header block) and `text` (body text) for search, `size`, `at` (received, Unix ms), `seen`, `seq` |
//! | `P b:<id>` | string | the raw message, stored once however many mailboxes hold it |
//! | `P mb:<id>` | set | the mailboxes the message is filed under; the message goes when it empties |
//! | `P box:<mailbox>` | sorted set | a mailbox's message ids by arrival (`seq`) |
//! | `P unread:<mailbox>`, `P unread` | set | unread ids, per mailbox and overall |
//! | `P all` | sorted set | every id by arrival; `P at`: every id by time received |
//! | `P boxes` | set | mailboxes holding mail (retention walks them) |
//! | `P seq`, `P bytes` | string | arrival counter; total octets of stored messages |
//! | `P alias:<alias>`, `P meta:<key>` | string | alias → mailbox; shared settings (`SETNX`) |
//! | `P recipients` | set | valid recipients |
//! | `P grey`, `P grey_seen` | hash, sorted set | greylist records; their last sight (expiry) |
//! | `P users`, `P user:<address>` | sorted set, hash | AUTH users |
//! | `P t:<id>`, `P tag:<tag>`, `P tags` | set | a message's tags; the ids with a tag; every tag in use |
//! | `P version` | string | the layout version, written by the server at start |
//!
//! # Durability
//!
//! A `250` needs the message on disk: with `appendonly yes` and `appendfsync always`, Redis
//! writes and fsyncs its append-only file before it sends the reply to a write (Redis 7.0
//! has no `WAITAOF` to ask for it otherwise). [`RedisBackend::connect`] reads both settings
//! with `CONFIG GET` and refuses to start on anything weaker unless
//! `store.redis_accept_weak_durability` is set (then it warns, loudly and again every
//! minute while it runs).
//!
//! Deliveries are committed in groups ([`writer`]): everything queued goes in one
//! `MULTI`/`EXEC` (per message, `SET` of the body and the filing script), so one fsync
//! covers the batch, and each caller is answered after `EXEC` has returned.
//!
//! # Search
//!
//! There is no index: a search scans the newest `store.redis_search_scan` messages (of the
//! `mailbox:` named, or of all), evaluating the whole query syntax on each, and finds
//! nothing older. Totals are over the messages scanned.
//!
//! # Outages
//!
//! Every call is bounded by `store.redis_timeout`; a delivery waits at most twice that (its
//! turn, then its batch) and then answers `Unavailable` (the SMTP side says `451 4.3.0`).
//! The connection is re-made by itself when Redis comes back. A delivery that timed out may
//! still have been committed by Redis afterwards: the client was told to retry, so it may be
//! stored twice, never lost.

mod directory;
mod mail;
mod options;
mod policy;
mod scripts;
mod tags;
#[cfg(any(test, feature = "testing"))]
pub mod test_server;
mod writer;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use intake_core::{
    Arrivals, DirectoryBackend, Envelope, Eviction, Findings, GreyRecord, Incoming, Listing,
    MailBackend, MessageId, Page, ParsedMeta, PolicyBackend, Query, Removal, Retention, StoreError,
    StoredMessage, Summary, TlsInfo, User, mime,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::common::{Mode, redact};
use crate::queue::WriterQueue;
pub use options::RedisOptions;
use scripts::Scripts;

/// The layout this version writes (`P version`).
const LAYOUT_VERSION: &str = "1";
/// Messages one eviction or mailbox-delete script handles (each is atomic, so Redis serves
/// nothing else meanwhile: keep them short).
const CHUNK: usize = 500;
/// Messages read per round trip while searching.
const SEARCH_CHUNK: isize = 256;
/// Consecutive failed calls after which the connection is made again from scratch.
const REBUILD_AFTER: u32 = 5;

/// What Redis says about its own durability (`CONFIG GET`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Durability {
    /// `appendonly yes` and `appendfsync always`: every acknowledged write is on disk.
    Fsynced,
    /// Anything weaker, as Redis reported it.
    Weak {
        /// `appendonly`.
        appendonly: String,
        /// `appendfsync`.
        appendfsync: String,
    },
    /// `CONFIG` is disabled or renamed (managed services): durability cannot be checked.
    Unknown(String),
}

impl Durability {
    /// Why mail may be lost, in words for the log; `None` when it may not.
    pub fn problem(&self) -> Option<String> {
        match self {
            Durability::Fsynced => None,
            Durability::Weak {
                appendonly,
                appendfsync,
            } => Some(format!(
                "Redis runs with appendonly {appendonly} and appendfsync {appendfsync}: \
                 acknowledged mail can be lost when Redis or its machine stops; \
                 a 250 needs appendonly yes and appendfsync always"
            )),
            Durability::Unknown(why) => Some(format!(
                "Redis does not say whether it fsyncs every write (CONFIG GET failed: {why}); \
                 a 250 needs appendonly yes and appendfsync always"
            )),
        }
    }
}

/// The stored document of a message (what listings do not need).
#[derive(Serialize, Deserialize)]
struct Doc {
    envelope: Envelope,
    helo: String,
    client: SocketAddr,
    tls: Option<TlsInfo>,
    sha256: String,
    meta: ParsedMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    findings: Option<Findings>,
}

/// The Redis store. See the module docs.
pub struct RedisBackend {
    inner: Arc<Inner>,
    /// Deliveries for the writer; `None` once closed, or when opened without one.
    tx: WriterQueue<writer::Queued>,
    writer: Mutex<Option<JoinHandle<()>>>,
    arrivals: Arrivals,
    mode: Mode,
    /// Reminds the log that mail may be lost, while it runs (weak durability accepted).
    nag: Mutex<Option<JoinHandle<()>>>,
    /// Why mail may be lost (weak durability accepted), for `/readyz`.
    weak: Mutex<Option<String>>,
}

/// What the store and its writer share.
pub(crate) struct Inner {
    opts: RedisOptions,
    client: redis::Client,
    conn: Mutex<ConnectionManager>,
    failures: AtomicU32,
    closed: AtomicBool,
    scripts: Scripts,
    max_batch: usize,
    commit_delay: Duration,
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn manager(client: &redis::Client, timeout: Duration) -> Result<ConnectionManager, StoreError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        // Each call fails within its bound; the next one connects again.
        .set_number_of_retries(0);
    ConnectionManager::new_lazy_with_config(client.clone(), config)
        .map_err(|e| unavailable(format!("Redis connection: {e}")))
}

impl Inner {
    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.opts.key_prefix)
    }

    fn prefix(&self) -> &str {
        &self.opts.key_prefix
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.lock().expect("redis connection").clone()
    }

    /// Runs one Redis call under the timeout.
    async fn call<T>(
        &self,
        what: &str,
        f: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        self.bounded(what, self.opts.timeout, f).await
    }

    async fn bounded<T>(
        &self,
        what: &str,
        limit: Duration,
        f: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let err = match tokio::time::timeout(limit, f).await {
            Ok(Ok(v)) => {
                self.failures.store(0, Ordering::Relaxed);
                return Ok(v);
            }
            Ok(Err(e)) => format!("Redis {what}: {e}"),
            Err(_) => format!("Redis {what}: no answer within {limit:?}"),
        };
        if self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= REBUILD_AFTER {
            self.failures.store(0, Ordering::Relaxed);
            if let Ok(m) = manager(&self.client, self.opts.timeout) {
                *self.conn.lock().expect("redis connection") = m;
            }
        }
        Err(StoreError::Unavailable(err))
    }

    fn writable(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Relaxed) {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }
}

/// Reads `appendonly` and `appendfsync`.
async fn durability(inner: &Inner) -> Result<Durability, StoreError> {
    let mut conn = inner.conn();
    let got: redis::RedisResult<Vec<String>> = tokio::time::timeout(
        inner.opts.timeout,
        redis::cmd("CONFIG")
            .arg("GET")
            .arg("append*")
            .query_async(&mut conn),
    )
    .await
    .map_err(|_| unavailable(format!("no answer within {:?}", inner.opts.timeout)))?;
    let pairs = match got {
        Ok(p) => p,
        // Reached, but CONFIG is refused (renamed, ACL, managed service).
        Err(e) if e.kind() != redis::ErrorKind::Io && !e.is_connection_dropped() => {
            return Ok(Durability::Unknown(e.to_string()));
        }
        Err(e) => return Err(unavailable(e)),
    };
    let get = |name: &str| {
        pairs
            .chunks(2)
            .find(|kv| kv[0] == name)
            .and_then(|kv| kv.get(1).cloned())
            .unwrap_or_else(|| "?".into())
    };
    let (appendonly, appendfsync) = (get("appendonly"), get("appendfsync"));
    Ok(if appendonly == "yes" && appendfsync == "always" {
        Durability::Fsynced
    } else {
        Durability::Weak {
            appendonly,
            appendfsync,
        }
    })
}

/// Settings of the Redis engine.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` (`store.url`; never logged with its password).
    pub url: String,
    /// Most messages in one `MULTI`/`EXEC` (`store.max_batch`).
    pub max_batch: usize,
    /// How long the writer lingers for more messages while other sessions are receiving
    /// content (`store.commit_delay`).
    pub commit_delay: Duration,
    /// `store.redis_*`.
    pub options: RedisOptions,
}

impl RedisConfig {
    /// Defaults for a URL.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            max_batch: 256,
            commit_delay: Duration::from_millis(1),
            options: RedisOptions::default(),
        }
    }
}

impl RedisBackend {
    /// Connects to the Redis of `cfg` as `mode` needs: the server (`ReadWrite`)
    /// checks durability first and starts the group-commit writer; `Admin` writes policy
    /// state and users but takes no mail; `ReadOnly` needs data written by a server and
    /// writes nothing.
    pub async fn connect(cfg: &RedisConfig, mode: Mode) -> Result<RedisBackend, StoreError> {
        let opts = cfg.options.clone();
        let client = redis::Client::open(cfg.url.as_str())
            .map_err(|e| unavailable(format!("store.url is not a Redis URL: {e}")))?;
        let conn = manager(&client, opts.timeout)?;
        let inner = Arc::new(Inner {
            opts,
            client,
            conn: Mutex::new(conn),
            failures: AtomicU32::new(0),
            closed: AtomicBool::new(false),
            scripts: Scripts::new(),
            max_batch: cfg.max_batch.max(1),
            commit_delay: cfg.commit_delay,
        });
        let where_ = format!("redis at {}", redact(&cfg.url));
        let mut conn = inner.conn();
        let version: Option<String> = inner
            .call(
                "GET version",
                redis::cmd("GET")
                    .arg(inner.key("version"))
                    .query_async(&mut conn),
            )
            .await
            .map_err(|e| unavailable(format!("cannot reach {where_}: {e}")))?;
        if let Some(v) = &version
            && v != LAYOUT_VERSION
        {
            return Err(StoreError::Corrupt(format!(
                "the data under key prefix {:?} has layout version {v}; this version of Intake \
                 reads version {LAYOUT_VERSION}",
                inner.opts.key_prefix
            )));
        }
        let arrivals = Arrivals::default();
        let mut store = RedisBackend {
            inner: inner.clone(),
            tx: WriterQueue::new(None),
            writer: Mutex::new(None),
            arrivals: arrivals.clone(),
            mode,
            nag: Mutex::new(None),
            weak: Mutex::new(None),
        };
        match mode {
            Mode::ReadOnly => {
                if version.is_none() {
                    return Err(StoreError::Unavailable(format!(
                        "no Intake data in {where_} under key prefix {:?}; has `intake serve` \
                         run with the same settings?",
                        inner.opts.key_prefix
                    )));
                }
            }
            Mode::Admin => store.mark_layout().await?,
            Mode::ReadWrite => {
                store.check_durability(&where_).await?;
                store.mark_layout().await?;
                let (tx, rx) = mpsc::channel(inner.max_batch * 4);
                let task = tokio::spawn(writer::run(inner.clone(), rx, arrivals));
                store.tx = WriterQueue::new(Some(tx));
                store.writer = Mutex::new(Some(task));
            }
        }
        Ok(store)
    }

    async fn check_durability(&mut self, where_: &str) -> Result<(), StoreError> {
        let d = durability(&self.inner)
            .await
            .map_err(|e| unavailable(format!("cannot reach {where_}: {e}")))?;
        let Some(problem) = d.problem() else {
            tracing::info!(store = %where_, "Redis store: appendonly yes, appendfsync always; \
                a 250 is sent once Redis has fsynced the message");
            return Ok(());
        };
        if !self.inner.opts.accept_weak_durability {
            return Err(StoreError::Unavailable(format!(
                "refusing to take mail into {where_}: {problem}. Set them in redis.conf \
                 (appendonly yes, appendfsync always), or set store.redis_accept_weak_durability \
                 = true to accept losing mail"
            )));
        }
        tracing::warn!(store = %where_, "DURABILITY WARNING: {problem}; \
            store.redis_accept_weak_durability = true, so Intake answers 250 anyway");
        *self.weak.lock().expect("weak") = Some(problem.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.tick().await;
            loop {
                tick.tick().await;
                tracing::warn!("DURABILITY WARNING: {problem}");
            }
        });
        *self.nag.lock().expect("nag") = Some(task);
        Ok(())
    }

    async fn mark_layout(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        let mut conn = inner.conn();
        inner
            .call(
                "SET version",
                redis::cmd("SET")
                    .arg(inner.key("version"))
                    .arg(LAYOUT_VERSION)
                    .arg("NX")
                    .query_async::<()>(&mut conn),
            )
            .await
    }

    /// Refuses writes when read-only or closed.
    fn writable(&self) -> Result<(), StoreError> {
        if self.mode == Mode::ReadOnly {
            return Err(StoreError::Unavailable(
                "the store is open read-only".into(),
            ));
        }
        self.inner.writable()
    }

    /// A listing of `zset` (`all` or `box:<m>`), unread counted in `unread_set`.
    async fn list(&self, zset: String, unread: String, page: Page) -> Result<Listing, StoreError> {
        let i = &self.inner;
        let mut conn = i.conn();
        let mut inv = i.scripts.list.prepare_invoke();
        inv.arg(i.prefix())
            .arg(zset)
            .arg(unread)
            .arg(page.offset)
            .arg(page.limit.min(100_000));
        let (total, unread, rows): (u64, u64, Vec<(String, String)>) =
            i.call("listing", inv.invoke_async(&mut conn)).await?;
        let mut messages = Vec::with_capacity(rows.len());
        for (sum, seen) in rows {
            messages.push(summary(&sum, &seen)?);
        }
        Ok(Listing {
            total,
            unread,
            messages,
        })
    }

    /// Deletes messages by id, in chunks; what each left.
    async fn delete_ids(&self, ids: &[String]) -> Result<Vec<Removal>, StoreError> {
        let i = &self.inner;
        let mut out = Vec::new();
        for chunk in ids.chunks(CHUNK) {
            let mut conn = i.conn();
            let mut inv = i.scripts.delete_ids.prepare_invoke();
            inv.arg(i.prefix()).arg(chunk);
            let gone: Vec<(String, Vec<String>)> =
                i.call("deleting", inv.invoke_async(&mut conn)).await?;
            for (id, boxes) in gone {
                out.push(removal(&id, boxes)?);
            }
        }
        Ok(out)
    }

    /// Every mailbox holding mail.
    async fn mailboxes(&self) -> Result<Vec<String>, StoreError> {
        let i = &self.inner;
        let mut conn = i.conn();
        let mut cursor = 0u64;
        let mut out = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = i
                .call(
                    "SSCAN boxes",
                    redis::cmd("SSCAN")
                        .arg(i.key("boxes"))
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn),
                )
                .await?;
            out.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

fn parse_id(id: &str) -> Result<MessageId, StoreError> {
    id.parse()
        .map_err(|e| StoreError::Corrupt(format!("message id {id:?}: {e}")))
}

fn removal(id: &str, mut boxes: Vec<String>) -> Result<Removal, StoreError> {
    boxes.sort();
    Ok(Removal {
        id: parse_id(id)?,
        mailboxes: boxes,
    })
}

fn summary(sum: &str, seen: &str) -> Result<Summary, StoreError> {
    let mut s: Summary = serde_json::from_str(sum)
        .map_err(|e| StoreError::Corrupt(format!("message summary: {e}")))?;
    s.seen = seen == "1";
    Ok(s)
}

/// A whole message from its hash fields, body and mailboxes.
fn stored(
    sum: &str,
    doc: &str,
    seen: &str,
    raw: Vec<u8>,
    mut mailboxes: Vec<String>,
) -> Result<StoredMessage, StoreError> {
    let s = summary(sum, seen)?;
    let d: Doc = serde_json::from_str(doc)
        .map_err(|e| StoreError::Corrupt(format!("message {}: {e}", s.id)))?;
    mailboxes.sort();
    Ok(StoredMessage {
        id: s.id,
        received_at: s.received_at,
        envelope: d.envelope,
        helo: d.helo,
        client: d.client,
        tls: d.tls,
        size: s.size,
        sha256: d.sha256,
        meta: d.meta,
        raw: raw.into(),
        seen: s.seen,
        mailboxes,
        findings: d.findings,
    })
}

/// The fields a delivery writes: summary JSON, document JSON, header block, body text.
pub(crate) fn encode(msg: &Incoming) -> Result<[String; 4], StoreError> {
    let sum = serde_json::to_string(&Summary::from(msg)).map_err(unavailable)?;
    let doc = Doc {
        envelope: msg.envelope.clone(),
        helo: msg.session.helo.clone(),
        client: msg.session.client,
        tls: msg.session.tls.clone(),
        sha256: msg.sha256.clone(),
        meta: msg.meta.clone(),
        findings: (!msg.findings.is_empty()).then(|| msg.findings.clone()),
    };
    let doc = serde_json::to_string(&doc).map_err(unavailable)?;
    let raw = &msg.raw[..];
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let text = mime::index_text(raw).0.into_owned();
    Ok([sum, doc, head, text])
}

impl RedisBackend {
    /// The counter of sessions receiving content this engine's group commit lingers
    /// for; `open` hands it to the wiring ([`crate::Opened`]).
    pub fn arrivals(&self) -> Option<Arrivals> {
        (self.mode == Mode::ReadWrite).then(|| self.arrivals.clone())
    }
}

impl Drop for RedisBackend {
    fn drop(&mut self) {
        if let Some(n) = self.nag.lock().expect("nag").take() {
            n.abort();
        }
    }
}

#[cfg(test)]
mod tests;
