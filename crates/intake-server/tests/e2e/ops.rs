//! Operations: Prometheus metrics count what the benchmark counts, probes answer.

use std::net::SocketAddr;

use crate::http;
use crate::reload::rcpt_code;
use crate::support::{Process, free_port, send_each, store_message};

/// The value of one series in Prometheus text (0 when absent).
fn series(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The sum of a metric's series whose labels contain every one of `labels`.
fn sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
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
    send_each(p.addr, "a@example.net", &["ok@example.test"], 3, |i| {
        format!("Subject: m{i}\r\n\r\nx\r\n")
    })
    .await;
    let m = http::get(http_addr, "/metrics").await;
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let after = m.text();
    let accepted = |t: &str| {
        sum(
            t,
            "intake_smtp_messages_total",
            &["result=\"accepted\"", "listener=\"default\""],
        )
    };
    assert_eq!(accepted(&after) - accepted(&before), 3.0, "{after}");
    // A check's latency is recorded (the recipient list refuses at RCPT).
    assert_eq!(rcpt_code(p.addr, "nobody@example.test").await, 550);
    let checked = http::get(http_addr, "/metrics").await.text();
    assert!(
        checked.contains("intake_check_seconds_count{check=\"recipients\"}"),
        "{checked}"
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
    assert!(series(&after, "intake_store_bytes") > 0.0, "{after}");
    assert!(after.contains("# HELP intake_smtp_messages_total"));
    p.terminate();
}

fn uid_of(pid: u32) -> u32 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn started_as_root_it_drops_to_the_configured_user_and_still_takes_mail() {
    if uid_of(std::process::id()) != 0 {
        eprintln!("not root: the privilege drop needs a root test run (CI runs as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = Process::start(&dir.path().join("data"), &[("INTAKE_RUN__USER", "nobody")]);
    let nobody = std::process::Command::new("id")
        .args(["-u", "nobody"])
        .output()
        .unwrap();
    let nobody: u32 = String::from_utf8_lossy(&nobody.stdout)
        .trim()
        .parse()
        .unwrap();
    // The port is bound before the drop; the greeting comes after it (the accept loops wait
    // for the drop), so ask for the uid once a message went through.
    store_message(
        p.addr,
        "a@example.net",
        &["drop@example.test"],
        "Subject: x\r\n\r\nx\r\n",
    )
    .await;
    assert_eq!(uid_of(p.pid()), nobody, "the server runs as nobody");
    assert!(p.terminate().success());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_intake"))
        .arg("serve")
        .env("INTAKE_SMTP__LISTEN", "127.0.0.1:0")
        .env("INTAKE_HTTP__LISTEN", "")
        .env("INTAKE_STORE__PATH", dir.path().join("data2"))
        .env("INTAKE_RUN__USER", "no-such-user-here")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-user-here"));
}
