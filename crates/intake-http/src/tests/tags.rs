//! Tags through the main API, as the web inbox uses them: on listings, search results and
//! one message; set on one message; added to and removed from a selection; every tag.

use axum::body::Body;
use intake_core::{MailStore, MessageId};
use intake_store::conformance::incoming_with;
use serde_json::{Value, json};

use super::{call, request, send};
use crate::router;

async fn json_call(app: &axum::Router, method: &str, path: &str, body: Value) -> (u16, Value) {
    let req = request(
        method,
        path,
        &[("content-type", "application/json")],
        Body::from(body.to_string()),
    );
    let (status, _, body) = send(app, req).await;
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

/// The tags of each listed message, by subject.
fn tags_by_subject(page: &Value) -> Vec<(String, Vec<String>)> {
    let messages = page["messages"].as_array().expect("a page of messages");
    messages
        .iter()
        .map(|m| {
            let tags = m["tags"].as_array().expect("tags on every listed message");
            (
                m["subject"].as_str().unwrap().to_string(),
                tags.iter()
                    .map(|t| t.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

fn subjects(page: &Value) -> Vec<String> {
    tags_by_subject(page).into_iter().map(|(s, _)| s).collect()
}

#[tokio::test]
async fn tags_are_set_listed_searched_and_changed_on_a_selection() {
    let store = intake_store::memory::store();
    let mut ids = Vec::new();
    for s in ["one", "two", "three"] {
        let m = incoming_with(&["ann@x.test"], &format!("Subject: {s}\r\n\r\nx\r\n"));
        ids.push(m.id);
        store.deliver(m).await.unwrap();
    }
    let app = router(super::state_over(&store));
    let (one, two, three) = (ids[0], ids[1], ids[2]);

    // Set on one message: cleaned as Mailpit cleans them, repeats kept once, sorted.
    let (status, v) = json_call(
        &app,
        "PUT",
        &format!("/api/v1/messages/{one}/tags"),
        json!({"tags": ["urgent", "  to do! ", "Urgent"]}),
    )
    .await;
    assert_eq!((status, &v), (200, &json!({"tags": ["to do", "urgent"]})));
    let (_, m) = call(&app, "GET", &format!("/api/v1/messages/{one}")).await;
    assert_eq!(m["tags"], json!(["to do", "urgent"]));

    // Every listing shows each message's tags (none as an empty list).
    let expected = vec![
        ("three".to_string(), vec![]),
        ("two".to_string(), vec![]),
        (
            "one".to_string(),
            vec!["to do".to_string(), "urgent".to_string()],
        ),
    ];
    let (_, mailbox) = call(&app, "GET", "/api/v1/mailboxes/ann@x.test/messages").await;
    assert_eq!(tags_by_subject(&mailbox), expected);
    let (_, all) = call(&app, "GET", "/api/v1/messages").await;
    assert_eq!(tags_by_subject(&all), expected);

    // Search by tag, by any tag, and without.
    let search = |q: &str| {
        let app = app.clone();
        let path = format!("/api/v1/search?query={}", q.replace(' ', "%20"));
        async move { call(&app, "GET", &path).await.1 }
    };
    let found = search("tag:URGENT").await;
    assert_eq!(tags_by_subject(&found), expected[2..]);
    assert_eq!(subjects(&search("tag:%22to%20do%22").await), ["one"]);
    assert_eq!(subjects(&search("is:tagged").await), ["one"]);
    assert_eq!(subjects(&search("-is:tagged").await), ["three", "two"]);

    // A selection: added where missing, kept where present; ids that are gone not counted.
    let gone = MessageId::new();
    let (status, v) = json_call(
        &app,
        "POST",
        "/api/v1/messages/tags",
        json!({"ids": [one.to_string(), two.to_string(), gone.to_string()], "add": ["Batch", "urgent"]}),
    )
    .await;
    assert_eq!((status, &v), (200, &json!({"changed": 2})));
    assert_eq!(subjects(&search("tag:urgent").await), ["two", "one"]);
    assert_eq!(subjects(&search("tag:batch").await), ["two", "one"]);
    // Removed without regard to case; both lists in one request.
    let (status, v) = json_call(
        &app,
        "POST",
        "/api/v1/messages/tags",
        json!({"ids": [one.to_string(), three.to_string()], "remove": ["URGENT"], "add": ["late"]}),
    )
    .await;
    assert_eq!((status, &v), (200, &json!({"changed": 2})));
    let (_, all) = call(&app, "GET", "/api/v1/messages").await;
    let s = |v: &[&str]| v.iter().map(|t| t.to_string()).collect::<Vec<_>>();
    assert_eq!(
        tags_by_subject(&all),
        vec![
            ("three".to_string(), s(&["late"])),
            ("two".to_string(), s(&["Batch", "urgent"])),
            ("one".to_string(), s(&["Batch", "late", "to do"])),
        ]
    );
    let (status, v) = call(&app, "GET", "/api/v1/tags").await;
    assert_eq!(
        (status, v),
        (200, json!({"tags": ["Batch", "late", "to do", "urgent"]}))
    );

    // Removing every tag of a message: an empty list.
    let (status, v) = json_call(
        &app,
        "PUT",
        &format!("/api/v1/messages/{three}/tags"),
        json!({"tags": []}),
    )
    .await;
    assert_eq!((status, v), (200, json!({"tags": []})));
    assert_eq!(subjects(&search("tag:late").await), ["one"]);
}

#[tokio::test]
async fn tag_requests_that_cannot_be_done_say_why() {
    let store = intake_store::memory::store();
    let m = incoming_with(&["ann@x.test"], "Subject: one\r\n\r\nx\r\n");
    let id = m.id;
    store.deliver(m).await.unwrap();
    let app = router(super::state_over(&store));

    let gone = MessageId::new();
    let (status, v) = json_call(
        &app,
        "PUT",
        &format!("/api/v1/messages/{gone}/tags"),
        json!({"tags": ["x"]}),
    )
    .await;
    assert_eq!(status, 404, "{v}");
    let (status, _) = json_call(
        &app,
        "PUT",
        "/api/v1/messages/nonsense/tags",
        json!({"tags": ["x"]}),
    )
    .await;
    assert_eq!(status, 400);
    // Nothing to add or remove.
    let (status, v) = json_call(
        &app,
        "POST",
        "/api/v1/messages/tags",
        json!({"ids": [id.to_string()]}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("tags to add or to remove"), "{v}");
    // A malformed id refuses the whole selection.
    let (status, v) = json_call(
        &app,
        "POST",
        "/api/v1/messages/tags",
        json!({"ids": [id.to_string(), "nonsense"], "add": ["x"]}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let (_, m) = call(&app, "GET", &format!("/api/v1/messages/{id}")).await;
    assert_eq!(m["tags"], json!([]), "nothing was tagged");
}

#[tokio::test]
async fn a_wait_for_a_tag_answers_with_mail_tagged_on_arrival() {
    use std::sync::Arc;
    let tags = intake_store::DeliveryTags {
        header: true,
        plus_addresses: false,
    };
    let backend = Arc::new(intake_store::memory::MemoryBackend::default());
    let store = Arc::new(intake_store::Store::new(backend).with_delivery_tags(tags));
    let app = router(super::state_over(&store));
    let waiting = tokio::spawn({
        let app = app.clone();
        async move { call(&app, "GET", "/api/v1/wait?timeout=10&query=tag:urgent").await }
    });
    // The wait subscribes before anything else; deliver until it has seen the tagged one.
    let plain = incoming_with(&["ann@x.test"], "Subject: plain\r\n\r\nx\r\n");
    let tagged = incoming_with(
        &["ann@x.test"],
        "Subject: tagged\r\nX-Tags: Urgent\r\n\r\nx\r\n",
    );
    while !store.events().has_listeners() {
        tokio::task::yield_now().await;
    }
    store.deliver(plain).await.unwrap();
    store.deliver(tagged).await.unwrap();
    let (status, v) = waiting.await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (&v["subject"], &v["tags"]),
        (&json!("tagged"), &json!(["Urgent"]))
    );
}
