//! `store.type = "redis"` end to end, against a durable redis-server of each test's own
//! (`appendonly yes`, `appendfsync always`): mail in over SMTP, read back through the HTTP
//! API and the CLI; the refusal of a Redis that does not fsync; kill -9 of intake under 16
//! concurrent clients, every 250 present after a restart.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use intake_store::redis::test_server::TestRedis;

use crate::http::{Sse, get, request};
use crate::support::{Process, assert_none_lost, free_port, kill9_under_load, store_message};

/// The environment that points intake (server or CLI) at `redis`.
fn redis_env(redis: &TestRedis) -> Vec<(&'static str, String)> {
    vec![
        ("INTAKE_STORE__TYPE", "redis".into()),
        ("INTAKE_STORE__URL", redis.url()),
    ]
}

fn start(redis: &TestRedis, data: &std::path::Path, http: u16) -> Process {
    let mut env = redis_env(redis);
    env.push(("INTAKE_HTTP__LISTEN", format!("127.0.0.1:{http}")));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Process::start(data, &env)
}

/// A durable Redis of the test's own, a data folder and an HTTP port for intake.
struct Setup {
    redis: TestRedis,
    dir: tempfile::TempDir,
    port: u16,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            redis: TestRedis::start(),
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
        }
    }

    /// `intake serve` on this Redis, data folder and HTTP port.
    fn start(&self) -> Process {
        start(&self.redis, self.dir.path(), self.port)
    }

    fn http(&self) -> std::net::SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }
}

/// The CLI with the same store settings: (success, stdout, stderr).
fn cli(redis: &TestRedis, args: &[&str]) -> (bool, String, String) {
    crate::support::cli_with(None, &redis_env(redis), args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_in_read_back_through_the_api_and_the_cli() {
    let s = Setup::new();
    let p = s.start();
    let http = s.http();
    let id = store_message(
        p.addr,
        "s@example.net",
        &["Ann@Q.test", "bob@q.test"],
        "From: Sam <s@example.net>\r\nSubject: kept in redis\r\n\r\nhello redis\r\n",
    )
    .await;

    let listing = get(http, "/api/v1/mailboxes/ann@q.test/messages").await;
    assert_eq!(listing.status, 200);
    let v = listing.json();
    assert_eq!(v["total"], 1);
    assert_eq!(v["messages"][0]["subject"], "kept in redis");
    let m = get(http, &format!("/api/v1/messages/{id}")).await.json();
    assert_eq!(m["subject"], "kept in redis");
    let raw = get(http, &format!("/api/v1/messages/{id}/raw"))
        .await
        .text();
    assert!(raw.ends_with("hello redis\r\n"), "{raw}");
    let found = get(http, "/api/v1/search?query=subject%3Akept").await;
    assert_eq!(found.json()["total"], 1, "{}", found.text());

    let (ok, out, err) = cli(&s.redis, &["mailbox", "list", "bob@q.test"]);
    assert!(ok, "{err}");
    assert!(out.contains(&id) && out.contains("kept in redis"), "{out}");
    let (ok, out, err) = cli(&s.redis, &["message", "show", &id]);
    assert!(ok, "{err}");
    assert!(out.contains("kept in redis"), "{out}");
    // The same mail through the server after a restart.
    p.terminate();
    let p = s.start();
    let v = get(http, "/api/v1/mailboxes/ann@q.test/messages")
        .await
        .json();
    assert_eq!(v["total"], 1);
    drop(p);
}

#[tokio::test]
async fn a_redis_that_does_not_fsync_every_write_is_refused_at_start() {
    let redis = TestRedis::start_volatile();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_intake"))
        .arg("serve")
        .envs(redis_env(&redis))
        .env("INTAKE_SMTP__LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("INTAKE_HTTP__LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("INTAKE_STORE__PATH", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("intake serve started on a Redis with appendonly no");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(
        err.contains("appendonly no") && err.contains("store.redis_accept_weak_durability"),
        "{err}"
    );
}

/// `intake_store_durability_weak` as /metrics shows it.
async fn durability_gauge(http: std::net::SocketAddr) -> String {
    let text = get(http, "/metrics").await.text();
    text.lines()
        .find(|l| l.starts_with("intake_store_durability_weak "))
        .unwrap_or_else(|| panic!("no durability gauge in:\n{text}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_durability_accepted_is_shown_in_readyz_and_metrics() {
    let redis = TestRedis::start_volatile();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut env = redis_env(&redis);
    env.push(("INTAKE_HTTP__LISTEN", format!("127.0.0.1:{port}")));
    env.push(("INTAKE_STORE__REDIS_ACCEPT_WEAK_DURABILITY", "true".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let p = Process::start(dir.path(), &env);
    let http = format!("127.0.0.1:{port}").parse().unwrap();
    let ready = get(http, "/readyz").await;
    assert_eq!(
        ready.status, 200,
        "still ready: a probe must not fail over it"
    );
    let body = ready.text();
    assert!(
        body.starts_with("ready\n") && body.contains("warning:") && body.contains("appendonly no"),
        "{body}"
    );
    assert_eq!(durability_gauge(http).await, "1");
    p.terminate();

    // A durable Redis: no warning, the gauge at 0.
    let durable = TestRedis::start();
    let port = free_port();
    let p = start(&durable, dir.path(), port);
    let http = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(get(http, "/readyz").await.text(), "ready\n");
    assert_eq!(durability_gauge(http).await, "0");
    drop(p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_250_survives_sigkill_of_intake() {
    let s = Setup::new();
    let acked = kill9_under_load(s.start(), 16).await;
    // Restarted on the same Redis: every acknowledged message is there.
    let _p = s.start();
    let (ok, out, err) = cli(&s.redis, &["mailbox", "list", "crash@q.test"]);
    assert!(ok, "{err}");
    assert_none_lost(&acked, &out);
    let v = get(s.http(), "/api/v1/mailboxes/crash@q.test/messages")
        .await
        .json();
    assert!(v["total"].as_u64().unwrap() >= acked.len() as u64, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_redis_see_each_others_mail_live() {
    let redis = TestRedis::start();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (port_a, port_b) = (free_port(), free_port());
    let a = start(&redis, dir_a.path(), port_a);
    let _b = start(&redis, dir_b.path(), port_b);
    let http_a = format!("127.0.0.1:{port_a}").parse().unwrap();
    let http_b = format!("127.0.0.1:{port_b}").parse().unwrap();
    let mut on_a = Sse::open(http_a, "/api/v1/events?mailbox=live@q.test").await;
    let mut on_b = Sse::open(http_b, "/api/v1/events?mailbox=live@q.test").await;
    // Both nodes subscribe to the feed as they start; give the subscriptions a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let id = store_message(
        a.addr,
        "s@x.test",
        &["live@q.test"],
        "Subject: via A\r\n\r\nx\r\n",
    )
    .await;
    let (name, data) = on_b.next().await;
    assert_eq!(name, "new", "B hears of mail that came in through A");
    assert!(data.contains("via A"), "{data}");
    let (name, _) = on_a.next().await;
    assert_eq!(name, "new");

    // Deleted through B's API: A's page hears of it.
    let d = request(http_b, "DELETE", &format!("/api/v1/messages/{id}"), &[]).await;
    assert!(d.status < 300, "{}", d.status);
    let (name, data) = on_a.next().await;
    assert_eq!(name, "deleted");
    assert!(data.contains(&id), "{data}");
}
