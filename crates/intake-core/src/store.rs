//! The storage trait every backend implements.

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

/// Counts sessions that are receiving message content right now: deliveries that will reach
/// the store within moments. A store doing group commit lingers for them before a commit
/// and commits at once when none are on their way.
#[derive(Debug, Clone, Default)]
pub struct Arrivals(Arc<AtomicUsize>);

impl Arrivals {
    /// Marks one session as receiving content until the guard is dropped.
    pub fn start(&self) -> ArrivalGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        ArrivalGuard(self.0.clone())
    }

    /// Sessions receiving content now.
    pub fn pending(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// See [`Arrivals::start`].
#[derive(Debug)]
pub struct ArrivalGuard(Arc<AtomicUsize>);

impl Drop for ArrivalGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Durable mail.
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
