//! The router over the in-memory store, driven in-process (tower `oneshot`): what a client
//! sees of aliases, listings and deletes and the events they cause; who may do what
//! (`access_table`); the errors of malformed requests (`errors`); the rate budget shared by
//! the two listeners (`budget`); the Mailpit message checks (`checks`).

mod access_table;
mod budget;
mod checks;
mod errors;
mod inbox;
mod tags;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use http_body_util::BodyExt;
use intake_core::{Event, MailStore};
use intake_store::conformance::incoming;
use tower::ServiceExt;

use super::*;

/// A request from 192.0.2.7, as the connection loop would pass it on.
pub(crate) fn request(
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Body,
) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut req = b.body(body).unwrap();
    let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(peer));
    req
}

/// The status, the content type and the body of one request.
pub(crate) async fn send(app: &axum::Router, req: Request<Body>) -> (u16, String, Vec<u8>) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if ctype.starts_with("text/event-stream") {
        // An event stream never ends: its status and type are what a caller can check.
        return (status, ctype, Vec::new());
    }
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ctype, body.to_vec())
}

pub(crate) async fn call(app: &axum::Router, method: &str, uri: &str) -> (u16, serde_json::Value) {
    let (status, _, body) = send(app, request(method, uri, &[], Body::empty())).await;
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

/// The app's state over `store`: the default settings, the alias secret `secret`.
pub(crate) fn state_over(store: &std::sync::Arc<intake_store::Store>) -> AppState {
    AppState::new(
        store.clone(),
        store.events().clone(),
        b"secret".to_vec(),
        HttpConfig::default(),
    )
}

#[tokio::test]
async fn mail_to_an_alias_is_listed_in_its_mailbox_and_a_delete_is_announced() {
    let store = intake_store::memory::store();
    let events = store.events().clone();
    let app = router(state_over(&store));
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

#[tokio::test]
async fn events_missed_upstream_reach_sse_listeners_as_lagged() {
    let store = intake_store::memory::store();
    let events = store.events().clone();
    let app = router(state_over(&store));
    let req = request("GET", "/api/v1/events", &[], Body::empty());
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    // The feed between nodes reconnected: events from other nodes may be missing.
    events.missed();
    let frame = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame())
        .await
        .expect("an event")
        .expect("the stream")
        .unwrap();
    let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
    assert_eq!(text, "event: lagged\ndata: feed\n\n");
}
