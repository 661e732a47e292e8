//! One rate budget per client across the main API and the Mailpit listener.

use axum::body::Body;

use super::{request, send};
use crate::{AccessMode, HttpConfig, RateLimit};

#[tokio::test]
async fn a_client_has_one_budget_across_the_api_and_the_mailpit_listener() {
    let base = super::access_table::state(AccessMode::Open, |_| {}).await;
    let config = HttpConfig {
        rate_limit: Some(RateLimit {
            per_second: 1,
            burst: 4,
        }),
        ..(*base.config).clone()
    };
    let store = intake_store::memory::store();
    let events = store.events().clone();
    let state = crate::AppState::new(store, events, b"secret".to_vec(), config);
    let api = crate::router(state.clone());
    let mailpit = crate::mailpit_router(state);
    let get = || request("GET", "/api/v1/messages", &[], Body::empty());
    let mut statuses = Vec::new();
    for app in [&api, &mailpit, &api, &mailpit, &mailpit, &api] {
        statuses.push(send(app, get()).await.0);
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 429, 429],
        "a burst of 4 shared by both listeners"
    );
}
