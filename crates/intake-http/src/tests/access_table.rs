//! Who may do what, in-process through the routers: every route of both listeners, in every
//! access mode, with and without each kind of credential. The table is the specification;
//! a route the API document publishes that the table does not know fails the test. (The
//! end-to-end test `e2e/access.rs` asks the same of the real server over sockets.)

use std::sync::Arc;

use axum::body::Body;

use super::{request, send};
use crate::{AccessConfig, AccessMode, AppState, HttpConfig, Scopes, Token};
use intake_core::MailStore;
use intake_store::conformance::incoming;

/// `hunter2` under SHA-512-crypt.
const ALICE: &str = "alice:$6$saltsalt$8iYtNHxjWRl.NF6oNZ5tF.iKFlQREaXBLlSmZKP6dy9l5z3vsooWNW0/GZ6Nej73/TFug6pIPSqbJoCT6dfnj.";

/// What a route needs, as the issue specifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// `/healthz`, `/readyz`.
    Probe,
    /// The page, assets, docs, what-may-I-do.
    Page,
    /// `/metrics`.
    Metrics,
    /// Read one mailbox (or a message by id).
    Mailbox,
    /// Delete in one mailbox (or a message by id).
    MailboxDelete,
    /// Reads spanning all mailboxes.
    All,
    /// Deletes spanning all mailboxes (the Mailpit API).
    AllDelete,
    /// User management.
    Admin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cred {
    None,
    WrongBearer,
    WrongBasic,
    Reader,
    Deleter,
    Metrics,
    Admin,
    /// The htpasswd user (scopes read, delete).
    Alice,
}

const CREDS: [Cred; 8] = [
    Cred::None,
    Cred::WrongBearer,
    Cred::WrongBasic,
    Cred::Reader,
    Cred::Deleter,
    Cred::Metrics,
    Cred::Admin,
    Cred::Alice,
];

impl Cred {
    fn header(self) -> Option<&'static str> {
        match self {
            Cred::None => None,
            Cred::WrongBearer => Some("Bearer not-a-token"),
            // alice:wrong, alice:hunter2
            Cred::WrongBasic => Some("Basic YWxpY2U6d3Jvbmc="),
            Cred::Alice => Some("Basic YWxpY2U6aHVudGVyMg=="),
            Cred::Reader => Some("Bearer reader-token"),
            Cred::Deleter => Some("Bearer deleter-token"),
            Cred::Metrics => Some("Bearer metrics-token"),
            Cred::Admin => Some("Bearer admin-token"),
        }
    }
}

/// Allowed, or the status that refused.
fn expected(mode: AccessMode, class: Class, cred: Cred) -> Result<(), u16> {
    let valid = !matches!(cred, Cred::None | Cred::WrongBearer | Cred::WrongBasic);
    let reads = matches!(cred, Cred::Reader | Cred::Admin | Cred::Alice);
    let deletes = matches!(cred, Cred::Deleter | Cred::Admin | Cred::Alice);
    let metrics = matches!(cred, Cred::Metrics | Cred::Admin);
    let admin = cred == Cred::Admin;
    let wrong = matches!(cred, Cred::WrongBearer | Cred::WrongBasic);
    let allowed = |yes: bool, no: u16| if yes { Ok(()) } else { Err(no) };
    match mode {
        AccessMode::Open if class == Class::Admin => match cred {
            _ if admin => Ok(()),
            _ if valid => Err(403),
            _ => Err(401),
        },
        AccessMode::Open => Ok(()),
        _ if wrong => Err(401),
        _ if class == Class::Probe => Ok(()),
        AccessMode::Public => match class {
            Class::Page | Class::Mailbox | Class::MailboxDelete => Ok(()),
            Class::All => allowed(reads, 403),
            Class::AllDelete => allowed(deletes, 403),
            Class::Metrics => allowed(metrics, 403),
            Class::Admin => allowed(admin, 403),
            Class::Probe => unreachable!(),
        },
        AccessMode::Private => match class {
            _ if !valid => Err(401),
            Class::Page => Ok(()),
            Class::Mailbox | Class::All => allowed(reads, 403),
            Class::MailboxDelete | Class::AllDelete => allowed(deletes, 403),
            Class::Metrics => allowed(metrics, 403),
            Class::Admin => allowed(admin, 403),
            Class::Probe => unreachable!(),
        },
    }
}

