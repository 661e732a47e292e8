//! Change notifications: what the SSE stream, wait-for-mail and the web page listen to.
//!
//! The store layer (`intake_store::Store`) publishes an event after the change is
//! committed, never before: on the local [`EventBus`], and on an [`EventFeed`] when one is
//! configured (a feed between nodes sharing one database).

use tokio::sync::broadcast;

use crate::message::{MessageId, Summary};

/// One change.
#[derive(Debug, Clone)]
pub enum Event {
    /// A message was stored, filed under these mailboxes.
    New {
        /// The mailboxes it is filed under.
        mailboxes: Vec<String>,
        /// The message.
        message: Summary,
    },
    /// A message was deleted (by a user or by retention) from these mailboxes.
    Deleted {
        /// The mailboxes it was filed under.
        mailboxes: Vec<String>,
        /// The message.
        id: MessageId,
    },
}

impl Event {
    /// Whether the event concerns `mailbox` (already lower-cased).
    pub fn touches(&self, mailbox: &str) -> bool {
        match self {
            Event::New { mailboxes, .. } | Event::Deleted { mailboxes, .. } => {
                mailboxes.iter().any(|m| m == mailbox)
            }
        }
    }
}

/// A broadcast channel of [`Event`]s. Slow listeners lose old events rather than holding
/// memory: they get `Lagged` and can re-read the store.
#[derive(Debug, Clone)]
pub struct EventBus(broadcast::Sender<Event>);

impl EventBus {
    /// A bus keeping up to `capacity` events for slow listeners.
    pub fn new(capacity: usize) -> Self {
        EventBus(broadcast::channel(capacity.max(16)).0)
    }

    /// Publishes (no-op when nobody listens).
    pub fn publish(&self, e: Event) {
        let _ = self.0.send(e);
    }

    /// A new listener, seeing events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.0.subscribe()
    }

    /// Whether anybody listens (publishers may skip building events otherwise).
    pub fn has_listeners(&self) -> bool {
        self.0.receiver_count() > 0
    }
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new(4096)
    }
}

/// Another destination for committed changes, besides the local [`EventBus`]: the hook for a
/// feed between nodes that share one database (PostgreSQL `LISTEN/NOTIFY`, Redis pub/sub).
///
/// The store layer calls [`EventFeed::publish`] after each committed change, in commit
/// order, and never waits for it: an implementation queues the event and sends it from a
/// task of its own. Receiving the other nodes' events is the feed's job too: it publishes
/// them on the node's `EventBus` (skipping its own, which the layer already published).
pub trait EventFeed: Send + Sync + 'static {
    /// Announces one committed change to the other nodes. Must not block.
    fn publish(&self, event: &Event);
}
