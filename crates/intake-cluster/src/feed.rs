//! Live events between nodes over Redis pub/sub: an [`EventFeed`] ([`RedisFeed`]).
//!
//! The store layer hands every committed change (a delivery, a deletion) to
//! [`EventFeed::publish`], which queues it without waiting; a task sends the queue with
//! `PUBLISH <prefix>events <json>`. Another task is subscribed to the same channel and puts
//! the other nodes' events on this node's [`EventBus`] (its own, recognised by node id,
//! were published locally already). So the SSE stream, `/wait` and the web page of every
//! node see mail that arrived through any node sharing the same store.
//!
//! Pub/sub is fire and forget: an event sent while a node is not subscribed (Redis down, a
//! reconnect in progress) is not seen by that node. It does not pretend otherwise: once
//! subscribed again it calls [`EventBus::missed`], so its SSE listeners get
//! `event: lagged` (and reload from the store) and `/wait` looks in the store.
//! The subscriber connects again with backoff (100 ms, doubling to 5 s). A full queue
//! (Redis slow or down) drops events, never blocks a delivery.
//!
//! The message on the channel is an [`intake_core::WireEvent`], the encoding the PostgreSQL
//! feed uses too: `{"node":"<id>","kind":"new","mailboxes":[…],"message":<Summary>}` or
//! `{"node":"<id>","kind":"deleted","id":"<message id>","mailboxes":[…]}`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use intake_core::net::LogEvery;
use intake_core::{Event, EventBus, EventFeed, WireEvent};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Events waiting to be published at most (then new ones are dropped).
const QUEUE: usize = 10_000;
/// The subscriber's reconnect backoff.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Where the feed runs.
#[derive(Clone)]
pub struct FeedConfig {
    /// The Redis (`cluster.redis_url`, or `store.url` for the Redis store).
    pub redis_url: String,
    /// The channel is `<key_prefix>events`.
    pub key_prefix: String,
    /// This node's id (events carrying it are ours).
    pub node: String,
    /// The longest a `PUBLISH` or a connection attempt may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for FeedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedConfig")
            .field("redis_url", &intake_core::redact::url(&self.redis_url))
            .field("key_prefix", &self.key_prefix)
            .field("node", &self.node)
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn encode(node: &str, e: &Event) -> String {
    WireEvent::new(node, e).encode()
}

/// Another node's event, or `None` for ours and for what cannot be read.
fn decode(me: &str, payload: &[u8]) -> Option<Event> {
    if WireEvent::is_from(payload, me) {
        return None;
    }
    let w = WireEvent::decode(payload).ok()?;
    if w.node == me {
        return None;
    }
    // A Redis feed always sends whole events (no `new_id`): nothing to read back.
    w.change.into_event()
}

/// Why the feed could not start.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// `redis_url` is not a Redis URL.
    #[error("the event feed's Redis URL: {0}")]
    Url(#[source] redis::RedisError),
    /// The connection could not be set up.
    #[error("the event feed's Redis connection: {0}")]
    Connection(#[source] redis::RedisError),
}

/// The feed of one node. See the module docs.
pub struct RedisFeed {
    node: String,
    queue: mpsc::Sender<String>,
    dropped: Mutex<LogEvery>,
    subscribed: watch::Receiver<bool>,
}

impl std::fmt::Debug for RedisFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisFeed")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl RedisFeed {
    /// Starts publishing and subscribing (within a tokio runtime) until `shutdown`; the
    /// other nodes' events go on `bus`. Set the result on the store with
    /// `Store::with_feed`, over the same `bus` (`Store::with_events`).
    pub fn start(
        cfg: FeedConfig,
        bus: EventBus,
        shutdown: CancellationToken,
    ) -> Result<Arc<RedisFeed>, FeedError> {
        let client = redis::Client::open(cfg.redis_url.as_str()).map_err(FeedError::Url)?;
        let channel = format!("{}events", cfg.key_prefix);
        let (queue, rx) = mpsc::channel(QUEUE);
        let (up, subscribed) = watch::channel(false);
        let conn = ConnectionManager::new_lazy_with_config(
            client.clone(),
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(cfg.timeout))
                .set_response_timeout(Some(cfg.timeout))
                .set_number_of_retries(0),
        )
        .map_err(FeedError::Connection)?;
        tokio::spawn(publisher(
            conn,
            channel.clone(),
            cfg.timeout,
            rx,
            shutdown.clone(),
        ));
        tokio::spawn(subscriber(
            client,
            channel,
            cfg.node.clone(),
            cfg.timeout,
            bus,
            up,
            shutdown,
        ));
        tracing::info!(node = %cfg.node, channel = %format!("{}events", cfg.key_prefix),
            "event feed: sharing live events with the other nodes over Redis pub/sub");
        Ok(Arc::new(RedisFeed {
            node: cfg.node,
            queue,
            dropped: Mutex::new(LogEvery::new(Duration::from_secs(60))),
            subscribed,
        }))
    }

