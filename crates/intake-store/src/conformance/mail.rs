//! Mail: deliveries, listings, fetch, search, deletes and their events, the read flag,
//! aliases, check findings, the shared meta value, close; and the poison-batch case the
//! group-committing engines run.

use std::time::Duration;

use intake_core::{Event, Incoming, MailStore, MessageId, Page, Query, StoreError};

use super::{TestBackend, all, deleted, drain, incoming, incoming_with, subjects};
use crate::{Opened, Store};

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
        store
            .backends()
            .mail
            .alias_get(&alias)
            .await
            .unwrap()
            .as_deref(),
        Some("bob@x.test")
    );
    assert_eq!(
        store.backends().mail.alias_get(&stranger).await.unwrap(),
        None
    );
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

/// The subjects of what `q` finds.
pub(crate) async fn search(store: &Store, q: &str) -> Vec<String> {
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

/// Counts and pages of a search, for words alone, words with filters, and filters alone,
/// with some messages read: `total` the matches, `unread` the unread ones among them, the
/// page newest first from its offset.
pub async fn search_counts_and_pages(t: TestBackend) {
    let (store, _keep) = t.store();
    // Eight messages: "alpha" in 1..=6, "beta" in the even ones; to carol in 1, 4 and 7.
    let mut ids = Vec::new();
    for n in 1..=8 {
        let words = match (n <= 6, n % 2 == 0) {
            (true, true) => "alpha beta",
            (true, false) => "alpha",
            (false, true) => "beta",
            (false, false) => "gamma",
        };
        let to = if n % 3 == 1 {
            "carol@x.test"
        } else {
            "dave@x.test"
        };
        let m = incoming_with(&[to], &format!("Subject: m{n}\r\n\r\n{words} marker\r\n"));
        ids.push(m.id);
        store.deliver(m).await.unwrap();
    }
    let mut waited = Duration::ZERO;
    while search(&store, "marker").await.len() < 8 {
        assert!(waited < Duration::from_secs(10), "never indexed");
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    // Read: 2, 3, 4 and 8.
    for n in [2, 3, 4, 8] {
        assert!(store.set_seen(ids[n - 1], true).await.unwrap());
    }
    let counts = |q: &'static str| {
        let store = &store;
        async move {
            let l = store
                .search(&Query::parse(q).unwrap(), all())
                .await
                .unwrap();
            let subjects: Vec<String> =
                l.messages.into_iter().map(|m| m.subject.unwrap()).collect();
            (l.total, l.unread, subjects.join(" "))
        }
    };
    assert_eq!(
        counts("alpha").await,
        (6, 3, "m6 m5 m4 m3 m2 m1".into()),
        "words"
    );
    assert_eq!(
        counts("alpha beta").await,
        (3, 1, "m6 m4 m2".into()),
        "two words"
    );
    assert_eq!(counts("gamma").await, (1, 1, "m7".into()));
    assert_eq!(counts("nowhere").await, (0, 0, String::new()));
    assert_eq!(
        counts("alpha to:carol").await,
        (2, 1, "m4 m1".into()),
        "words and a filter"
    );
    assert_eq!(counts("alpha is:unread").await, (3, 3, "m6 m5 m1".into()));
    assert_eq!(counts("alpha is:read").await, (3, 0, "m4 m3 m2".into()));
    assert_eq!(
        counts("to:carol").await,
        (3, 2, "m7 m4 m1".into()),
        "a filter alone"
    );
    assert_eq!(counts("is:read").await, (4, 0, "m8 m4 m3 m2".into()));
    assert_eq!(counts("is:unread").await, (4, 4, "m7 m6 m5 m1".into()));
    let everything = store.list_all(all()).await.unwrap();
    assert_eq!((everything.total, everything.unread), (8, 4));
    // Pages, newest first, counts over every match.
    let page = |offset, limit| Page { offset, limit };
    for (q, p, want) in [
        ("alpha", page(1, 2), "m5 m4"),
        ("alpha", page(5, 2), "m1"),
        ("alpha to:carol", page(1, 5), "m1"),
        ("to:carol", page(2, 1), "m1"),
        ("", page(6, 5), "m2 m1"),
    ] {
        let l = store.search(&Query::parse(q).unwrap(), p).await.unwrap();
        let got: Vec<String> = l.messages.into_iter().map(|m| m.subject.unwrap()).collect();
        assert_eq!(got.join(" "), want, "{q} at {p:?}");
    }
    // A deleted message leaves the counts and the pages.
    store.delete(ids[3]).await.unwrap();
    assert_eq!(counts("alpha").await, (5, 3, "m6 m5 m3 m2 m1".into()));
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
    let b = &store.backends().mail;
    assert_eq!(b.meta_get_or_insert("k", "first").await.unwrap(), "first");
    assert_eq!(b.meta_get_or_insert("k", "second").await.unwrap(), "first");
    assert_eq!(b.meta_get_or_insert("other", "x").await.unwrap(), "x");
    let secret = store.alias_secret(None).await.unwrap();
    assert!(secret.len() >= 32);
    assert_eq!(store.alias_secret(None).await.unwrap(), secret, "kept");
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

/// For an engine that batches deliveries, opened with a `store.commit_delay`
/// long enough (500 ms) to gather several messages in one batch: one poison message in a
/// batch (a second message with an id already taken, which the database refuses) fails
/// alone; every other message of the same batch is stored. Not in the suite: the memory
/// backend has no batches.
pub async fn a_poison_message_fails_alone(opened: Opened) {
    let store = opened.store;
    // While a session is "receiving content", the writer lingers and gathers one batch.
    let arriving = opened.arrivals.expect("a batching engine").start();
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
