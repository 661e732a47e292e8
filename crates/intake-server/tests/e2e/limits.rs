//! Size limit with flat memory, store failures.

use tokio::io::AsyncWriteExt;

use crate::support::{Client, Process, TestServer};

#[tokio::test]
async fn twenty_megabytes_against_ten_megabyte_limit_keeps_memory_flat() {
    let dir = tempfile::tempdir().unwrap();
    let p = Process::start(dir.path(), &[("INTAKE_SMTP__MAX_MESSAGE_SIZE", "10MB")]);
    let baseline = p.status_kb("VmRSS");
    let mut c = Client::greeted(p.addr).await;
    let ehlo = c.cmd("EHLO c").await;
    assert!(ehlo.text().contains("SIZE 10000000"));
    c.cmd("MAIL FROM:<a@b>").await;
    c.cmd("RCPT TO:<big@q.test>").await;
    assert_eq!(c.cmd("DATA").await.code, 354);
    let line = [b'x'; 998];
    let mut chunk = Vec::new();
    for _ in 0..1000 {
        chunk.extend_from_slice(&line);
        chunk.extend_from_slice(b"\r\n");
    }
    c.send(b"Subject: big\r\n\r\n").await;
    for _ in 0..20 {
        c.stream.write_all(&chunk).await.unwrap(); // 20 x 1 MB
    }
    c.send(b".\r\n").await;
    assert_eq!(c.reply().await.head(), "552 5.3.4");
    let peak = p.status_kb("VmHWM");
    // The first 10 MB may be held while deciding; the other 10 MB must never be.
    assert!(
        peak < baseline + 18 * 1024,
        "peak RSS {peak} kB from a baseline of {baseline} kB: the oversized message was buffered"
    );
    // The session is still usable and a message under the limit goes through.
    c.cmd("MAIL FROM:<a@b>").await;
    c.cmd("RCPT TO:<big@q.test>").await;
    c.cmd("DATA").await;
    c.send(b"Subject: small\r\n\r\nok\r\n.\r\n").await;
    assert_eq!(c.reply().await.code, 250);
    // Declared too big up front.
    assert_eq!(
        c.cmd("MAIL FROM:<a@b> SIZE=20000000").await.head(),
        "552 5.3.4"
    );
    p.terminate();
    let (_, out, _) = crate::support::cli(dir.path(), &["mailbox", "list", "big@q.test"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("small"));
}

#[tokio::test]
async fn a_store_failure_answers_451_never_250() {
    let srv = TestServer::start("[store]\nbusy_timeout = \"100ms\"\n").await;
    let db = srv.data().join("intake.db");
    // Another process holds the write lock: the commit cannot happen.
    let other = rusqlite::Connection::open(&db).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let send = |subject: &str| {
        let content = format!("Subject: {subject}\r\n\r\nx\r\n");
        async move { crate::support::send_message(srv.addr, "a@b", &["fail@q.test"], &content).await }
    };
    assert_eq!(send("locked").await.head(), "451 4.3.0");
    other.execute_batch("ROLLBACK").unwrap();
    drop(other);
    assert_eq!(
        send("later").await.head(),
        "250 2.0.0",
        "the lock is gone at once"
    );
    assert_eq!(srv.subjects("fail@q.test").await, ["later"]);
}
