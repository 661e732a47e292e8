//! The SQL directory against the real PostgreSQL (127.0.0.1:5432, user postgres) and
//! MariaDB (127.0.0.1:3306, root) of the machine: a scratch database per test, dropped
//! afterwards. No server: the test fails and says so (CI has both).
//! `INTAKE_TEST_POSTGRES_ADMIN_URL` / `INTAKE_TEST_MYSQL_ADMIN_URL` point elsewhere.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ManualClock, free_port, login};
use intake_directory::{
    Directory, DirectoryError, DirectoryKind, DirectorySettings, Guarded, LoginResult,
};
use sqlx::{AssertSqlSafe, Connection};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Server {
    Postgres,
    Mysql,
}

/// A database of the test's own, dropped on drop.
struct Scratch {
    server: Server,
    admin: String,
    name: String,
}

impl Scratch {
    async fn create(server: Server) -> Scratch {
        let admin = match server {
            Server::Postgres => std::env::var("INTAKE_TEST_POSTGRES_ADMIN_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
            Server::Mysql => std::env::var("INTAKE_TEST_MYSQL_ADMIN_URL")
                .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/mysql".into()),
        };
        let name = format!("intake_dir_{}", uuid::Uuid::new_v4().simple());
        let s = Scratch {
            server,
            admin,
            name,
        };
        s.run_admin(&format!("CREATE DATABASE {}", s.name)).await;
        s
    }

    fn url(&self) -> String {
        let (base, _) = self.admin.rsplit_once('/').unwrap();
        format!("{base}/{}", self.name)
    }

    async fn run_admin(&self, sql: &str) {
        run(self.server, &self.admin, sql).await;
    }

    /// Runs statements on the scratch database.
    async fn exec(&self, statements: &[&str]) {
        for sql in statements {
            run(self.server, &self.url(), sql).await;
        }
    }

    fn settings(&self, password_query: &str, recipient_query: &str) -> DirectorySettings {
        let mut s = DirectorySettings::new(DirectoryKind::Sql, self.url());
        s.password_query = Some(password_query.into());
        s.recipient_query = Some(recipient_query.into());
        s.timeout = Duration::from_secs(3);
        s
    }
}

async fn run(server: Server, url: &str, sql: &str) {
    let sql = AssertSqlSafe(sql.to_string());
    let result = match server {
        Server::Postgres => match sqlx::PgConnection::connect(url).await {
            Ok(mut c) => sqlx::query(sql).execute(&mut c).await.map(drop),
            Err(e) => panic!("PostgreSQL at {url} is needed for this test: {e}"),
        },
        Server::Mysql => match sqlx::MySqlConnection::connect(url).await {
            Ok(mut c) => sqlx::query(sql).execute(&mut c).await.map(drop),
            Err(e) => panic!("MariaDB/MySQL at {url} is needed for this test: {e}"),
        },
    };
    result.unwrap_or_else(|e| panic!("{url}: {e}"));
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let (server, admin) = (self.server, self.admin.clone());
        let sql = match server {
            Server::Postgres => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            Server::Mysql => format!("DROP DATABASE IF EXISTS {}", self.name),
        };
        // Drop runs inside the test's runtime: a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(run(server, &admin, &sql))
        })
        .join();
    }
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
    let d = open(&db.settings(pq, rq), &ManualClock::new());
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
    let s = db.settings(pq, rq);
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
    let d = open(&db.settings(pq, rq), &ManualClock::new());
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
        &db.settings(&pq.replace("customers", "no_such_table"), rq),
        &ManualClock::new(),
    );
    assert!(matches!(
        d.verify_login("one@example.test", "one-pw").await,
        Err(DirectoryError::Sql(_))
    ));
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
    a_bad_query_is_could_not_decide
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
