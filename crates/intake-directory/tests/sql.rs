//! The SQL directory against the real PostgreSQL (127.0.0.1:5432, user postgres) and
//! MariaDB (127.0.0.1:3306, root) of the machine: a scratch database per test, dropped
//! afterwards. No server: the test fails and says so (CI has both).
//! `INTAKE_TEST_POSTGRES_URL` / `INTAKE_TEST_MYSQL_URL` point elsewhere.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ManualClock, login};
use intake_directory::sql::SqlServer as Server;
use intake_directory::testing::{Scratch, free_port};
use intake_directory::{
    Directory, DirectoryError, DirectoryKind, DirectorySettings, Guarded, LoginResult,
};

/// The scratch database's settings with these queries.
fn settings(db: &Scratch, password_query: &str, recipient_query: &str) -> DirectorySettings {
    let mut s = DirectorySettings::new(DirectoryKind::Sql, db.url());
    s.password_query = Some(password_query.into());
    s.recipient_query = Some(recipient_query.into());
    s.timeout = Duration::from_secs(3);
    s
}

/// `openssl passwd -6` / `-5`: SHA-512-crypt / SHA-256-crypt as an application writes them.
fn openssl_passwd(alg: &str, password: &str) -> String {
    let out = Command::new("openssl")
        .args(["passwd", alg, password])
        .output()
        .expect("openssl");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `slappasswd -h {SSHA}`: a salted SHA-1 with its `{SSHA}` prefix.
fn ssha(password: &str) -> String {
    let out = Command::new("/usr/sbin/slappasswd")
        .args(["-h", "{SSHA}", "-s", password])
        .output()
        .expect("slappasswd (apt-get install slapd)");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// bcrypt as PHP's `password_hash` and Dovecot's `doveadm pw -s BLF-CRYPT` write it (`$2y$`).
fn bcrypt_2y(password: &str) -> String {
    bcrypt::hash_with_result(password, 5)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY)
}

/// The application's tables: customers with hashes in several schemes, and mailboxes.
async fn prepare(db: &Scratch) {
    let customers = [
        (
            "one@example.test",
            format!("{{SHA512-CRYPT}}{}", openssl_passwd("-6", "one-pw")),
        ),
        (
            "five@example.test",
            format!("{{SHA256-CRYPT}}{}", openssl_passwd("-5", "five-pw")),
        ),
        ("bare@example.test", openssl_passwd("-6", "bare-pw")),
        ("ssha@example.test", ssha("ssha-pw")),
        (
            "argon@example.test",
            format!("{{ARGON2ID}}{}", intake_core::password::hash("argon-pw")),
        ),
        ("plain@example.test", "{PLAIN}plain-pw".to_string()),
        (
            "blf@example.test",
            format!("{{BLF-CRYPT}}{}", bcrypt_2y("blf-pw")),
        ),
        ("bcrypt@example.test", bcrypt_2y("bcrypt-pw")),
    ];
    let bool_type = if db.server == Server::Postgres {
        "boolean"
    } else {
        "bool"
    };
    let mut statements = vec![
        format!(
            "CREATE TABLE customers (login varchar(200) PRIMARY KEY, password text NOT NULL, active {bool_type} NOT NULL DEFAULT true)"
        ),
        "CREATE TABLE mailboxes (address varchar(200) PRIMARY KEY)".to_string(),
        "INSERT INTO mailboxes VALUES ('inbound@example.test')".to_string(),
        "INSERT INTO customers VALUES ('off@example.test', '{PLAIN}off-pw', false)".to_string(),
    ];
    for (login, hash) in customers {
        statements.push(format!(
            "INSERT INTO customers VALUES ('{login}', '{hash}', true)"
        ));
    }
    let refs: Vec<&str> = statements.iter().map(String::as_str).collect();
    db.exec(&refs).await;
}

fn queries(server: Server) -> (&'static str, &'static str) {
    match server {
        Server::Postgres => (
            "SELECT password FROM customers WHERE login = $1 AND active",
            "SELECT 1 FROM mailboxes WHERE address = $1",
        ),
        Server::Mysql => (
            "SELECT password FROM customers WHERE login = ? AND active",
            "SELECT 1 FROM mailboxes WHERE address = ?",
        ),
    }
}

fn open(s: &DirectorySettings, clock: &Arc<ManualClock>) -> Guarded {
    s.open_with_clock(clock.clone()).unwrap()
}

async fn recipients_and_logins(server: Server) {
    let db = Scratch::create(server).await;
    prepare(&db).await;
    let (pq, rq) = queries(server);
    let d = open(&settings(&db, pq, rq), &ManualClock::new());
    assert!(d.recipient_exists("inbound@example.test").await.unwrap());
    assert!(!d.recipient_exists("nobody@example.test").await.unwrap());
    assert!(!d.recipient_exists("' OR '1'='1").await.unwrap());
    for (user, pw) in [
        ("one@example.test", "one-pw"),
        ("five@example.test", "five-pw"),
        ("bare@example.test", "bare-pw"),
        ("ssha@example.test", "ssha-pw"),
        ("argon@example.test", "argon-pw"),
        ("plain@example.test", "plain-pw"),
        ("blf@example.test", "blf-pw"),
        ("bcrypt@example.test", "bcrypt-pw"),
    ] {
        assert_eq!(login(&d, user, pw).await, LoginResult::Valid, "{user}");
        assert_eq!(
            login(&d, user, &format!("{pw}x")).await,
            LoginResult::Invalid,
            "{user} wrong"
        );
    }
    assert_eq!(
        login(&d, "off@example.test", "off-pw").await,
        LoginResult::Invalid,
        "inactive"
    );
    assert_eq!(
        d.verify_login("nobody@example.test", "one-pw")
            .await
            .unwrap(),
        LoginResult::Invalid
    );
    assert_eq!(
        login(&d, "one@example.test", "").await,
        LoginResult::Invalid
    );
    // Injection: the login is a bound parameter, never SQL.
    assert_eq!(
        login(&d, "' OR '1'='1", "one-pw").await,
        LoginResult::Invalid
    );
    assert_eq!(
        d.verify_login("x' OR login = 'one@example.test", "one-pw")
            .await
            .unwrap(),
        LoginResult::Invalid
    );
}

async fn new_rows_at_once_changed_rows_after_the_ttl(server: Server) {
    let db = Scratch::create(server).await;
    prepare(&db).await;
    let (pq, rq) = queries(server);
    let clock = ManualClock::new();
    let s = settings(&db, pq, rq);
    let d = open(&s, &clock);
    assert_eq!(
        login(&d, "one@example.test", "one-pw").await,
        LoginResult::Valid
    );
    assert!(!d.recipient_exists("new@example.test").await.unwrap());

    let two = openssl_passwd("-6", "two-pw");
    db.exec(&[
        &format!(
            "INSERT INTO customers VALUES ('two@example.test', '{{SHA512-CRYPT}}{two}', true)"
        ),
        "INSERT INTO mailboxes VALUES ('new@example.test')",
    ])
    .await;
    assert_eq!(
        login(&d, "two@example.test", "two-pw").await,
        LoginResult::Valid,
        "at once"
    );
    assert!(
        !d.recipient_exists("new@example.test").await.unwrap(),
        "the cached no"
    );
    clock.advance(s.negative_cache_ttl);
    assert!(d.recipient_exists("new@example.test").await.unwrap());

    let changed = openssl_passwd("-6", "one-new");
    db.exec(&[&format!(
        "UPDATE customers SET password = '{{SHA512-CRYPT}}{changed}' WHERE login = 'one@example.test'"
    )])
    .await;
    assert_eq!(
        login(&d, "one@example.test", "one-pw").await,
        LoginResult::Valid,
        "cached"
    );
    assert_eq!(
        login(&d, "one@example.test", "one-new").await,
        LoginResult::Valid
    );
    clock.advance(s.cache_ttl);
    assert_eq!(
        login(&d, "one@example.test", "one-pw").await,
        LoginResult::Invalid
    );
    db.exec(&["DELETE FROM mailboxes WHERE address = 'inbound@example.test'"])
        .await;
    assert!(!d.recipient_exists("inbound@example.test").await.unwrap());
}

async fn count_queries_and_several_placeholders(server: Server) {
    let db = Scratch::create(server).await;
    prepare(&db).await;
    let (pq, _) = queries(server);
    let rq = match server {
        Server::Postgres => {
            "SELECT count(*) FROM mailboxes WHERE address = $1 OR address = lower($1)"
        }
        Server::Mysql => "SELECT count(*) FROM mailboxes WHERE address = ? OR address = lower(?)",
    };
    let d = open(&settings(&db, pq, rq), &ManualClock::new());
    assert!(d.recipient_exists("INBOUND@example.test").await.unwrap());
    assert!(
        !d.recipient_exists("nobody@example.test").await.unwrap(),
        "a count of 0 is no"
    );
}

async fn a_bad_query_is_could_not_decide(server: Server) {
    let db = Scratch::create(server).await;
    prepare(&db).await;
    let (pq, rq) = queries(server);
    let d = open(
        &settings(&db, &pq.replace("customers", "no_such_table"), rq),
        &ManualClock::new(),
    );
    assert!(matches!(
        d.verify_login("one@example.test", "one-pw").await,
        Err(DirectoryError::Sql(_))
    ));
}

/// `senders_query` gives a login's envelope senders (lower-cased, each once); without it, none
/// (a login that is an address sends as itself only).
async fn senders_from_the_query(server: Server) {
    let db = Scratch::create(server).await;
    prepare(&db).await;
    db.exec(&[
        "CREATE TABLE sender_rights (owner varchar(200), address varchar(200))",
        "INSERT INTO sender_rights VALUES ('one@example.test', 'Sales@Example.test')",
        "INSERT INTO sender_rights VALUES ('one@example.test', 'one@example.test')",
        "INSERT INTO sender_rights VALUES ('one@example.test', NULL)",
        "INSERT INTO sender_rights VALUES ('five@example.test', 'five@example.test')",
    ])
    .await;
    let (pq, rq) = queries(server);
    let mut s = settings(&db, pq, rq);
    let d = open(&s, &ManualClock::new());
    assert_eq!(
        d.senders("one@example.test").await.unwrap(),
        Vec::<String>::new(),
        "no senders_query: none"
    );
    s.senders_query = Some(match server {
        Server::Postgres => "SELECT address FROM sender_rights WHERE owner = $1".into(),
        Server::Mysql => "SELECT address FROM sender_rights WHERE owner = ?".into(),
    });
    let d = open(&s, &ManualClock::new());
    assert_eq!(
        d.senders("one@example.test").await.unwrap(),
        ["one@example.test", "sales@example.test"]
    );
    assert_eq!(
        d.senders("nobody@example.test").await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        d.senders("' OR '1'='1").await.unwrap(),
        Vec::<String>::new()
    );
}

/// `cache_ttl = 0` and `negative_cache_ttl = 0` as an operator writes them: every question
/// goes to the database, so a change is seen at once.
async fn a_zero_ttl_sees_every_change_at_once(server: Server) {
    let db = Scratch::create(server).await;
    prepare(&db).await;
    let (pq, rq) = queries(server);
    let text = format!(
        "[directory]\ntype = \"sql\"\nurl = {:?}\npassword_query = {pq:?}\nrecipient_query = {rq:?}\n\
         cache_ttl = 0\nnegative_cache_ttl = \"0s\"\n",
        db.url()
    );
    let table: toml::Table = text.parse().unwrap();
    let sources = intake_config::Sources::default();
    let mut r = intake_config::Reader::new(&table, &sources);
    let s = DirectorySettings::read(&mut r).expect("a directory");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        (s.cache_ttl, s.negative_cache_ttl),
        (Duration::ZERO, Duration::ZERO)
    );
    let d = open(&s, &ManualClock::new());
    assert!(d.recipient_exists("inbound@example.test").await.unwrap());
    assert!(!d.recipient_exists("new@example.test").await.unwrap());
    assert_eq!(
        login(&d, "one@example.test", "one-pw").await,
        LoginResult::Valid
    );
    db.exec(&[
        "DELETE FROM mailboxes WHERE address = 'inbound@example.test'",
        "INSERT INTO mailboxes VALUES ('new@example.test')",
        "UPDATE customers SET password = '{PLAIN}one-new' WHERE login = 'one@example.test'",
    ])
    .await;
    assert!(!d.recipient_exists("inbound@example.test").await.unwrap());
    assert!(d.recipient_exists("new@example.test").await.unwrap());
    assert_eq!(
        login(&d, "one@example.test", "one-pw").await,
        LoginResult::Invalid
    );
    assert_eq!(
        login(&d, "one@example.test", "one-new").await,
        LoginResult::Valid
    );
}

