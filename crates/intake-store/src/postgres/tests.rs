//! The conformance suite on PostgreSQL, then what only this backend does: several nodes on
//! one database (migrations, events), outages (terminated sessions, refused connections),
//! poison messages, read-only handles.

use std::sync::Arc;
use std::time::Duration;

use intake_core::{
    Event, Incoming, MailBackend, MailStore, Page, Query, RecipientTable, StoreError,
};

use super::scratch::ScratchDatabase;
use super::{PostgresBackend, PostgresConfig};
use crate::conformance::{TestBackend, all, incoming, incoming_with};
use crate::{Mode, Store};

async fn make() -> TestBackend {
    let db = ScratchDatabase::create().await;
    let backend = connect(&db, Mode::ReadWrite).await.unwrap();
    TestBackend::new(backend).keeping(db)
}

mod conformance {
    crate::conformance_suite!(super::make);
}

async fn connect(db: &ScratchDatabase, mode: Mode) -> Result<PostgresBackend, StoreError> {
    PostgresBackend::connect(db.config(), mode).await
}

/// A node: the store as `intake serve` opens it (with the feed).
async fn node(db: &ScratchDatabase) -> Arc<Store> {
    crate::open(&db.settings(), Mode::ReadWrite)
        .await
        .unwrap()
        .store
}

/// Waits (up to 15 s) for an event on `rx` that `want` accepts.
async fn event(
    rx: &mut tokio::sync::broadcast::Receiver<Event>,
    want: impl Fn(&Event) -> bool,
) -> Event {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(e)) if want(&e) => return e,
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("event bus closed: {e}"),
            Err(_) => panic!("no such event within 15 s"),
        }
    }
}

/// Delivers, failing the test if the store does not answer within 30 s (a hang).
async fn deliver(store: &Store, m: Incoming) -> Result<(), StoreError> {
    tokio::time::timeout(Duration::from_secs(30), store.deliver(m))
        .await
        .expect("a delivery must answer, not hang")
}

/// Several nodes starting at once on an empty database: the schema is created once (sqlx's
/// migrator holds an advisory lock), every node starts, and they see the same mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once_and_share_the_data() {
    let db = ScratchDatabase::create().await;
    let opening: Vec<_> = (0..4)
        .map(|_| {
            let s = db.settings();
            tokio::spawn(async move { crate::open(&s, Mode::ReadWrite).await })
        })
        .collect();
    let mut nodes = Vec::new();
    for o in opening {
        nodes.push(o.await.unwrap().expect("every node starts").store);
    }
    nodes[0]
        .deliver(incoming(&["a@x.test"], "from node 0"))
        .await
        .unwrap();
    for n in &nodes {
        let l = n.list_mailbox("a@x.test", all()).await.unwrap();
        assert_eq!(l.messages[0].subject.as_deref(), Some("from node 0"));
    }
    let secrets: Vec<Vec<u8>> = futures_join(nodes.iter().map(|n| n.alias_secret(None))).await;
    assert!(secrets.windows(2).all(|w| w[0] == w[1]), "one alias secret");
    for n in nodes {
        n.close().await;
    }
}

async fn futures_join<F, T>(futs: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut out = Vec::new();
    for f in futs {
        out.push(f.await.unwrap());
    }
    out
}

/// The CLI's listings open the store read-only: no schema yet is an error that says so;
/// once there, they read and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_needs_the_schema_and_writes_nothing() {
    let db = ScratchDatabase::create().await;
    let e = crate::open(&db.settings(), Mode::ReadOnly)
        .await
        .err()
        .expect("no schema yet")
        .to_string();
    assert!(e.contains("no Intake data in postgres at"), "{e}");
    assert!(e.contains(&db.name), "{e}");
    let admin = crate::open(&db.settings(), Mode::Admin)
        .await
        .unwrap()
        .store;
    assert!(admin.recipient_add("carol@example.test").await.unwrap());
    assert!(matches!(
        admin.deliver(incoming(&["x@y"], "no")).await,
        Err(StoreError::Closed)
    ));
    let server = node(&db).await;
    server
        .deliver(incoming(&["a@x.test"], "kept"))
        .await
        .unwrap();
    let ro = crate::open(&db.settings(), Mode::ReadOnly)
        .await
        .unwrap()
        .store;
    assert_eq!(ro.list_mailbox("a@x.test", all()).await.unwrap().total, 1);
    assert_eq!(
        ro.recipient_lookup("carol@example.test").await.unwrap(),
        Some(true)
    );
    assert!(ro.recipient_add("dave@example.test").await.is_err());
    assert!(ro.deliver(incoming(&["x@y"], "no")).await.is_err());
    let id = ro.list_all(all()).await.unwrap().messages[0].id;
    assert!(ro.delete(id).await.is_err());
    assert_eq!(server.list_all(all()).await.unwrap().total, 1);
    server.close().await;
}

