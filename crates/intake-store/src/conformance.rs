//! The conformance suite: what every [`Backend`] must do, the same tests for each.
//!
//! Each case is a `pub async fn` taking a fresh, empty backend ([`TestBackend`]) and
//! panicking on a failure. Most drive the backend through the [`Store`] layer, as Intake
//! does (aliases and events included); a few look at what the backend itself returns.
//! [`conformance_suite!`](crate::conformance_suite) expands to one `#[tokio::test]` per case:
//!
//! ```ignore
//! // In the new backend's tests (needs tokio as a dev-dependency, and intake-store's
//! // `testing` feature when outside intake-store):
//! async fn make() -> intake_store::conformance::TestBackend {
//!     let db = fresh_empty_database().await;           // yours
//!     TestBackend::new(MyBackend::connect(&db.url).await.unwrap()).keeping(db)
//! }
//! intake_store::conformance_suite!(make);
//! ```
//!
//! Engine-specific behaviour (crash safety, restarts, schema upgrades, locks) is tested
//! next to each backend, not here.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use intake_core::{
    Backend, Envelope, Event, GreyRecord, Incoming, MailStore, MessageId, Page, Query, Retention,
    SessionInfo, StoreError, User,
};
use tokio::sync::broadcast;

use crate::Store;

/// A fresh, empty backend for one case, with whatever must outlive it (a temporary
/// directory, a scratch database dropped at the end).
pub struct TestBackend {
    /// The backend under test.
    pub backend: Arc<dyn Backend>,
    keep: Vec<Box<dyn Any + Send>>,
}

impl TestBackend {
    /// A backend to test.
    pub fn new(backend: impl Backend) -> Self {
        TestBackend {
            backend: Arc::new(backend),
            keep: Vec::new(),
        }
    }

    /// Keeps `guard` until the case is over.
    pub fn keeping(mut self, guard: impl Any + Send) -> Self {
        self.keep.push(Box::new(guard));
        self
    }

