//! Change notifications: what the SSE stream, wait-for-mail and the web page listen to.
//!
//! The store layer (`intake_store::Store`) publishes an event after the change is
//! committed, never before: on the local [`EventBus`], and on an [`EventFeed`] when one is
//! configured (a feed between nodes sharing one database). Between nodes an event travels
//! as a [`WireEvent`], the one encoding every feed uses.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use crate::message::{MessageId, Summary};

/// One change.
#[derive(Debug, Clone)]
pub enum Event {
    /// A message was stored, filed under these mailboxes.
    New {
        /// The mailboxes it is filed under.
        mailboxes: Vec<String>,
        /// The message (boxed: the bus keeps `capacity` events, each the size of the
        /// largest variant, and most of them are never used).
        message: Box<Summary>,
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
///
/// Events can also be missed before they reach the bus: a feed between nodes that lost
/// its connection does not see what the other nodes published meanwhile. The feed then
/// calls [`EventBus::missed`], and listeners watching [`EventBus::watch_missed`] treat it
/// as a lag (the SSE stream sends `event: lagged`, `/wait` looks in the store).
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
    /// How many times events may have been missed upstream (a feed reconnected).
    missed: Arc<watch::Sender<u64>>,
}

impl EventBus {
    /// A bus keeping up to `capacity` events for slow listeners.
    pub fn new(capacity: usize) -> Self {
        EventBus {
            tx: broadcast::channel(capacity.max(16)).0,
            missed: Arc::new(watch::channel(0).0),
        }
    }

    /// Publishes (no-op when nobody listens).
    pub fn publish(&self, e: Event) {
        let _ = self.tx.send(e);
    }

    /// A new listener, seeing events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// Whether anybody listens (publishers may skip building events otherwise).
    pub fn has_listeners(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Says that events from other nodes may have been missed (a feed was disconnected
    /// and is back): every listener is told to re-read the store.
    pub fn missed(&self) {
        self.missed.send_modify(|n| *n += 1);
    }

    /// Changes each time [`EventBus::missed`] is called (from now on).
    pub fn watch_missed(&self) -> watch::Receiver<u64> {
        self.missed.subscribe()
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

/// An [`Event`] as it travels between nodes, whatever the feed (PostgreSQL `NOTIFY`, Redis
/// `PUBLISH`). JSON, the sending node first:
///
/// - `{"node":"<id>","kind":"new","mailboxes":[…],"message":<Summary>}`
/// - `{"node":"<id>","kind":"new_id","id":"<message id>"}`: a new message too large to
///   describe in one notification; the receiver reads its summary from the store
/// - `{"node":"<id>","kind":"deleted","id":"<message id>","mailboxes":[…]}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireEvent {
    /// The node that made the change (random, per start).
    pub node: String,
    /// What changed.
    #[serde(flatten)]
    pub change: WireChange,
}

/// What a [`WireEvent`] says changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WireChange {
    /// [`Event::New`].
    New {
        /// The mailboxes it is filed under.
        mailboxes: Vec<String>,
        /// The message.
        message: Box<Summary>,
    },
    /// [`Event::New`] by id only: the receiver reads the message.
    NewId {
        /// The message.
        id: MessageId,
    },
    /// [`Event::Deleted`].
    Deleted {
        /// The message.
        id: MessageId,
        /// The mailboxes it left.
        mailboxes: Vec<String>,
    },
}

/// A payload that is not a [`WireEvent`].
#[derive(Debug, thiserror::Error)]
#[error("not an event: {0}")]
pub struct WireError(#[from] serde_json::Error);

impl WireEvent {
    /// `event`, sent by `node`.
    pub fn new(node: &str, event: &Event) -> WireEvent {
        let change = match event {
            Event::New { mailboxes, message } => WireChange::New {
                mailboxes: mailboxes.clone(),
                message: message.clone(),
            },
            Event::Deleted { mailboxes, id } => WireChange::Deleted {
                id: *id,
                mailboxes: mailboxes.clone(),
            },
        };
        WireEvent {
            node: node.to_string(),
            change,
        }
    }

    /// The JSON payload.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("events serialize")
    }

    /// Reads a payload.
    pub fn decode(payload: &[u8]) -> Result<WireEvent, WireError> {
        Ok(serde_json::from_slice(payload)?)
    }

    /// Whether `payload` was sent by `node`, read from its first bytes without parsing the
    /// rest (a node skips its own events, which its layer published already).
    pub fn is_from(payload: &[u8], node: &str) -> bool {
        payload
            .strip_prefix(b"{\"node\":\"")
            .and_then(|rest| rest.strip_prefix(node.as_bytes()))
            .is_some_and(|rest| rest.starts_with(b"\""))
    }
}

impl WireChange {
    /// The event, unless only the id of a new message came ([`WireChange::NewId`]: the
    /// receiver reads the message first).
    pub fn into_event(self) -> Option<Event> {
        match self {
            WireChange::New { mailboxes, message } => Some(Event::New { mailboxes, message }),
            WireChange::NewId { .. } => None,
            WireChange::Deleted { id, mailboxes } => Some(Event::Deleted { mailboxes, id }),
        }
    }
}

#[cfg(test)]
mod wire_tests {
    use super::*;
    use crate::message::MessageId;

    fn summary(id: MessageId) -> Summary {
        Summary {
            id,
            received_at: 1_700_000_000_000,
            mail_from: "a@x.test".into(),
            rcpt_to: vec!["b@y.test".into()],
            from: Some("A <a@x.test>".into()),
            to: None,
            subject: Some("hi \"there\"".into()),
            size: 42,
            seen: false,
            attachments: 1,
        }
    }

    #[test]
    fn an_event_reads_back_as_sent_and_names_its_node_first() {
        let id = MessageId::new();
        for event in [
            Event::New {
                mailboxes: vec!["b@y.test".into()],
                message: Box::new(summary(id)),
            },
            Event::Deleted {
                mailboxes: vec!["b@y.test".into(), "c@y.test".into()],
                id,
            },
        ] {
            let json = WireEvent::new("n1", &event).encode();
            assert!(WireEvent::is_from(json.as_bytes(), "n1"), "{json}");
            assert!(
                !WireEvent::is_from(json.as_bytes(), "n"),
                "a prefix is not the node"
            );
            let back = WireEvent::decode(json.as_bytes()).unwrap();
            assert_eq!(back.node, "n1");
            let again = back.change.into_event().unwrap();
            assert_eq!(format!("{again:?}"), format!("{event:?}"));
        }
        let json = WireEvent {
            node: "n2".into(),
            change: WireChange::NewId { id },
        }
        .encode();
        assert_eq!(
            json,
            format!("{{\"node\":\"n2\",\"kind\":\"new_id\",\"id\":\"{id}\"}}")
        );
        assert!(WireEvent::decode(b"{\"node\":\"x\"}").is_err());
    }
}