/// One poison message in a batch fails alone (the case is shared with SQLite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_fails_alone_and_its_batch_is_stored() {
    let db = ScratchDatabase::create().await;
    let mut s = db.settings();
    s.commit_delay = Duration::from_millis(500);
    let opened = crate::open(&s, Mode::ReadWrite).await.unwrap();
    crate::conformance::a_poison_message_fails_alone(opened).await;
}

/// Many messages written as one batch (one statement for all of them) each keep their own
/// envelope, mailboxes, findings, search words and place in the order of arrival.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_keeps_every_message_apart() {
    use sqlx::Connection;

    let db = ScratchDatabase::create().await;
    let mut s = db.settings();
    s.commit_delay = Duration::from_millis(500);
    let opened = crate::open(&s, Mode::ReadWrite).await.unwrap();
    let store = opened.store;
    let arriving = opened.arrivals.unwrap().start();
    let rcpts: Vec<Vec<String>> = (0..6)
        .map(|i| {
            (0..=i % 3)
                .map(|j| format!("R{j}-{}@Example.test", i % 2))
                .collect()
        })
        .collect();
    let mut sent = Vec::new();
    let mut handles = Vec::new();
    for (i, r) in rcpts.iter().enumerate() {
        let r: Vec<&str> = r.iter().map(String::as_str).collect();
        let mut m = incoming(&r, &format!("batched{i} word{i}"));
        if i % 2 == 1 {
            m.findings.symbols = vec![format!("SYMBOL_{i}")];
        }
        sent.push((m.id, m.envelope.rcpt_to.clone(), m.findings.clone()));
        let store = store.clone();
        handles.push(tokio::spawn(async move { store.deliver(m).await }));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(arriving);
    for h in handles {
        h.await.unwrap().unwrap();
    }
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let transactions: i64 = sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM messages")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(transactions, 1, "one batch, one transaction");
    for (i, (id, rcpt_to, findings)) in sent.iter().enumerate() {
        let got = store.fetch(*id).await.unwrap().expect("stored");
        assert_eq!(&got.envelope.rcpt_to, rcpt_to, "message {i}");
        assert_eq!(got.meta.subject, Some(format!("batched{i} word{i}")));
        let want = (!findings.is_empty()).then(|| findings.clone());
        assert_eq!(got.findings, want, "message {i}");
        let found = store
            .search(&Query::parse(&format!("word{i}")).unwrap(), all())
            .await
            .unwrap();
        assert_eq!(found.messages.len(), 1, "message {i}");
        assert_eq!(found.messages[0].id, *id);
    }
    // Filed under each distinct lower-cased recipient; newest (last sent) first.
    for j in 0..3 {
        for parity in 0..2 {
            let mailbox = format!("r{j}-{parity}@example.test");
            let want: Vec<_> = sent
                .iter()
                .enumerate()
                .rev()
                .filter(|(i, _)| i % 2 == parity && j <= i % 3)
                .map(|(_, (id, _, _))| *id)
                .collect();
            let listed: Vec<_> = store
                .list_mailbox(&mailbox, all())
                .await
                .unwrap()
                .messages
                .iter()
                .map(|m| m.id)
                .collect();
            assert_eq!(listed, want, "{mailbox}");
        }
    }
    let all_ids: Vec<_> = store
        .list_all(all())
        .await
        .unwrap()
        .messages
        .iter()
        .map(|m| m.id)
        .collect();
    let newest_first: Vec<_> = sent.iter().rev().map(|(id, _, _)| *id).collect();
    assert_eq!(all_ids, newest_first, "seq follows the order of arrival");
    store.close().await;
}

/// What a hostile message may carry that PostgreSQL text refuses (NUL) is stored anyway,
/// not answered 451 forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_do_not_fail_a_delivery() {
    let db = ScratchDatabase::create().await;
    let store = node(&db).await;
    let m = incoming_with(
        &["a@x.test"],
        "Subject: nul\u{0}inside\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n\
         Content-Type: application/octet-stream\r\n\
         Content-Disposition: attachment; filename=\"a\u{0}b\"\r\n\r\nx\u{0}y\r\n--B--\r\n",
    );
    let id = m.id;
    let raw = m.raw.clone();
    deliver(&store, m).await.unwrap();
    let got = store.fetch(id).await.unwrap().unwrap();
    assert_eq!(got.raw, raw, "the raw bytes are exact");
    assert!(got.meta.subject.unwrap().starts_with("nul"));
    store.close().await;
}