    /// The layer over the backend, as Intake opens it, and the guards.
    fn store(self) -> (Arc<Store>, Vec<Box<dyn Any + Send>>) {
        (Arc::new(Store::new(self.backend)), self.keep)
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
            retention_per_mailbox_cap,
            retention_max_age,
            retention_max_size,
            check_findings_are_kept,
            meta_first_writer_wins,
            recipients,
            greylist_records,
            users,
            a_closed_store_refuses_writes,
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

async fn subjects(store: &Store, mailbox: Option<&str>) -> Vec<String> {
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
fn drain(rx: &mut broadcast::Receiver<Event>) -> Vec<Event> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

/// Deleted events as (id, mailboxes).
fn deleted(events: &[Event]) -> Vec<(MessageId, Vec<String>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Deleted { id, mailboxes } => Some((*id, mailboxes.clone())),
            _ => None,
        })
        .collect()
}

/// Stores, lists newest first with paging and totals, fetches everything back.
pub async fn deliver_list_fetch_round_trip(t: TestBackend) {
    let (store, _keep) = t.store();
    let mut ids = Vec::new();
    for i in 0..5 {
        let m = incoming(&["a@example.com"], &format!("m{i}"));
        ids.push(m.id);
        store.deliver(m).await.unwrap();
    }
    let l = store.list_mailbox("A@Example.COM", all()).await.unwrap();
    assert_eq!((l.total, l.unread), (5, 5));
    assert_eq!(
        subjects(&store, Some("a@example.com")).await,
        ["m4", "m3", "m2", "m1", "m0"],
        "newest first"
    );
    let page = store
        .list_mailbox(
            "a@example.com",
            Page {
                offset: 1,
                limit: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.total, 5, "totals span every page");
    let got: Vec<_> = page.messages.iter().map(|m| m.id).collect();
    assert_eq!(got, [ids[3], ids[2]]);
    let s = &page.messages[0];
    assert_eq!(
        (s.mail_from.as_str(), s.rcpt_to.as_slice()),
        ("s@example.net", &["a@example.com".to_string()][..])
    );
    assert!(!s.seen);
    assert_eq!(s.size, "Subject: m3\r\n\r\nbody\r\n".len() as u64);
    assert_eq!(store.list_all(all()).await.unwrap().total, 5);
    assert_eq!(store.list_mailbox("other@x", all()).await.unwrap().total, 0);

    let mut m = incoming_with(
        &["b@example.com"],
        "From: Ann <ann@example.org>\r\nTo: b@example.com\r\nSubject: full\r\n\
         Message-ID: <1@example.org>\r\n\r\nhello\r\n",
    );
    m.session.tls = Some(intake_core::TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS13_AES_256_GCM_SHA384".into(),
    });
    let sent = m.clone();
    store.deliver(m).await.unwrap();
    let got = store.fetch(sent.id).await.unwrap().expect("stored");
    assert_eq!(got.id, sent.id);
    assert_eq!(got.received_at, sent.received_at);
    assert_eq!(got.envelope, sent.envelope);
    assert_eq!(got.helo, "client.example");
    assert_eq!(got.client.to_string(), "192.0.2.1:4567");
    assert_eq!(got.tls, sent.session.tls);
    assert_eq!((got.size, &got.sha256), (sent.size, &sent.sha256));
    assert_eq!(got.meta, sent.meta);
    assert_eq!(got.raw, sent.raw, "the raw bytes, our Received: first");
    assert!(!got.seen);
    assert_eq!(got.mailboxes, ["b@example.com"]);
    assert_eq!(got.findings, None);
    assert!(store.fetch(MessageId::new()).await.unwrap().is_none());
    store.close().await;
}

/// Several recipients (and spellings of one) file one stored message in each mailbox.
pub async fn one_message_to_several_mailboxes_is_stored_once(t: TestBackend) {
    let (store, _keep) = t.store();
    let m = incoming(
        &["A@Example.com", "a@example.com", "b@example.com"],
        "shared",
    );
    let id = m.id;
    store.deliver(m).await.unwrap();
    for mailbox in ["a@example.com", "b@example.com"] {
        let l = store.list_mailbox(mailbox, all()).await.unwrap();
        assert_eq!(l.total, 1, "{mailbox}");
        assert_eq!(l.messages[0].id, id);
    }
    assert_eq!(store.list_all(all()).await.unwrap().total, 1, "stored once");
    let got = store.fetch(id).await.unwrap().unwrap();
    assert_eq!(got.mailboxes, ["a@example.com", "b@example.com"]);
    assert_eq!(got.envelope.rcpt_to.len(), 3, "the envelope as received");
    store.close().await;
}

/// Many sessions delivering at once all get their message stored.
pub async fn concurrent_deliveries_are_all_stored(t: TestBackend) {
    let (store, _keep) = t.store();
    let mut handles = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let m = incoming(&["many@example.com"], &format!("n{i}"));
            let id = m.id;
            store.deliver(m).await.map(|_| id)
        }));
    }
    let mut ids = Vec::new();
    for h in handles {
        ids.push(h.await.unwrap().unwrap());
    }
    let l = store.list_mailbox("many@example.com", all()).await.unwrap();
    let mut listed: Vec<_> = l.messages.iter().map(|s| s.id).collect();
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids);
    store.close().await;
}

/// Bodies of a few megabytes (which a backend may write differently from small ones), in
/// one batch with small ones, come back exactly as received.
pub async fn large_bodies_come_back_byte_for_byte(t: TestBackend) {
    let (store, _keep) = t.store();
    let mut sent = Vec::new();
    let mut handles = Vec::new();
    for (i, size) in [2 << 20, 300 << 10, 100, 1 << 20].into_iter().enumerate() {
        // Every byte value a body line may hold, in a pattern that differs per message.
        let line: String = (0..76)
            .map(|k| char::from(b'!' + ((k * 7 + i * 13) % 90) as u8))
            .collect();
        let body = format!("{line}\r\n").repeat(size / 78 + 1);
        let m = incoming_with(
            &["big@example.com"],
            &format!("Subject: big{i}\r\n\r\n{body}"),
        );
        sent.push((m.id, m.raw.clone()));
        let store = store.clone();
        handles.push(tokio::spawn(async move { store.deliver(m).await }));
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }
    for (id, raw) in sent {
        let got = store.fetch(id).await.unwrap().expect("stored");
        assert_eq!(got.raw.len(), raw.len());
        assert!(got.raw == raw, "the body comes back byte for byte");
    }
    store.close().await;
}

