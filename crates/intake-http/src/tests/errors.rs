//! Malformed requests: every error of the API is JSON (`{"error": {status, code,
//! message}}`), whoever produced it (a handler, an extractor, the body limit, the docs
//! page); the Mailpit listener answers in plain text, as Mailpit does.

use axum::body::Body;

use super::{request, send};
use crate::AccessMode;

async fn api() -> axum::Router {
    crate::router(super::access_table::state(AccessMode::Open, |_| {}).await)
}

/// The error document of a response, which must be JSON.
fn json_error(status: u16, ctype: &str, body: &[u8]) -> serde_json::Value {
    assert!(
        ctype.starts_with("application/json"),
        "{status} {ctype}: {}",
        String::from_utf8_lossy(body)
    );
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v["error"]["status"], status, "{v}");
    assert!(!v["error"]["message"].as_str().unwrap().is_empty(), "{v}");
    v
}

#[tokio::test]
async fn a_path_that_is_not_utf8_gets_a_json_400() {
    let (status, ctype, body) = send(
        &api().await,
        request("GET", "/api/v1/messages/%FF%FE", &[], Body::empty()),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        json_error(400, &ctype, &body)["error"]["code"],
        "bad_request"
    );
}

#[tokio::test]
async fn a_duplicated_query_parameter_gets_a_json_400() {
    let uri = "/api/v1/messages?page=1&page=2";
    let (status, ctype, body) = send(&api().await, request("GET", uri, &[], Body::empty())).await;
    assert_eq!(status, 400);
    let v = json_error(400, &ctype, &body);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("page"),
        "{v}"
    );
}

#[tokio::test]
async fn a_chunked_body_past_the_limit_gets_a_json_413() {
    // No Content-Length: the body is refused while it is read.
    let chunks = (0..20).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 8 * 1024]));
    let body = Body::from_stream(futures_util::stream::iter(chunks));
    let headers = [
        ("authorization", "Bearer admin-token"),
        ("content-type", "application/json"),
    ];
    let req = request("POST", "/api/v1/admin/users", &headers, body);
    let (status, ctype, body) = send(&api().await, req).await;
    assert_eq!(status, 413);
    assert_eq!(json_error(413, &ctype, &body)["error"]["code"], "too_large");
}

#[tokio::test]
async fn a_missing_file_under_the_docs_gets_a_json_404() {
    let (status, ctype, body) = send(
        &api().await,
        request("GET", "/api/docs/no-such-file.js", &[], Body::empty()),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(json_error(404, &ctype, &body)["error"]["code"], "not_found");
}

#[tokio::test]
async fn a_method_the_route_lacks_gets_json() {
    // An admin credential passes the guard; the route has no PATCH.
    let headers = [("authorization", "Bearer admin-token")];
    let (status, ctype, body) = send(
        &api().await,
        request("PATCH", "/api/v1/access", &headers, Body::empty()),
    )
    .await;
    assert_eq!(status, 405);
    json_error(405, &ctype, &body);
}

#[tokio::test]
async fn the_mailpit_listener_answers_errors_in_plain_text() {
    let app = crate::mailpit_router(super::access_table::state(AccessMode::Open, |_| {}).await);
    for uri in [
        "/api/v1/message/not-an-id",
        "/api/v1/messages?start=1&start=2",
        "/api/v1/message/%FF",
        "/no/such/route",
    ] {
        let (status, ctype, body) = send(&app, request("GET", uri, &[], Body::empty())).await;
        assert!((400..500).contains(&status), "{uri}: {status}");
        assert!(ctype.starts_with("text/plain"), "{uri}: {ctype}");
        let text = String::from_utf8(body).unwrap();
        assert!(
            !text.trim().is_empty() && !text.starts_with('{'),
            "{uri}: {text}"
        );
    }
}
