//! Mail: deliveries, listings, search, one message, deletes, the read flag, retention,
//! aliases and the shared meta value.

use async_trait::async_trait;

use super::{Evicted, Eviction, Listing, Page, Removal, Retention, StoreError};
use crate::message::{Incoming, MessageId, StoredMessage};
use crate::search::Query;

/// Durable mail, as the rest of Intake sees it (`Arc<dyn MailStore>`: the store delivery
/// target, the HTTP API, the CLI's listings, the retention schedule). Implemented by
/// `intake_store::Store` on top of a [`MailBackend`]; implement [`MailBackend`] for a new
/// storage engine, not this.
#[async_trait]
pub trait MailStore: Send + Sync + 'static {
    /// Stores one message, once, indexed under each of its recipients' mailboxes.
    ///
    /// Returns only once the message survives a crash (committed and synced): the SMTP
    /// `250` after DATA depends on it.
    async fn deliver(&self, msg: Incoming) -> Result<(), StoreError>;

    /// A mailbox's messages, newest first, with its totals.
    async fn list_mailbox(&self, mailbox: &str, page: Page) -> Result<Listing, StoreError>;

    /// All messages, newest first.
    async fn list_all(&self, page: Page) -> Result<Listing, StoreError>;

    /// Messages matching a query, newest first.
    async fn search(&self, query: &Query, page: Page) -> Result<Listing, StoreError>;

    /// One message with its raw bytes.
    async fn fetch(&self, id: MessageId) -> Result<Option<StoredMessage>, StoreError>;

    /// Deletes a message from every mailbox. False if there was none.
    async fn delete(&self, id: MessageId) -> Result<bool, StoreError>;

    /// Deletes a mailbox's messages (a message also filed elsewhere stays there). Returns
    /// how many messages the mailbox held.
    async fn delete_mailbox(&self, mailbox: &str) -> Result<u64, StoreError>;

    /// Marks a message read or unread. False if there was none.
    async fn set_seen(&self, id: MessageId, seen: bool) -> Result<bool, StoreError>;

    /// Records that mail to `alias` belongs in `mailbox`.
    async fn register_alias(&self, alias: &str, mailbox: &str) -> Result<(), StoreError>;

    /// Applies a retention policy once.
    async fn evict(&self, policy: &Retention) -> Result<Evicted, StoreError>;

    /// Bytes the store takes on disk, when the engine can tell cheaply (metrics).
    fn size_on_disk(&self) -> Option<u64>;

    /// Why an acknowledged message may be lost, when the operator accepted a store that
    /// does not make every write durable (Redis without `appendfsync always`, with
    /// `store.redis_accept_weak_durability`); shown by `/readyz`. `None`: durable.
    fn durability_warning(&self) -> Option<String> {
        None
    }

    /// Waits until queued writes are done and stops taking new ones.
    async fn close(&self);
}

/// Mail as a storage engine keeps it: storage only.
///
/// The layer above (`intake_store::Store`) resolves alias recipients before
/// [`MailBackend::deliver`], publishes events from what each write returns, and decides
/// when retention runs; an engine does none of that. Every implementation must pass the
/// conformance suite in `intake_store::conformance` unchanged.
///
/// Keys reach an engine normalized by the layer: mailboxes and aliases lower-cased
/// ([`crate::mailbox_key`]). An engine stores and compares them as they are.
#[async_trait]
pub trait MailBackend: Send + Sync + 'static {
    /// Stores one message, once, filed under each of `mailboxes` (lower-cased, distinct,
    /// aliases already resolved).
    ///
    /// Returns only once the message survives a crash (committed and synced): the SMTP
    /// `250` after DATA depends on it. An engine may commit many sessions' messages at once
    /// (group commit); each caller still gets its own result.
    async fn deliver(&self, msg: Incoming, mailboxes: Vec<String>) -> Result<(), StoreError>;

    /// A mailbox's messages, newest first, with its totals.
    async fn list_mailbox(&self, mailbox: &str, page: Page) -> Result<Listing, StoreError>;

    /// All messages, newest first.
    async fn list_all(&self, page: Page) -> Result<Listing, StoreError>;

    /// Messages matching a query, newest first. The index may lag behind deliveries a
    /// little (the conformance suite waits up to a few seconds for it).
    async fn search(&self, query: &Query, page: Page) -> Result<Listing, StoreError>;

    /// One message with its raw bytes.
    async fn fetch(&self, id: MessageId) -> Result<Option<StoredMessage>, StoreError>;

    /// Deletes a message from every mailbox: its former mailboxes, or `None` if there was
    /// no such message.
    async fn delete(&self, id: MessageId) -> Result<Option<Removal>, StoreError>;

    /// Unfiles every message of a mailbox, deleting those no other mailbox holds. One
    /// [`Removal`] (with just this mailbox) per message the mailbox held.
    async fn delete_mailbox(&self, mailbox: &str) -> Result<Vec<Removal>, StoreError>;

    /// Marks a message read or unread. False if there was none.
    async fn set_seen(&self, id: MessageId, seen: bool) -> Result<bool, StoreError>;

    /// Applies a retention policy once, `now_ms` being the current time (Unix ms).
    ///
    /// Per-mailbox caps unfile the oldest messages of a mailbox over its cap (a
    /// [`Removal`] with that mailbox; counted in `by_mailbox_cap` when no mailbox keeps the
    /// message any more); age and size delete whole messages (a [`Removal`] with all their
    /// mailboxes). Delete in small transactions: deliveries must not wait long.
    async fn evict(&self, policy: &Retention, now_ms: i64) -> Result<Eviction, StoreError>;

    /// Records that mail to `alias` is filed in `mailbox` (replacing an earlier mailbox).
    async fn alias_put(&self, alias: &str, mailbox: &str) -> Result<(), StoreError>;

    /// The mailbox of an alias, if registered.
    async fn alias_get(&self, alias: &str) -> Result<Option<String>, StoreError>;

    /// A small setting shared by every node on the same data (the alias secret): the value
    /// stored under `key`, storing `value` first if there was none. The first writer wins,
    /// atomically, also between processes.
    async fn meta_get_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError>;

    /// Bytes the data takes on disk, when the engine can tell cheaply (metrics).
    fn size_on_disk(&self) -> Option<u64> {
        None
    }

    /// Why an acknowledged write may be lost, when the engine runs with weaker durability
    /// than a 250 needs because the operator accepted it; `None`: durable.
    fn durability_warning(&self) -> Option<String> {
        None
    }

    /// Waits until queued writes are done and stops taking new ones (later writes answer
    /// [`StoreError::Closed`]).
    async fn close(&self);
}
