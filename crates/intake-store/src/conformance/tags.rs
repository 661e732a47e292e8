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