    /// Waits until the subscriber is listening (tests; a node does not need to wait).
    pub async fn wait_subscribed(&self) {
        let mut s = self.subscribed.clone();
        let _ = s.wait_for(|up| *up).await;
    }
}

impl EventFeed for RedisFeed {
    fn publish(&self, event: &Event) {
        let json = encode(&self.node, event);
        if self.queue.try_send(json).is_err()
            && let Some(n) = self.dropped.lock().expect("feed lock").hit()
        {
            tracing::warn!(
                dropped = n,
                "event feed: Redis is not keeping up; live events for other nodes dropped \
                 (their listeners still read the store)"
            );
        }
    }
}

async fn publisher(
    mut conn: ConnectionManager,
    channel: String,
    timeout: Duration,
    mut rx: mpsc::Receiver<String>,
    shutdown: CancellationToken,
) {
    let mut failed = LogEvery::new(Duration::from_secs(60));
    loop {
        let first = tokio::select! {
            m = rx.recv() => match m { Some(m) => m, None => break },
            _ = shutdown.cancelled() => break,
        };
        // Everything queued goes in one pipeline, in order.
        let mut pipe = redis::pipe();
        pipe.cmd("PUBLISH").arg(&channel).arg(first).ignore();
        let mut n = 1;
        while n < 256 {
            match rx.try_recv() {
                Ok(m) => {
                    pipe.cmd("PUBLISH").arg(&channel).arg(m).ignore();
                    n += 1;
                }
                Err(_) => break,
            }
        }
        let sent = tokio::time::timeout(timeout, pipe.exec_async(&mut conn)).await;
        let err = match sent {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {timeout:?}"),
        };
        if let Some(k) = failed.hit() {
            tracing::warn!(error = %err, events = n, failures = k,
                "event feed: PUBLISH failed; other nodes miss these live events");
        }
    }
}

async fn subscriber(
    client: redis::Client,
    channel: String,
    me: String,
    timeout: Duration,
    bus: EventBus,
    up: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let mut backoff = BACKOFF_MIN;
    let mut down_since_logged = false;
    // Subscribed before: a new subscription means events may have been missed between.
    let mut was_subscribed = false;
    loop {
        let connected = tokio::select! {
            c = tokio::time::timeout(timeout, async {
                let mut ps = client.get_async_pubsub().await?;
                ps.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(ps)
            }) => c,
            _ = shutdown.cancelled() => return,
        };
        match connected {
            Ok(Ok(ps)) => {
                if down_since_logged {
                    tracing::info!("event feed: subscribed again");
                }
                backoff = BACKOFF_MIN;
                up.send_replace(true);
                if was_subscribed {
                    bus.missed();
                }
                was_subscribed = true;
                let mut messages = ps.into_on_message();
                loop {
                    let msg = tokio::select! {
                        m = messages.next() => m,
                        _ = shutdown.cancelled() => return,
                    };
                    let Some(msg) = msg else { break };
                    if let Some(e) = decode(&me, msg.get_payload_bytes()) {
                        bus.publish(e);
                    }
                }
                up.send_replace(false);
                tracing::warn!("event feed: subscription lost; reconnecting");
                down_since_logged = true;
            }
            Ok(Err(e)) => {
                if !down_since_logged {
                    tracing::warn!(error = %e, "event feed: cannot subscribe; retrying with backoff");
                    down_since_logged = true;
                }
            }
            Err(_) => {
                if !down_since_logged {
                    tracing::warn!("event feed: no answer from Redis; retrying with backoff");
                    down_since_logged = true;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use intake_core::MessageId;

    #[test]
    fn events_round_trip_and_ours_are_skipped() {
        let id = MessageId::new();
        let e = Event::Deleted {
            mailboxes: vec!["a@x.test".into()],
            id,
        };
        let json = encode("n1", &e);
        assert!(decode("n1", json.as_bytes()).is_none(), "our own");
        match decode("n2", json.as_bytes()) {
            Some(Event::Deleted { mailboxes, id: got }) => {
                assert_eq!((mailboxes, got), (vec!["a@x.test".to_string()], id));
            }
            other => panic!("{other:?}"),
        }
        assert!(decode("n2", b"not json").is_none());
    }
}
