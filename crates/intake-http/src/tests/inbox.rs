//! What the web inbox asks of the API beyond listings: the HTML view with inline images
//! resolved and its policy, and changes to a selection of messages.

use axum::body::Body;
use intake_core::{MailStore, MessageId};
use intake_store::conformance::incoming_with;

use super::{call, request, send};
use crate::{AppState, router};

/// A message whose HTML shows an inline image by its Content-ID, and links a remote one.
const RELATED: &str = "From: a@example.net\r\nSubject: inline\r\nMIME-Version: 1.0\r\n\
     Content-Type: multipart/related; boundary=\"rel\"\r\n\r\n\
     --rel\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
     <p>logo: <img src=\"cid:logo@example.net\"> remote: <img src=\"https://tracker.example/t.png\"></p>\r\n\
     --rel\r\nContent-Type: image/png; name=logo.png\r\nContent-ID: <logo@example.net>\r\n\
     Content-Disposition: inline; filename=logo.png\r\n\
     Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--rel--\r\n";

async fn app_with(contents: &[&str]) -> (axum::Router, AppState, Vec<MessageId>) {
    let store = intake_store::memory::store();
    let mut ids = Vec::new();
    for c in contents {
        let m = incoming_with(&["ann@x.test"], c);
        ids.push(m.id);
        store.deliver(m).await.unwrap();
    }
    let state = super::state_over(&store);
    (router(state.clone()), state, ids)
}

#[tokio::test]
async fn the_html_view_shows_inline_images_from_the_message_and_blocks_remote_ones() {
    let (app, _, ids) = app_with(&[RELATED]).await;
    let id = ids[0];
    let resp = get(&app, &format!("/api/v1/messages/{id}/html")).await;
    let csp = resp.csp;
    let html = resp.body;
    let part_url = format!("/api/v1/messages/{id}/attachments/0");
    assert!(
        html.contains(&format!("<img src=\"{part_url}\">")),
        "{html}"
    );
    assert!(!html.contains("cid:"), "{html}");
    // The remote image stays in the markup; the policy is what blocks it.
    assert!(html.contains("https://tracker.example/t.png"));
    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    assert!(directives.contains(&"sandbox allow-same-origin"), "{csp}");
    assert!(!csp.contains("allow-scripts") && !csp.contains("allow-forms"));
    assert!(directives.contains(&"script-src 'none'"), "{csp}");
    assert!(directives.contains(&"img-src 'self' data:"), "{csp}");

    // The rewritten URL serves the image.
    let (status, ctype, bytes) = send(&app, request("GET", &part_url, &[], Body::empty())).await;
    assert_eq!((status, ctype.as_str()), (200, "image/png"));
    assert_eq!(bytes, b"\x89PNG\r\n\x1a\n");

    // Asking for remote images allows them, and only then.
    let resp = get(&app, &format!("/api/v1/messages/{id}/html?images=1")).await;
    assert!(
        resp.csp.contains("img-src 'self' data: http: https:"),
        "{}",
        resp.csp
    );
    assert!(resp.csp.contains("sandbox allow-same-origin;"));
}

#[tokio::test]
async fn a_text_message_is_shown_escaped() {
    let (app, _, ids) = app_with(&["Subject: t\r\n\r\n<script>alert(1)</script> cid:x\r\n"]).await;
    let resp = get(&app, &format!("/api/v1/messages/{}/html", ids[0])).await;
    assert!(
        resp.body
            .starts_with("<pre>&lt;script&gt;alert(1)&lt;/script&gt; cid:x"),
        "{}",
        resp.body
    );
}

#[tokio::test]
async fn a_selection_is_marked_read_and_unread_and_deleted() {
    let one = "Subject: one\r\n\r\nx\r\n";
    let two = "Subject: two\r\n\r\nx\r\n";
    let three = "Subject: three\r\n\r\nx\r\n";
    let (app, state, ids) = app_with(&[one, two, three]).await;
    let gone = MessageId::new();
    let post = |path: &'static str, body: String| {
        let app = app.clone();
        async move {
            let (status, _, body) = send(
                &app,
                request(
                    "POST",
                    path,
                    &[("content-type", "application/json")],
                    Body::from(body),
                ),
            )
            .await;
            (
                status,
                serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default(),
            )
        }
    };
    let unread = || async {
        let (_, v) = call(&app, "GET", "/api/v1/mailboxes/ann@x.test/messages").await;
        v["unread"].as_u64().unwrap()
    };
    assert_eq!(unread().await, 3);
    let (status, v) = post(
        "/api/v1/messages/read",
        format!(
            r#"{{"ids": ["{}", "{}", "{gone}"], "read": true}}"#,
            ids[0], ids[1]
        ),
    )
    .await;
    assert_eq!((status, &v["changed"]), (200, &serde_json::json!(2)), "{v}");
    assert_eq!(unread().await, 1);
    let (status, v) = post(
        "/api/v1/messages/read",
        format!(r#"{{"ids": ["{}"], "read": false}}"#, ids[1]),
    )
    .await;
    assert_eq!((status, &v["changed"]), (200, &serde_json::json!(1)), "{v}");
    assert_eq!(unread().await, 2);

    let (status, v) = post(
        "/api/v1/messages/delete",
        format!(r#"{{"ids": ["{}", "{}", "{gone}"]}}"#, ids[0], ids[2]),
    )
    .await;
    assert_eq!((status, &v["changed"]), (200, &serde_json::json!(2)), "{v}");
    let left = state.store.list_all(intake_store::conformance::all()).await;
    let left: Vec<_> = left.unwrap().messages.iter().map(|m| m.id).collect();
    assert_eq!(left, [ids[1]]);

    // Malformed selections are refused whole, naming what is wrong.
    let (status, v) = post(
        "/api/v1/messages/delete",
        format!(r#"{{"ids": ["{}", "nonsense"]}}"#, ids[1]),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("nonsense"), "{v}");
    let many: Vec<String> = (0..501).map(|_| MessageId::new().to_string()).collect();
    let (status, v) = post(
        "/api/v1/messages/read",
        serde_json::json!({"ids": many, "read": true}).to_string(),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("at most 500"), "{v}");
    assert_eq!(
        state
            .store
            .list_all(intake_store::conformance::all())
            .await
            .unwrap()
            .total,
        1
    );
}

/// A GET's body as text and its Content-Security-Policy.
struct Got {
    body: String,
    csp: String,
}

async fn get(app: &axum::Router, path: &str) -> Got {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let resp = app
        .clone()
        .oneshot(request("GET", path, &[], Body::empty()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    let csp = resp
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Got {
        body: String::from_utf8(body.to_vec()).unwrap(),
        csp,
    }
}
