//! Outages under load are logged in summary: a downstream that stops while clients keep
//! sending fails every message alike, and the log gets a few lines, not one or two per
//! refused message (issue 19, point 4). The metrics still count every refusal.

use std::net::SocketAddr;
use std::process::Stdio;

use crate::http;
use crate::support::{Client, Process, TestServer, send_message};

/// Clients sending at once during the outage, and messages each sends on its connection.
const CLIENTS: usize = 8;
const MESSAGES: usize = 60;

/// Sends `MESSAGES` messages on one connection; the reply code of each.
async fn sender(addr: SocketAddr) -> Vec<u16> {
    let mut c = Client::greeted(addr).await;
    assert_eq!(c.cmd("EHLO load.example.net").await.code, 250);
    let mut codes = Vec::with_capacity(MESSAGES);
    for i in 0..MESSAGES {
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
    let load: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(sender(gw.addr)))
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
    assert_eq!(refused, (CLIENTS * MESSAGES) as u64);
    // The metrics count every refusal, the log does not repeat them.
    assert!(deferred(gw.http).await >= refused);
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
    assert!(
        during.iter().any(|l| l.contains("message not delivered")),
        "{}",
        during.join("\n")
    );
}
