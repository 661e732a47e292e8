//! The two storage traits.
//!
//! - [`Backend`]: what a storage engine implements (SQLite today; PostgreSQL, MariaDB, Redis
//!   next). Storage only: it files a message under the mailboxes it is given, and reports
//!   what a delete or an eviction removed instead of announcing it.
//! - [`MailStore`]: what the rest of Intake uses (`Arc<dyn MailStore>`: the SMTP driver, the
//!   HTTP API, the policy checks, the CLI). It is implemented once, by `intake_store::Store`,
//!   the layer above every backend that resolves aliases, publishes [`crate::Event`]s and
//!   runs the retention schedule.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;

use crate::message::{Incoming, MessageId, StoredMessage, Summary};
use crate::search::Query;

/// Why a store operation failed. The SMTP side answers every one of them with a 4xx.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not do it now (I/O error, lock timeout, connection lost).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store is shutting down and takes no more writes.
    #[error("store is shut down")]
    Closed,
    /// Stored data could not be read back (schema mismatch, corrupt row).
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// A search query the backend cannot run (the caller's mistake).
    #[error("invalid query: {0}")]
    BadQuery(String),
}

impl StoreError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        !matches!(self, StoreError::Corrupt(_) | StoreError::BadQuery(_))
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Items to skip.
    pub offset: u64,
    /// Items to return at most.
    pub limit: u64,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            offset: 0,
            limit: 50,
        }
    }
}

/// One page of messages with the totals a client needs to paginate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Messages matching, over all pages.
    pub total: u64,
    /// Of those, not marked read.
    pub unread: u64,
    /// This page, newest first.
    pub messages: Vec<Summary>,
}

/// How much mail to keep. `None` means no limit of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep at most this many messages per mailbox (the newest).
    pub per_mailbox: Option<u64>,
    /// Delete messages older than this.
    pub max_age: Option<std::time::Duration>,
    /// Keep the stored messages' total size under this many octets (oldest go first).
    pub max_bytes: Option<u64>,
}

/// What one eviction pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evicted {
    /// Messages deleted from the store.
    pub messages: u64,
    /// Of which for exceeding a mailbox's cap (a message in several mailboxes is deleted
    /// once no mailbox keeps it).
    pub by_mailbox_cap: u64,
    /// Of which for age.
    pub by_age: u64,
    /// Of which for the store's size cap.
    pub by_size: u64,
}

/// A message that left some mailboxes: deleted, or unfiled from these mailboxes while
/// others still hold it. Each becomes one [`crate::Event::Deleted`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// The message.
    pub id: MessageId,
    /// The mailboxes it left.
    pub mailboxes: Vec<String>,
}

/// What a backend's eviction pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Eviction {
    /// The counts (logged by the retention schedule).
    pub evicted: Evicted,
    /// Every message that left a mailbox, in the order it happened.
    pub removed: Vec<Removal>,
}

/// Counts sessions that are receiving message content right now: deliveries that will reach
/// the store within moments. A store doing group commit lingers for them before a commit
/// and commits at once when none are on their way.
#[derive(Debug, Clone, Default)]
pub struct Arrivals(Arc<ArrivalsInner>);

#[derive(Debug, Default)]
struct ArrivalsInner {
    receiving: AtomicUsize,
    /// Notified when the last session receiving content is done.
    none_left: tokio::sync::Notify,
}

impl Arrivals {
    /// Marks one session as receiving content until the guard is dropped.
    pub fn start(&self) -> ArrivalGuard {
        self.0.receiving.fetch_add(1, Ordering::Relaxed);
        ArrivalGuard(self.0.clone())
    }

    /// Sessions receiving content now.
    pub fn pending(&self) -> usize {
        self.0.receiving.load(Ordering::Relaxed)
    }

    /// Returns once no session is receiving content (at once if none is). A writer that
    /// lingers waits on this and a deadline, rather than being woken by every message
    /// that reaches its queue meanwhile.
    pub async fn none_pending(&self) {
        let notified = self.0.none_left.notified();
        let mut notified = std::pin::pin!(notified);
        // Registered before the count is read, so a guard dropped in between still wakes us.
        notified.as_mut().enable();
        if self.0.receiving.load(Ordering::Acquire) == 0 {
            return;
        }
        notified.await;
    }
}

/// See [`Arrivals::start`].
#[derive(Debug)]
pub struct ArrivalGuard(Arc<ArrivalsInner>);

