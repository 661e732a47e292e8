//! Retention on SQLite, PostgreSQL and MariaDB/MySQL: the same three passes in the same
//! order (the mailbox cap, then age, then the size cap), deleting in chunks, each engine
//! finding and deleting its rows its own way (SQLite finds them on a reader and deletes
//! them through its writer). Redis and the memory store evict by their own means.

use async_trait::async_trait;
use intake_core::{Eviction, Removal, Retention, StoreError};

/// Messages deleted per transaction, so that no lock is held long and deliveries are
/// never held up for long.
pub(crate) const EVICT_CHUNK: usize = 500;

/// How an engine finds and deletes what retention removes.
#[async_trait]
pub(crate) trait EvictSteps: Sync {
    /// A message's filing under one mailbox.
    type Link: Send + Sync;
    /// A message.
    type Key: Send + Sync;

    /// Filings beyond the newest `keep` of each mailbox.
    async fn over_mailbox_cap(&self, keep: u64) -> Result<Vec<Self::Link>, StoreError>;
    /// Removes these filings, and the messages left in no mailbox: (messages deleted,
    /// every removal).
    async fn unlink(&self, links: &[Self::Link]) -> Result<(u64, Vec<Removal>), StoreError>;
    /// Messages received before `before_ms`, oldest first.
    async fn older_than(&self, before_ms: i64) -> Result<Vec<Self::Key>, StoreError>;
    /// The oldest messages to delete so that the rest add up to at most `max_bytes`.
    async fn over_size_cap(&self, max_bytes: u64) -> Result<Vec<Self::Key>, StoreError>;
    /// Deletes these messages.
    async fn delete(&self, keys: &[Self::Key]) -> Result<Vec<Removal>, StoreError>;
}

/// Applies `policy` at `now_ms` through `engine`.
pub(crate) async fn evict<E: EvictSteps>(
    engine: &E,
    policy: &Retention,
    now_ms: i64,
) -> Result<Eviction, StoreError> {
    let mut out = Eviction::default();
    if let Some(keep) = policy.per_mailbox {
        let links = engine.over_mailbox_cap(keep).await?;
        for chunk in links.chunks(EVICT_CHUNK) {
            let (deleted, removed) = engine.unlink(chunk).await?;
            out.evicted.by_mailbox_cap += deleted;
            out.removed.extend(removed);
        }
    }
    if let Some(age) = policy.max_age {
        let keys = engine.older_than(now_ms - age.as_millis() as i64).await?;
        for chunk in keys.chunks(EVICT_CHUNK) {
            let removed = engine.delete(chunk).await?;
            out.evicted.by_age += removed.len() as u64;
            out.removed.extend(removed);
        }
    }
    if let Some(max) = policy.max_bytes {
        let keys = engine.over_size_cap(max).await?;
        for chunk in keys.chunks(EVICT_CHUNK) {
            let removed = engine.delete(chunk).await?;
            out.evicted.by_size += removed.len() as u64;
            out.removed.extend(removed);
        }
    }
    let e = &mut out.evicted;
    e.messages = e.by_mailbox_cap + e.by_age + e.by_size;
    Ok(out)
}
