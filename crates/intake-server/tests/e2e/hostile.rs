//! Clients that break the rules or hog resources: per-client limits, rates, deadlines, early
//! talkers, improper pipelining. Each gets its precise reply; others are still served.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::support::{Client, TestServer, send_message};

const NO_EXEMPTIONS: &str = "limits_exempt = []\n";

#[tokio::test]
async fn connections_per_ip_are_capped_and_freed() {
    let srv = TestServer::start(&format!(
        "[smtp]\n{NO_EXEMPTIONS}max_connections_per_ip = 2\n"
    ))
    .await;
    let a = Client::greeted(srv.addr).await;
    let _b = Client::greeted(srv.addr).await;
    let mut c = Client::connect(srv.addr).await;
    assert_eq!(c.reply().await.head(), "421 4.7.0");
    assert!(c.is_closed().await);
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut d = Client::connect(srv.addr).await;
    assert_eq!(d.reply().await.code, 220, "a slot is free again");
}

#[tokio::test]
async fn loopback_is_exempt_by_default() {
    let srv = TestServer::start("[smtp]\nmax_connections_per_ip = 1\n").await;
    let _a = Client::greeted(srv.addr).await;
    let _b = Client::greeted(srv.addr).await;
}

#[tokio::test]
async fn message_and_recipient_rates() {
    let srv = TestServer::start(&format!(
        "[smtp]\n{NO_EXEMPTIONS}message_rate = 2\nrecipient_rate = 3\n"
    ))
    .await;
    let mut c = Client::greeted(srv.addr).await;
    c.transcript(
        "C: EHLO c.test
         S: 250
         C: MAIL FROM:<a@b.test>
         S: 250 2.1.0
         C: RCPT TO:<r1@q.test>
         S: 250 2.1.5
         C: RCPT TO:<r2@q.test>
         S: 250 2.1.5
         C: RSET
         S: 250
         C: MAIL FROM:<a@b.test>
         S: 250 2.1.0
         C: RCPT TO:<r3@q.test>
         S: 250 2.1.5
         C: RCPT TO:<r4@q.test>
         S: 450 4.7.1
         C: RSET
         S: 250
         C: MAIL FROM:<a@b.test>
         S: 450 4.7.1",
    )
    .await;
}

#[tokio::test]
async fn messages_per_connection() {
    let srv = TestServer::start("[smtp]\nmax_messages_per_connection = 1\n").await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c.test").await;
    c.cmd("MAIL FROM:<a@b.test>").await;
    c.cmd("RCPT TO:<x@q.test>").await;
    c.cmd("DATA").await;
    c.send(b"Subject: one\r\n\r\n.\r\n").await;
    assert_eq!(c.reply().await.code, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@b.test>").await.head(), "421 4.7.0");
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn whole_session_deadline() {
    let srv = TestServer::start("[smtp]\nsession_timeout = 1\n").await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c.test").await;
    // Keep talking: idle timeouts never fire, the session deadline does.
    let started = std::time::Instant::now();
    loop {
        let r = c.cmd("NOOP").await;
        if r.code != 250 {
            assert_eq!(r.head(), "421 4.4.2", "{r:?}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the deadline did not fire"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(started.elapsed() >= Duration::from_millis(800));
}

#[tokio::test]
async fn early_talkers_noted_or_rejected() {
    let strict =
        TestServer::start("[smtp]\ngreeting_delay = \"300ms\"\nearly_talkers = \"reject\"\n").await;
    let mut c = Client::connect(strict.addr).await;
    c.stream.write_all(b"EHLO too.early\r\n").await.unwrap();
    assert_eq!(c.reply().await.head(), "554 5.5.1");
    assert!(c.is_closed().await);
    // A polite client waits and is served.
    let mut ok = Client::greeted(strict.addr).await;
    assert_eq!(ok.cmd("EHLO polite.test").await.code, 250);
    // Default: noted only; the early command is answered after the greeting.
    let lax = TestServer::start("[smtp]\ngreeting_delay = \"300ms\"\n").await;
    let mut c = Client::connect(lax.addr).await;
    c.stream.write_all(b"EHLO too.early\r\n").await.unwrap();
    assert_eq!(c.reply().await.code, 220);
    assert_eq!(c.reply().await.code, 250);
}

#[tokio::test]
async fn pipelining_before_it_was_offered() {
    let strict = TestServer::start("[smtp]\nunauthorized_pipelining = \"reject\"\n").await;
    let mut c = Client::greeted(strict.addr).await;
    // HELO offers no PIPELINING: the second command in the same write is refused.
    c.send(b"HELO c.test\r\nMAIL FROM:<a@b.test>\r\n").await;
    assert_eq!(c.reply().await.code, 250);
    assert_eq!(c.reply().await.head(), "503 5.5.0");
    // One at a time is fine.
    assert_eq!(c.cmd("MAIL FROM:<a@b.test>").await.head(), "250 2.1.0");
    // After EHLO (PIPELINING offered) batches are fine.
    assert_eq!(c.cmd("RSET").await.code, 250);
    assert_eq!(c.cmd("EHLO c.test").await.code, 250);
    c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<p@q.test>\r\n")
        .await;
    assert_eq!(c.reply().await.head(), "250 2.1.0");
    assert_eq!(c.reply().await.head(), "250 2.1.5");
}

#[tokio::test]
async fn ten_thousand_recipients_and_a_command_flood_cost_nothing() {
    let srv = TestServer::start("").await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c.test").await;
    c.cmd("MAIL FROM:<a@b.test>").await;
    let mut flood = Vec::new();
    for i in 0..10_000 {
        flood.extend_from_slice(format!("RCPT TO:<r{i}@q.test>\r\n").as_bytes());
    }
    c.send(&flood).await;
    let mut codes = std::collections::BTreeMap::new();
    for _ in 0..10_000 {
        *codes.entry(c.reply().await.head()).or_insert(0) += 1;
    }
    assert_eq!(codes.get("250 2.1.5"), Some(&100), "{codes:?}");
    assert_eq!(codes.get("452 4.5.3"), Some(&9_900), "{codes:?}");
    // Others are still served meanwhile.
    let r = send_message(
        srv.addr,
        "x@y.test",
        &["other@q.test"],
        "Subject: still served\r\n\r\n",
    )
    .await;
    assert_eq!(r.code, 250);
}
