//! The HTTP API: mail sent over real SMTP, read back over real HTTP.

use std::time::Duration;

use crate::http::{Sse, get, request};
use crate::support::{TestServer, send_each, send_message, store_message};

async fn server(extra: &str) -> (TestServer, std::net::SocketAddr) {
    let srv = TestServer::start(&format!("[http]\nrate_limit = 0\n{extra}")).await;
    let http = srv.running.http_addr.expect("HTTP is on");
    (srv, http)
}

fn subjects(v: &serde_json::Value) -> Vec<String> {
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["subject"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn mailbox_listing_pagination_and_global_list() {
    let (srv, http) = server("").await;
    send_each(srv.addr, "s@example.net", &["Page@Q.test"], 7, |i| {
        format!("Subject: p{i}\r\n\r\nx\r\n")
    })
    .await;
    send_message(
        srv.addr,
        "s@example.net",
        &["other@q.test"],
        "Subject: elsewhere\r\n\r\n",
    )
    .await;
    let r = get(
        http,
        "/api/v1/mailboxes/page@q.test/messages?per_page=3&page=2",
    )
    .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["mailbox"], "page@q.test");
    assert_eq!(v["total"], 7);
    assert_eq!(v["unread"], 7);
    assert_eq!(
        (v["page"].as_u64(), v["per_page"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(
        subjects(&v),
        ["p3", "p2", "p1"],
        "newest first, second page"
    );
    let m = &v["messages"][0];
    assert_eq!(m["mail_from"], "s@example.net");
    assert_eq!(m["rcpt_to"][0], "Page@Q.test");
    assert!(m["received_at"].as_str().unwrap().ends_with('Z'));
    let all = get(http, "/api/v1/messages?per_page=100").await.json();
    assert_eq!(all["total"], 8);
    assert_eq!(subjects(&all)[0], "elsewhere");
    // Bad paging is a 400 with the error shape.
    let bad = get(http, "/api/v1/messages?page=0").await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["code"], "bad_request");
    assert_eq!(
        get(http, "/api/v1/messages?per_page=100000").await.status,
        400
    );
    assert_eq!(get(http, "/api/v1/messages?page=abc").await.status, 400);
}

#[tokio::test]
async fn one_message_its_parts_and_deletes() {
    let (srv, http) = server("").await;
    let content = "From: Alice <alice@example.org>\r\nTo: bob@q.test\r\nSubject: parts\r\nMessage-ID: <m1@example.org>\r\n\
        MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n\
        Content-Type: multipart/alternative; boundary=A\r\n\r\n--A\r\nContent-Type: text/plain\r\n\r\nplain words\r\n\
        --A\r\nContent-Type: text/html\r\n\r\n<p>html <b>words</b></p>\r\n--A--\r\n\
        --B\r\nContent-Type: text/csv; name=data.csv\r\nContent-Disposition: attachment; filename=data.csv\r\n\r\na,b\r\n1,2\r\n--B--\r\n";
    let id = store_message(
        srv.addr,
        "alice@example.org",
        &["bob@q.test", "carol@q.test"],
        content,
    )
    .await;
    let m = get(http, &format!("/api/v1/messages/{id}")).await;
    assert_eq!(m.status, 200);
    let m = m.json();
    assert_eq!(m["subject"], "parts");
    assert_eq!(m["from"], "Alice <alice@example.org>");
    assert_eq!(m["message_id"], "m1@example.org");
    assert_eq!(
        m["mailboxes"],
        serde_json::json!(["bob@q.test", "carol@q.test"])
    );
    assert!(m["text"].as_str().unwrap().contains("plain words"));
    assert!(m["html"].as_str().unwrap().contains("<b>words</b>"));
    assert_eq!(m["helo"], "client.test");
    assert_eq!(m["client"]["ip"], "127.0.0.1");
    assert_eq!(m["attachment_list"][0]["name"], "data.csv");
    assert!(
        m["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["name"] == "Received")
    );

    let raw = get(http, &format!("/api/v1/messages/{id}/raw")).await;
    assert_eq!(raw.header("content-type"), Some("message/rfc822"));
    assert!(
        raw.header("content-disposition")
            .unwrap()
            .contains(&format!("{id}.eml"))
    );
    assert!(raw.text().starts_with("Received: from client.test"));
    assert!(raw.text().contains("plain words"));

    let headers = get(http, &format!("/api/v1/messages/{id}/headers"))
        .await
        .json();
    let names: Vec<&str> = headers["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(&names[..3], ["Received", "From", "To"]);

    let att = get(http, &format!("/api/v1/messages/{id}/attachments/0")).await;
    assert_eq!(att.status, 200);
    assert_eq!(att.header("content-type"), Some("text/csv"));
    assert!(
        att.header("content-disposition")
            .unwrap()
            .contains("data.csv")
    );
    assert_eq!(att.text(), "a,b\r\n1,2");
    assert_eq!(
        get(http, &format!("/api/v1/messages/{id}/attachments/5"))
            .await
            .status,
        404
    );
    assert_eq!(
        get(http, &format!("/api/v1/messages/{id}/attachments/x"))
            .await
            .status,
        400
    );

    // Read flag.
    assert_eq!(
        get(http, "/api/v1/mailboxes/bob@q.test/messages")
            .await
            .json()["unread"],
        1
    );
    assert_eq!(
        request(http, "POST", &format!("/api/v1/messages/{id}/read"), &[])
            .await
            .status,
        204
    );
    let bob = get(http, "/api/v1/mailboxes/bob@q.test/messages")
        .await
        .json();
    assert_eq!(
        (bob["unread"].as_u64(), bob["messages"][0]["seen"].as_bool()),
        (Some(0), Some(true))
    );
    assert_eq!(
        request(http, "DELETE", &format!("/api/v1/messages/{id}/read"), &[])
            .await
            .status,
        204
    );
    assert_eq!(
        get(http, "/api/v1/mailboxes/bob@q.test/messages")
            .await
            .json()["unread"],
        1
    );

    // Delete the mailbox: the copy filed for carol stays.
    let d = request(http, "DELETE", "/api/v1/mailboxes/bob@q.test", &[]).await;
    assert_eq!(d.json()["deleted"], 1);
    assert_eq!(
        get(http, "/api/v1/mailboxes/bob@q.test/messages")
            .await
            .json()["total"],
        0
    );
    assert_eq!(
        get(http, "/api/v1/mailboxes/carol@q.test/messages")
            .await
            .json()["total"],
        1
    );
    // Delete the message.
    assert_eq!(
        request(http, "DELETE", &format!("/api/v1/messages/{id}"), &[])
            .await
            .status,
        204
    );
    let gone = get(http, &format!("/api/v1/messages/{id}")).await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.json()["error"]["code"], "not_found");
    assert_eq!(
        request(http, "DELETE", &format!("/api/v1/messages/{id}"), &[])
            .await
            .status,
        404
    );
    assert_eq!(get(http, "/api/v1/messages/not-an-id").await.status, 400);
    assert_eq!(
        get(http, "/api/v1/nothing-here").await.json()["error"]["code"],
        "not_found"
    );
}

#[tokio::test]
async fn html_is_sandboxed_and_page_has_a_strict_csp() {
    let (srv, http) = server("").await;
    let id = store_message(
        srv.addr,
        "a@b",
        &["x@q.test"],
        "Subject: evil\r\nContent-Type: text/html\r\n\r\n<script>alert(1)</script><img src=\"http://192.0.2.1/t.png\">\r\n",
    )
    .await;
    let h = get(http, &format!("/api/v1/messages/{id}/html")).await;
    let csp = h.header("content-security-policy").unwrap().to_string();
    // Sandboxed without scripts; the origin is kept so the inbox can size the frame.
    assert!(csp.starts_with("sandbox allow-same-origin;"), "{csp}");
    assert!(!csp.contains("allow-scripts"), "{csp}");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'none'"),
        "{csp}"
    );
    assert!(
        csp.contains("img-src 'self' data:;"),
        "remote images blocked: {csp}"
    );
    let with_images = get(http, &format!("/api/v1/messages/{id}/html?images=1")).await;
    assert!(
        with_images
            .header("content-security-policy")
            .unwrap()
            .contains("http: https:")
    );
    // A plain-text message is shown escaped.
    let id = store_message(
        srv.addr,
        "a@b",
        &["x@q.test"],
        "Subject: t\r\n\r\n<b>not html</b>\r\n",
    )
    .await;
    let t = get(http, &format!("/api/v1/messages/{id}/html"))
        .await
        .text();
    assert!(t.contains("&lt;b&gt;not html"), "{t}");

    let page = get(http, "/").await;
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("object-src 'none'"),
        "{csp}"
    );
    assert!(page.text().contains("<html"));
}

#[tokio::test]
async fn search_filters_over_http() {
    let (srv, http) = server("").await;
    send_message(
        srv.addr,
        "alice@example.org",
        &["s@q.test"],
        "From: alice@example.org\r\nSubject: Invoice 7\r\n\r\namount due friday\r\n",
    )
    .await;
    send_message(
        srv.addr,
        "bob@example.org",
        &["t@q.test"],
        "From: bob@example.org\r\nSubject: Lunch\r\n\r\npizza friday\r\n",
    )
    .await;
    let q = |s: &str| {
        format!(
            "/api/v1/search?query={}",
            s.replace(' ', "%20")
                .replace('"', "%22")
                .replace(':', "%3A")
        )
    };
    // Words need the search index, which is filled right after the writer goes idle.
    let mut found = serde_json::Value::Null;
    for _ in 0..100 {
        found = get(http, &q("friday")).await.json();
        if found["total"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(found["total"], 2);
    assert_eq!(found["query"], "friday");
    assert_eq!(
        subjects(&get(http, &q("friday from:alice")).await.json()),
        ["Invoice 7"]
    );
    assert_eq!(
        subjects(&get(http, &q("to:t@q.test")).await.json()),
        ["Lunch"]
    );
    assert_eq!(
        subjects(&get(http, &q("subject:\"invoice 7\"")).await.json()),
        ["Invoice 7"]
    );
    assert_eq!(subjects(&get(http, &q("pizz*")).await.json()), ["Lunch"]);
    assert_eq!(get(http, &q("is:unread")).await.json()["total"], 2);
    assert_eq!(get(http, &q("has:attachment")).await.json()["total"], 0);
    assert_eq!(get(http, &q("before:2001-01-01")).await.json()["total"], 0);
    let bad = get(http, &q("is:sideways")).await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is:")
    );
    assert_eq!(
        get(http, "/api/v1/search").await.status,
        400,
        "query is required"
    );
}

#[tokio::test]
async fn alias_receives_mail_for_the_mailbox() {
    let (srv, http) = server("[aliases]\nsecret = \"test-secret-for-aliases\"\n").await;
    let a = get(http, "/api/v1/mailboxes/Real.Name@q.test/alias")
        .await
        .json();
    let alias = a["alias"].as_str().unwrap().to_string();
    assert_eq!(a["mailbox"], "real.name@q.test");
    assert!(
        alias.starts_with("d-") && alias.ends_with("@q.test") && !alias.contains("real"),
        "{alias}"
    );
    assert_eq!(
        get(http, "/api/v1/mailboxes/real.name@q.test/alias")
            .await
            .json()["alias"],
        alias,
        "stable"
    );
    store_message(srv.addr, "a@b", &[&alias], "Subject: to the alias\r\n\r\n").await;
    let v = get(http, "/api/v1/mailboxes/real.name@q.test/messages")
        .await
        .json();
    assert_eq!(subjects(&v), ["to the alias"]);
    assert_eq!(v["alias"], alias);
    assert_eq!(
        get(http, &format!("/api/v1/mailboxes/{alias}/messages"))
            .await
            .json()["total"],
        0
    );
}

#[tokio::test]
async fn wait_for_mail_returns_on_arrival_or_times_out() {
    let (srv, http) = server("").await;
    // Mail already there does not count: only what arrives after the request.
    send_message(srv.addr, "a@b", &["w@q.test"], "Subject: before\r\n\r\n").await;
    let waiter = tokio::spawn(async move {
        get(
            http,
            "/api/v1/wait?query=subject%3Aarrival%20to%3Aw%40q.test&timeout=20",
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_message(srv.addr, "a@b", &["w@q.test"], "Subject: unrelated\r\n\r\n").await;
    send_message(
        srv.addr,
        "a@b",
        &["w@q.test"],
        "Subject: the arrival\r\n\r\nbody\r\n",
    )
    .await;
    let r = waiter.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["subject"], "the arrival");
    let started = std::time::Instant::now();
    let r = get(http, "/api/v1/wait?query=subject%3Anever&timeout=1").await;
    assert_eq!(r.status, 408);
    assert_eq!(r.json()["error"]["code"], "timeout");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(get(http, "/api/v1/wait?timeout=0").await.status, 400);
    assert_eq!(get(http, "/api/v1/wait?timeout=100000").await.status, 400);
    assert_eq!(
        get(http, "/api/v1/wait?query=after%3Anope").await.status,
        400
    );
}

#[tokio::test]
async fn events_announce_new_and_deleted_mail() {
    let (srv, http) = server("").await;
    let mut all = Sse::open(http, "/api/v1/events").await;
    // Subscribed: `open` returns once the stream's head is read, after the subscription.
    let mut mine = Sse::open(http, "/api/v1/events?mailbox=Ev@q.test").await;
    send_message(
        srv.addr,
        "a@b",
        &["other@q.test"],
        "Subject: not yours\r\n\r\n",
    )
    .await;
    let id = store_message(srv.addr, "a@b", &["ev@q.test"], "Subject: live one\r\n\r\n").await;
    let (name, data) = all.next().await;
    assert_eq!(name, "new");
    assert!(data.contains("not yours"));
    let (name, data) = mine.next().await;
    assert_eq!(name, "new");
    let v: serde_json::Value = serde_json::from_str(&data).unwrap();
    assert_eq!(
        v["message"]["subject"], "live one",
        "filtered to the mailbox"
    );
    assert_eq!(v["mailboxes"][0], "ev@q.test");
    request(http, "DELETE", &format!("/api/v1/messages/{id}"), &[]).await;
    let (name, data) = mine.next().await;
    assert_eq!(name, "deleted");
    assert!(data.contains(&id));
}

#[tokio::test]
async fn retention_evicts_in_the_background() {
    let (srv, http) = server("[retention]\nper_mailbox = 2\ninterval = 1\n").await;
    for i in 0..5 {
        send_message(
            srv.addr,
            "a@b",
            &["r@q.test"],
            &format!("Subject: r{i}\r\n\r\n"),
        )
        .await;
    }
    let mut v = serde_json::Value::Null;
    for _ in 0..50 {
        v = get(http, "/api/v1/mailboxes/r@q.test/messages")
            .await
            .json();
        if v["total"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(subjects(&v), ["r4", "r3"], "the newest two are kept");
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let srv = TestServer::start("[http]\nrate_limit = 1\nrate_limit_burst = 3\n").await;
    let http = srv.running.http_addr.unwrap();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(get(http, "/api/v1/messages").await.status);
    }
    assert_eq!(&statuses[..3], [200, 200, 200]);
    let r = get(http, "/api/v1/messages").await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(r.json()["error"]["code"], "rate_limited");
    // The web page is not rate limited.
    assert_eq!(get(http, "/").await.status, 200);
}

#[tokio::test]
async fn openapi_docs_and_cors() {
    let (_srv, http) = server("cors_origins = [\"https://tests.example\"]\n").await;
    let spec = get(http, "/api/v1/openapi.json").await.json();
    let paths = spec["paths"].as_object().unwrap();
    for p in [
        "/api/v1/mailboxes/{address}/messages",
        "/api/v1/mailboxes/{address}",
        "/api/v1/messages",
        "/api/v1/messages/{id}",
        "/api/v1/messages/{id}/raw",
        "/api/v1/messages/{id}/headers",
        "/api/v1/messages/{id}/attachments/{part}",
        "/api/v1/search",
        "/api/v1/wait",
        "/api/v1/events",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from the OpenAPI document"
        );
    }
    // The response shapes come with the document (built when first asked for).
    let schemas = spec["components"]["schemas"].as_object().unwrap();
    assert!(schemas.contains_key("MessageSummary") && schemas.contains_key("ErrorBody"));
    assert_eq!(get(http, "/api/v1/openapi.json").await.json(), spec);
    let docs = get(http, "/api/docs/").await;
    assert_eq!(docs.status, 200);
    assert!(docs.text().contains("swagger"), "offline docs page");
    // The page reads the document from where it is served.
    let init = get(http, "/api/docs/swagger-initializer.js").await;
    assert_eq!(init.status, 200);
    assert!(
        init.text().contains("/api/v1/openapi.json"),
        "{}",
        init.text()
    );
    let r = request(
        http,
        "GET",
        "/api/v1/messages",
        &[("Origin", "https://tests.example")],
    )
    .await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://tests.example")
    );
    let r = request(
        http,
        "GET",
        "/api/v1/messages",
        &[("Origin", "https://evil.example")],
    )
    .await;
    assert_eq!(r.header("access-control-allow-origin"), None);
}
