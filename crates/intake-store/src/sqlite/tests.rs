//! Store tests on a real SQLite file in a temporary directory.

use super::*;
use intake_core::{Envelope, Event, GreyRecord, SessionInfo};

fn incoming(rcpts: &[&str], subject: &str) -> Incoming {
    incoming_with(rcpts, &format!("Subject: {subject}\r\n\r\nbody\r\n"))
}

fn incoming_with(rcpts: &[&str], content: &str) -> Incoming {
    Incoming::new(
        MessageId::new(),
        jiff::Timestamp::now().as_millisecond(),
        Envelope {
            mail_from: "s@example.net".into(),
            rcpt_to: rcpts.iter().map(|s| s.to_string()).collect(),
        },
        SessionInfo {
            helo: "client.example".into(),
            client: "192.0.2.1:4567".parse().unwrap(),
            tls: None,
        },
        "Received: test\r\n",
        content.as_bytes(),
    )
}

fn all() -> Page {
    Page {
        offset: 0,
        limit: 1000,
    }
}

fn open_in(dir: &Path) -> SqliteStore {
    SqliteStore::open(SqliteConfig::new(dir)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_list_fetch_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open_in(dir.path()));
    let mut handles = Vec::new();
    for i in 0..50 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let m = incoming(
                &["A@Example.com", "a@example.com", "b@example.com"],
                &format!("n{i}"),
            );
            let id = m.id;
            store.deliver(m).await.map(|_| id)
        }));
    }
    let mut ids = Vec::new();
    for h in handles {
        ids.push(h.await.unwrap().unwrap());
    }
    let list = store.list_mailbox("a@EXAMPLE.com", all()).await.unwrap();
    assert_eq!(
        (list.total, list.unread),
        (50, 50),
        "stored once per mailbox even with two spellings"
    );
    let mut listed: Vec<_> = list.messages.iter().map(|s| s.id).collect();
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids);
    // Sequential deliveries come back newest first.
    store
        .deliver(incoming(&["a@example.com"], "first"))
        .await
        .unwrap();
    store
        .deliver(incoming(&["a@example.com"], "second"))
        .await
        .unwrap();
    let top = store
        .list_mailbox(
            "a@example.com",
            Page {
                offset: 0,
                limit: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(top.messages[0].subject.as_deref(), Some("second"));
    assert_eq!(top.messages[1].subject.as_deref(), Some("first"));
    assert_eq!(top.total, 52);
    let b = store
        .list_mailbox(
            "b@example.com",
            Page {
                offset: 10,
                limit: 5,
            },
        )
        .await
        .unwrap();
    assert_eq!(b.messages.len(), 5);
    let one = store.fetch(ids[7]).await.unwrap().unwrap();
    assert!(one.raw.starts_with(b"Received: test\r\nSubject: n"));
    assert_eq!(one.envelope.rcpt_to.len(), 3);
    assert_eq!(one.mailboxes, ["a@example.com", "b@example.com"]);
    assert_eq!(one.client.to_string(), "192.0.2.1:4567");
    assert_eq!(store.list_all(all()).await.unwrap().total, 52);
    store.close().await;
    assert!(matches!(
        store.deliver(incoming(&["x@y"], "late")).await,
        Err(StoreError::Closed)
    ));
    drop(store);
    let store = open_in(dir.path());
    assert_eq!(
        store
            .list_mailbox("a@example.com", all())
            .await
            .unwrap()
            .total,
        52
    );
    assert!(store.fetch(MessageId::new()).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_fails_the_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SqliteConfig::new(dir.path());
    cfg.busy_timeout = Duration::from_millis(50);
    let store = SqliteStore::open(cfg.clone()).unwrap();
    let other = Connection::open(cfg.db_file()).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let r = store.deliver(incoming(&["a@b"], "x")).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    other.execute_batch("ROLLBACK").unwrap();
    store.deliver(incoming(&["a@b"], "y")).await.unwrap();
    assert_eq!(
        store
            .list_mailbox("a@b", Page::default())
            .await
            .unwrap()
            .total,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_seen_mailbox_delete_and_events() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SqliteConfig::new(dir.path());
    let mut events = cfg.events.subscribe();
    let store = SqliteStore::open(cfg).unwrap();
    let shared = incoming(&["a@x.test", "b@x.test"], "shared");
    let only_a = incoming(&["a@x.test"], "only a");
    let (shared_id, only_a_id) = (shared.id, only_a.id);
    store.deliver(shared).await.unwrap();
    store.deliver(only_a).await.unwrap();
    match events.recv().await.unwrap() {
        Event::New { mailboxes, message } => {
            assert_eq!(mailboxes, ["a@x.test", "b@x.test"]);
            assert_eq!(message.id, shared_id);
        }
        e => panic!("{e:?}"),
    }
    let _ = events.recv().await.unwrap();

    assert!(store.set_seen(only_a_id, true).await.unwrap());
    let a = store.list_mailbox("a@x.test", all()).await.unwrap();
    assert_eq!((a.total, a.unread), (2, 1));
    assert!(!store.set_seen(MessageId::new(), true).await.unwrap());

    // Deleting mailbox a keeps the shared message for b.
    assert_eq!(store.delete_mailbox("A@x.test").await.unwrap(), 2);
    assert_eq!(
        store.list_mailbox("a@x.test", all()).await.unwrap().total,
        0
    );
    assert_eq!(
        store.list_mailbox("b@x.test", all()).await.unwrap().total,
        1
    );
    assert!(store.fetch(only_a_id).await.unwrap().is_none());
    assert!(store.fetch(shared_id).await.unwrap().is_some());
    let mut deleted = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let Event::Deleted { id, mailboxes } = e {
            deleted.push((id, mailboxes));
        }
    }
    assert_eq!(deleted.len(), 2);
    assert!(deleted.iter().all(|(_, m)| m == &["a@x.test"]));

    assert!(store.delete(shared_id).await.unwrap());
    assert!(!store.delete(shared_id).await.unwrap());
    assert_eq!(store.list_all(all()).await.unwrap().total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_to_a_registered_alias_is_filed_in_the_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path());
    let alias = intake_core::alias::derive(b"k", "bob@x.test");
    store.register_alias(&alias, "Bob@x.test").await.unwrap();
    store
        .deliver(incoming(&[&alias.to_uppercase()], "via alias"))
        .await
        .unwrap();
    let bob = store.list_mailbox("bob@x.test", all()).await.unwrap();
    assert_eq!(bob.messages[0].subject.as_deref(), Some("via alias"));
    assert_eq!(store.list_mailbox(&alias, all()).await.unwrap().total, 0);
    // An alias-shaped address nobody registered is an ordinary mailbox.
    let stranger = intake_core::alias::derive(b"k", "nobody@x.test");
    store
        .deliver(incoming(&[&stranger], "unknown alias"))
        .await
        .unwrap();
    assert_eq!(store.list_mailbox(&stranger, all()).await.unwrap().total, 1);
}

async fn search(store: &SqliteStore, q: &str) -> Vec<String> {
    // The index is filled after the commit: wait for it.
    for _ in 0..200 {
        let l = store
            .search(&Query::parse(q).unwrap(), all())
            .await
            .unwrap();
        if l.total > 0 || !q.contains(' ') && !q.is_empty() && q.contains(':') {
            return l
                .messages
                .into_iter()
                .map(|m| m.subject.unwrap_or_default())
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Vec::new()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_words_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path());
    store
        .deliver(incoming_with(
            &["ann@x.test"],
            "From: Alice <alice@example.org>\r\nTo: ann@x.test\r\nSubject: Invoice 42\r\n\r\nPlease pay the café bill.\r\n",
        ))
        .await
        .unwrap();
    store
        .deliver(incoming_with(
            &["bob@x.test"],
            "From: carol@example.org\r\nSubject: Weekly report\r\nX-Tag: zebra\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nnumbers inside\r\n\
             --B\r\nContent-Type: application/pdf; name=r.pdf\r\nContent-Disposition: attachment; filename=r.pdf\r\n\r\nPDF\r\n--B--\r\n",
        ))
        .await
        .unwrap();
    assert_eq!(
        search(&store, "cafe").await,
        ["Invoice 42"],
        "body, diacritics folded"
    );
    assert_eq!(search(&store, "numb*").await, ["Weekly report"], "prefix");
    assert_eq!(
        search(&store, "zebra").await,
        ["Weekly report"],
        "header values"
    );
    assert_eq!(search(&store, "alice").await, ["Invoice 42"], "addresses");
    assert_eq!(search(&store, "from:carol").await, ["Weekly report"]);
    assert_eq!(search(&store, "to:ann@").await, ["Invoice 42"]);
    assert_eq!(search(&store, "subject:weekly").await, ["Weekly report"]);
    assert_eq!(search(&store, "has:attachment").await, ["Weekly report"]);
    assert_eq!(search(&store, "mailbox:ANN@x.test").await, ["Invoice 42"]);
    assert_eq!(search(&store, "is:unread").await.len(), 2);
    assert_eq!(search(&store, "after:2000-01-01").await.len(), 2);
    assert!(search(&store, "before:2000-01-01").await.is_empty());
    assert!(search(&store, "invoice from:carol").await.is_empty(), "AND");
    let l = store
        .search(
            &Query::parse("\"unbalanced \"\"").unwrap_or_default(),
            all(),
        )
        .await;
    assert!(l.is_ok(), "quotes inside words are escaped for FTS: {l:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_caps_mailboxes_age_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path());
    for i in 0..10 {
        store
            .deliver(incoming(&["cap@x.test"], &format!("m{i}")))
            .await
            .unwrap();
    }
    store
        .deliver(incoming(&["cap@x.test", "keep@x.test"], "shared"))
        .await
        .unwrap();
    let e = store
        .evict(&Retention {
            per_mailbox: Some(3),
            ..Retention::default()
        })
        .await
        .unwrap();
    assert_eq!(e.by_mailbox_cap, 8);
    let cap = store.list_mailbox("cap@x.test", all()).await.unwrap();
    let subjects: Vec<_> = cap
        .messages
        .iter()
        .map(|m| m.subject.clone().unwrap())
        .collect();
    assert_eq!(subjects, ["shared", "m9", "m8"], "the newest are kept");

    let mut old = incoming(&["old@x.test"], "ancient");
    old.received_at -= 10 * 86_400_000;
    store.deliver(old).await.unwrap();
    let e = store
        .evict(&Retention {
            max_age: Some(Duration::from_secs(86_400)),
            ..Retention::default()
        })
        .await
        .unwrap();
    assert_eq!(e.by_age, 1);
    assert_eq!(
        store.list_mailbox("old@x.test", all()).await.unwrap().total,
        0
    );

    let size = store.list_all(all()).await.unwrap().messages[0].size;
    let e = store
        .evict(&Retention {
            max_bytes: Some(size * 2),
            ..Retention::default()
        })
        .await
        .unwrap();
    assert_eq!(e.by_size, 1, "three messages of equal size, room for two");
    assert_eq!(store.list_all(all()).await.unwrap().total, 2);
}

#[tokio::test]
async fn recipients_table() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path());
    assert_eq!(
        store.recipient_lookup("a@example.test").await.unwrap(),
        None
    );
    assert!(store.recipient_add("Alice@Example.test").await.unwrap());
    assert!(!store.recipient_add("alice@example.test").await.unwrap());
    assert!(store.recipient_add("@catch.test").await.unwrap());
    assert_eq!(
        store.recipient_lookup("alice@example.test").await.unwrap(),
        Some(true)
    );
    assert_eq!(
        store.recipient_lookup("bob@example.test").await.unwrap(),
        Some(false)
    );
    assert_eq!(
        store.recipient_lookup("anyone@catch.test").await.unwrap(),
        Some(true)
    );
    assert_eq!(
        store
            .recipient_lookup("anyone@sub.catch.test")
            .await
            .unwrap(),
        Some(false),
        "a catch-all is for its domain only"
    );
    assert_eq!(
        store.recipient_list().await.unwrap(),
        ["@catch.test", "alice@example.test"]
    );
    assert!(store.recipient_remove("ALICE@example.test").await.unwrap());
    assert!(!store.recipient_remove("alice@example.test").await.unwrap());
    store.close().await;
    // Another process (the CLI) sees and changes the same table.
    let admin = SqliteStore::open_admin(SqliteConfig::new(dir.path())).unwrap();
    assert_eq!(admin.recipient_list().await.unwrap(), ["@catch.test"]);
    assert!(admin.recipient_add("carol@example.test").await.unwrap());
    assert!(admin.deliver(incoming(&["x@y"], "no")).await.is_err());
    let ro = SqliteStore::open_read_only(SqliteConfig::new(dir.path())).unwrap();
    assert_eq!(
        ro.recipient_lookup("carol@example.test").await.unwrap(),
        Some(true)
    );
    assert!(ro.recipient_add("dave@example.test").await.is_err());
}

#[tokio::test]
async fn greylist_records_survive_a_restart_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path());
    assert_eq!(store.greylist_get("t a b c").await.unwrap(), None);
    let rec = GreyRecord {
        first_seen: 1_000,
        last_seen: 2_000,
        passes: 1,
    };
    store.greylist_put("t a b c", rec).await.unwrap();
    store
        .greylist_put(
            "c 192.0.2.0/24",
            GreyRecord {
                first_seen: 5_000,
                last_seen: 9_000,
                passes: 4,
            },
        )
        .await
        .unwrap();
    store.close().await;
    let store = open_in(dir.path());
    assert_eq!(store.greylist_get("t a b c").await.unwrap(), Some(rec));
    assert_eq!(store.greylist_expire(3_000).await.unwrap(), 1);
    assert_eq!(store.greylist_get("t a b c").await.unwrap(), None);
    assert_eq!(
        store
            .greylist_get("c 192.0.2.0/24")
            .await
            .unwrap()
            .map(|r| r.passes),
        Some(4)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_findings_are_stored_with_the_message_and_deleted_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path());
    let mut m = incoming(&["a@example.com"], "checked");
    m.findings = intake_core::Findings {
        score: 7.5,
        symbols: vec!["DNSBL_LISTED".into(), "RSPAMD:GTUBE".into()],
        lists: vec!["bl.test=2".into()],
        spf: Some("pass".into()),
        dkim: Some("fail".into()),
        dmarc: Some("fail (p=reject)".into()),
        arc: Some("none".into()),
        scanner: Some("rspamd: add header (7.50/15.00)".into()),
    };
    let expected = m.findings.clone();
    let checked = m.id;
    store.deliver(m).await.unwrap();
    let plain = incoming(&["a@example.com"], "unchecked");
    let unchecked = plain.id;
    store.deliver(plain).await.unwrap();
    let got = store.fetch(checked).await.unwrap().unwrap();
    assert_eq!(got.findings, Some(expected.clone()));
    assert_eq!(
        store.fetch(unchecked).await.unwrap().unwrap().findings,
        None
    );
    // Kept across a restart (the first store closed after its last write); gone with the
    // message.
    store.close().await;
    drop(store);
    let store = open_in(dir.path());
    assert_eq!(
        store.fetch(checked).await.unwrap().unwrap().findings,
        Some(expected)
    );
    assert!(store.delete(checked).await.unwrap());
    let conn = rusqlite::Connection::open(dir.path().join("intake.db")).unwrap();
    let left: i64 = conn
        .query_row("SELECT count(*) FROM message_checks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_before_message_checks_is_upgraded_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path());
    let old = incoming(&["a@example.com"], "old");
    let old_id = old.id;
    store.deliver(old).await.unwrap();
    store.close().await;
    drop(store);
    // As the previous release left it: no message_checks table, schema version 3.
    let conn = rusqlite::Connection::open(dir.path().join("intake.db")).unwrap();
    conn.execute_batch("DROP TABLE message_checks; PRAGMA user_version = 3;")
        .unwrap();
    drop(conn);
    let store = open_in(dir.path());
    assert_eq!(store.fetch(old_id).await.unwrap().unwrap().findings, None);
    let mut m = incoming(&["a@example.com"], "new");
    m.findings.spf = Some("pass".into());
    let id = m.id;
    store.deliver(m).await.unwrap();
    let got = store.fetch(id).await.unwrap().unwrap().findings.unwrap();
    assert_eq!(got.spf.as_deref(), Some("pass"));
    let conn = rusqlite::Connection::open(dir.path().join("intake.db")).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 5);
}

