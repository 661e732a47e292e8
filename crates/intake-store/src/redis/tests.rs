//! The conformance suite on a Redis of each test's own (durable, on a free port), then what
//! only Redis does: the durability check, kill -9 of Redis after acknowledged deliveries,
//! an outage (paused, then killed and restarted), the per-mailbox cap on write, modes.

use std::sync::Arc;
use std::time::Duration;

use intake_core::{
    DirectoryBackend, MailBackend, MailStore, MessageId, RecipientTable, StoreError,
};

use super::test_server::TestRedis;
use super::{RedisBackend, RedisConfig, RedisOptions};
use crate::conformance::{TestBackend, all, incoming};
use crate::{Mode, Store};

fn settings(url: &str) -> RedisConfig {
    RedisConfig {
        options: RedisOptions {
            timeout: Duration::from_millis(500),
            ..RedisOptions::default()
        },
        ..RedisConfig::new(url)
    }
}

async fn make() -> TestBackend {
    let redis = TestRedis::start();
    let store = RedisBackend::connect(&settings(&redis.url()), Mode::ReadWrite)
        .await
        .expect("connect");
    TestBackend::new(store).keeping(redis)
}

mod conformance {
    crate::conformance_suite!(super::make);
}

async fn redis_cmd(url: &str, args: &[&str]) -> redis::Value {
    let mut c = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut c).await.unwrap()
}

/// Why connecting with `s` to take mail is refused.
async fn refusal(s: &RedisConfig) -> String {
    RedisBackend::connect(s, Mode::ReadWrite)
        .await
        .err()
        .expect("refused")
        .to_string()
}

#[tokio::test]
async fn a_redis_that_does_not_fsync_every_write_is_refused() {
    let redis = TestRedis::start_volatile();
    let mut s = settings(&redis.url());
    let e = refusal(&s).await;
    assert!(
        e.contains("appendonly no") && e.contains("appendfsync everysec"),
        "names what Redis runs with: {e}"
    );
    assert!(
        e.contains("store.redis_accept_weak_durability"),
        "names the way out: {e}"
    );
    // The operator's explicit choice.
    s.options.accept_weak_durability = true;
    let store = Store::new(Arc::new(
        RedisBackend::connect(&s, Mode::ReadWrite).await.unwrap(),
    ));
    store.deliver(incoming(&["a@x.test"], "hi")).await.unwrap();
    store.close().await;
    // The CLI (no mail taken) does not need it.
    s.options.accept_weak_durability = false;
    RedisBackend::connect(&s, Mode::ReadOnly).await.unwrap();
    RedisBackend::connect(&s, Mode::Admin).await.unwrap();
}

#[tokio::test]
async fn a_redis_that_will_not_say_is_refused_too() {
    // CONFIG disabled, as some managed services do: durability cannot be checked.
    let redis = TestRedis::start_with(&["--rename-command", "CONFIG", ""]);
    let mut s = settings(&redis.url());
    let e = refusal(&s).await;
    assert!(
        e.contains("CONFIG GET failed") && e.contains("appendfsync always"),
        "{e}"
    );
    s.options.accept_weak_durability = true;
    let store = RedisBackend::connect(&s, Mode::ReadWrite).await.unwrap();
    store.close().await;
}

