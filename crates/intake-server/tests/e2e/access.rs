//! Who may read what: every route of the OpenAPI document, in every access mode, with and
//! without each kind of credential. The table below is the specification; a route the
//! server publishes but the table does not know fails the test, so a new route cannot be
//! forgotten.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http;
use crate::support::{TestServer, store_message};

/// `hunter2` under SHA-512-crypt (`openssl passwd -6 -salt saltsalt hunter2`).
const ALICE: &str = "alice:$6$saltsalt$8iYtNHxjWRl.NF6oNZ5tF.iKFlQREaXBLlSmZKP6dy9l5z3vsooWNW0/GZ6Nej73/TFug6pIPSqbJoCT6dfnj.";

/// What a route needs, as the issue specifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// The page, assets, docs, what-may-I-do.
    Page,
    /// Read one mailbox (or a message by id).
    Mailbox,
    /// Delete in one mailbox (or a message by id).
    MailboxDelete,
    /// Spans all mailboxes.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cred {
    None,
    WrongBearer,
    WrongBasic,
    Reader,
    Deleter,
    Admin,
    /// The htpasswd user (default scopes: read, delete).
    Alice,
}

const CREDS: [Cred; 7] = [
    Cred::None,
    Cred::WrongBearer,
    Cred::WrongBasic,
    Cred::Reader,
    Cred::Deleter,
    Cred::Admin,
    Cred::Alice,
];

impl Cred {
    fn header(self) -> Option<String> {
        use base64_basic as b;
        match self {
            Cred::None => None,
            Cred::WrongBearer => Some("Bearer not-a-token".into()),
            Cred::WrongBasic => Some(format!("Basic {}", b("alice:wrong"))),
            Cred::Reader => Some("Bearer reader-token".into()),
            Cred::Deleter => Some("Bearer deleter-token".into()),
            Cred::Admin => Some("Bearer admin-token".into()),
            Cred::Alice => Some(format!("Basic {}", b("alice:hunter2"))),
        }
    }
}

