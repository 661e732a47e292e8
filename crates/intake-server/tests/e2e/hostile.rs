//! Clients that break the rules or hog resources: per-client limits, rates, deadlines, early
//! talkers, improper pipelining. Each gets its precise reply; others are still served.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::support::{Client, TestServer, send_message, store_message};

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
    crate::support::eventually("a slot is free again", || async {
        Client::connect(srv.addr).await.reply().await.code == 220
    })
    .await;
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
    store_message(
        srv.addr,
        "x@y.test",
        &["other@q.test"],
        "Subject: still served\r\n\r\n",
    )
    .await;
}

#[tokio::test]
async fn slowloris_is_cut_off_and_others_are_served() {
    let srv = TestServer::start("[smtp]\ncommand_timeout = 1\n").await;
    let mut slow = Client::greeted(srv.addr).await;
    let started = std::time::Instant::now();
    // One byte every 200 ms: never idle for a second, but the line never completes in time.
    let mut closed = false;
    for b in b"EHLO slow.loris.example.with.a.long.name\r\n" {
        if slow.stream.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let r = slow.reply().await;
    assert!(closed || r.head() == "421 4.4.2", "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(4));
    store_message(
        srv.addr,
        "a@b.test",
        &["fast@q.test"],
        "Subject: fast\r\n\r\n",
    )
    .await;
}

#[tokio::test]
async fn a_client_that_never_reads_is_dropped() {
    let srv = TestServer::start("[smtp]\ncommand_timeout = 1\nmax_errors = 1000000\n").await;
    let mut c = Client::connect(srv.addr).await;
    // Thousands of commands and never a read: the replies fill the socket buffers.
    let flood = b"NOOP\r\n".repeat(200_000);
    let started = std::time::Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(10), c.stream.write_all(&flood)).await;
    // The server gives up on us within about the command timeout; others are served.
    store_message(
        srv.addr,
        "a@b.test",
        &["other@q.test"],
        "Subject: served\r\n\r\n",
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(12));
}

#[tokio::test]
async fn connection_flood_past_the_global_limit() {
    let srv = TestServer::start("[smtp]\nmax_connections = 20\n").await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(Client::greeted(srv.addr).await);
    }
    let started = std::time::Instant::now();
    for _ in 0..50 {
        let mut c = Client::connect(srv.addr).await;
        assert_eq!(c.reply().await.head(), "421 4.7.0");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the accept loop never waited"
    );
    drop(held);
    crate::support::eventually(
        "mail is taken again once the held connections are gone",
        || async {
            send_message(
                srv.addr,
                "a@b.test",
                &["after@q.test"],
                "Subject: after\r\n\r\n",
            )
            .await
            .code
                == 250
        },
    )
    .await;
}

#[tokio::test]
async fn bdat_with_lying_sizes() {
    let srv = TestServer::start(
        "[smtp]\nmax_message_size = \"1MB\"\ncommand_timeout = 1\ndata_timeout = 1\n",
    )
    .await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c.test").await;
    c.cmd("MAIL FROM:<a@b.test>").await;
    c.cmd("RCPT TO:<lie@q.test>").await;
    // Announces a petabyte, sends 2 MB, then stops: nothing is kept, the session times out.
    c.send(b"BDAT 1000000000000000 LAST\r\n").await;
    let chunk = vec![b'z'; 1 << 20];
    c.send(&chunk).await;
    c.send(&chunk).await;
    let r = c.reply().await;
    assert_eq!(r.head(), "421 4.4.2", "{r:?}");
    // Announces 10 octets, sends 5 and a command: the command is content, the client waits.
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c.test").await;
    c.cmd("MAIL FROM:<a@b.test>").await;
    c.cmd("RCPT TO:<lie@q.test>").await;
    c.send(b"BDAT 10 LAST\r\nhi\r\nQUIT\r\n").await;
    let r = c.reply().await;
    assert_eq!(
        r.head(),
        "250 2.0.0",
        "10 octets were announced and 10 arrived: {r:?}"
    );
    assert_eq!(srv.subjects("lie@q.test").await.len(), 1);
}

#[tokio::test]
async fn eight_bit_bytes_and_nul_in_commands() {
    let srv = TestServer::start("").await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c.test").await;
    c.send(b"MAIL FROM:<\xff\xfe@b.test>\r\n").await;
    let r = c.reply().await;
    assert!(r.code == 553 || r.code == 501, "{r:?}");
    c.send(b"NO\x00OP\r\n").await;
    assert_eq!(c.reply().await.head(), "500 5.5.2");
    c.send(b"\x80\x81\x82\r\n").await;
    assert_eq!(c.reply().await.code, 500);
    assert_eq!(c.cmd("NOOP").await.head(), "250 2.0.0");
}