#[tokio::test]
async fn the_shared_redis_without_appendonly_is_refused() {
    // The machine's shared Redis (appendonly no), read only: CONFIG GET, GET version.
    let mut s = settings("redis://127.0.0.1:6379/");
    s.options.key_prefix = format!("intake-test:{}:", uuid::Uuid::new_v4().simple());
    match RedisBackend::connect(&s, Mode::ReadWrite).await {
        Err(StoreError::Unavailable(e)) if e.contains("refusing to take mail") => {
            assert!(e.contains("appendonly no"), "{e}");
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_deliveries_survive_kill_9_of_redis() {
    let mut redis = TestRedis::start();
    let s = settings(&redis.url());
    let store = Arc::new(Store::new(Arc::new(
        RedisBackend::connect(&s, Mode::ReadWrite).await.unwrap(),
    )));
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut clients = Vec::new();
    for c in 0..16 {
        let store = store.clone();
        let acked = acked_tx.clone();
        clients.push(tokio::spawn(async move {
            for n in 0.. {
                let m = incoming(
                    &[&format!("c{c}@x.test"), "all@x.test"],
                    &format!("{c}/{n}"),
                );
                let id = m.id;
                match store.deliver(m).await {
                    Ok(()) => {
                        let _ = acked.send(id);
                    }
                    Err(_) => return n,
                }
            }
            unreachable!()
        }));
    }
    drop(acked_tx);
    // Let some batches commit, then kill Redis in the middle of the traffic.
    let mut acked: Vec<MessageId> = Vec::new();
    while acked.len() < 300 {
        acked.push(acked_rx.recv().await.expect("deliveries"));
    }
    redis.kill();
    for c in clients {
        c.await.unwrap();
    }
    while let Some(id) = acked_rx.recv().await {
        acked.push(id);
    }
    store.close().await;
    redis.restart();
    let reopened = Store::new(Arc::new(
        RedisBackend::connect(&s, Mode::ReadOnly).await.unwrap(),
    ));
    let mut missing = Vec::new();
    for id in &acked {
        if reopened.fetch(*id).await.unwrap().is_none() {
            missing.push(*id);
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages lost",
        missing.len(),
        acked.len()
    );
    let everything = reopened.list_mailbox("all@x.test", all()).await.unwrap();
    assert!(everything.total >= acked.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_answers_unavailable_at_once_and_the_store_recovers() {
    let mut redis = TestRedis::start();
    let s = settings(&redis.url());
    let store = Store::new(Arc::new(
        RedisBackend::connect(&s, Mode::ReadWrite).await.unwrap(),
    ));
    store
        .deliver(incoming(&["a@x.test"], "before"))
        .await
        .unwrap();

    // Paused for longer than the timeout (500 ms): the delivery gives up, it does not wait
    // for the pause to end (it would succeed then).
    redis_cmd(&redis.url(), &["CLIENT", "PAUSE", "4000", "ALL"]).await;
    let paused = tokio::time::timeout(
        Duration::from_secs(3),
        store.deliver(incoming(&["a@x.test"], "during the pause")),
    )
    .await
    .expect("answered while Redis is still paused");
    assert!(
        matches!(paused, Err(StoreError::Unavailable(_))),
        "{paused:?}"
    );
    let listing = tokio::time::timeout(
        Duration::from_secs(3),
        store.list_mailbox("a@x.test", all()),
    )
    .await
    .expect("answered while Redis is still paused");
    assert!(listing.is_err());
    // Over (new connections wait for the pause too, so no UNPAUSE): deliveries go through
    // again, on the same store.
    deliver_eventually(&store, "after the pause").await;

    // Killed: refused at once; restarted: the store reconnects by itself.
    redis.kill();
    let down = store.deliver(incoming(&["a@x.test"], "while down")).await;
    assert!(matches!(down, Err(StoreError::Unavailable(_))), "{down:?}");
    redis.restart();
    deliver_eventually(&store, "after the restart").await;
    let subjects: Vec<String> = store
        .list_mailbox("a@x.test", all())
        .await
        .unwrap()
        .messages
        .into_iter()
        .filter_map(|m| m.subject)
        .collect();
    for s in ["before", "after the pause", "after the restart"] {
        assert!(subjects.iter().any(|x| x == s), "{s} in {subjects:?}");
    }
    assert!(!subjects.iter().any(|x| x == "while down"));
    store.close().await;
}

/// Delivers, retrying while the connection is being made again.
async fn deliver_eventually(store: &Store, subject: &str) {
    for _ in 0..50 {
        match store.deliver(incoming(&["a@x.test"], subject)).await {
            Ok(()) => return,
            Err(StoreError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the store did not recover");
}

#[tokio::test]
async fn the_mailbox_cap_is_enforced_as_mail_is_written() {
    let redis = TestRedis::start();
    let mut s = settings(&redis.url());
    s.options.mailbox_cap = Some(3);
    let store = Store::new(Arc::new(
        RedisBackend::connect(&s, Mode::ReadWrite).await.unwrap(),
    ));
    let shared = incoming(&["cap@x.test", "other@x.test"], "shared");
    let shared_id = shared.id;
    store.deliver(shared).await.unwrap();
    for i in 0..5 {
        store
            .deliver(incoming(&["cap@x.test"], &format!("m{i}")))
            .await
            .unwrap();
    }
    let l = store.list_mailbox("cap@x.test", all()).await.unwrap();
    let subjects: Vec<_> = l
        .messages
        .iter()
        .filter_map(|m| m.subject.clone())
        .collect();
    assert_eq!(subjects, ["m4", "m3", "m2"]);
    assert_eq!(l.total, 3);
    assert_eq!(
        store.fetch(shared_id).await.unwrap().unwrap().mailboxes,
        ["other@x.test"],
        "kept where another mailbox holds it"
    );
    assert_eq!(
        store.list_all(all()).await.unwrap().total,
        4,
        "m0, m1 deleted"
    );
    store.close().await;
}

#[tokio::test]
async fn modes_read_only_needs_data_and_admin_takes_no_mail() {
    let redis = TestRedis::start();
    let s = settings(&redis.url());
    let e = RedisBackend::connect(&s, Mode::ReadOnly)
        .await
        .err()
        .expect("no data yet")
        .to_string();
    assert!(e.contains("no Intake data"), "{e}");
    let admin = Store::new(Arc::new(
        RedisBackend::connect(&s, Mode::Admin).await.unwrap(),
    ));
    assert!(admin.recipient_add("a@x.test").await.unwrap());
    assert!(matches!(
        admin.deliver(incoming(&["a@x.test"], "no")).await,
        Err(StoreError::Closed)
    ));
    let ro = RedisBackend::connect(&s, Mode::ReadOnly).await.unwrap();
    assert_eq!(ro.recipient_list().await.unwrap(), ["a@x.test"]);
    assert!(ro.recipient_add("b@x.test").await.is_err(), "read only");
    // A search finds only what the bounded scan reaches.
    let mut small = s.clone();
    small.options.search_scan = 2;
    let store = Store::new(Arc::new(
        RedisBackend::connect(&small, Mode::ReadWrite)
            .await
            .unwrap(),
    ));
    for subject in ["old marker", "new one", "newer one"] {
        store
            .deliver(incoming(&["a@x.test"], subject))
            .await
            .unwrap();
    }
    let q = intake_core::Query::parse("subject:marker").unwrap();
    assert_eq!(
        store.search(&q, all()).await.unwrap().total,
        0,
        "beyond the scan"
    );
    let q = intake_core::Query::parse("subject:one").unwrap();
    assert_eq!(store.search(&q, all()).await.unwrap().total, 2);
    store.close().await;
}
