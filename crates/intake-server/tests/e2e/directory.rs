//! The `[directory]` end to end: the `intake` binary configured only by `INTAKE_*`
//! variables, against a slapd of the test's own and a scratch PostgreSQL database
//! (intake-directory's `testing` module). RCPT is checked in the directory (`550 5.1.1` for
//! an unknown address), AUTH binds or checks the stored hash, a login sends as the
//! addresses the directory gives it, and a directory that goes away is "could not decide":
//! `451`/`454`, never a 5xx, at once while the breaker is open.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use base64::Engine as _;
use intake_directory::sql::SqlServer;
use intake_directory::testing::{ADMIN, ADMIN_PW, BASE, Scratch, Slapd};

use crate::support::{Client, Process, free_port};

/// `AUTH PLAIN` with `login` and `password` in one line.
fn auth_plain(login: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{login}\0{password}"));
    format!("AUTH PLAIN {token}")
}

/// A session after EHLO.
async fn session(addr: SocketAddr) -> Client {
    let mut c = Client::greeted(addr).await;
    assert_eq!(c.cmd("EHLO client.test").await.code, 250);
    c
}

/// The head (`code x.y.z`) of the reply to RCPT TO:<rcpt> in a new transaction from a
/// remote sender, without a login.
async fn rcpt(addr: SocketAddr, rcpt: &str) -> String {
    let mut c = session(addr).await;
    let m = c.cmd("MAIL FROM:<someone@remote.test>").await;
    assert_eq!(m.code, 250, "{m:?}");
    c.cmd(&format!("RCPT TO:<{rcpt}>")).await.head()
}

/// The head of the reply to AUTH PLAIN with `login` and `password`.
async fn auth(addr: SocketAddr, login: &str, password: &str) -> String {
    session(addr)
        .await
        .cmd(&auth_plain(login, password))
        .await
        .head()
}

/// After logging in as `login`, the head of the reply to MAIL FROM:<from> for each of
/// `froms` (one transaction each).
async fn mail_from_after_login(
    addr: SocketAddr,
    login: &str,
    password: &str,
    froms: &[&str],
) -> Vec<String> {
    let mut c = session(addr).await;
    let a = c.cmd(&auth_plain(login, password)).await;
    assert_eq!(a.head(), "235 2.7.0", "{a:?}");
    let mut heads = Vec::new();
    for from in froms {
        heads.push(c.cmd(&format!("MAIL FROM:<{from}>")).await.head());
        assert_eq!(c.cmd("RSET").await.code, 250);
    }
    heads
}