/// Search: words split at anything not a letter or digit, on both sides: an address as a
/// word finds it (a phrase), a prefix, diacritics kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_addresses_phrases_and_prefixes() {
    let db = ScratchDatabase::create().await;
    let store = node(&db).await;
    for content in [
        "From: Alice <alice@example.org>\r\nSubject: Quarterly numbers\r\n\r\nSee the caf\u{e9} report.\r\n",
        "From: bob@example.net\r\nSubject: Lunch\r\n\r\nnumbers later, alice\r\n",
    ] {
        deliver(&store, incoming_with(&["ann@x.test"], content))
            .await
            .unwrap();
    }
    let find = |q: &'static str| crate::conformance::mail::search(&store, q);
    assert_eq!(find("alice@example.org").await, ["Quarterly numbers"]);
    assert_eq!(find("numbers").await, ["Lunch", "Quarterly numbers"]);
    assert_eq!(find("\"quarterly numbers\"").await, ["Quarterly numbers"]);
    assert_eq!(find("QUART*").await, ["Quarterly numbers"]);
    assert_eq!(find("café").await, ["Quarterly numbers"]);
    assert_eq!(find("bob@example.net").await, ["Lunch"]);
    assert_eq!(find("!!!").await.len(), 2, "no words: no constraint");
    assert!(find("numbers missing").await.is_empty());
    store.close().await;
}

/// Every connection of the store commits with `synchronous_commit = on`, even where the
/// database's default says off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronous_commit_is_on_whatever_the_database_default() {
    let db = ScratchDatabase::create().await;
    db.admin(&format!(
        "ALTER DATABASE {} SET synchronous_commit = off",
        db.name
    ))
    .await;
    let store = connect(&db, Mode::ReadWrite).await.unwrap();
    let setting: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(setting, "on");
    store.close().await;
}

/// An operator (or a failover) terminates the store's sessions between deliveries: the next
/// delivery is written on a new connection, reads reconnect, nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_sessions_between_deliveries_are_replaced() {
    let db = ScratchDatabase::create().await;
    let store = node(&db).await;
    deliver(&store, incoming(&["a@x.test"], "before"))
        .await
        .unwrap();
    for round in 0..3 {
        assert!(db.terminate_sessions().await > 0, "the store had sessions");
        deliver(&store, incoming(&["a@x.test"], &format!("after {round}")))
            .await
            .expect("written on a new connection");
        let l = store.list_mailbox("a@x.test", all()).await.unwrap();
        assert_eq!(l.total, round + 2);
    }
    store.close().await;
}