/// One poison message in a batch (here: a second message with an id already taken, which the
/// database refuses) fails alone; every other message of the same batch is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_fails_alone_and_its_batch_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SqliteConfig::new(dir.path());
    cfg.commit_delay = Duration::from_millis(500);
    let store = Arc::new(SqliteStore::open(cfg).unwrap());
    // While a session is "receiving content", the writer lingers and gathers one batch.
    let arriving = store.arrivals().unwrap().start();
    let good: Vec<Incoming> = (0..4)
        .map(|i| incoming(&["batch@example.com"], &format!("good {i}")))
        .collect();
    let mut poison = incoming(&["batch@example.com"], "poison");
    poison.id = good[1].id;
    let mut handles = Vec::new();
    for m in good.into_iter().chain(std::iter::once(poison)) {
        let store = store.clone();
        let subject = m.meta.subject.clone().unwrap();
        handles.push(tokio::spawn(
            async move { (subject, store.deliver(m).await) },
        ));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(arriving);
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for h in handles {
        let (subject, r) = h.await.unwrap();
        match r {
            Ok(()) => ok.push(subject),
            Err(StoreError::Unavailable(_)) => failed.push(subject),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(failed, ["poison"], "only the poison message fails");
    assert_eq!(ok.len(), 4);
    let list = store
        .list_mailbox("batch@example.com", all())
        .await
        .unwrap();
    assert_eq!(list.total, 4);
    store.close().await;
}

#[tokio::test]
async fn users_table_changes_are_seen_at_once_by_another_handle() {
    let dir = tempfile::tempdir().unwrap();
    let server = open_in(dir.path());
    assert_eq!(server.user_get("a@example.test").await.unwrap(), None);
    // The CLI is another process with its own handle on the same database.
    let admin = SqliteStore::open_admin(SqliteConfig::new(dir.path())).unwrap();
    let user = intake_core::User {
        address: "Alice@Example.test".into(),
        password_hash: "$argon2id$x".into(),
        enabled: true,
        senders: vec!["@Example.test".into()],
    };
    assert!(admin.user_add(user.clone()).await.unwrap());
    assert!(!admin.user_add(user).await.unwrap(), "no second alice");
    let got = server
        .user_get("alice@EXAMPLE.test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.address, "alice@example.test");
    assert_eq!(got.senders, ["@example.test"]);
    assert!(got.enabled);
    assert!(
        admin
            .user_set_password("alice@example.test", "$6$new")
            .await
            .unwrap()
    );
    assert!(
        admin
            .user_set_enabled("alice@example.test", false)
            .await
            .unwrap()
    );
    assert!(
        !admin
            .user_set_enabled("nobody@example.test", false)
            .await
            .unwrap()
    );
    let got = server
        .user_get("alice@example.test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got.password_hash.as_str(), got.enabled), ("$6$new", false));
    assert_eq!(server.user_list().await.unwrap().len(), 1);
}
