//! Short-lived state that the nodes of a cluster share (greylist records, per-client
//! counts), as traits: the SMTP and policy crates use them, `intake-cluster` implements
//! them on Redis, and a single node keeps today's behaviour (greylist records in the
//! store, counts in process memory).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{GreyRecord, PolicyState, StoreError};

/// Why shared state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// The backend is known to be down right now (nothing was tried): the caller falls
    /// back at once and need not log each time.
    #[error("shared state unavailable: {0}")]
    Unavailable(String),
    /// The call failed or took too long.
    #[error("{0}")]
    Failed(String),
}

impl From<StoreError> for SharedError {
    fn from(e: StoreError) -> Self {
        SharedError::Failed(e.to_string())
    }
}

/// Where greylisting keeps its records: the store (one node) or Redis (a cluster).
#[async_trait]
pub trait GreyState: Send + Sync + std::fmt::Debug + 'static {
    /// A record by key (`t <network> <sender> <recipient>` or `c <network>`).
    async fn get(&self, key: &str) -> Result<Option<GreyRecord>, SharedError>;

    /// Writes a record that is worth keeping for `ttl` from now (a backend with expiry
    /// of its own drops it then; others rely on [`GreyState::expire`]).
    async fn put(&self, key: &str, record: GreyRecord, ttl: Duration) -> Result<(), SharedError>;

    /// Deletes records last seen before `before_ms` (Unix ms); how many. Backends that
    /// expire records by themselves do nothing.
    async fn expire(&self, before_ms: i64) -> Result<u64, SharedError>;
}

/// Greylist records in the store ([`PolicyState`]): one node's state, surviving restarts.
#[derive(Clone)]
pub struct StoreGreyState(pub Arc<dyn PolicyState>);

impl std::fmt::Debug for StoreGreyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreGreyState")
    }
}

#[async_trait]
impl GreyState for StoreGreyState {
    async fn get(&self, key: &str) -> Result<Option<GreyRecord>, SharedError> {
        Ok(self.0.greylist_get(key).await?)
    }

    async fn put(&self, key: &str, record: GreyRecord, _ttl: Duration) -> Result<(), SharedError> {
        Ok(self.0.greylist_put(key, record).await?)
    }

    async fn expire(&self, before_ms: i64) -> Result<u64, SharedError> {
        Ok(self.0.greylist_expire(before_ms).await?)
    }
}

/// What one node counts per client, for limits that hold across a cluster. Only non-zero
/// counts are listed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientCounts {
    /// Open connections per client IP.
    #[serde(default, rename = "o", skip_serializing_if = "HashMap::is_empty")]
    pub open_ip: HashMap<IpAddr, u32>,
    /// Open connections per client network (its /24 or /64, by network address).
    #[serde(default, rename = "n", skip_serializing_if = "HashMap::is_empty")]
    pub open_net: HashMap<IpAddr, u32>,
    /// Connections accepted per IP over the last minute (a sliding estimate).
    #[serde(default, rename = "c", skip_serializing_if = "HashMap::is_empty")]
    pub connections: HashMap<IpAddr, u32>,
    /// Messages accepted per IP over the last minute.
    #[serde(default, rename = "m", skip_serializing_if = "HashMap::is_empty")]
    pub messages: HashMap<IpAddr, u32>,
    /// Recipients accepted per IP over the last minute.
    #[serde(default, rename = "r", skip_serializing_if = "HashMap::is_empty")]
    pub recipients: HashMap<IpAddr, u32>,
    /// Failed logins in their current windows, per limiter (`smtp`, `http`).
    #[serde(default, rename = "l", skip_serializing_if = "BTreeMap::is_empty")]
    pub logins: BTreeMap<String, LoginCounts>,
}

impl ClientCounts {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &ClientCounts) {
        for (mine, theirs) in [
            (&mut self.open_ip, &other.open_ip),
            (&mut self.open_net, &other.open_net),
            (&mut self.connections, &other.connections),
            (&mut self.messages, &other.messages),
            (&mut self.recipients, &other.recipients),
        ] {
            for (ip, n) in theirs {
                let e = mine.entry(*ip).or_default();
                *e = e.saturating_add(*n);
            }
        }
        for (name, theirs) in &other.logins {
            self.logins.entry(name.clone()).or_default().add(theirs);
        }
    }

    /// Whether nothing is counted.
    pub fn is_empty(&self) -> bool {
        self.open_ip.is_empty()
            && self.open_net.is_empty()
            && self.connections.is_empty()
            && self.messages.is_empty()
            && self.recipients.is_empty()
            && self.logins.values().all(LoginCounts::is_empty)
    }
}

/// Limits that count the other nodes of a cluster too. The check stays local and
/// synchronous; a background task hands this node's counts to the others and theirs back,
/// once per sync interval.
pub trait SharedLimits: Send + Sync + 'static {
    /// This node's counts now.
    fn local_counts(&self) -> ClientCounts;

    /// What the other nodes counted, as last read (empty: local limits only).
    fn set_others(&self, others: ClientCounts);
}

/// What one node's failed-login limiter counts in the current windows (see
/// [`crate::LoginLimiter`]); only non-zero counts are listed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginCounts {
    /// Failures per client address.
    #[serde(default, rename = "c", skip_serializing_if = "HashMap::is_empty")]
    pub clients: HashMap<IpAddr, u32>,
    /// Failures per client address and account, keyed `<address> <account>`.
    #[serde(default, rename = "p", skip_serializing_if = "HashMap::is_empty")]
    pub pairs: HashMap<String, u32>,
    /// Failures per account, from every address.
    #[serde(default, rename = "a", skip_serializing_if = "HashMap::is_empty")]
    pub accounts: HashMap<String, u32>,
}

impl LoginCounts {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &LoginCounts) {
        for (ip, n) in &other.clients {
            let e = self.clients.entry(*ip).or_default();
            *e = e.saturating_add(*n);
        }
        for (mine, theirs) in [
            (&mut self.pairs, &other.pairs),
            (&mut self.accounts, &other.accounts),
        ] {
            for (k, n) in theirs {
                let e = mine.entry(k.clone()).or_default();
                *e = e.saturating_add(*n);
            }
        }
    }

    /// Whether nothing is counted.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty() && self.pairs.is_empty() && self.accounts.is_empty()
    }
}

/// A failed-login limiter whose counts hold across a cluster, synced like
/// [`SharedLimits`]: the gate stays local and adds the other nodes' failures as last read.
pub trait SharedLogins: Send + Sync + 'static {
    /// This node's failures in their current windows.
    fn local_failures(&self) -> LoginCounts;

    /// What the other nodes counted, as last read (empty: this node's failures only).
    fn set_others(&self, others: LoginCounts);
}
