//! Outages under load are logged in summary: a downstream that stops, a scanner that is
//! down or a store that cannot write while clients keep sending fails every message alike,
//! and the log gets a few lines, not one or two per refused message (issue 19, point 4);
//! after ten seconds a line says how many failures it stands for (`repeats=`). The metrics
//! still count every refusal.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::http;
use crate::support::{Client, Process, TestServer, free_port, send_message};

/// Clients sending at once during the outage, and messages each sends on its connection.
const CLIENTS: usize = 8;
const MESSAGES: usize = 60;

/// Sends `n` messages on one connection; the reply code of each.
async fn send_many(addr: SocketAddr, n: usize) -> Vec<u16> {
    let mut c = Client::greeted(addr).await;
    assert_eq!(c.cmd("EHLO load.example.net").await.code, 250);
    let mut codes = Vec::with_capacity(n);
    for i in 0..n {
        assert_eq!(c.cmd("MAIL FROM:<s@example.net>").await.code, 250);
        assert_eq!(c.cmd("RCPT TO:<a@example.test>").await.code, 250);
        assert_eq!(c.cmd("DATA").await.code, 354);
        let r = c.cmd(&format!("Subject: during {i}\r\n\r\nx\r\n.")).await;
        codes.push(r.code);
        assert_eq!(c.cmd("RSET").await.code, 250);
    }
    codes
}

