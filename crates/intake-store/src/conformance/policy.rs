//! Policy state: greylisting records.

use intake_core::{GreyRecord, MailStore, PolicyState};

use super::TestBackend;

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