/// Mail to a registered alias is filed in its mailbox; an unregistered alias-shaped address
/// is an ordinary mailbox.
pub async fn aliases_file_mail_in_their_mailbox(t: TestBackend) {
    let (store, _keep) = t.store();
    let mut events = store.events().subscribe();
    let alias = intake_core::alias::derive(b"k", "bob@x.test");
    store.register_alias(&alias, "Bob@x.test").await.unwrap();
    let m = incoming(&[&alias.to_uppercase(), "bob@x.test"], "via alias");
    let id = m.id;
    store.deliver(m).await.unwrap();
    assert_eq!(subjects(&store, Some("bob@x.test")).await, ["via alias"]);
    assert_eq!(store.list_mailbox(&alias, all()).await.unwrap().total, 0);
    assert_eq!(
        store.fetch(id).await.unwrap().unwrap().mailboxes,
        ["bob@x.test"],
        "filed once"
    );
    match events.recv().await.unwrap() {
        Event::New { mailboxes, message } => {
            assert_eq!(mailboxes, ["bob@x.test"]);
            assert_eq!(message.id, id);
        }
        e => panic!("{e:?}"),
    }
    let stranger = intake_core::alias::derive(b"k", "nobody@x.test");
    store
        .deliver(incoming(&[&stranger], "unknown alias"))
        .await
        .unwrap();
    assert_eq!(store.list_mailbox(&stranger, all()).await.unwrap().total, 1);
    // The backend itself answers for the alias, in lower case.
    assert_eq!(
        store.backend().alias_get(&alias).await.unwrap().as_deref(),
        Some("bob@x.test")
    );
    assert_eq!(store.backend().alias_get(&stranger).await.unwrap(), None);
    store.close().await;
}

/// A delivery is announced after it is stored; a delete removes the message from every
/// mailbox and is announced once, with them.
pub async fn delete_publishes_events(t: TestBackend) {
    let (store, _keep) = t.store();
    let mut events = store.events().subscribe();
    let m = incoming(&["b@x.test", "a@x.test"], "to delete");
    let id = m.id;
    store.deliver(m).await.unwrap();
    match events.recv().await.unwrap() {
        Event::New { mailboxes, message } => {
            assert_eq!(mailboxes, ["a@x.test", "b@x.test"]);
            assert_eq!(message.id, id);
            assert_eq!(message.subject.as_deref(), Some("to delete"));
        }
        e => panic!("{e:?}"),
    }
    assert!(store.delete(id).await.unwrap());
    assert_eq!(
        deleted(&drain(&mut events)),
        [(id, vec!["a@x.test".to_string(), "b@x.test".to_string()])]
    );
    assert!(!store.delete(id).await.unwrap(), "gone already");
    assert!(drain(&mut events).is_empty(), "nothing to announce");
    assert!(store.fetch(id).await.unwrap().is_none());
    assert_eq!(
        store.list_mailbox("a@x.test", all()).await.unwrap().total,
        0
    );
    assert_eq!(store.list_all(all()).await.unwrap().total, 0);
    store.close().await;
}

/// Deleting a mailbox unfiles its messages; a message also filed elsewhere stays there.
pub async fn delete_mailbox_keeps_messages_filed_elsewhere(t: TestBackend) {
    let (store, _keep) = t.store();
    let shared = incoming(&["a@x.test", "b@x.test"], "shared");
    let only_a = incoming(&["a@x.test"], "only a");
    let (shared_id, only_a_id) = (shared.id, only_a.id);
    store.deliver(shared).await.unwrap();
    store.deliver(only_a).await.unwrap();
    let mut events = store.events().subscribe();
    assert_eq!(store.delete_mailbox("A@x.test").await.unwrap(), 2);
    assert_eq!(
        store.list_mailbox("a@x.test", all()).await.unwrap().total,
        0
    );
    assert_eq!(subjects(&store, Some("b@x.test")).await, ["shared"]);
    assert!(store.fetch(only_a_id).await.unwrap().is_none());
    let kept = store.fetch(shared_id).await.unwrap().unwrap();
    assert_eq!(kept.mailboxes, ["b@x.test"]);
    let mut gone = deleted(&drain(&mut events));
    gone.sort();
    let mut want = vec![
        (shared_id, vec!["a@x.test".to_string()]),
        (only_a_id, vec!["a@x.test".to_string()]),
    ];
    want.sort();
    assert_eq!(gone, want, "one event per message, for this mailbox only");
    assert_eq!(store.delete_mailbox("a@x.test").await.unwrap(), 0);
    assert_eq!(store.delete_mailbox("nobody@x.test").await.unwrap(), 0);
    store.close().await;
}

