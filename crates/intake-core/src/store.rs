//! The storage trait every backend implements.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;

use crate::message::{Incoming, MessageId, StoredMessage, Summary};

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
}

impl StoreError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        !matches!(self, StoreError::Corrupt(_))
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

    /// A mailbox's messages, newest first.
    async fn list_mailbox(&self, mailbox: &str, page: Page) -> Result<Vec<Summary>, StoreError>;

    /// One message with its raw bytes.
    async fn fetch(&self, id: MessageId) -> Result<Option<StoredMessage>, StoreError>;

    /// The counter of sessions receiving content, for stores that batch commits.
    fn arrivals(&self) -> Option<Arrivals> {
        None
    }

    /// Waits until queued writes are done and stops taking new ones.
    async fn close(&self);
}