impl Drop for ArrivalGuard {
    fn drop(&mut self) {
        if self.0.receiving.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.none_left.notify_waiters();
        }
    }
}

#[cfg(test)]
mod arrivals_tests {
    use super::Arrivals;
    use std::time::Duration;

    #[tokio::test]
    async fn none_pending_returns_when_the_last_session_is_done() {
        let arrivals = Arrivals::default();
        // Nobody receiving: at once.
        tokio::time::timeout(Duration::from_secs(1), arrivals.none_pending())
            .await
            .expect("no session: returns at once");
        let a = arrivals.start();
        let b = arrivals.start();
        let waiter = {
            let arrivals = arrivals.clone();
            tokio::spawn(async move { arrivals.none_pending().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(a);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "one session still receiving");
        drop(b);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken by the last guard")
            .unwrap();
        assert_eq!(arrivals.pending(), 0);
    }
}

/// Durable mail, as the rest of Intake sees it. Implemented by `intake_store::Store` on top
/// of a [`Backend`]; implement [`Backend`] for a new storage engine, not this.
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

    /// Bytes the store takes on disk, when the backend can tell cheaply (metrics).
    fn size_on_disk(&self) -> Option<u64> {
        None
    }

    /// The counter of sessions receiving content, for stores that batch commits.
    fn arrivals(&self) -> Option<Arrivals> {
        None
    }

    /// Waits until queued writes are done and stops taking new ones.
    async fn close(&self);

    // Policy state. Stores that keep none answer `Unavailable`, which a check treats as
    // "could not decide" (fail open or defer, as configured).

    /// Adds an address (or `@domain`, every address of that domain) to the valid
    /// recipients. False if it was there already.
    async fn recipient_add(&self, _address: &str) -> Result<bool, StoreError> {
        Err(not_kept("recipients"))
    }

    /// Removes an address or `@domain` from the valid recipients. False if it was absent.
    async fn recipient_remove(&self, _address: &str) -> Result<bool, StoreError> {
        Err(not_kept("recipients"))
    }

    /// Every valid recipient entry, sorted.
    async fn recipient_list(&self) -> Result<Vec<String>, StoreError> {
        Err(not_kept("recipients"))
    }

    /// Whether `address` (lower-cased) or its `@domain` is listed; `None` when the table is
    /// empty (no recipients kept in the store).
    async fn recipient_lookup(&self, _address: &str) -> Result<Option<bool>, StoreError> {
        Err(not_kept("recipients"))
    }

    /// A greylisting record by key (a triplet or a client network).
    async fn greylist_get(&self, _key: &str) -> Result<Option<GreyRecord>, StoreError> {
        Err(not_kept("greylisting state"))
    }

    /// Writes a greylisting record.
    async fn greylist_put(&self, _key: &str, _record: GreyRecord) -> Result<(), StoreError> {
        Err(not_kept("greylisting state"))
    }

    /// Deletes greylisting records last seen before `before_ms` (Unix milliseconds);
    /// returns how many.
    async fn greylist_expire(&self, _before_ms: i64) -> Result<u64, StoreError> {
        Err(not_kept("greylisting state"))
    }

    // SMTP AUTH users. Stores that keep none answer `Unavailable` (AUTH then fails
    // temporarily, never with a wrong-password reply).

    /// A user by address (lower-cased).
    async fn user_get(&self, _address: &str) -> Result<Option<crate::User>, StoreError> {
        Err(not_kept("users"))
    }

    /// Adds a user; false if the address exists already.
    async fn user_add(&self, _user: crate::User) -> Result<bool, StoreError> {
        Err(not_kept("users"))
    }

    /// Replaces a user's password hash; false if there is no such user.
    async fn user_set_password(&self, _address: &str, _hash: &str) -> Result<bool, StoreError> {
        Err(not_kept("users"))
    }

    /// Enables or disables a user; false if there is no such user.
    async fn user_set_enabled(&self, _address: &str, _enabled: bool) -> Result<bool, StoreError> {
        Err(not_kept("users"))
    }

    /// Every user, by address.
    async fn user_list(&self) -> Result<Vec<crate::User>, StoreError> {
        Err(not_kept("users"))
    }
}

/// A storage engine: storage only.
///
/// The layer above (`intake_store::Store`) resolves alias recipients before
/// [`Backend::deliver`], publishes events from what each write returns, and decides when
/// retention runs; a backend does none of that. Every implementation must pass the
/// conformance suite in `intake_store::conformance` unchanged.
///
/// Keys reach a backend normalized by the layer: mailboxes and aliases lower-cased
/// ([`crate::mailbox_key`]), recipient entries and user addresses (and senders) trimmed and
/// lower-cased. A backend stores and compares them as they are.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Stores one message, once, filed under each of `mailboxes` (lower-cased, distinct,
    /// aliases already resolved).
    ///
    /// Returns only once the message survives a crash (committed and synced): the SMTP
    /// `250` after DATA depends on it. A backend may commit many sessions' messages at once
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