/// The basic-auth credential `user:password`, base64 encoded.
fn base64_basic(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Allowed, or the status that refused.
fn expected(mode: &str, class: Class, cred: Cred) -> Result<(), u16> {
    let valid = matches!(
        cred,
        Cred::Reader | Cred::Deleter | Cred::Admin | Cred::Alice
    );
    let reads = matches!(cred, Cred::Reader | Cred::Admin | Cred::Alice);
    let deletes = matches!(cred, Cred::Deleter | Cred::Admin | Cred::Alice);
    match mode {
        "open" => Ok(()),
        _ if matches!(cred, Cred::WrongBearer | Cred::WrongBasic) => Err(401),
        "public" => match class {
            Class::Page | Class::Mailbox | Class::MailboxDelete => Ok(()),
            Class::All if cred == Cred::None => Err(403),
            Class::All if reads => Ok(()),
            Class::All => Err(403),
        },
        "private" => match class {
            _ if !valid => Err(401),
            Class::Page => Ok(()),
            Class::Mailbox | Class::All if reads => Ok(()),
            Class::MailboxDelete if deletes => Ok(()),
            _ => Err(403),
        },
        _ => unreachable!(),
    }
}

/// The specification: each route of the API (method, template) and the class of each form
/// of request to it (path with values filled in, query).
fn table(id: &str) -> Vec<(&'static str, &'static str, String, Class)> {
    let mb = "bob@example.test";
    vec![
        (
            "GET",
            "/api/v1/mailboxes/{address}/messages",
            format!("/api/v1/mailboxes/{mb}/messages"),
            Class::Mailbox,
        ),
        (
            "GET",
            "/api/v1/mailboxes/{address}/alias",
            format!("/api/v1/mailboxes/{mb}/alias"),
            Class::Mailbox,
        ),
        (
            "DELETE",
            "/api/v1/mailboxes/{address}",
            "/api/v1/mailboxes/nobody@example.test".into(),
            Class::MailboxDelete,
        ),
        (
            "GET",
            "/api/v1/messages",
            "/api/v1/messages".into(),
            Class::All,
        ),
        (
            "GET",
            "/api/v1/messages/{id}",
            format!("/api/v1/messages/{id}"),
            Class::Mailbox,
        ),
        (
            "GET",
            "/api/v1/messages/{id}/raw",
            format!("/api/v1/messages/{id}/raw"),
            Class::Mailbox,
        ),
        (
            "GET",
            "/api/v1/messages/{id}/headers",
            format!("/api/v1/messages/{id}/headers"),
            Class::Mailbox,
        ),
        (
            "GET",
            "/api/v1/messages/{id}/html",
            format!("/api/v1/messages/{id}/html"),
            Class::Mailbox,
        ),
        (
            "GET",
            "/api/v1/messages/{id}/attachments/{part}",
            format!("/api/v1/messages/{id}/attachments/1"),
            Class::Mailbox,
        ),
        (
            "POST",
            "/api/v1/messages/{id}/read",
            format!("/api/v1/messages/{id}/read"),
            Class::Mailbox,
        ),
        (
            "DELETE",
            "/api/v1/messages/{id}/read",
            format!("/api/v1/messages/{id}/read"),
            Class::Mailbox,
        ),
        // Without a body: allowed is a 4xx about the body, refused a 401 or 403.
        (
            "POST",
            "/api/v1/messages/read",
            "/api/v1/messages/read".into(),
            Class::Mailbox,
        ),
        (
            "POST",
            "/api/v1/messages/delete",
            "/api/v1/messages/delete".into(),
            Class::MailboxDelete,
        ),
        (
            "PUT",
            "/api/v1/messages/{id}/tags",
            format!("/api/v1/messages/{id}/tags"),
            Class::Mailbox,
        ),
        (
            "POST",
            "/api/v1/messages/tags",
            "/api/v1/messages/tags".into(),
            Class::Mailbox,
        ),
        ("GET", "/api/v1/tags", "/api/v1/tags".into(), Class::All),
        // A message that does not exist: the delete is allowed or refused, never done.
        (
            "DELETE",
            "/api/v1/messages/{id}",
            "/api/v1/messages/019300000000700080000000000000aa".into(),
            Class::MailboxDelete,
        ),
        (
            "GET",
            "/api/v1/search",
            "/api/v1/search?query=hello".into(),
            Class::All,
        ),
        (
            "GET",
            "/api/v1/search",
            format!("/api/v1/search?query=mailbox:{mb}"),
            Class::Mailbox,
        ),
        (
            "GET",
            "/api/v1/wait",
            "/api/v1/wait?timeout=1".into(),
            Class::All,
        ),
        (
            "GET",
            "/api/v1/wait",
            format!("/api/v1/wait?timeout=1&query=mailbox:{mb}"),
            Class::Mailbox,
        ),
        ("GET", "/api/v1/events", "/api/v1/events".into(), Class::All),
        (
            "GET",
            "/api/v1/events",
            format!("/api/v1/events?mailbox={mb}"),
            Class::Mailbox,
        ),
        (
            "GET",
            "/api/v1/access",
            "/api/v1/access".into(),
            Class::Page,
        ),
        (
            "GET",
            "/api/v1/checks",
            "/api/v1/checks".into(),
            Class::Page,
        ),
        (
            "GET",
            "/api/v1/messages/{id}/html-check",
            format!("/api/v1/messages/{id}/html-check"),
            Class::Mailbox,
        ),
        (
            "GET",
            "/api/v1/messages/{id}/link-check",
            format!("/api/v1/messages/{id}/link-check"),
            Class::Mailbox,
        ),
        // Not in the OpenAPI document: the page, its assets, the docs.
        ("GET", "", "/".into(), Class::Page),
        ("GET", "", "/assets/app.js".into(), Class::Page),
        ("GET", "", "/api/docs/".into(), Class::Page),
        ("GET", "", "/api/v1/openapi.json".into(), Class::Page),
    ]
}

/// Sends a request and reads only the status line (event streams never end).
pub async fn status<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    method: &str,
    path: &str,
    auth: Option<&str>,
) -> u16 {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut byte))
            .await
            .expect("status line in time")
            .unwrap();
        assert!(n > 0, "closed before the status line: {method} {path}");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

async fn start(mode: &str, extra: &str) -> (TestServer, SocketAddr, String) {
    // Kept on disk for the server's whole life (a few bytes under the temp directory).
    let dir = tempfile::tempdir().unwrap().keep();
    let htpasswd = dir.join("htpasswd");
    std::fs::write(&htpasswd, format!("# users\n{ALICE}\n")).unwrap();
    let failures = if extra.contains("auth_failures_per_minute") {
        ""
    } else {
        "auth_failures_per_minute = 0\n"
    };
    let server = TestServer::start(&format!(
        "[http]\naccess = \"{mode}\"\nrate_limit = 0\nmax_connections_per_ip = 0\nmax_streams_per_ip = 0\n\
         {failures}htpasswd = \"{}\"\n\
         tokens = [\"reader-token:read\", \"deleter-token:delete\", \"admin-token:admin\"]\n{extra}",
        htpasswd.display()
    ))
    .await;
    store_message(
        server.addr,
        "a@example.net",
        &["bob@example.test"],
        "Subject: hello\r\n\r\nhello\r\n",
    )
    .await;
    let listing = server
        .running
        .store
        .list_mailbox("bob@example.test", intake_core::Page::FIRST)
        .await
        .unwrap();
    let id = listing.messages[0].id.to_string();
    let addr = server.running.http_addr.unwrap();
    (server, addr, id)
}