/// The read flag, and the unread counts of listings.
pub async fn set_seen_counts(t: TestBackend) {
    let (store, _keep) = t.store();
    let one = incoming(&["a@x.test", "b@x.test"], "one");
    let two = incoming(&["a@x.test"], "two");
    let id = one.id;
    store.deliver(one).await.unwrap();
    store.deliver(two).await.unwrap();
    assert!(store.set_seen(id, true).await.unwrap());
    let a = store.list_mailbox("a@x.test", all()).await.unwrap();
    assert_eq!((a.total, a.unread), (2, 1));
    let b = store.list_mailbox("b@x.test", all()).await.unwrap();
    assert_eq!((b.total, b.unread), (1, 0), "one flag per message");
    assert!(b.messages[0].seen);
    assert!(store.fetch(id).await.unwrap().unwrap().seen);
    let everything = store.list_all(all()).await.unwrap();
    assert_eq!((everything.total, everything.unread), (2, 1));
    assert!(store.set_seen(id, false).await.unwrap());
    assert_eq!(store.list_all(all()).await.unwrap().unread, 2);
    assert!(!store.set_seen(MessageId::new(), true).await.unwrap());
    store.close().await;
}

async fn search(store: &Store, q: &str) -> Vec<String> {
    store
        .search(&Query::parse(q).unwrap(), all())
        .await
        .unwrap()
        .messages
        .into_iter()
        .map(|m| m.subject.unwrap_or_default())
        .collect()
}

