//! The directory: valid recipients and SMTP AUTH users, keys normalized by the layer.

use intake_core::{MailStore, RecipientTable, User, UserDirectory};

use super::TestBackend;

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
