//! Tags on messages.

use intake_core::{MailStore, MailTags, MessageId};

use super::{TestBackend, all, incoming};

fn v(tags: &[&str]) -> Vec<String> {
    tags.iter().map(|t| t.to_string()).collect()
}

/// Tags set, added, removed, listed, renamed (merging) and deleted; a deleted message's
/// tags go with it; an unknown message has none.
pub async fn tags_set_rename_delete(t: TestBackend) {
    let (store, _keep) = t.store();
    let (a, b) = (incoming(&["u@x.test"], "a"), incoming(&["u@x.test"], "b"));
    let (ida, idb) = (a.id, b.id);
    store.deliver(a).await.unwrap();
    store.deliver(b).await.unwrap();
    assert_eq!(store.tags_of(ida).await.unwrap(), Some(vec![]));
    assert_eq!(store.tags_of(MessageId::new()).await.unwrap(), None);
    assert!(!store.set_tags(MessageId::new(), &v(&["x"])).await.unwrap());

    assert!(
        store
            .set_tags(ida, &v(&["red", "Blue!", "red"]))
            .await
            .unwrap()
    );
    assert_eq!(store.tags_of(ida).await.unwrap(), Some(v(&["Blue", "red"])));
    assert!(store.add_tags(idb, &v(&["red", "green"])).await.unwrap());
    assert!(store.add_tags(idb, &v(&["green", "Blue"])).await.unwrap());
    assert_eq!(
        store.tags_of(idb).await.unwrap(),
        Some(v(&["Blue", "green", "red"]))
    );
    assert_eq!(
        store.all_tags().await.unwrap(),
        v(&["Blue", "green", "red"])
    );

    assert!(store.remove_tags(idb, &v(&["blue"])).await.unwrap());
    assert_eq!(
        store.tags_of(idb).await.unwrap(),
        Some(v(&["green", "red"]))
    );

    // Renaming into a tag a message already has leaves it once.
    assert_eq!(store.rename_tag("green", "red").await.unwrap(), 1);
    assert_eq!(store.tags_of(idb).await.unwrap(), Some(v(&["red"])));
    assert_eq!(store.rename_tag("red", "crimson").await.unwrap(), 2);
    assert_eq!(store.all_tags().await.unwrap(), v(&["Blue", "crimson"]));

    assert_eq!(store.delete_tag("crimson").await.unwrap(), 2);
    assert_eq!(store.all_tags().await.unwrap(), v(&["Blue"]));
    assert_eq!(
        store.list_all(all()).await.unwrap().total,
        2,
        "messages stay"
    );

    assert!(store.delete(ida).await.unwrap());
    assert!(
        store.all_tags().await.unwrap().is_empty(),
        "tags left with it"
    );
    assert!(store.set_tags(idb, &[]).await.unwrap());
    assert_eq!(store.tags_of(idb).await.unwrap(), Some(vec![]));
    store.close().await;
}

fn subjects_of(l: &intake_core::Listing) -> Vec<String> {
    l.messages
        .iter()
        .map(|m| m.subject.clone().unwrap_or_default())
        .collect()
}

/// Mailpit's filters and negations, through the layer over the engine's own search:
/// `cc:`, `bcc:` (envelope only), `reply-to:`, `addressed:`, `message-id:`, sizes, `tag:`,
/// `is:tagged`, `-term`; totals count every match, pages cut them.
pub async fn search_mailpit_filters(t: TestBackend) {
    let (store, _keep) = t.store();
    let a = super::incoming_with(
        &["ann@x.test", "hidden@x.test"],
        "From: a@example.org\r\nTo: ann@x.test\r\nCc: Carl <carl@x.test>\r\n\
         Reply-To: desk@example.org\r\nMessage-ID: <m1@example.org>\r\nSubject: one\r\n\r\nfirst\r\n",
    );
    let big = format!(
        "Subject: two\r\nTo: bob@x.test\r\n\r\nsecond {}\r\n",
        "x ".repeat(10_000)
    );
    let b = super::incoming_with(&["bob@x.test"], &big);
    let ida = a.id;
    store.deliver(a).await.unwrap();
    store.deliver(b).await.unwrap();
    store.set_tags(ida, &v(&["Urgent"])).await.unwrap();
    let run = async |q: &str| {
        let l = store
            .search(&intake_core::Query::parse(q).unwrap(), all())
            .await
            .unwrap();
        subjects_of(&l)
    };
    // The engine's index may lag behind the commit a little: wait for both messages.
    let mut waited = std::time::Duration::ZERO;
    while run("first").await.is_empty() || run("second").await.is_empty() {
        assert!(waited < std::time::Duration::from_secs(10), "never indexed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        waited += std::time::Duration::from_millis(20);
    }
    assert_eq!(run("cc:carl").await, ["one"]);
    assert_eq!(run("bcc:hidden").await, ["one"]);
    assert!(run("bcc:ann").await.is_empty(), "in To: not a Bcc");
    assert_eq!(run("reply-to:desk@").await, ["one"]);
    assert_eq!(run("addressed:desk").await, ["one"]);
    assert_eq!(run("message-id:m1@example.org").await, ["one"]);
    assert_eq!(run("larger:10k").await, ["two"]);
    assert_eq!(run("smaller:10k").await, ["one"]);
    assert_eq!(run("tag:urgent").await, ["one"]);
    assert_eq!(run("is:tagged").await, ["one"]);
    assert_eq!(run("-is:tagged").await, ["two"]);
    assert_eq!(run("!subject:one").await, ["two"]);
    assert_eq!(run("-first").await, ["two"], "a negated word");
    let q = intake_core::Query::parse("-tag:nothing").unwrap();
    let page = intake_core::Page {
        offset: 1,
        limit: 1,
    };
    let l = store.search(&q, page).await.unwrap();
    assert_eq!((l.total, l.unread, subjects_of(&l)), (2, 2, v(&["one"])));
    store.close().await;
}
