//! Retention: per-mailbox caps, age, total size; and the events they announce.

use std::time::Duration;

use intake_core::{MailStore, Retention};

use super::{TestBackend, all, deleted, drain, incoming, subjects};

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