/// A row: method, path template ("" for routes outside the API document), request path,
/// body, class.
type Row = (&'static str, &'static str, String, &'static str, Class);

/// A message id that exists nowhere: deletes are allowed or refused, never done.
const NO_ID: &str = "019300000000700080000000000000aa";

fn api_table(id: &str) -> Vec<Row> {
    let mb = "bob@example.test";
    use Class::*;
    vec![
        (
            "GET",
            "/api/v1/mailboxes/{address}/messages",
            format!("/api/v1/mailboxes/{mb}/messages"),
            "",
            Mailbox,
        ),
        (
            "GET",
            "/api/v1/mailboxes/{address}/alias",
            format!("/api/v1/mailboxes/{mb}/alias"),
            "",
            Mailbox,
        ),
        (
            "DELETE",
            "/api/v1/mailboxes/{address}",
            "/api/v1/mailboxes/nobody@example.test".into(),
            "",
            MailboxDelete,
        ),
        (
            "GET",
            "/api/v1/messages",
            "/api/v1/messages".into(),
            "",
            All,
        ),
        (
            "GET",
            "/api/v1/messages/{id}",
            format!("/api/v1/messages/{id}"),
            "",
            Mailbox,
        ),
        (
            "GET",
            "/api/v1/messages/{id}/raw",
            format!("/api/v1/messages/{id}/raw"),
            "",
            Mailbox,
        ),
        (
            "GET",
            "/api/v1/messages/{id}/headers",
            format!("/api/v1/messages/{id}/headers"),
            "",
            Mailbox,
        ),
        (
            "GET",
            "/api/v1/messages/{id}/html",
            format!("/api/v1/messages/{id}/html"),
            "",
            Mailbox,
        ),
        (
            "GET",
            "/api/v1/messages/{id}/attachments/{part}",
            format!("/api/v1/messages/{id}/attachments/1"),
            "",
            Mailbox,
        ),
        (
            "POST",
            "/api/v1/messages/{id}/read",
            format!("/api/v1/messages/{id}/read"),
            "",
            Mailbox,
        ),
        (
            "DELETE",
            "/api/v1/messages/{id}/read",
            format!("/api/v1/messages/{id}/read"),
            "",
            Mailbox,
        ),
        (
            "POST",
            "/api/v1/messages/read",
            "/api/v1/messages/read".into(),
            r#"{"ids": ["019300000000700080000000000000aa"], "read": true}"#,
            Mailbox,
        ),
        (
            "POST",
            "/api/v1/messages/delete",
            "/api/v1/messages/delete".into(),
            r#"{"ids": ["019300000000700080000000000000aa"]}"#,
            MailboxDelete,
        ),
        (
            "PUT",
            "/api/v1/messages/{id}/tags",
            format!("/api/v1/messages/{id}/tags"),
            r#"{"tags": ["x"]}"#,
            Mailbox,
        ),
        (
            "POST",
            "/api/v1/messages/tags",
            "/api/v1/messages/tags".into(),
            r#"{"ids": ["019300000000700080000000000000aa"], "add": ["x"]}"#,
            Mailbox,
        ),
        ("GET", "/api/v1/tags", "/api/v1/tags".into(), "", All),
        (
            "DELETE",
            "/api/v1/messages/{id}",
            format!("/api/v1/messages/{NO_ID}"),
            "",
            MailboxDelete,
        ),
        (
            "GET",
            "/api/v1/search",
            "/api/v1/search?query=hello".into(),
            "",
            All,
        ),
        (
            "GET",
            "/api/v1/search",
            format!("/api/v1/search?query=mailbox:{mb}"),
            "",
            Mailbox,
        ),
        (
            "GET",
            "/api/v1/wait",
            "/api/v1/wait?timeout=1".into(),
            "",
            All,
        ),
        (
            "GET",
            "/api/v1/wait",
            format!("/api/v1/wait?timeout=1&query=mailbox:{mb}"),
            "",
            Mailbox,
        ),
        ("GET", "/api/v1/events", "/api/v1/events".into(), "", All),
        (
            "GET",
            "/api/v1/events",
            format!("/api/v1/events?mailbox={mb}"),
            "",
            Mailbox,
        ),
        ("GET", "/api/v1/access", "/api/v1/access".into(), "", Page),
        ("GET", "/api/v1/checks", "/api/v1/checks".into(), "", Page),
        (
            "GET",
            "/api/v1/messages/{id}/html-check",
            format!("/api/v1/messages/{id}/html-check"),
            "",
            Mailbox,
        ),
        (
            "GET",
            "/api/v1/messages/{id}/link-check",
            format!("/api/v1/messages/{id}/link-check"),
            "",
            Mailbox,
        ),
        ("GET", "", "/".into(), "", Page),
        ("GET", "", "/assets/app.js".into(), "", Page),
        ("GET", "", "/api/docs/".into(), "", Page),
        ("GET", "", "/api/v1/openapi.json".into(), "", Page),
        ("GET", "", "/healthz".into(), "", Probe),
        ("GET", "", "/readyz".into(), "", Probe),
        ("GET", "", "/metrics".into(), "", Metrics),
        ("GET", "", "/api/v1/admin/users".into(), "", Admin),
        ("POST", "", "/api/v1/admin/users".into(), "{}", Admin),
        (
            "PUT",
            "",
            "/api/v1/admin/users/nobody@example.test/password".into(),
            "{}",
            Admin,
        ),
        (
            "PUT",
            "",
            "/api/v1/admin/users/nobody@example.test/enabled".into(),
            "{}",
            Admin,
        ),
        ("GET", "", "/api/v1/admin/openapi.json".into(), "", Admin),
        // Not a route: a method the path does not have is closed like an undeclared route.
        ("PATCH", "", "/api/v1/access".into(), "", Admin),
    ]
}

fn mailpit_table() -> Vec<Row> {
    let none = format!("{{\"IDs\": [\"{NO_ID}\"]}}");
    let none: &'static str = Box::leak(none.into_boxed_str());
    use Class::*;
    vec![
        ("GET", "", "/api/v1/messages".into(), "", All),
        ("PUT", "", "/api/v1/messages".into(), none, All),
        ("DELETE", "", "/api/v1/messages".into(), none, AllDelete),
        ("GET", "", "/api/v1/search?query=hello".into(), "", All),
        (
            "DELETE",
            "",
            "/api/v1/search?query=nothing-matches-this".into(),
            "",
            AllDelete,
        ),
        ("GET", "", "/api/v1/message/latest".into(), "", All),
        ("GET", "", "/api/v1/message/latest/headers".into(), "", All),
        ("GET", "", "/api/v1/message/latest/raw".into(), "", All),
        ("GET", "", "/api/v1/message/latest/part/0".into(), "", All),
        (
            "GET",
            "",
            "/api/v1/message/latest/part/1/thumb".into(),
            "",
            All,
        ),
        (
            "GET",
            "",
            "/api/v1/message/latest/link-check".into(),
            "",
            All,
        ),
        (
            "GET",
            "",
            "/api/v1/message/latest/html-check".into(),
            "",
            All,
        ),
        ("GET", "", "/api/v1/info".into(), "", All),
        ("GET", "", "/api/v1/webui".into(), "", All),
        ("GET", "", "/view/latest.html".into(), "", All),
        ("GET", "", "/api/v1/chaos".into(), "", All),
        ("PUT", "", "/api/v1/chaos".into(), "{}", AllDelete),
        (
            "POST",
            "",
            "/api/v1/message/latest/release".into(),
            "{\"To\": [\"a@example.test\"]}",
            AllDelete,
        ),
        ("GET", "", "/api/v1/message/latest/sa-check".into(), "", All),
    ]
}

/// The state of a server in `mode`, with one message for bob, credentials of every kind
/// and no rate or failure limits (the table sends many requests from one address).
pub(crate) async fn state(mode: AccessMode, extra: impl FnOnce(&mut AccessConfig)) -> AppState {
    let dir = tempfile::tempdir().unwrap().keep();
    let htpasswd = dir.join("htpasswd");
    std::fs::write(&htpasswd, format!("{ALICE}\n")).unwrap();
    let mut access = AccessConfig {
        mode,
        tokens: [
            "reader-token:read",
            "deleter-token:delete",
            "metrics-token:metrics",
            "admin-token:admin",
        ]
        .iter()
        .map(|t| Token::parse(t).unwrap())
        .collect(),
        htpasswd: Some(htpasswd),
        auth_failures_per_minute: 0,
        ..AccessConfig::default()
    };
    extra(&mut access);
    let store = intake_store::memory::store();
    store
        .deliver(incoming(&["bob@example.test"], "hello"))
        .await
        .unwrap();
    let config = HttpConfig {
        rate_limit: None,
        max_streams_per_ip: 0,
        access,
        ..HttpConfig::default()
    };
    AppState::new(
        store.clone(),
        store.events().clone(),
        b"secret".to_vec(),
        config,
    )
    .with_metrics(Arc::new(|| "intake_up 1\n".to_string()))
}

async fn run(app: &axum::Router, mode: AccessMode, rows: &[Row]) -> Vec<String> {
    let mut wrong = Vec::new();
    for (method, _, path, body, class) in rows {
        for cred in CREDS {
            let mut headers = vec![("content-type", "application/json")];
            if let Some(h) = cred.header() {
                headers.push(("authorization", h));
            }
            let req = request(method, path, &headers, Body::from(*body));
            let (got, _, _) = send(app, req).await;
            let want = expected(mode, *class, cred);
            let ok = match want {
                Ok(()) => !matches!(got, 401 | 403 | 429),
                Err(code) => got == code,
            };
            if !ok {
                wrong.push(format!(
                    "{mode:?}: {method} {path} with {cred:?}: got {got}, want {want:?}"
                ));
            }
        }
    }
    wrong
}

#[tokio::test]
async fn every_route_of_both_listeners_in_every_mode_with_every_credential() {
    for mode in [AccessMode::Open, AccessMode::Public, AccessMode::Private] {
        let state = state(mode, |_| {}).await;
        let id = state
            .store
            .list_all(intake_core::Page::FIRST)
            .await
            .unwrap()
            .messages[0]
            .id
            .to_string();
        let app = crate::router(state.clone());
        let table = api_table(&id);

        // Every route the API document publishes is in the table.
        let req = request(
            "GET",
            "/api/v1/openapi.json",
            &[("authorization", "Bearer admin-token")],
            Body::empty(),
        );
        let (status, _, doc) = send(&app, req).await;
        assert_eq!(status, 200);
        let doc: serde_json::Value = serde_json::from_slice(&doc).unwrap();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                let m = method.to_uppercase();
                assert!(
                    table.iter().any(|(tm, tp, ..)| *tm == m && tp == path),
                    "{m} {path} is published but the access table does not say what it needs"
                );
            }
        }
        let mut wrong = run(&app, mode, &table).await;
        let mailpit = crate::mailpit_router(state);
        wrong.extend(run(&mailpit, mode, &mailpit_table()).await);
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}