/// Words (in the body, header values, addresses; `word*` as a prefix) and the filters.
pub async fn search_words_and_filters(t: TestBackend) {
    let (store, _keep) = t.store();
    store
        .deliver(incoming_with(
            &["ann@x.test"],
            "From: Alice <alice@example.org>\r\nTo: ann@x.test\r\nSubject: Invoice 42\r\n\r\n\
             Please pay the bill. marker\r\n",
        ))
        .await
        .unwrap();
    store
        .deliver(incoming_with(
            &["bob@x.test"],
            "From: carol@example.org\r\nSubject: Weekly report\r\nX-Tag: zebra\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n\
             numbers inside marker\r\n--B\r\nContent-Type: application/pdf; name=r.pdf\r\n\
             Content-Disposition: attachment; filename=r.pdf\r\n\r\nPDF\r\n--B--\r\n",
        ))
        .await
        .unwrap();
    // A backend may index after the commit: wait until both messages are searchable.
    let mut waited = Duration::ZERO;
    while search(&store, "marker").await.len() < 2 {
        assert!(waited < Duration::from_secs(10), "never indexed");
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    assert_eq!(search(&store, "bill").await, ["Invoice 42"], "body");
    assert_eq!(search(&store, "numb*").await, ["Weekly report"], "prefix");
    assert_eq!(search(&store, "zebra").await, ["Weekly report"], "header");
    assert_eq!(search(&store, "alice").await, ["Invoice 42"], "addresses");
    assert_eq!(search(&store, "from:carol").await, ["Weekly report"]);
    assert_eq!(search(&store, "to:ann@").await, ["Invoice 42"]);
    assert_eq!(search(&store, "subject:weekly").await, ["Weekly report"]);
    assert_eq!(search(&store, "has:attachment").await, ["Weekly report"]);
    assert_eq!(search(&store, "mailbox:ANN@x.test").await, ["Invoice 42"]);
    assert_eq!(
        search(&store, "is:unread").await,
        ["Weekly report", "Invoice 42"],
        "newest first"
    );
    assert_eq!(search(&store, "after:2000-01-01").await.len(), 2);
    assert!(search(&store, "before:2000-01-01").await.is_empty());
    assert!(search(&store, "invoice from:carol").await.is_empty(), "AND");
    assert!(search(&store, "nowhere").await.is_empty());
    let l = store
        .search(
            &Query::parse("\"unbalanced \"\"").unwrap_or_default(),
            all(),
        )
        .await;
    assert!(l.is_ok(), "quotes inside words are no error: {l:?}");
    store.close().await;
}

/// `per_mailbox`: each mailbox keeps its newest; a message goes once no mailbox keeps it.
pub async fn retention_per_mailbox_cap(t: TestBackend) {
    let (store, _keep) = t.store();
    for i in 0..10 {
        store
            .deliver(incoming(&["cap@x.test"], &format!("m{i}")))
            .await
            .unwrap();
    }
    let early = incoming(&["cap@x.test", "keep@x.test"], "early shared");
    let early_id = early.id;
    store.deliver(early).await.unwrap();
    for i in 10..12 {
        store
            .deliver(incoming(&["cap@x.test"], &format!("m{i}")))
            .await
            .unwrap();
    }
    let mut events = store.events().subscribe();
    let e = store
        .evict(&Retention {
            per_mailbox: Some(2),
            ..Retention::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (e.messages, e.by_mailbox_cap, e.by_age, e.by_size),
        (10, 10, 0, 0)
    );
    assert_eq!(
        subjects(&store, Some("cap@x.test")).await,
        ["m11", "m10"],
        "the newest are kept"
    );
    assert_eq!(
        subjects(&store, Some("keep@x.test")).await,
        ["early shared"],
        "still in the other mailbox"
    );
    assert_eq!(
        store.fetch(early_id).await.unwrap().unwrap().mailboxes,
        ["keep@x.test"]
    );
    let gone = deleted(&drain(&mut events));
    assert_eq!(gone.len(), 11, "one event per message leaving cap@");
    assert!(gone.iter().all(|(_, m)| m == &["cap@x.test"]));
    let again = store
        .evict(&Retention {
            per_mailbox: Some(2),
            ..Retention::default()
        })
        .await
        .unwrap();
    assert_eq!(again.messages, 0);
    store.close().await;
}

/// `max_age`: older messages go, from every mailbox.
pub async fn retention_max_age(t: TestBackend) {
    let (store, _keep) = t.store();
    let mut old = incoming(&["old@x.test", "new@x.test"], "ancient");
    old.received_at -= 10 * 86_400_000;
    let old_id = old.id;
    store.deliver(old).await.unwrap();
    store
        .deliver(incoming(&["new@x.test"], "fresh"))
        .await
        .unwrap();
    let mut events = store.events().subscribe();
    let e = store
        .evict(&Retention {
            max_age: Some(Duration::from_secs(86_400)),
            ..Retention::default()
        })
        .await
        .unwrap();
    assert_eq!((e.messages, e.by_age), (1, 1));
    assert_eq!(subjects(&store, None).await, ["fresh"]);
    assert_eq!(
        deleted(&drain(&mut events)),
        [(
            old_id,
            vec!["new@x.test".to_string(), "old@x.test".to_string()]
        )]
    );
    store.close().await;
}

/// `max_bytes`: the oldest go until the rest fits.
pub async fn retention_max_size(t: TestBackend) {
    let (store, _keep) = t.store();
    for s in ["s1", "s2", "s3"] {
        store.deliver(incoming(&["a@x.test"], s)).await.unwrap();
    }
    let size = store.list_all(all()).await.unwrap().messages[0].size;
    let mut events = store.events().subscribe();
    let e = store
        .evict(&Retention {
            max_bytes: Some(size * 2),
            ..Retention::default()
        })
        .await
        .unwrap();
    assert_eq!((e.messages, e.by_size), (1, 1), "room for two");
    assert_eq!(subjects(&store, None).await, ["s3", "s2"]);
    assert_eq!(deleted(&drain(&mut events)).len(), 1);
    let e = store
        .evict(&Retention {
            max_bytes: Some(size * 2),
            ..Retention::default()
        })
        .await
        .unwrap();
    assert_eq!(e.messages, 0, "fits now");
    store.close().await;
}

/// What the checks found is stored with the message (and only when they found anything).
pub async fn check_findings_are_kept(t: TestBackend) {
    let (store, _keep) = t.store();
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
        undecided: vec![intake_core::Undecided {
            check: "spamd".into(),
            reason: "timed out after 20s".into(),
        }],
    };
    let expected = m.findings.clone();
    let checked = m.id;
    store.deliver(m).await.unwrap();
    let plain = incoming(&["a@example.com"], "unchecked");
    let unchecked = plain.id;
    store.deliver(plain).await.unwrap();
    assert_eq!(
        store.fetch(checked).await.unwrap().unwrap().findings,
        Some(expected)
    );
    assert_eq!(
        store.fetch(unchecked).await.unwrap().unwrap().findings,
        None
    );
    assert!(store.delete(checked).await.unwrap());
    store.close().await;
}

/// A shared setting is created once: the first writer wins (the alias secret).
pub async fn meta_first_writer_wins(t: TestBackend) {
    let (store, _keep) = t.store();
    let b = store.backend();
    assert_eq!(b.meta_get_or_insert("k", "first").await.unwrap(), "first");
    assert_eq!(b.meta_get_or_insert("k", "second").await.unwrap(), "first");
    assert_eq!(b.meta_get_or_insert("other", "x").await.unwrap(), "x");
    let secret = store.alias_secret(None).await.unwrap();
    assert!(secret.len() >= 32);
    assert_eq!(store.alias_secret(None).await.unwrap(), secret, "kept");
    store.close().await;
}

/// Valid recipients: addresses and `@domain` entries, normalized.
pub async fn recipients(t: TestBackend) {
    let (store, _keep) = t.store();
    assert_eq!(
        store.recipient_lookup("a@example.test").await.unwrap(),
        None
    );
    assert!(store.recipient_add(" Alice@Example.test ").await.unwrap());
    assert!(!store.recipient_add("alice@example.test").await.unwrap());
    assert!(store.recipient_add("@catch.test").await.unwrap());
    assert_eq!(
        store.recipient_lookup("ALICE@example.test").await.unwrap(),
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
    assert_eq!(store.recipient_list().await.unwrap(), ["@catch.test"]);
    store.close().await;
}

/// Greylisting records: written, replaced, expired by last sight.
pub async fn greylist_records(t: TestBackend) {
    let (store, _keep) = t.store();
    assert_eq!(store.greylist_get("t a b c").await.unwrap(), None);
    let rec = GreyRecord {
        first_seen: 1_000,
        last_seen: 2_000,
        passes: 1,
    };
    store.greylist_put("t a b c", rec).await.unwrap();
    assert_eq!(store.greylist_get("t a b c").await.unwrap(), Some(rec));
    let later = GreyRecord {
        last_seen: 2_500,
        passes: 2,
        ..rec
    };
    store.greylist_put("t a b c", later).await.unwrap();
    assert_eq!(store.greylist_get("t a b c").await.unwrap(), Some(later));
    let client = GreyRecord {
        first_seen: 5_000,
        last_seen: 9_000,
        passes: 4,
    };
    store.greylist_put("c 192.0.2.0/24", client).await.unwrap();
    assert_eq!(store.greylist_expire(3_000).await.unwrap(), 1);
    assert_eq!(store.greylist_get("t a b c").await.unwrap(), None);
    assert_eq!(
        store.greylist_get("c 192.0.2.0/24").await.unwrap(),
        Some(client)
    );
    store.close().await;
}

/// SMTP AUTH users: added once, changed, listed; addresses normalized.
pub async fn users(t: TestBackend) {
    let (store, _keep) = t.store();
    assert_eq!(store.user_get("a@example.test").await.unwrap(), None);
    let user = User {
        address: "Alice@Example.test".into(),
        password_hash: "$argon2id$x".into(),
        enabled: true,
        senders: vec!["@Example.test".into()],
    };
    assert!(store.user_add(user.clone()).await.unwrap());
    assert!(!store.user_add(user).await.unwrap(), "no second alice");
    let got = store.user_get("alice@EXAMPLE.test").await.unwrap().unwrap();
    assert_eq!(got.address, "alice@example.test");
    assert_eq!(got.senders, ["@example.test"]);
    assert!(got.enabled);
    assert!(
        store
            .user_set_password("alice@example.test", "$6$new")
            .await
            .unwrap()
    );
    assert!(
        store
            .user_set_enabled("ALICE@example.test", false)
            .await
            .unwrap()
    );
    assert!(
        !store
            .user_set_enabled("nobody@example.test", false)
            .await
            .unwrap()
    );
    assert!(!store.user_set_password("nobody@x", "h").await.unwrap());
    let got = store.user_get("alice@example.test").await.unwrap().unwrap();
    assert_eq!((got.password_hash.as_str(), got.enabled), ("$6$new", false));
    let bob = User {
        address: "bob@example.test".into(),
        password_hash: "h".into(),
        enabled: true,
        senders: vec![],
    };
    assert!(store.user_add(bob).await.unwrap());
    let list: Vec<String> = store
        .user_list()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.address)
        .collect();
    assert_eq!(
        list,
        ["alice@example.test", "bob@example.test"],
        "by address"
    );
    store.close().await;
}

/// After `close`, deliveries answer `Closed`; what was stored before is kept.
pub async fn a_closed_store_refuses_writes(t: TestBackend) {
    let (store, _keep) = t.store();
    store.deliver(incoming(&["a@x"], "before")).await.unwrap();
    store.close().await;
    assert!(matches!(
        store.deliver(incoming(&["a@x"], "late")).await,
        Err(StoreError::Closed)
    ));
}

/// For a backend that batches deliveries, given as a store whose `store.commit_delay` is
/// long enough (500 ms) to gather several messages in one batch: one poison message in a
/// batch (a second message with an id already taken, which the database refuses) fails
/// alone; every other message of the same batch is stored. Not in the suite: the memory
/// backend has no batches.
pub async fn a_poison_message_fails_alone(store: Arc<Store>) {
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
