//! Events between nodes over PostgreSQL `LISTEN/NOTIFY` (channel `intake_events`).
//!
//! Each node has an id of its own (random, per start). After each committed change the
//! layer hands the event to [`PgFeed::publish`], which queues a notification (an
//! [`intake_core::WireEvent`], the encoding the Redis feed uses too:
//! `{"node":…,"kind":"new","mailboxes":[…],"message":{summary}}`, or `deleted` with the id
//! and mailboxes) for a sender task that runs `pg_notify`, once for everything queued (one
//! statement, one transaction: the other nodes receive them together, in order). A notification must stay under
//! PostgreSQL's 8000-byte limit: a new message too large to describe is sent as its id alone
//! (`new_id`; the receiving node reads the summary from the database), and a deletion from
//! many mailboxes is split into several notifications.
//!
//! A listener task on a connection of its own publishes the other nodes' events on this
//! node's [`EventBus`] (its own, which the layer already published, are skipped by node id,
//! read from the first bytes without parsing the rest).
//! When that connection drops it reconnects with backoff; changes made on other nodes
//! meanwhile are not announced here (clients re-read listings as after a `Lagged`).

use std::sync::Arc;
use std::time::Duration;

use intake_core::{Event, EventBus, EventFeed, WireChange, WireEvent};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{PostgresConfig, read};

/// The notification channel.
const CHANNEL: &str = "intake_events";
/// PostgreSQL refuses payloads of 8000 bytes or more.
const MAX_PAYLOAD: usize = 7900;
/// Notifications waiting to be sent, at most (then new ones are dropped, with a warning).
const QUEUE: usize = 4096;
/// Notifications sent in one statement, at most (each is under 8000 bytes).
const SEND_MANY: usize = 256;

/// The feed of one node (see the module docs).
pub struct PgFeed {
    node: String,
    queue: mpsc::Sender<String>,
}

impl PgFeed {
    /// Starts listening (done when this returns) and the sender task; both stop when
    /// `stop` is cancelled (the sender after sending what is queued).
    pub(super) async fn start(
        cfg: &PostgresConfig,
        pool: PgPool,
        bus: EventBus,
        stop: CancellationToken,
    ) -> Result<(Arc<PgFeed>, Vec<JoinHandle<()>>), sqlx::Error> {
        let node = uuid::Uuid::new_v4().simple().to_string();
        // A pool of one for the listener, so that it never takes a connection from reads.
        let own = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(cfg.connect_timeout)
            .connect_lazy_with(cfg.connect.clone());
        let mut listener = PgListener::connect_with(&own).await?;
        listener.listen(CHANNEL).await?;
        let (queue, rx) = mpsc::channel(QUEUE);
        let tasks = vec![
            tokio::spawn(listen(
                listener,
                pool.clone(),
                bus,
                node.clone(),
                stop.clone(),
            )),
            tokio::spawn(send(rx, pool, stop)),
        ];
        Ok((Arc::new(PgFeed { node, queue }), tasks))
    }

    /// The notifications announcing `event`, each under the size limit.
    fn payloads(&self, event: &Event) -> Vec<String> {
        let json = |change: WireChange| {
            WireEvent {
                node: self.node.clone(),
                change,
            }
            .encode()
        };
        match event {
            Event::New { mailboxes, message } => {
                let full = json(WireChange::New {
                    mailboxes: mailboxes.clone(),
                    message: message.clone(),
                });
                if full.len() <= MAX_PAYLOAD {
                    vec![full]
                } else {
                    vec![json(WireChange::NewId { id: message.id })]
                }
            }
            Event::Deleted { mailboxes, id } => {
                // Mailboxes in groups that fit (a key is a few hundred bytes at most).
                let room = MAX_PAYLOAD - 200;
                let mut out = Vec::new();
                let mut group: Vec<String> = Vec::new();
                let mut used = 0;
                for m in mailboxes {
                    let size = m.len() * 2 + 4; // room for JSON escapes
                    if used + size > room && !group.is_empty() {
                        out.push(json(WireChange::Deleted {
                            id: *id,
                            mailboxes: std::mem::take(&mut group),
                        }));
                        used = 0;
                    }
                    used += size;
                    group.push(m.clone());
                }
                if !group.is_empty() || out.is_empty() {
                    out.push(json(WireChange::Deleted {
                        id: *id,
                        mailboxes: group,
                    }));
                }
                out
            }
        }
    }
}

impl EventFeed for PgFeed {
    fn publish(&self, event: &Event) {
        for payload in self.payloads(event) {
            if self.queue.try_send(payload).is_err() {
                tracing::warn!("event feed: too many notifications waiting; other nodes miss one");
            }
        }
    }
}

/// Sends the queued notifications, in order, all that are waiting in one statement; when
/// stopped, sends what is queued first.
async fn send(mut rx: mpsc::Receiver<String>, pool: PgPool, stop: CancellationToken) {
    let mut payloads = Vec::new();
    loop {
        tokio::select! {
            biased;
            n = rx.recv_many(&mut payloads, SEND_MANY) => if n == 0 {
                break;
            },
            _ = stop.cancelled() => {
                rx.close();
                while rx.recv_many(&mut payloads, SEND_MANY).await > 0 {
                    notify(&pool, &payloads).await;
                    payloads.clear();
                }
                break;
            }
        };
        notify(&pool, &payloads).await;
        payloads.clear();
    }
}