/// The sum of `intake_smtp_messages_total{result="deferred"}` as /metrics shows it.
async fn deferred(http_addr: SocketAddr) -> u64 {
    let text = http::get(http_addr, "/metrics").await.text();
    text.lines()
        .filter(|l| {
            l.starts_with("intake_smtp_messages_total{") && l.contains("result=\"deferred\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test]
async fn a_downstream_stopped_under_load_is_logged_in_summary() {
    let down = TestServer::start("[smtp]\ndomains = [\"example.test\"]\n").await;
    let data = tempfile::tempdir().unwrap();
    let log_path = data.path().join("intake.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let relay = down.addr.to_string();
    let gw = Process::start_logging(
        &data.path().join("store"),
        &[
            ("INTAKE_DELIVERY__TARGETS", "[\"relay\"]"),
            ("INTAKE_RELAY__SERVER", &relay),
            ("INTAKE_SMTP__DOMAINS", "[\"example.test\"]"),
            // Every line a default install writes, not only warnings.
            ("INTAKE_LOG__LEVEL", "info"),
        ],
        Stdio::from(log),
    );
    let r = send_message(
        gw.addr,
        "s@example.net",
        &["a@example.test"],
        "Subject: before\r\n\r\nx\r\n",
    )
    .await;
    assert_eq!(
        r.code,
        250,
        "the relay works before the outage: {}",
        r.text()
    );
    let before = std::fs::read_to_string(&log_path).unwrap().lines().count();

    // The downstream stops; clients keep sending.
    down.stop().await;
    let refused = burst(gw.addr, MESSAGES).await;
    assert_eq!(refused, (CLIENTS * MESSAGES) as u64);
    // Past the summary interval, one more: its line counts every refusal since the first.
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    assert_eq!(burst_one(gw.addr).await, 1);
    // The metrics count every refusal, the log does not repeat them.
    assert!(deferred(gw.http).await > refused);
    gw.terminate();

    let text = std::fs::read_to_string(&log_path).unwrap();
    let during: Vec<&str> = text.lines().skip(before).collect();
    assert!(
        during.len() <= 20,
        "{refused} refused messages wrote {} log lines:\n{}",
        during.len(),
        during[..during.len().min(30)].join("\n")
    );
    // What was logged says how many failures it stands for.
    assert_eq!(
        repeats(&during, "message not delivered"),
        refused,
        "{}",
        during.join("\n")
    );
}

/// The largest `repeats=` of the lines containing `what`.
fn repeats(lines: &[&str], what: &str) -> u64 {
    lines
        .iter()
        .filter(|l| l.contains(what))
        .filter_map(|l| {
            l.split("repeats=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

/// Starts intake logging at `info` (every line a default install writes) to `log`.
fn logging(data: &Path, log: &Path, env: &[(&str, &str)]) -> Process {
    let mut env = env.to_vec();
    env.push(("INTAKE_LOG__LEVEL", "info"));
    env.push(("INTAKE_SMTP__DOMAINS", "[\"example.test\"]"));
    Process::start_logging(data, &env, Stdio::from(std::fs::File::create(log).unwrap()))
}

/// Sends `n` messages on each of `CLIENTS` connections at once; each must be deferred.
async fn burst(addr: SocketAddr, n: usize) -> u64 {
    let load: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(send_many(addr, n)))
        .collect();
    let mut refused = 0;
    for t in load {
        let codes = t.await.unwrap();
        assert!(
            codes.iter().all(|c| (400..500).contains(c)),
            "an outage is a 4xx for every message: {codes:?}"
        );
        refused += codes.len() as u64;
    }
    refused
}

/// ClamAV down (nothing listens at `clamav.address`; `on_error = "defer"`, the default):
/// every message is deferred, the log gets a few lines, and the line after ten seconds
/// counts the deferrals since the first.
#[tokio::test]
async fn a_scanner_down_under_load_is_logged_in_summary() {
    let data = tempfile::tempdir().unwrap();
    let log_path = data.path().join("intake.log");
    let clamd = format!("127.0.0.1:{}", free_port());
    let gw = logging(
        &data.path().join("store"),
        &log_path,
        &[
            ("INTAKE_CLAMAV__ENABLED", "true"),
            ("INTAKE_CLAMAV__ADDRESS", &clamd),
        ],
    );
    let before = std::fs::read_to_string(&log_path).unwrap().lines().count();
    let refused = burst(gw.addr, 20).await;
    // Past the summary interval, one more: its line counts every deferral since the first.
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    assert_eq!(burst_one(gw.addr).await, 1);
    assert!(deferred(gw.http).await > refused, "the metrics count each");
    gw.terminate();

    let text = std::fs::read_to_string(&log_path).unwrap();
    let during: Vec<&str> = text.lines().skip(before).collect();
    assert!(
        during.len() <= 12,
        "{refused} deferred messages wrote {} log lines:\n{}",
        during.len(),
        during[..during.len().min(30)].join("\n")
    );
    let all = during.join("\n");
    assert_eq!(repeats(&during, "policy decision"), refused, "{all}");
    assert_eq!(repeats(&during, "message rejected"), refused, "{all}");
}

/// One message on a new connection; 1 when it was deferred.
async fn burst_one(addr: SocketAddr) -> u64 {
    let codes = send_many(addr, 1).await;
    assert!((400..500).contains(&codes[0]), "{codes:?}");
    1
}

/// The SQLite database locked by another process (every batch fails after
/// `store.busy_timeout`): a few log lines, not one or two per batch.
#[tokio::test]
async fn a_store_that_cannot_write_is_logged_in_summary() {
    let data = tempfile::tempdir().unwrap();
    let log_path = data.path().join("intake.log");
    let store = data.path().join("store");
    let gw = logging(&store, &log_path, &[("INTAKE_STORE__BUSY_TIMEOUT", "50ms")]);
    let r = send_message(
        gw.addr,
        "s@example.net",
        &["a@example.test"],
        "Subject: x\r\n\r\nx\r\n",
    )
    .await;
    assert_eq!(r.code, 250, "{}", r.text());
    let before = std::fs::read_to_string(&log_path).unwrap().lines().count();
    let lock = rusqlite::Connection::open(store.join("intake.db")).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let refused = burst(gw.addr, 10).await;
    lock.execute_batch("ROLLBACK").unwrap();
    assert!(deferred(gw.http).await >= refused);
    gw.terminate();

    let text = std::fs::read_to_string(&log_path).unwrap();
    let during: Vec<&str> = text.lines().skip(before).collect();
    assert!(
        during.len() <= 12,
        "{refused} deferred messages wrote {} log lines:\n{}",
        during.len(),
        during[..during.len().min(30)].join("\n")
    );
}
