//! State that the nodes of a cluster share, in Redis: greylist records ([`RedisGreyState`],
//! a [`GreyState`]) and per-client counts for the connection limits and rates (the sync
//! task, fed by a [`SharedLimits`]). Nothing here is durable: every key expires by itself,
//! and losing them all costs a retry, not mail.
//!
//! Keys, under `cluster.key_prefix` (`intake:` by default):
//!
//! - `grey:<key>`: a greylist record (`t <network> <sender> <recipient>` or `c <network>`),
//!   the value `<first_seen> <last_seen> <passes>` (Unix ms), with `PX` set to what is left
//!   of the record's life, so Redis expires it.
//! - `node:<id>`: one node's per-client counts (open connections per IP and network,
//!   connections, messages, recipients per IP over the last minute, failed logins per
//!   address, per address and account, per account for each shared login limiter), JSON, written every
//!   sync interval with `PX` of three intervals: a node that stops stops counting soon after.
//! - `nodes`: the ids of the nodes (a sorted set by last sync time), so each node reads the
//!   others' `node:` keys without a `SCAN`. Ids whose key has gone are removed.
//!
//! - `events`: the pub/sub channel of live events between nodes ([`RedisFeed`], an
//!   `EventFeed`: each committed change, published; the other nodes' put on this node's bus).
//!
//! Every Redis call is bounded by `cluster.timeout`. When Redis is down or slow the node
//! carries on alone: the limits count only its own clients and greylisting falls back by its
//! `on_error` (at once, without trying Redis on every RCPT, until the next sync succeeds).
//! Going down and coming back are logged once each, and a reminder once a minute meanwhile.

mod feed;

pub use feed::{FeedConfig, FeedError, RedisFeed};

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod settings;