/// One statement (one transaction) for many notifications: PostgreSQL delivers them in
/// order, together, at its end.
async fn notify(pool: &PgPool, payloads: &[String]) {
    let sent = sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
        .bind(CHANNEL)
        .bind(payloads)
        .execute(pool)
        .await;
    if let Err(e) = sent {
        tracing::warn!(error = %e, notifications = payloads.len(),
            "event feed: could not notify the other nodes of a change");
    }
}

/// Publishes the other nodes' events on `bus` until stopped; reconnects with backoff.
async fn listen(
    mut listener: PgListener,
    pool: PgPool,
    bus: EventBus,
    node: String,
    stop: CancellationToken,
) {
    const FIRST: Duration = Duration::from_millis(100);
    let mut backoff = FIRST;
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => break,
            n = listener.try_recv() => n,
        };
        match next {
            Ok(Some(n)) => {
                backoff = FIRST;
                receive(n.payload(), &pool, &bus, &node).await;
            }
            Ok(None) => tracing::warn!(
                "event feed: connection lost; reconnecting (changes other nodes make \
                 meanwhile are not announced on this node)"
            ),
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "event feed: cannot listen for other nodes' events");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn receive(payload: &str, pool: &PgPool, bus: &EventBus, node: &str) {
    if WireEvent::is_from(payload.as_bytes(), node) {
        return; // this node's own, already published by the layer
    }
    let notice = match WireEvent::decode(payload.as_bytes()) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "event feed: ignoring a notification it cannot read");
            return;
        }
    };
    if notice.node == node {
        return;
    }
    match notice.change {
        WireChange::New { mailboxes, message } => bus.publish(Event::New { mailboxes, message }),
        WireChange::NewId { id } => match read::summary(pool, id).await {
            Ok(Some((message, mailboxes))) => bus.publish(Event::New {
                mailboxes,
                message: Box::new(message),
            }),
            Ok(None) => {} // deleted meanwhile: its Deleted follows
            Err(e) => tracing::warn!(error = %e, %id,
                "event feed: cannot read a message another node stored; not announced"),
        },
        WireChange::Deleted { id, mailboxes } => bus.publish(Event::Deleted { mailboxes, id }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use intake_core::Summary;

    fn feed() -> PgFeed {
        PgFeed {
            node: "n1".into(),
            queue: mpsc::channel(1).0,
        }
    }

    /// A node knows its own notifications from their first bytes, and only its own.
    #[test]
    fn own_notifications_are_known_without_reading_them() {
        let f = feed();
        let m = crate::conformance::incoming(&["a@x.test"], "small");
        let p = f.payloads(&Event::Deleted {
            mailboxes: vec!["a@x.test".into()],
            id: m.id,
        });
        let from = |p: &str, node: &str| WireEvent::is_from(p.as_bytes(), node);
        assert!(from(&p[0], "n1"), "{}", p[0]);
        assert!(
            !from(&p[0], "n"),
            "another node's id is not a prefix of ours"
        );
        assert!(!from(&p[0], "n2"));
        assert!(!from("{\"kind\":\"deleted\",\"node\":\"n1\"}", "n2"));
    }

    /// Every notification fits PostgreSQL's limit, whatever the event.
    #[test]
    fn notifications_stay_under_the_payload_limit() {
        let f = feed();
        let many: Vec<String> = (0..400)
            .map(|i| format!("recipient-{i:04}-with-a-long-local-part@example.test"))
            .collect();
        let m = crate::conformance::incoming(&["a@x.test"], "small");
        let small = f.payloads(&Event::New {
            mailboxes: vec!["a@x.test".into()],
            message: Box::new(Summary::from(&m)),
        });
        assert_eq!(small.len(), 1);
        assert!(small[0].contains("\"kind\":\"new\""), "{}", small[0]);
        let mut big = Summary::from(&m);
        big.rcpt_to = many.clone();
        let big = f.payloads(&Event::New {
            mailboxes: many.clone(),
            message: Box::new(big),
        });
        assert_eq!(big.len(), 1);
        assert!(big[0].contains("\"kind\":\"new_id\""), "{}", big[0]);
        let gone = f.payloads(&Event::Deleted {
            mailboxes: many.clone(),
            id: m.id,
        });
        assert!(gone.len() > 1);
        let mut seen = Vec::new();
        for p in &gone {
            assert!(p.len() < 8000, "{}", p.len());
            let n = WireEvent::decode(p.as_bytes()).unwrap();
            match n.change {
                WireChange::Deleted { id, mailboxes } => {
                    assert_eq!(id, m.id);
                    seen.extend(mailboxes);
                }
                c => panic!("{c:?}"),
            }
        }
        assert_eq!(seen, many, "every mailbox, once, in order");
    }
}