#[tokio::test]
async fn every_route_in_every_mode_with_every_credential() {
    for mode in ["open", "public", "private"] {
        let (server, addr, id) = start(mode, "").await;
        let table = table(&id);

        // Every route the server publishes is in the table.
        let doc = http::request(
            addr,
            "GET",
            "/api/v1/openapi.json",
            &[("Authorization", "Bearer admin-token")],
        )
        .await;
        assert_eq!(doc.status, 200);
        let doc = doc.json();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                let m = method.to_uppercase();
                assert!(
                    table.iter().any(|(tm, tp, _, _)| *tm == m && tp == path),
                    "{m} {path} is published but the access table does not say what it needs"
                );
            }
        }

        let mut cases = Vec::new();
        for (method, _, path, class) in &table {
            for cred in CREDS {
                cases.push((*method, path.clone(), *class, cred));
            }
        }
        let results = futures_util::future::join_all(cases.iter().map(|(m, p, _, c)| async move {
            let s = TcpStream::connect(addr).await.unwrap();
            status(s, m, p, c.header().as_deref()).await
        }))
        .await;
        let mut wrong = Vec::new();
        for ((method, path, class, cred), got) in cases.iter().zip(results) {
            let want = expected(mode, *class, *cred);
            let ok = match want {
                Ok(()) => !matches!(got, 401 | 403 | 429),
                Err(code) => got == code,
            };
            if !ok {
                wrong.push(format!(
                    "{mode}: {method} {path} with {cred:?}: got {got}, want {want:?}"
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        server.stop().await;
    }
}

#[tokio::test]
async fn public_mode_can_forbid_anonymous_deletes() {
    let (server, addr, id) = start("public", "public_delete = false\n").await;
    let path = format!("/api/v1/messages/{id}");
    let s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(status(s, "DELETE", &path, None).await, 403);
    let s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        status(s, "DELETE", &path, Some("Bearer deleter-token")).await,
        204
    );
    let info = http::get(addr, "/api/v1/access").await.json();
    assert_eq!(info["mode"], "public");
    assert_eq!(info["all_mail"], false);
    assert_eq!(info["delete"], false);
    let info = http::request(
        addr,
        "GET",
        "/api/v1/access",
        &[("Authorization", "Bearer admin-token")],
    )
    .await
    .json();
    assert_eq!(info["all_mail"], true);
    assert_eq!(info["delete"], true);
    assert_eq!(
        info["scopes"],
        serde_json::json!(["read", "delete", "metrics", "admin"]),
        "admin covers every scope"
    );
    server.stop().await;
}

#[tokio::test]
async fn private_mode_challenges_browsers_for_basic_auth() {
    let (server, addr, _) = start("private", "").await;
    let r = http::get(addr, "/").await;
    assert_eq!(r.status, 401);
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .starts_with("Basic realm="),
        "{:?}",
        r.headers
    );
    let r = http::request(
        addr,
        "GET",
        "/",
        &[(
            "Authorization",
            &format!("Basic {}", base64_basic("alice:hunter2")),
        )],
    )
    .await;
    assert_eq!(r.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn wrong_credentials_are_rate_limited_and_the_limit_stops_guessing() {
    let (server, addr, _) = start("private", "auth_failures_per_minute = 3\n").await;
    let mut codes = Vec::new();
    for i in 0..5 {
        let s = TcpStream::connect(addr).await.unwrap();
        let bad = format!("Basic {}", base64_basic(&format!("alice:guess{i}")));
        codes.push(status(s, "GET", "/api/v1/messages", Some(&bad)).await);
    }
    assert_eq!(codes, [401, 401, 401, 429, 429]);
    // Locked out: even the right password is not checked now.
    let s = TcpStream::connect(addr).await.unwrap();
    let good = format!("Basic {}", base64_basic("alice:hunter2"));
    assert_eq!(status(s, "GET", "/api/v1/messages", Some(&good)).await, 429);
    server.stop().await;
}

#[tokio::test]
async fn the_htpasswd_file_is_read_again_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, format!("{ALICE}\n")).unwrap();
    let server = TestServer::start(&format!(
        "[http]\naccess = \"private\"\nhtpasswd = \"{}\"\n",
        htpasswd.display()
    ))
    .await;
    let addr = server.running.http_addr.unwrap();
    let carol = format!("Basic {}", base64_basic("carol:hunter2"));
    let s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        status(s, "GET", "/api/v1/messages", Some(&carol)).await,
        401
    );
    let line = ALICE.replacen("alice", "carol", 1);
    std::fs::write(&htpasswd, format!("{ALICE}\n{line}\n")).unwrap();
    crate::support::eventually("the new user is read (at most a second later)", || async {
        let s = TcpStream::connect(addr).await.unwrap();
        status(s, "GET", "/api/v1/messages", Some(&carol)).await == 200
    })
    .await;
    // Removing a user takes effect as well (and forgets verified passwords).
    std::fs::write(&htpasswd, format!("{line}\n")).unwrap();
    let alice = format!("Basic {}", base64_basic("alice:hunter2"));
    crate::support::eventually("the removed user is refused", || async {
        let s = TcpStream::connect(addr).await.unwrap();
        status(s, "GET", "/api/v1/messages", Some(&alice)).await == 401
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn credentials_never_reach_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let http_addr = format!("127.0.0.1:{}", crate::support::free_port());
    let p = crate::support::Process::start_logging(
        &dir.path().join("data"),
        &[
            ("INTAKE_HTTP__LISTEN", &http_addr),
            ("INTAKE_HTTP__ACCESS", "private"),
            ("INTAKE_HTTP__TOKENS", "[\"sup3r-secret-token:read\"]"),
            ("INTAKE_LOG__LEVEL", "trace"),
        ],
        std::process::Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let addr: SocketAddr = http_addr.parse().unwrap();
    for auth in ["Bearer sup3r-secret-token", "Bearer wr0ng-secret-token"] {
        let s = TcpStream::connect(addr).await.unwrap();
        status(s, "GET", "/api/v1/messages", Some(auth)).await;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_intake"))
        .arg("check-config")
        .env("INTAKE_HTTP__ACCESS", "private")
        .env(
            "INTAKE_HTTP__TOKENS",
            "[\"sup3r-secret-token:read\", \"bad\"]",
        )
        .output()
        .unwrap();
    p.terminate();
    let text = std::fs::read_to_string(&log).unwrap()
        + &String::from_utf8_lossy(&out.stdout)
        + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("wrong credentials"),
        "the failure is logged: {text}"
    );
    assert!(!text.contains("sup3r-secret"), "{text}");
    assert!(!text.contains("wr0ng-secret"), "{text}");
}

#[test]
fn a_public_address_without_an_access_mode_is_refused_naming_the_choices() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_intake"))
        .arg("check-config")
        .env("INTAKE_HTTP__LISTEN", "0.0.0.0:8025")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    for word in ["http.access", "\"public\"", "\"private\"", "\"open\""] {
        assert!(err.contains(word), "{word} not in: {err}");
    }
    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_intake"))
        .arg("check-config")
        .env("INTAKE_HTTP__LISTEN", "0.0.0.0:8025")
        .env("INTAKE_HTTP__ACCESS", "public")
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[tokio::test]
async fn https_with_the_smtp_certificate_and_a_verifying_client() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let server = TestServer::start(&format!(
        "[tls]\ncertificate = \"{}\"\nkey = \"{}\"\n[http]\ntls = true\n",
        cert.display(),
        key.display()
    ))
    .await;
    let addr = server.running.http_addr.unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .expect("the certificate verifies");
    assert_eq!(status(tls, "GET", "/api/v1/messages", None).await, 200);
    // Plain HTTP on the HTTPS port gets no answer.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), plain.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert!(!String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    server.stop().await;
}

#[tokio::test]
async fn the_users_admin_api_needs_the_admin_scope() {
    let (server, addr, _) = start("public", "").await;
    let list = "/api/v1/admin/users";
    for (auth, want) in [
        (None, 403),
        (Some("Bearer reader-token"), 403),
        (Some("Bearer deleter-token"), 403),
        (Some("Bearer admin-token"), 200),
    ] {
        let s = TcpStream::connect(addr).await.unwrap();
        assert_eq!(status(s, "GET", list, auth).await, want, "{auth:?}");
    }
    server.stop().await;
}