use async_trait::async_trait;
use intake_core::net::LogEvery;
use intake_core::{ClientCounts, GreyRecord, GreyState, SharedError, SharedLimits, SharedLogins};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The `[cluster]` settings.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `redis://host:port/db` or `rediss://…` (TLS); empty: a single node.
    pub redis_url: String,
    /// Prepended to every key, so several clusters (or tests) can share one Redis.
    pub key_prefix: String,
    /// How often the per-client counts are exchanged.
    pub sync_interval: Duration,
    /// The longest any Redis call may take.
    pub timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis_url: String::new(),
            key_prefix: "intake:".into(),
            sync_interval: Duration::from_secs(1),
            timeout: Duration::from_millis(200),
        }
    }
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("redis_url", &intake_core::redact::url(&self.redis_url))
            .field("key_prefix", &self.key_prefix)
            .field("sync_interval", &self.sync_interval)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Why the cluster's Redis link could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The URL is not one the Redis client accepts.
    #[error("not a Redis URL: {0}")]
    Url(#[source] redis::RedisError),
    /// The connection could not be set up.
    #[error("Redis connection: {0}")]
    Connection(#[source] redis::RedisError),
}

/// Whether `url` is a Redis URL the client accepts (checked when settings are read).
pub fn check_url(url: &str) -> Result<(), ClusterError> {
    redis::Client::open(url)
        .map(|_| ())
        .map_err(ClusterError::Url)
}

/// Consecutive failed syncs after which the connection is made again from scratch.
const REBUILD_AFTER: u32 = 5;

/// One node's link to the cluster's Redis.
pub struct Cluster {
    cfg: ClusterConfig,
    client: redis::Client,
    conn: Mutex<ConnectionManager>,
    /// This node's id (its `node:` key), new at every start.
    node: String,
    /// False from a failed call until the next good sync: calls fail at once meanwhile.
    up: AtomicBool,
    /// Syncs failed in a row.
    failures: AtomicU32,
    /// Reminders while down.
    down_log: Mutex<LogEvery>,
    /// The limits whose counts are shared (the current ones: a reload replaces them).
    limits: Mutex<Option<Arc<dyn SharedLimits>>>,
    /// The failed-login limiters whose counts are shared, by name (`smtp`, `http`).
    logins: Mutex<Vec<(String, Arc<dyn SharedLogins>)>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("key_prefix", &self.cfg.key_prefix)
            .field("node", &self.node)
            .field("up", &self.up.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn manager(client: &redis::Client, timeout: Duration) -> Result<ConnectionManager, ClusterError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        // The sync task tries again every interval; no backoff loop inside a call.
        .set_number_of_retries(0);
    ConnectionManager::new_lazy_with_config(client.clone(), config)
        .map_err(ClusterError::Connection)
}

impl Cluster {
    /// A link to the Redis of `cfg` (connected on first use; call within a tokio runtime).
    pub fn new(cfg: ClusterConfig) -> Result<Arc<Cluster>, ClusterError> {
        let client = redis::Client::open(cfg.redis_url.as_str()).map_err(ClusterError::Url)?;
        let conn = manager(&client, cfg.timeout)?;
        Ok(Arc::new(Cluster {
            node: uuid::Uuid::new_v4().simple().to_string(),
            cfg,
            client,
            conn: Mutex::new(conn),
            up: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            down_log: Mutex::new(LogEvery::new(Duration::from_secs(60))),
            limits: Mutex::new(None),
            logins: Mutex::new(Vec::new()),
        }))
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node
    }

    /// Shares the counts of `limits` from now on (replacing limits shared before).
    pub fn share_limits(&self, limits: Arc<dyn SharedLimits>) {
        *self.limits.lock().expect("cluster lock") = Some(limits);
    }

    /// Shares the failed-login counts of `limiter` under `name` from now on (a limiter is
    /// built once and kept across reloads). Each node adds the others' counts of the same
    /// name to its own.
    pub fn share_logins(&self, name: &str, limiter: Arc<dyn SharedLogins>) {
        self.logins
            .lock()
            .expect("cluster lock")
            .push((name.to_string(), limiter));
    }

    /// Greylist records in this cluster's Redis.
    pub fn grey_state(self: &Arc<Self>) -> Arc<dyn GreyState> {
        Arc::new(RedisGreyState {
            cluster: self.clone(),
        })
    }

    /// Whether the last call went well.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.cfg.key_prefix)
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.lock().expect("cluster lock").clone()
    }

    /// Runs one Redis call under the timeout; a failure marks Redis down.
    async fn call<T>(
        &self,
        what: &str,
        f: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, SharedError> {
        let err = match tokio::time::timeout(self.cfg.timeout, f).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => format!("{what}: {e}"),
            Err(_) => format!("{what}: no answer within {:?}", self.cfg.timeout),
        };
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(error = %err,
                "cluster: Redis unavailable; limits count this node only and greylisting \
                 falls back by its on_error until Redis answers again");
        }
        Err(SharedError::Unavailable(err))
    }

    /// Fails at once while Redis is known to be down (the sync task probes it).
    fn ensure_up(&self) -> Result<(), SharedError> {
        if self.is_up() {
            Ok(())
        } else {
            Err(SharedError::Unavailable("Redis is down".into()))
        }
    }

    /// Exchanges per-client counts once: writes this node's, reads the others' (or just
    /// checks that Redis answers when no limits are shared). Marks Redis up or down.
    pub async fn sync(&self) -> Result<(), SharedError> {
        let limits = self.limits.lock().expect("cluster lock").clone();
        let logins = self.logins.lock().expect("cluster lock").clone();
        let result = match (&limits, logins.is_empty()) {
            (None, true) => {
                let mut conn = self.conn();
                self.call("PING", redis::cmd("PING").query_async::<()>(&mut conn))
                    .await
            }
            _ => self.exchange(limits.as_deref(), &logins).await,
        };
        match &result {
            Ok(()) => {
                self.failures.store(0, Ordering::Relaxed);
                if !self.up.swap(true, Ordering::Relaxed) {
                    tracing::info!("cluster: Redis answers again; limits are cluster-wide");
                }
            }
            Err(e) => {
                if let Some(l) = &limits {
                    l.set_others(ClientCounts::default());
                }
                for (_, l) in &logins {
                    l.set_others(Default::default());
                }
                if let Some(n) = self.down_log.lock().expect("cluster lock").hit()
                    && n > 1
                {
                    tracing::warn!(error = %e, failed_syncs = n, "cluster: Redis still unavailable");
                }
                if self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= REBUILD_AFTER {
                    self.failures.store(0, Ordering::Relaxed);
                    if let Ok(m) = manager(&self.client, self.cfg.timeout) {
                        *self.conn.lock().expect("cluster lock") = m;
                    }
                }
            }
        }
        result
    }

    async fn exchange(
        &self,
        limits: Option<&dyn SharedLimits>,
        logins: &[(String, Arc<dyn SharedLogins>)],
    ) -> Result<(), SharedError> {
        let mut mine = limits.map(|l| l.local_counts()).unwrap_or_default();
        for (name, l) in logins {
            let failures = l.local_failures();
            if !failures.is_empty() {
                mine.logins.insert(name.clone(), failures);
            }
        }
        let mine = serde_json::to_string(&mine).map_err(|e| SharedError::Failed(e.to_string()))?;
        let ttl = u64::try_from(self.cfg.sync_interval.as_millis().saturating_mul(3))
            .unwrap_or(u64::MAX)
            .max(1000);
        let nodes = self.key("nodes");
        let now = jiff::Timestamp::now().as_millisecond();
        let mut conn = self.conn();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(self.key(&format!("node:{}", self.node)))
            .arg(mine)
            .arg("PX")
            .arg(ttl)
            .ignore()
            .cmd("ZADD")
            .arg(&nodes)
            .arg(now)
            .arg(&self.node)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&nodes)
            .arg(ttl)
            .ignore()
            .cmd("ZRANGE")
            .arg(&nodes)
            .arg(0)
            .arg(-1);
        let (members,): (Vec<String>,) = self
            .call("writing this node's counts", pipe.query_async(&mut conn))
            .await?;
        let peers: Vec<String> = members.into_iter().filter(|m| *m != self.node).collect();
        let mut others = ClientCounts::default();
        if !peers.is_empty() {
            let keys: Vec<String> = peers
                .iter()
                .map(|p| self.key(&format!("node:{p}")))
                .collect();
            let values: Vec<Option<String>> = self
                .call(
                    "reading the other nodes' counts",
                    redis::cmd("MGET").arg(&keys).query_async(&mut conn),
                )
                .await?;
            let mut gone = Vec::new();
            for (peer, value) in peers.iter().zip(values) {
                match value.map(|v| serde_json::from_str::<ClientCounts>(&v)) {
                    Some(Ok(c)) => others.add(&c),
                    Some(Err(e)) => {
                        tracing::debug!(node = %peer, error = %e, "cluster: unreadable counts");
                    }
                    None => gone.push(peer),
                }
            }
            if !gone.is_empty() {
                // Nodes that stopped: their keys expired. Best effort.
                let _ = self
                    .call(
                        "forgetting stopped nodes",
                        redis::cmd("ZREM")
                            .arg(&nodes)
                            .arg(&gone)
                            .query_async::<()>(&mut conn),
                    )
                    .await;
            }
        }
        for (name, l) in logins {
            l.set_others(others.logins.remove(name).unwrap_or_default());
        }
        if let Some(l) = limits {
            l.set_others(others);
        }
        Ok(())
    }

    /// Syncs every `sync_interval` until `shutdown`, then removes this node's counts.
    pub fn spawn(self: &Arc<Self>, shutdown: CancellationToken) -> JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            tracing::info!(node = %me.node, key_prefix = %me.cfg.key_prefix,
                sync_interval = ?me.cfg.sync_interval, "cluster: sharing state in Redis");
            let mut tick = tokio::time::interval(me.cfg.sync_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.cancelled() => break,
                }
                let _ = me.sync().await;
            }
            me.leave().await;
        })
    }

    /// Removes this node's counts (at shutdown), so the others stop counting them.
    pub async fn leave(&self) {
        let mut conn = self.conn();
        let mut pipe = redis::pipe();
        pipe.cmd("DEL")
            .arg(self.key(&format!("node:{}", self.node)))
            .ignore()
            .cmd("ZREM")
            .arg(self.key("nodes"))
            .arg(&self.node)
            .ignore();
        let _ = self.call("leaving", pipe.exec_async(&mut conn)).await;
    }
}

