//! The admin API for SMTP AUTH users: bearer token, add / passwd / disable / list, and a
//! user added over HTTP logs in over SMTP at once.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Client, TestServer};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// One request with a JSON body; returns the status and the body.
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn users_are_managed_over_http_behind_a_token() {
    let srv = TestServer::start(&format!(
        "[smtp]\ndomains = [\"example.test\"]\n[auth]\nenabled = true\nallow_plaintext = true\n\
         [admin]\ntokens = [\"{TOKEN}\"]\n"
    ))
    .await;
    let http = srv.running.http_addr.unwrap();
    let users = "/api/v1/admin/users";
    // No token, a wrong token: 401.
    assert_eq!(call(http, "GET", users, None, "").await.0, 401);
    assert_eq!(
        call(
            http,
            "GET",
            users,
            Some("0123456789abcdef0123456789abcdeX"),
            ""
        )
        .await
        .0,
        401
    );
    // Add, then a duplicate.
    let new =
        r#"{"address": "Carol@Example.test", "password": "pw-1", "senders": ["@carol.test"]}"#;
    let (status, body) = call(http, "POST", users, Some(TOKEN), new).await;
    assert_eq!(status, 201, "{body}");
    assert!(!body.contains("pw-1") && !body.contains("argon2"), "{body}");
    assert_eq!(call(http, "POST", users, Some(TOKEN), new).await.0, 409);
    let (status, body) = call(
        http,
        "POST",
        users,
        Some(TOKEN),
        r#"{"address": "x@example.test", "password_hash": "{PLAIN}x"}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (_, list) = call(http, "GET", users, Some(TOKEN), "").await;
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v[0]["address"], "carol@example.test");
    assert_eq!(v[0]["senders"][0], "@carol.test");

    // The new user logs in over SMTP at once ("\0carol@example.test\0pw-1").
    let login = "AUTH PLAIN AGNhcm9sQGV4YW1wbGUudGVzdABwdy0x";
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO client.test").await;
    assert_eq!(c.cmd(login).await.head(), "235 2.7.0");

    // Password changed, then disabled: both effective at the next AUTH.
    let path = "/api/v1/admin/users/carol@example.test/password";
    assert_eq!(
        call(http, "PUT", path, Some(TOKEN), r#"{"password": "pw-2"}"#)
            .await
            .0,
        204
    );
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO client.test").await;
    assert_eq!(c.cmd(login).await.head(), "535 5.7.8");
    let path = "/api/v1/admin/users/carol@example.test/enabled";
    assert_eq!(
        call(http, "PUT", path, Some(TOKEN), r#"{"enabled": false}"#)
            .await
            .0,
        204
    );
    assert_eq!(
        call(
            http,
            "PUT",
            "/api/v1/admin/users/nobody@example.test/enabled",
            Some(TOKEN),
            r#"{"enabled": false}"#
        )
        .await
        .0,
        404
    );
    let (_, list) = call(http, "GET", users, Some(TOKEN), "").await;
    assert!(list.contains("\"enabled\":false"), "{list}");
    // The admin OpenAPI document.
    let (status, spec) = call(http, "GET", "/api/v1/admin/openapi.json", Some(TOKEN), "").await;
    assert_eq!(status, 200);
    assert!(
        spec.contains("/api/v1/admin/users/{address}/password"),
        "{spec}"
    );
}

#[tokio::test]
async fn without_admin_tokens_the_routes_do_not_exist() {
    let srv = TestServer::start("").await;
    let http = srv.running.http_addr.unwrap();
    assert_eq!(
        call(http, "GET", "/api/v1/admin/users", Some(TOKEN), "")
            .await
            .0,
        404
    );
}
