//! Policy state: greylisting records. Not mail: it need not be fsync'd (a lost record costs
//! a retry), and an engine may keep it apart from its mail.

use async_trait::async_trait;

use super::StoreError;

/// Greylisting records as the policy checks see them. Implemented by `intake_store::Store`
/// over a [`PolicyBackend`]; greylisting reaches it through [`crate::StoreGreyState`] (one
/// node) unless a cluster keeps the records in Redis.
#[async_trait]
pub trait PolicyState: Send + Sync + 'static {
    /// A greylisting record by key (a triplet or a client network).
    async fn greylist_get(&self, key: &str) -> Result<Option<GreyRecord>, StoreError>;

    /// Writes a greylisting record.
    async fn greylist_put(&self, key: &str, record: GreyRecord) -> Result<(), StoreError>;

    /// Deletes greylisting records last seen before `before_ms` (Unix milliseconds);
    /// returns how many.
    async fn greylist_expire(&self, before_ms: i64) -> Result<u64, StoreError>;
}

/// Policy state as a storage engine keeps it (keys as given). Every implementation passes
/// the policy cases of the conformance suite.
#[async_trait]
pub trait PolicyBackend: Send + Sync + 'static {
    /// See [`PolicyState::greylist_get`].
    async fn greylist_get(&self, key: &str) -> Result<Option<GreyRecord>, StoreError>;
    /// See [`PolicyState::greylist_put`].
    async fn greylist_put(&self, key: &str, record: GreyRecord) -> Result<(), StoreError>;
    /// See [`PolicyState::greylist_expire`].
    async fn greylist_expire(&self, before_ms: i64) -> Result<u64, StoreError>;
}

/// One greylisting record: a triplet (client network, sender, recipient) or a client
/// network's count of passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GreyRecord {
    /// When it was first seen (or seen again after its retry window ran out), Unix ms.
    pub first_seen: i64,
    /// When it was last seen, Unix ms (records expire by this).
    pub last_seen: i64,
    /// For a triplet: times it passed; for a client network: triplets that passed.
    pub passes: u32,
}

impl GreyRecord {
    /// The record as text, as a key-value store keeps it: `"first_seen last_seen passes"`.
    pub fn to_text(&self) -> String {
        format!("{} {} {}", self.first_seen, self.last_seen, self.passes)
    }

    /// A record from [`GreyRecord::to_text`]'s form; `None` for anything else.
    pub fn from_text(v: &str) -> Option<GreyRecord> {
        let mut it = v.split(' ');
        let r = GreyRecord {
            first_seen: it.next()?.parse().ok()?,
            last_seen: it.next()?.parse().ok()?,
            passes: it.next()?.parse().ok()?,
        };
        it.next().is_none().then_some(r)
    }
}
