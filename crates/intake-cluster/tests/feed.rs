//! Live events between two nodes over Redis pub/sub: two Redis stores on one Redis (a
//! durable `redis-server` of the test's own), each with its layer, bus and `RedisFeed`, as
//! two `intake serve` processes would have.

use std::sync::Arc;
use std::time::Duration;

use intake_cluster::{FeedConfig, RedisFeed};
use intake_core::{Event, EventBus, MailStore};
use intake_store::conformance::incoming;
use intake_store::redis::{RedisBackend, RedisConfig, test_server::TestRedis};
use intake_store::{Mode, Store};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

struct Node {
    store: Arc<Store>,
    feed: Arc<RedisFeed>,
}

async fn node(url: &str, name: &str, shutdown: &CancellationToken) -> Node {
    let backend = RedisBackend::connect(&RedisConfig::new(url), Mode::ReadWrite)
        .await
        .unwrap();
    let bus = EventBus::default();
    let feed = RedisFeed::start(
        FeedConfig {
            redis_url: url.into(),
            key_prefix: "intake:".into(),
            node: name.into(),
            timeout: Duration::from_millis(500),
        },
        bus.clone(),
        shutdown.clone(),
    )
    .unwrap();
    let store = Store::new(Arc::new(backend))
        .with_events(bus)
        .with_feed(feed.clone());
    Node {
        store: Arc::new(store),
        feed,
    }
}

/// The next event on a bus, within a few seconds.
async fn next(rx: &mut broadcast::Receiver<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an event")
        .expect("the bus")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_on_one_node_reaches_the_other_and_a_delete_comes_back() {
    let redis = TestRedis::start();
    let shutdown = CancellationToken::new();
    let a = node(&redis.url(), "node-a", &shutdown).await;
    let b = node(&redis.url(), "node-b", &shutdown).await;
    a.feed.wait_subscribed().await;
    b.feed.wait_subscribed().await;
    let mut on_a = a.store.events().subscribe();
    let mut on_b = b.store.events().subscribe();

    let m = incoming(&["Ann@x.test"], "through A");
    let id = m.id;
    a.store.deliver(m).await.unwrap();
    match next(&mut on_b).await {
        Event::New { mailboxes, message } => {
            assert_eq!(mailboxes, ["ann@x.test"]);
            assert_eq!(
                (message.id, message.subject.as_deref()),
                (id, Some("through A"))
            );
        }
        e => panic!("{e:?}"),
    }
    // A sees it once: its own, from its layer, not again from the feed.
    assert!(matches!(next(&mut on_a).await, Event::New { .. }));
    // B reads it from the shared store, and deletes it.
    assert!(b.store.fetch(id).await.unwrap().is_some());
    assert!(b.store.delete(id).await.unwrap());
    match next(&mut on_a).await {
        Event::Deleted {
            mailboxes,
            id: gone,
        } => {
            assert_eq!((mailboxes, gone), (vec!["ann@x.test".to_string()], id));
        }
        e => panic!("{e:?}"),
    }
    assert!(matches!(next(&mut on_b).await, Event::Deleted { .. }));
    // Nothing more: no echo of either event.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(on_a.try_recv().is_err(), "no echo on A");
    assert!(on_b.try_recv().is_err(), "no echo on B");
    shutdown.cancel();
    a.store.close().await;
    b.store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscriber_comes_back_after_redis_restarts() {
    let mut redis = TestRedis::start();
    let shutdown = CancellationToken::new();
    let a = node(&redis.url(), "node-a", &shutdown).await;
    let b = node(&redis.url(), "node-b", &shutdown).await;
    b.feed.wait_subscribed().await;
    redis.restart();
    let mut on_b = b.store.events().subscribe();
    // Deliveries through A resume when Redis is back; B sees them once it has subscribed
    // again (pub/sub keeps nothing for a node that is not listening, so A keeps sending).
    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let _ = a.store.deliver(incoming(&["b@x.test"], "again")).await;
            if let Ok(Ok(Event::New { .. })) =
                tokio::time::timeout(Duration::from_millis(200), on_b.recv()).await
            {
                return;
            }
        }
    })
    .await;
    assert!(seen.is_ok(), "B never saw A's mail after the restart");
    shutdown.cancel();
    a.store.close().await;
    b.store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_resubscribes_tells_its_listeners_they_may_have_missed_events() {
    let mut redis = TestRedis::start();
    let shutdown = CancellationToken::new();
    let a = node(&redis.url(), "node-a", &shutdown).await;
    let b = node(&redis.url(), "node-b", &shutdown).await;
    b.feed.wait_subscribed().await;
    let mut missed = b.store.events().watch_missed();
    // While B is cut off, A's mail is stored but B's feed cannot see its event.
    redis.restart();
    let stored = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let m = incoming(&["gap@x.test"], "while B was away");
            let id = m.id;
            if a.store.deliver(m).await.is_ok() {
                return id;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("A stores again once Redis is back");
    // B, subscribed again, says events may be missing (SSE: `event: lagged`), so its
    // listeners read the store, where the message is.
    tokio::time::timeout(Duration::from_secs(20), missed.changed())
        .await
        .expect("B announced a possible gap after resubscribing")
        .unwrap();
    // (B's store connection, broken by the restart, is made again on a later call.)
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(found) = b.store.fetch(stored).await {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("B's store answers again");
    assert!(found.is_some());
    shutdown.cancel();
    a.store.close().await;
    b.store.close().await;
}