/// Greylist records in Redis, expiring by themselves.
#[derive(Debug)]
pub struct RedisGreyState {
    cluster: Arc<Cluster>,
}

#[async_trait]
impl GreyState for RedisGreyState {
    async fn get(&self, key: &str) -> Result<Option<GreyRecord>, SharedError> {
        let c = &self.cluster;
        c.ensure_up()?;
        let mut conn = c.conn();
        let v: Option<String> = c
            .call(
                "greylist GET",
                redis::cmd("GET")
                    .arg(c.key(&format!("grey:{key}")))
                    .query_async(&mut conn),
            )
            .await?;
        // An unreadable value is as good as none: the triplet starts over.
        Ok(v.as_deref().and_then(GreyRecord::from_text))
    }

    async fn put(&self, key: &str, r: GreyRecord, ttl: Duration) -> Result<(), SharedError> {
        let c = &self.cluster;
        c.ensure_up()?;
        let mut conn = c.conn();
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        c.call(
            "greylist SET",
            redis::cmd("SET")
                .arg(c.key(&format!("grey:{key}")))
                .arg(r.to_text())
                .arg("PX")
                .arg(ms)
                .query_async::<()>(&mut conn),
        )
        .await
    }

    async fn expire(&self, _before_ms: i64) -> Result<u64, SharedError> {
        // Redis expires the records (PX).
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let r = GreyRecord {
            first_seen: 1,
            last_seen: 2,
            passes: 3,
        };
        assert_eq!(GreyRecord::from_text("1 2 3"), Some(r));
        assert_eq!(GreyRecord::from_text("1 2"), None);
        assert_eq!(GreyRecord::from_text("1 2 3 4"), None);
        assert!(check_url("redis://127.0.0.1:6379/0").is_ok());
        assert!(check_url("http://x").is_err());
    }
}
