//! SIGTERM: stop accepting, let the transaction in flight finish (its 250 means stored),
//! answer 421 4.3.2 to idle sessions, exit.

use crate::support::{Client, Process, cli};

#[tokio::test]
async fn sigterm_finishes_transactions_and_closes_idle_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let p = Process::start(dir.path(), &[]);
    let addr = p.addr;
    let mut idle = Client::greeted(addr).await;
    idle.cmd("EHLO idle.test").await;
    let mut busy = Client::greeted(addr).await;
    busy.cmd("EHLO busy.test").await;
    busy.cmd("MAIL FROM:<a@b.test>").await;
    busy.cmd("RCPT TO:<inflight@q.test>").await;
    assert_eq!(busy.cmd("DATA").await.code, 354);
    busy.send(b"Subject: in flight\r\n\r\nfirst half\r\n").await;

    let pid = p.pid();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    // The idle session is told at once.
    let r = idle.reply().await;
    assert_eq!(r.head(), "421 4.3.2", "{r:?}");
    assert!(idle.is_closed().await);
    // No new connections.
    crate::support::eventually("the listener is closed", || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    // The transaction in flight completes and is acknowledged...
    busy.send(b"second half\r\n.\r\n").await;
    assert_eq!(busy.reply().await.head(), "250 2.0.0");
    // ...and the session ends after it.
    let r = busy.reply().await;
    assert_eq!(r.head(), "421 4.3.2", "{r:?}");
    let status = tokio::task::spawn_blocking(move || {
        let mut p = p;
        p.child.wait()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(status.success(), "{status}");
    let (_, out, _) = cli(dir.path(), &["mailbox", "list", "inflight@q.test"]);
    assert!(
        out.contains("in flight"),
        "the acknowledged message is stored: {out}"
    );
}
