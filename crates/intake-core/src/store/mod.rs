//! Storage, split by what a caller needs. Each capability is two traits: the one a storage
//! engine implements (storage only, keys as given) and the one the rest of Intake uses,
//! implemented once by `intake_store::Store`, the layer above every engine (keys
//! normalized, aliases resolved, [`crate::Event`]s published after each committed change).
//!
//! | capability | engine implements | callers use | who calls |
//! |---|---|---|---|
//! | mail | [`MailBackend`] | [`MailStore`] | SMTP store target, HTTP API, CLI listings, retention |
//! | users and recipients | [`DirectoryBackend`] | [`UserDirectory`], [`RecipientTable`] | SMTP AUTH, the recipient check, CLI and admin API |
//! | policy state | [`PolicyBackend`] | [`PolicyState`] | greylisting (through [`crate::StoreGreyState`]) |
//! | tags | [`TagBackend`] | [`MailTags`] | the Mailpit API, `X-Tags` and plus-addressing at delivery |
//!
//! A new capability (tags, POP3 access) is a new pair of traits here, implemented by the
//! engines that can keep it and forwarded by the layer; callers receive only the trait
//! object they need (`Arc<dyn UserDirectory>` for the authenticator, say).

mod arrivals;
mod directory;
mod mail;
mod policy;
mod tags;

pub use arrivals::{ArrivalGuard, Arrivals};
pub use directory::{DirectoryBackend, RecipientTable, User, UserDirectory};
pub use mail::{MailBackend, MailStore};
pub use policy::{GreyRecord, PolicyBackend, PolicyState};
pub use tags::{MAX_TAG_LEN, MailTags, TagBackend, clean_tag, clean_tags};

use crate::message::{MessageId, Summary};

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

impl Page {
    /// The first item only (for a listing's totals, or whether there is anything at all).
    pub const FIRST: Page = Page {
        offset: 0,
        limit: 1,
    };
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
