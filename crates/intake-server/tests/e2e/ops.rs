//! Operations: Prometheus metrics count what the benchmark counts, probes answer.

use std::net::SocketAddr;

use crate::http;
use crate::support::{Process, free_port, send_message};

/// The value of one series in Prometheus text (0 when absent).
fn series(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_accepted_messages_and_commits_and_probes_answer() {
    let dir = tempfile::tempdir().unwrap();
    let http_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let p = Process::start(
        &dir.path().join("data"),
        &[
            ("INTAKE_HTTP__LISTEN", &http_addr.to_string()),
            ("INTAKE_RECIPIENTS__ADDRESSES", "[\"ok@example.test\"]"),
        ],
    );
    assert_eq!(http::get(http_addr, "/healthz").await.status, 200);
    assert_eq!(http::get(http_addr, "/readyz").await.status, 200);
    let before = http::get(http_addr, "/metrics").await.text();
    for i in 0..3 {
        let r = send_message(
            p.addr,
            "a@example.net",
            &["ok@example.test"],
            &format!("Subject: m{i}\r\n\r\nx\r\n"),
        )
        .await;
        assert_eq!(r.code, 250);
    }
    let m = http::get(http_addr, "/metrics").await;
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let after = m.text();
    let accepted = "intake_smtp_messages_total{result=\"accepted\"}";
    assert_eq!(
        series(&after, accepted) - series(&before, accepted),
        3.0,
        "{after}"
    );
    assert!(series(&after, "intake_smtp_received_bytes_total") > 0.0);
    assert!(
        series(&after, "intake_store_commit_batch_size_count") >= 3.0,
        "{after}"
    );
    assert!(
        after.contains("intake_smtp_deliver_seconds_bucket"),
        "a histogram: {after}"
    );
    assert_eq!(series(&after, "intake_store_messages"), 3.0);
    assert!(after.contains("# HELP intake_smtp_messages_total"));
    p.terminate();
}