macro_rules! on_both {
    ($($case:ident),*) => {
        mod postgres {
            $(#[tokio::test] async fn $case() { super::$case(super::Server::Postgres).await })*
        }
        mod mysql {
            $(#[tokio::test] async fn $case() { super::$case(super::Server::Mysql).await })*
        }
    };
}

on_both!(
    recipients_and_logins,
    new_rows_at_once_changed_rows_after_the_ttl,
    count_queries_and_several_placeholders,
    a_bad_query_is_could_not_decide,
    senders_from_the_query,
    a_zero_ttl_sees_every_change_at_once
);

#[tokio::test]
async fn a_server_that_is_down_fails_fast_through_the_breaker() {
    for url in [
        format!("postgres://postgres@127.0.0.1:{}/x", free_port()),
        format!("mysql://root@127.0.0.1:{}/x", free_port()),
    ] {
        let mut s = DirectorySettings::new(DirectoryKind::Sql, url.clone());
        s.password_query = Some(
            if url.starts_with("postgres") {
                "SELECT p FROM t WHERE l = $1"
            } else {
                "SELECT p FROM t WHERE l = ?"
            }
            .into(),
        );
        s.timeout = Duration::from_secs(2);
        let d = open(&s, &ManualClock::new());
        let started = Instant::now();
        let first = d.verify_login("one@example.test", "pw").await;
        assert!(
            matches!(
                first,
                Err(DirectoryError::Sql(_) | DirectoryError::Timeout(_))
            ),
            "{url}: {first:?}"
        );
        let took = started.elapsed();
        for _ in 0..20 {
            assert!(matches!(
                d.verify_login("one@example.test", "pw").await,
                Err(DirectoryError::CircuitOpen { .. })
            ));
        }
        assert!(
            started.elapsed() - took < Duration::from_millis(100),
            "{url}"
        );
    }
}