/// Sessions terminated again and again while many clients deliver: every delivery answers
/// (no hang), each either stored or `Unavailable` (a 451); every one answered `Ok` is
/// readable afterwards, and deliveries succeed again without restarting the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_sessions_during_deliveries_lose_nothing_acknowledged() {
    let db = ScratchDatabase::create().await;
    let store = node(&db).await;
    let mut clients = Vec::new();
    for c in 0..8 {
        let store = store.clone();
        clients.push(tokio::spawn(async move {
            let (mut stored, mut refused) = (Vec::new(), 0);
            for n in 0..40 {
                let m = incoming(&["busy@x.test"], &format!("c{c} n{n}"));
                let id = m.id;
                match deliver(&store, m).await {
                    Ok(()) => stored.push(id),
                    Err(StoreError::Unavailable(_)) => refused += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            (stored, refused)
        }));
    }
    let mut terminated = 0;
    while !clients.iter().all(|c| c.is_finished()) {
        terminated += db.terminate_sessions().await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let (mut stored, mut refused) = (Vec::new(), 0);
    for c in clients {
        let (s, r) = c.await.unwrap();
        stored.extend(s);
        refused += r;
    }
    assert!(terminated > 0);
    assert_eq!(stored.len() + refused, 320, "every delivery answered");
    assert!(!stored.is_empty());
    deliver(&store, incoming(&["busy@x.test"], "afterwards"))
        .await
        .expect("recovered without a restart");
    for id in &stored {
        assert!(
            store.fetch(*id).await.unwrap().is_some(),
            "{id} was acknowledged"
        );
    }
    let listed = store
        .list_mailbox(
            "busy@x.test",
            Page {
                offset: 0,
                limit: 1000,
            },
        )
        .await
        .unwrap();
    assert!(
        listed.total as usize > stored.len(),
        "with the one afterwards"
    );
    println!(
        "{} stored, {refused} refused (451) while {terminated} sessions were terminated",
        stored.len()
    );
    store.close().await;
}

/// The database refuses connections (down, failing over): deliveries and reads fail with
/// `Unavailable` at once, bounded by `store.connect_timeout`, never hang; once it is back
/// the same store works again, with everything acknowledged before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_fails_fast_and_the_store_recovers_by_itself() {
    let db = ScratchDatabase::create().await;
    let mut s = db.settings();
    s.pool.connect_timeout = Duration::from_secs(2);
    let store = crate::open(&s, Mode::ReadWrite).await.unwrap().store;
    deliver(&store, incoming(&["a@x.test"], "before"))
        .await
        .unwrap();
    db.set_available(false).await;
    for i in 0..3 {
        let r = deliver(&store, incoming(&["a@x.test"], &format!("during {i}"))).await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    }
    let r = tokio::time::timeout(Duration::from_secs(30), store.list_all(all()))
        .await
        .expect("a read must answer, not hang");
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    db.set_available(true).await;
    deliver(&store, incoming(&["a@x.test"], "after"))
        .await
        .expect("recovered by itself");
    let subjects = crate::conformance::subjects(&store, Some("a@x.test")).await;
    assert_eq!(subjects, ["after", "before"]);
    store.close().await;
}

/// Two nodes on one database: mail delivered through A appears on B's bus, a delete on B
/// reaches A; a node does not hear its own changes twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_between_nodes() {
    let db = ScratchDatabase::create().await;
    let (a, b) = (node(&db).await, node(&db).await);
    let (mut on_a, mut on_b) = (a.events().subscribe(), b.events().subscribe());
    let m = incoming(&["Ann@x.test", "bob@x.test"], "across");
    let id = m.id;
    a.deliver(m).await.unwrap();
    match event(&mut on_b, |e| matches!(e, Event::New { .. })).await {
        Event::New { mailboxes, message } => {
            assert_eq!(mailboxes, ["ann@x.test", "bob@x.test"]);
            assert_eq!(message.id, id);
            assert_eq!(message.subject.as_deref(), Some("across"));
        }
        e => panic!("{e:?}"),
    }
    assert!(b.delete(id).await.unwrap());
    match event(&mut on_a, |e| matches!(e, Event::Deleted { .. })).await {
        Event::Deleted {
            mailboxes,
            id: gone,
        } => {
            assert_eq!(gone, id);
            assert_eq!(mailboxes, ["ann@x.test", "bob@x.test"]);
        }
        e => panic!("{e:?}"),
    }
    // A heard its own New once (from the layer), not again from the feed.
    let mut news = 0;
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(e) = on_a.try_recv() {
        news += matches!(e, Event::New { .. }) as usize;
    }
    assert_eq!(
        news, 0,
        "the New on A was received before the Deleted, once"
    );
    // A message too large to describe in one notification still reaches B (by id).
    let rcpts: Vec<String> = (0..300)
        .map(|i| format!("r{i:03}-long-name@x.test"))
        .collect();
    let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let big = incoming(&refs, "many recipients");
    let big_id = big.id;
    a.deliver(big).await.unwrap();
    match event(&mut on_b, |e| matches!(e, Event::New { .. })).await {
        Event::New { mailboxes, message } => {
            assert_eq!(message.id, big_id);
            assert_eq!(mailboxes.len(), 300);
            assert_eq!(message.rcpt_to.len(), 300);
        }
        e => panic!("{e:?}"),
    }
    a.close().await;
    b.close().await;
}

/// The listening connection is terminated: the feed reconnects by itself and later changes
/// cross again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_reconnects_after_its_session_is_terminated() {
    let db = ScratchDatabase::create().await;
    let (a, b) = (node(&db).await, node(&db).await);
    let mut on_b = b.events().subscribe();
    db.terminate_sessions().await;
    // Changes made while B reconnects may be missed: deliver until one gets across.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the feed never came back"
        );
        let m = incoming(&["a@x.test"], "after the termination");
        let id = m.id;
        a.deliver(m).await.unwrap();
        let got = tokio::time::timeout(Duration::from_millis(500), async {
            loop {
                if let Ok(Event::New { message, .. }) = on_b.recv().await
                    && message.id == id
                {
                    return;
                }
            }
        })
        .await;
        if got.is_ok() {
            break;
        }
    }
    a.close().await;
    b.close().await;
}

#[test]
fn loopback_goes_without_tls_unless_the_url_asks_for_it() {
    use sqlx::postgres::PgSslMode;
    let mode = |url: &str| {
        PostgresConfig::new(url, &crate::PoolOptions::default())
            .unwrap()
            .connect
            .get_ssl_mode()
    };
    assert!(matches!(
        mode("postgres://intake@127.0.0.1/intake"),
        PgSslMode::Disable
    ));
    assert!(matches!(
        mode("postgres://intake@localhost:5432/intake"),
        PgSslMode::Disable
    ));
    assert!(matches!(
        mode("postgres://intake@[::1]/intake"),
        PgSslMode::Disable
    ));
    assert!(matches!(
        mode("postgres://intake@db.internal/intake"),
        PgSslMode::Prefer
    ));
    assert!(matches!(
        mode("postgres://intake@127.0.0.1/intake?sslmode=require"),
        PgSslMode::Require
    ));
}