    /// See [`MailStore::recipient_add`].
    async fn recipient_add(&self, address: &str) -> Result<bool, StoreError>;
    /// See [`MailStore::recipient_remove`].
    async fn recipient_remove(&self, address: &str) -> Result<bool, StoreError>;
    /// See [`MailStore::recipient_list`].
    async fn recipient_list(&self) -> Result<Vec<String>, StoreError>;
    /// See [`MailStore::recipient_lookup`].
    async fn recipient_lookup(&self, address: &str) -> Result<Option<bool>, StoreError>;

    /// See [`MailStore::greylist_get`]. Policy state need not be fsync'd: a lost record
    /// costs a retry, not mail.
    async fn greylist_get(&self, key: &str) -> Result<Option<GreyRecord>, StoreError>;
    /// See [`MailStore::greylist_put`].
    async fn greylist_put(&self, key: &str, record: GreyRecord) -> Result<(), StoreError>;
    /// See [`MailStore::greylist_expire`].
    async fn greylist_expire(&self, before_ms: i64) -> Result<u64, StoreError>;

    /// See [`MailStore::user_get`].
    async fn user_get(&self, address: &str) -> Result<Option<crate::User>, StoreError>;
    /// See [`MailStore::user_add`].
    async fn user_add(&self, user: crate::User) -> Result<bool, StoreError>;
    /// See [`MailStore::user_set_password`].
    async fn user_set_password(&self, address: &str, hash: &str) -> Result<bool, StoreError>;
    /// See [`MailStore::user_set_enabled`].
    async fn user_set_enabled(&self, address: &str, enabled: bool) -> Result<bool, StoreError>;
    /// See [`MailStore::user_list`].
    async fn user_list(&self) -> Result<Vec<crate::User>, StoreError>;

    /// Bytes the data takes on disk, when the backend can tell cheaply (metrics).
    fn size_on_disk(&self) -> Option<u64> {
        None
    }

    /// The counter of sessions receiving content, for backends that batch commits.
    fn arrivals(&self) -> Option<Arrivals> {
        None
    }

    /// Waits until queued writes are done and stops taking new ones (later writes answer
    /// [`StoreError::Closed`]).
    async fn close(&self);
}

fn not_kept(what: &str) -> StoreError {
    StoreError::Unavailable(format!("this store keeps no {what}"))
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

/// An SMTP AUTH user (the `users` table).
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// The login, an address; lower-cased.
    pub address: String,
    /// The password hash (see [`crate::password`]).
    pub password_hash: String,
    /// A disabled user cannot log in.
    pub enabled: bool,
    /// Envelope senders the user may use (`user@example.com`, or `@example.com` for a whole
    /// domain); empty: only the user's own address.
    pub senders: Vec<String>,
}

impl User {
    /// Whether the user may send with `mail_from` as the envelope sender.
    pub fn may_send_as(&self, mail_from: &str) -> bool {
        let from = mail_from.to_lowercase();
        if from == self.address {
            return true;
        }
        let domain = from.rsplit_once('@').map(|(_, d)| format!("@{d}"));
        self.senders
            .iter()
            .any(|s| *s == from || Some(s) == domain.as_ref())
    }
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("address", &self.address)
            .field("enabled", &self.enabled)
            .field("senders", &self.senders)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod user_tests {
    use super::User;

    #[test]
    fn a_user_sends_as_itself_and_as_listed_senders_only() {
        let u = User {
            address: "alice@example.test".into(),
            password_hash: String::new(),
            enabled: true,
            senders: vec!["sales@example.test".into(), "@alice.test".into()],
        };
        assert!(u.may_send_as("Alice@Example.test"));
        assert!(u.may_send_as("sales@example.test"));
        assert!(u.may_send_as("anything@alice.test"));
        assert!(!u.may_send_as("bob@example.test"));
        assert!(!u.may_send_as("x@sub.alice.test"));
        assert!(!u.may_send_as(""), "not the null sender");
        assert!(!format!("{u:?}").contains("password"), "no hash in logs");
    }
}