#[tokio::test]
async fn metrics_open_to_a_trusted_network_without_a_credential() {
    for mode in [AccessMode::Public, AccessMode::Private] {
        let trusted = state(mode, |a| {
            a.metrics_networks = vec!["192.0.2.0/24".parse().unwrap()]
        })
        .await;
        let app = crate::router(trusted);
        let (status, _, body) = send(&app, request("GET", "/metrics", &[], Body::empty())).await;
        assert_eq!(
            (status, body.as_slice()),
            (200, &b"intake_up 1\n"[..]),
            "{mode:?}"
        );
        // The network opens the metrics only.
        let (status, _, _) =
            send(&app, request("GET", "/api/v1/messages", &[], Body::empty())).await;
        assert!(matches!(status, 401 | 403), "{mode:?}: {status}");
        let elsewhere = state(mode, |a| {
            a.metrics_networks = vec!["198.51.100.0/24".parse().unwrap()]
        })
        .await;
        let app = crate::router(elsewhere);
        let (status, _, _) = send(&app, request("GET", "/metrics", &[], Body::empty())).await;
        assert!(matches!(status, 401 | 403), "{mode:?}: {status}");
    }
}

#[tokio::test]
async fn admin_routes_do_not_exist_without_an_admin_credential() {
    for mode in [AccessMode::Open, AccessMode::Public, AccessMode::Private] {
        let state = state(mode, |a| {
            a.tokens.retain(|t| !t.scopes().covers(Scopes::ADMIN))
        })
        .await;
        let app = crate::router(state);
        for auth in [None, Some("Bearer reader-token")] {
            let headers: Vec<_> = auth.map(|a| ("authorization", a)).into_iter().collect();
            let (status, _, _) = send(
                &app,
                request("GET", "/api/v1/admin/users", &headers, Body::empty()),
            )
            .await;
            assert_eq!(status, 404, "{mode:?} {auth:?}");
        }
    }
}

#[tokio::test]
async fn a_route_registered_without_a_rule_needs_admin_in_every_mode() {
    for mode in [AccessMode::Open, AccessMode::Public, AccessMode::Private] {
        let state = state(mode, |_| {}).await;
        let undeclared = axum::Router::new().route(
            "/api/v1/undeclared",
            axum::routing::get(|| async { "open?" }),
        );
        let app = crate::finish(
            undeclared,
            &state,
            Default::default(),
            crate::error::Dialect::Json,
        );
        let get = |auth: Option<&'static str>| {
            let headers: Vec<_> = auth.map(|a| ("authorization", a)).into_iter().collect();
            request("GET", "/api/v1/undeclared", &headers, Body::empty())
        };
        let (status, _, _) = send(&app, get(None)).await;
        assert!(matches!(status, 401 | 403), "{mode:?}: {status}");
        let (status, _, _) = send(&app, get(Some("Bearer reader-token"))).await;
        assert_eq!(status, 403, "{mode:?}");
        let (status, _, _) = send(&app, get(Some("Bearer admin-token"))).await;
        assert_eq!(status, 200, "{mode:?}");
    }
}