/// What every test sets: one domain, AUTH on the default listener without TLS (loopback),
/// recipients and logins in the directory.
fn common_env() -> Vec<(&'static str, String)> {
    vec![
        ("INTAKE_SMTP__DOMAINS", r#"["example.test"]"#.into()),
        ("INTAKE_AUTH__ENABLED", "true".into()),
        ("INTAKE_AUTH__ALLOW_PLAINTEXT", "true".into()),
        ("INTAKE_AUTH__DIRECTORY", "true".into()),
        ("INTAKE_RECIPIENTS__DIRECTORY", "true".into()),
        ("INTAKE_DIRECTORY__TIMEOUT", "2s".into()),
        ("INTAKE_DIRECTORY__BREAKER_COOLDOWN", "60s".into()),
    ]
}

fn start(data: &std::path::Path, env: &[(&'static str, String)]) -> Process {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Process::start(data, &env)
}

/// Asserts a reply head is a temporary failure (4xx), never a refusal for good.
fn temporary(head: &str, what: &str) {
    assert!(head.starts_with('4'), "{what}: expected 4xx, got {head}");
}

#[tokio::test]
async fn ldap_recipients_logins_and_senders_over_smtp_then_slapd_goes_away() {
    let mut slapd = Slapd::start();
    let dir = tempfile::tempdir().unwrap();
    let submission_port = free_port();
    let mut env = common_env();
    env.extend([
        ("INTAKE_DIRECTORY__TYPE", "ldap".into()),
        ("INTAKE_DIRECTORY__URL", slapd.url()),
        ("INTAKE_DIRECTORY__BIND_DN", ADMIN.into()),
        ("INTAKE_DIRECTORY__BIND_PASSWORD", ADMIN_PW.into()),
        ("INTAKE_DIRECTORY__BASE", BASE.into()),
        (
            "INTAKE_DIRECTORY__RECIPIENT_FILTER",
            "(|(mail=%s)(mailAlternateAddress=%s))".into(),
        ),
        ("INTAKE_DIRECTORY__LOGIN_FILTER", "(uid=%s)".into()),
        // A second listener whose logins are Intake's own users, not the directory's.
        ("INTAKE_LISTENER__0__NAME", "own-users".into()),
        (
            "INTAKE_LISTENER__0__ADDRESS",
            format!("127.0.0.1:{submission_port}"),
        ),
        ("INTAKE_LISTENER__0__AUTH", "optional".into()),
        ("INTAKE_LISTENER__0__ALLOW_PLAINTEXT_AUTH", "true".into()),
        ("INTAKE_LISTENER__0__AUTH_DIRECTORY", "false".into()),
    ]);
    let intake = start(&dir.path().join("data"), &env);
    let addr = intake.addr;

    assert_eq!(rcpt(addr, "alice@example.test").await, "250 2.1.5");
    assert_eq!(rcpt(addr, "alice.alt@example.test").await, "250 2.1.5");
    assert_eq!(rcpt(addr, "nobody@example.test").await, "550 5.1.1");
    assert_eq!(rcpt(addr, "*@example.test").await, "550 5.1.1");

    assert_eq!(auth(addr, "alice", "alice-pw").await, "235 2.7.0");
    assert_eq!(auth(addr, "alice", "carol-pw").await, "535 5.7.8");
    assert_eq!(auth(addr, "*)(uid=*", "alice-pw").await, "535 5.7.8");
    assert_eq!(auth(addr, "*", "alice-pw").await, "535 5.7.8");

    // alice (a uid, not an address) sends as the addresses of her entry, and only those.
    assert_eq!(
        mail_from_after_login(
            addr,
            "alice",
            "alice-pw",
            &[
                "alice@example.test",
                "Alice.Alt@example.test",
                "carol@example.test",
                "alice@elsewhere.test",
            ]
        )
        .await,
        ["250 2.1.0", "250 2.1.0", "553 5.7.1", "553 5.7.1"]
    );

    // The listener with auth_directory = false: the directory's password is not a login.
    let own: SocketAddr = format!("127.0.0.1:{submission_port}").parse().unwrap();
    assert_eq!(auth(own, "alice", "alice-pw").await, "535 5.7.8");

    // slapd goes away; something on its port accepts and never answers (a hung directory).
    let port = slapd.port;
    slapd.stop();
    let _hung = TcpListener::bind(("127.0.0.1", port)).expect("slapd's port again");
    let started = Instant::now();
    let first = rcpt(addr, "carol@example.test").await;
    temporary(&first, "RCPT, the directory hung");
    assert_eq!(first, "451 4.4.3");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "the first lookup waited for directory.timeout: {:?}",
        started.elapsed()
    );
    // The breaker is open: every other question is "could not decide" at once, never 5xx.
    let started = Instant::now();
    for who in [
        "dave@example.test",
        "erin@example.test",
        "frank@example.test",
    ] {
        let head = rcpt(addr, who).await;
        temporary(&head, who);
        assert_eq!(head, "451 4.4.3", "{who}");
    }
    assert_eq!(auth(addr, "carol", "carol-pw").await, "454 4.7.0");
    assert_eq!(auth(addr, "alice", "wrong").await, "454 4.7.0");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "without waiting for the directory: {:?}",
        started.elapsed()
    );
    // A yes already cached still stands (cache_ttl): alice's address and her login.
    assert_eq!(rcpt(addr, "alice@example.test").await, "250 2.1.5");
    assert_eq!(auth(addr, "alice", "alice-pw").await, "235 2.7.0");
}

#[tokio::test]
async fn sql_recipients_logins_and_senders_over_smtp_then_the_database_goes_away() {
    let db = Scratch::create(SqlServer::Postgres).await;
    db.exec(&[
        "CREATE TABLE customers (login text PRIMARY KEY, password text NOT NULL)",
        "CREATE TABLE mailboxes (address text PRIMARY KEY, owner text)",
        "INSERT INTO customers VALUES ('one@example.test', '{PLAIN}one-pw')",
        "INSERT INTO customers VALUES ('acme', '{PLAIN}acme-pw')",
        "INSERT INTO mailboxes VALUES ('inbound@example.test', NULL)",
        "INSERT INTO mailboxes VALUES ('sales@example.test', 'acme')",
        "INSERT INTO mailboxes VALUES ('billing@example.test', 'acme')",
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = common_env();
    env.extend([
        ("INTAKE_DIRECTORY__TYPE", "sql".into()),
        ("INTAKE_DIRECTORY__URL", db.url()),
        (
            "INTAKE_DIRECTORY__PASSWORD_QUERY",
            "SELECT password FROM customers WHERE login = $1".into(),
        ),
        (
            "INTAKE_DIRECTORY__RECIPIENT_QUERY",
            "SELECT 1 FROM mailboxes WHERE address = $1".into(),
        ),
        (
            "INTAKE_DIRECTORY__SENDERS_QUERY",
            "SELECT address FROM mailboxes WHERE owner = $1".into(),
        ),
    ]);
    let intake = start(&dir.path().join("data"), &env);
    let addr = intake.addr;

    assert_eq!(rcpt(addr, "inbound@example.test").await, "250 2.1.5");
    assert_eq!(rcpt(addr, "nobody@example.test").await, "550 5.1.1");
    assert_eq!(auth(addr, "one@example.test", "one-pw").await, "235 2.7.0");
    assert_eq!(auth(addr, "one@example.test", "two-pw").await, "535 5.7.8");
    assert_eq!(auth(addr, "' OR '1'='1", "one-pw").await, "535 5.7.8");

    // A login that is an address sends as itself; the query's rows add others.
    assert_eq!(
        mail_from_after_login(
            addr,
            "one@example.test",
            "one-pw",
            &["one@example.test", "sales@example.test"]
        )
        .await,
        ["250 2.1.0", "553 5.7.1"]
    );
    assert_eq!(
        mail_from_after_login(
            addr,
            "acme",
            "acme-pw",
            &[
                "sales@example.test",
                "billing@example.test",
                "one@example.test"
            ]
        )
        .await,
        ["250 2.1.0", "250 2.1.0", "553 5.7.1"]
    );

    // The database goes away (dropped, its sessions ended): could not decide, never 5xx.
    drop(db);
    let first = rcpt(addr, "new@example.test").await;
    temporary(&first, "RCPT, the database gone");
    assert_eq!(first, "451 4.4.3");
    let started = Instant::now();
    for who in ["dave@example.test", "erin@example.test"] {
        assert_eq!(rcpt(addr, who).await, "451 4.4.3", "{who}");
    }
    assert_eq!(auth(addr, "acme", "wrong").await, "454 4.7.0");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the breaker answers at once: {:?}",
        started.elapsed()
    );
}
