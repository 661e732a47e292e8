//! Two `intake serve` processes sharing one Redis (127.0.0.1:6379) under a key prefix of
//! their own: greylisting and per-client limits hold across both nodes.

use std::time::Duration;

use crate::support::{Client, Process};

const REDIS: &str = "redis://127.0.0.1:6379/";

/// Deletes every key under `prefix`.
async fn cleanup(prefix: &str) {
    intake_store::redis::test_server::delete_keys(REDIS, prefix).await;
}

/// The reply to RCPT TO:<to> after MAIL FROM:<from> on a new connection to `node`.
async fn rcpt(node: &Process, from: &str, to: &str) -> (Client, String) {
    let mut c = Client::greeted(node.addr).await;
    assert_eq!(c.cmd("EHLO client.example").await.code, 250);
    assert_eq!(c.cmd(&format!("MAIL FROM:<{from}>")).await.code, 250);
    let r = c.cmd(&format!("RCPT TO:<{to}>")).await;
    (c, r.lines.last().cloned().unwrap_or_default())
}

#[tokio::test]
async fn greylisted_on_one_node_accepted_on_the_other_and_limits_span_both() {
    let prefix = format!("intake-e2e:{}:", uuid::Uuid::new_v4().simple());
    let env = [
        ("INTAKE_CLUSTER__REDIS_URL", REDIS),
        ("INTAKE_CLUSTER__KEY_PREFIX", prefix.as_str()),
        ("INTAKE_CLUSTER__SYNC_INTERVAL", "100ms"),
        ("INTAKE_GREYLIST__ENABLED", "true"),
        ("INTAKE_GREYLIST__DELAY", "1s"),
        ("INTAKE_SMTP__LIMITS_EXEMPT", "[]"),
        ("INTAKE_SMTP__MAX_CONNECTIONS_PER_IP", "3"),
    ];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Process::start(dir_a.path(), &env);
    let b = Process::start(dir_b.path(), &env);

    let (mut c, first) = rcpt(&a, "grey@example.net", "carol@example.test").await;
    assert_eq!(first, "451 4.7.1 Greylisted, please try again later");
    c.cmd("QUIT").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (mut c, retry) = rcpt(&b, "grey@example.net", "carol@example.test").await;
    assert_eq!(retry, "250 2.1.5 Recipient OK", "the retry through node B");
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(b"Subject: through B\r\n\r\nhi\r\n.\r\n").await;
    assert_eq!(c.reply().await.head(), "250 2.0.0");
    c.cmd("QUIT").await;
    let (mut c, other) = rcpt(&b, "new@example.net", "carol@example.test").await;
    assert_eq!(
        other, "451 4.7.1 Greylisted, please try again later",
        "node B greylists a new triplet"
    );
    c.cmd("QUIT").await;

    // Three connections per IP across the cluster: two held on A, one on B; after a sync
    // (every 100 ms) a fourth is refused by either node.
    let _held = [
        Client::greeted(a.addr).await,
        Client::greeted(a.addr).await,
        Client::greeted(b.addr).await,
    ];
    // Once the nodes have synced their counts, a fourth is refused by either node.
    for node in [&a, &b] {
        crate::support::eventually("the other node's connections are counted", || async {
            let mut c = Client::connect(node.addr).await;
            let r = c.reply().await;
            r.lines.last().map(String::as_str)
                == Some("421 4.7.0 Too many connections from your address, try again later")
        })
        .await;
    }

    a.terminate();
    b.terminate();
    let (_, out, _) = crate::support::cli(dir_b.path(), &["mailbox", "list", "carol@example.test"]);
    assert!(out.contains("through B"), "{out}");
    cleanup(&prefix).await;
}
