//! The router over the in-memory store: what a client sees of aliases, listings and deletes,
//! and the events they cause.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use http_body_util::BodyExt;
use intake_core::{Event, MailStore};
use intake_store::conformance::incoming;
use tower::ServiceExt;

use super::*;

async fn call(app: &axum::Router, method: &str, uri: &str) -> (u16, serde_json::Value) {
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap();
    let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(peer));
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

#[tokio::test]
async fn mail_to_an_alias_is_listed_in_its_mailbox_and_a_delete_is_announced() {
    let store = intake_store::memory::store();
    let events = store.events().clone();
    let state = AppState::new(
        store.clone(),
        events.clone(),
        b"secret".to_vec(),
        HttpConfig::default(),
    );
    let app = router(state);
    let (status, v) = call(&app, "GET", "/api/v1/mailboxes/Ann@x.test/alias").await;
    assert_eq!(status, 200, "{v}");
    let alias = v["alias"].as_str().unwrap().to_string();
    assert_eq!(alias, intake_core::alias::derive(b"secret", "ann@x.test"));
    // Mail arrives for the alias (as from the SMTP side).
    store
        .deliver(incoming(&[&alias], "via the alias"))
        .await
        .unwrap();
    let (status, v) = call(&app, "GET", "/api/v1/mailboxes/ann@x.test/messages").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["total"], 1);
    assert_eq!(v["messages"][0]["subject"], "via the alias");
    let mut rx = events.subscribe();
    let (status, v) = call(&app, "DELETE", "/api/v1/mailboxes/ann@x.test").await;
    assert_eq!((status, &v["deleted"]), (200, &serde_json::json!(1)), "{v}");
    match rx.try_recv().unwrap() {
        Event::Deleted { mailboxes, .. } => assert_eq!(mailboxes, ["ann@x.test"]),
        e => panic!("{e:?}"),
    }
}
