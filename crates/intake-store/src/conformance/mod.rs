//! The conformance suite: what every engine must do, the same tests for each, one file per
//! capability: [`mail`] (deliveries, listings, search, deletes, aliases, meta, close),
//! [`retention`], [`directory`] (recipients, users), [`policy`] (greylist records) and
//! [`tags`].
//!
//! Each case is a `pub async fn` taking a fresh, empty engine ([`TestBackend`]) and
//! panicking on a failure. Most drive the engine through the [`Store`] layer, as Intake
//! does (aliases and events included); a few look at what the engine itself returns.
//! [`conformance_suite!`](crate::conformance_suite) expands to one `#[tokio::test]` per case:
//!
//! ```ignore
//! // In the new backend's tests (needs tokio as a dev-dependency, and intake-store's
//! // `testing` feature when outside intake-store):
//! async fn make() -> intake_store::conformance::TestBackend {
//!     let db = fresh_empty_database().await;           // yours
//!     TestBackend::new(MyBackend::connect(&db.url).await.unwrap()).keeping(db)
//!     // MyBackend implements MailBackend, DirectoryBackend and PolicyBackend
//! }
//! intake_store::conformance_suite!(make);
//! ```
//!
//! Engine-specific behaviour (crash safety, restarts, schema upgrades, locks) is tested
//! next to each backend, not here.

pub mod directory;
pub mod mail;
pub mod policy;
pub mod retention;
pub mod tags;

use std::any::Any;
use std::sync::Arc;

use intake_core::{
    DirectoryBackend, Envelope, Event, Incoming, MailBackend, MailStore, MessageId, Page,
    PolicyBackend, SessionInfo, TagBackend,
};
use tokio::sync::broadcast;

use crate::{Backends, Store};

pub use directory::*;
pub use mail::*;
pub use policy::*;
pub use retention::*;
pub use tags::*;

/// A fresh, empty backend for one case, with whatever must outlive it (a temporary
/// directory, a scratch database dropped at the end).
pub struct TestBackend {
    /// The engine under test, by capability.
    pub backends: Backends,
    keep: Vec<Box<dyn Any + Send>>,
}

impl TestBackend {
    /// An engine to test.
    pub fn new(engine: impl MailBackend + DirectoryBackend + PolicyBackend + TagBackend) -> Self {
        TestBackend {
            backends: Arc::new(engine).into(),
            keep: Vec::new(),
        }
    }

    /// Keeps `guard` until the case is over.
    pub fn keeping(mut self, guard: impl Any + Send) -> Self {
        self.keep.push(Box::new(guard));
        self
    }

    /// The layer over the backend, as Intake opens it, and the guards.
    pub(crate) fn store(self) -> (Arc<Store>, Vec<Box<dyn Any + Send>>) {
        (Arc::new(Store::new(self.backends)), self.keep)
    }
}

/// Expands to one `#[tokio::test]` per conformance case, each calling `$make().await` for a
/// fresh backend. `$make` is an `async fn() -> TestBackend`. Put it in a module of its own.
#[macro_export]
macro_rules! conformance_suite {
    ($make:path) => {
        $crate::conformance_suite!(@cases $make;
            deliver_list_fetch_round_trip,
            one_message_to_several_mailboxes_is_stored_once,
            concurrent_deliveries_are_all_stored,
            large_bodies_come_back_byte_for_byte,
            aliases_file_mail_in_their_mailbox,
            delete_publishes_events,
            delete_mailbox_keeps_messages_filed_elsewhere,
            set_seen_counts,
            search_words_and_filters,
            search_counts_and_pages,
            retention_per_mailbox_cap,
            retention_max_age,
            retention_max_size,
            check_findings_are_kept,
            meta_first_writer_wins,
            recipients,
            greylist_records,
            users,
            a_closed_store_refuses_writes,
            tags_set_rename_delete,
            search_mailpit_filters,
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::conformance::$case($make().await).await;
            }
        )*
    };
}

/// A message to `rcpts` with this subject (and `body` in its body).
pub fn incoming(rcpts: &[&str], subject: &str) -> Incoming {
    incoming_with(rcpts, &format!("Subject: {subject}\r\n\r\nbody\r\n"))
}

/// A message to `rcpts` with this content (header and body), received now.
pub fn incoming_with(rcpts: &[&str], content: &str) -> Incoming {
    Incoming::new(
        MessageId::new(),
        jiff::Timestamp::now().as_millisecond(),
        Envelope {
            mail_from: "s@example.net".into(),
            rcpt_to: rcpts.iter().map(|s| s.to_string()).collect(),
        },
        SessionInfo {
            helo: "client.example".into(),
            client: "192.0.2.1:4567".parse().expect("address"),
            tls: None,
        },
        "Received: test\r\n",
        content.as_bytes(),
    )
}

/// Everything, in one page.
pub fn all() -> Page {
    Page {
        offset: 0,
        limit: 1000,
    }
}

pub(crate) async fn subjects(store: &Store, mailbox: Option<&str>) -> Vec<String> {
    let l = match mailbox {
        Some(m) => store.list_mailbox(m, all()).await,
        None => store.list_all(all()).await,
    };
    l.expect("listing")
        .messages
        .into_iter()
        .map(|m| m.subject.unwrap_or_default())
        .collect()
}

/// The events published so far.
pub(crate) fn drain(rx: &mut broadcast::Receiver<Event>) -> Vec<Event> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

/// Deleted events as (id, mailboxes).
pub(crate) fn deleted(events: &[Event]) -> Vec<(MessageId, Vec<String>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Deleted { id, mailboxes } => Some((*id, mailboxes.clone())),
            _ => None,
        })
        .collect()
}
