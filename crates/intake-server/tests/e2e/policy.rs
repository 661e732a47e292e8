//! Policy checks over real sockets: valid recipients (config, file, the store's table via
//! the CLI) and greylisting, with the exact replies a sending server sees.

use std::time::Duration;

use intake_server::server;

use crate::support::{Client, Process, TestServer, cli, settings};

const RECIPIENTS: &str = "[smtp]\ndomains = [\"example.test\", \"team.test\"]\n\
     [recipients]\naddresses = [\"alice@example.test\", \"@team.test\"]\n";

#[tokio::test]
async fn unknown_recipients_get_550_5_1_1() {
    let srv = TestServer::start(RECIPIENTS).await;
    let mut c = Client::greeted(srv.addr).await;
    c.transcript(
        "C: EHLO client.example
         S: 250
         C: MAIL FROM:<sender@example.net>
         S: 250 2.1.0
         C: RCPT TO:<Alice@Example.test>
         S: 250 2.1.5 Recipient OK
         C: RCPT TO:<bob@example.test>
         S: 550 5.1.1 Recipient address rejected: user unknown
         C: RCPT TO:<anyone@team.test>
         S: 250 2.1.5
         C: RCPT TO:<postmaster@example.test>
         S: 250 2.1.5
         C: RCPT TO:<carol@elsewhere.test>
         S: 550 5.7.1 Relay access denied
         C: DATA
         S: 354",
    )
    .await;
    c.send(b"Subject: valid only\r\n\r\nhi\r\n.\r\n").await;
    assert_eq!(c.reply().await.head(), "250 2.0.0");
    assert_eq!(srv.subjects("alice@example.test").await, ["valid only"]);
    assert_eq!(srv.subjects("anyone@team.test").await, ["valid only"]);
    assert!(srv.subjects("bob@example.test").await.is_empty());
}

#[tokio::test]
async fn without_a_recipient_source_everything_is_accepted() {
    let srv = TestServer::start("[smtp]\ndomains = [\"example.test\"]\n").await;
    let mut c = Client::greeted(srv.addr).await;
    c.transcript(
        "C: EHLO client.example
         S: 250
         C: MAIL FROM:<sender@example.net>
         S: 250 2.1.0
         C: RCPT TO:<whoever@example.test>
         S: 250 2.1.5",
    )
    .await;
}

#[tokio::test]
async fn an_unreadable_recipient_file_defers_or_passes_as_configured() {
    let srv = TestServer::start("[recipients]\nfile = \"/nonexistent/recipients.txt\"\n").await;
    let mut c = Client::greeted(srv.addr).await;
    c.transcript(
        "C: EHLO client.example
         S: 250
         C: MAIL FROM:<sender@example.net>
         S: 250 2.1.0
         C: RCPT TO:<alice@example.test>
         S: 451 4.4.3 Unable to verify at this time, try again later",
    )
    .await;
    let srv = TestServer::start(
        "[recipients]\nfile = \"/nonexistent/recipients.txt\"\non_error = \"pass\"\n",
    )
    .await;
    let mut c = Client::greeted(srv.addr).await;
    c.transcript(
        "C: EHLO client.example
         S: 250
         C: MAIL FROM:<sender@example.net>
         S: 250 2.1.0
         C: RCPT TO:<alice@example.test>
         S: 250 2.1.5",
    )
    .await;
}

/// Sends EHLO, MAIL and one RCPT on a fresh connection; returns the RCPT reply's head.
async fn rcpt(addr: std::net::SocketAddr, from: &str, to: &str) -> String {
    let mut c = Client::greeted(addr).await;
    assert_eq!(c.cmd("EHLO client.example").await.code, 250);
    assert_eq!(c.cmd(&format!("MAIL FROM:<{from}>")).await.code, 250);
    let r = c.cmd(&format!("RCPT TO:<{to}>")).await;
    c.cmd("QUIT").await;
    r.lines.last().cloned().unwrap_or_default()
}

#[tokio::test]
async fn the_file_and_the_cli_change_recipients_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("recipients.txt");
    std::fs::write(&file, "alice@example.test\n").unwrap();
    let data = dir.path().join("data");
    let file_var = file.to_string_lossy().into_owned();
    let p = Process::start(&data, &[("INTAKE_RECIPIENTS__FILE", &file_var)]);
    let unknown = "550 5.1.1 Recipient address rejected: user unknown";
    assert_eq!(
        rcpt(p.addr, "s@example.net", "alice@example.test").await,
        "250 2.1.5 Recipient OK"
    );
    assert_eq!(
        rcpt(p.addr, "s@example.net", "carol@example.test").await,
        unknown
    );

    let (ok, out, err) = cli(&data, &["recipient", "add", "Carol@Example.test"]);
    assert!(ok, "{err}");
    assert_eq!(out, "added carol@example.test\n");
    let (ok, out, _) = cli(&data, &["recipient", "add", "carol@example.test"]);
    assert!(ok && out.contains("already listed"), "{out}");
    let (ok, _, err) = cli(&data, &["recipient", "add", "carol"]);
    assert!(!ok && err.contains("not an address"), "{err}");
    let (ok, out, _) = cli(&data, &["recipient", "list"]);
    assert!(ok);
    assert_eq!(out, "carol@example.test\n");
    // The server sees the CLI's change (it may believe an empty table for a second).
    eventually(p.addr, "carol@example.test", "250 2.1.5 Recipient OK").await;

    std::fs::write(&file, "# replaced\n@team.test\n").unwrap();
    assert_eq!(
        rcpt(p.addr, "s@example.net", "alice@example.test").await,
        unknown
    );
    assert_eq!(
        rcpt(p.addr, "s@example.net", "x@team.test").await,
        "250 2.1.5 Recipient OK"
    );

    let (ok, out, _) = cli(&data, &["recipient", "remove", "carol@example.test"]);
    assert!(ok && out == "removed carol@example.test\n", "{out}");
    let (ok, _, err) = cli(&data, &["recipient", "remove", "carol@example.test"]);
    assert!(!ok && err.contains("not listed"), "{err}");
    eventually(p.addr, "carol@example.test", unknown).await;
    p.terminate();
}

/// Waits (up to 5 s) until RCPT to `to` gets `want`.
async fn eventually(addr: std::net::SocketAddr, to: &str, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = rcpt(addr, "s@example.net", to).await;
        if r == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{to}: {r}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const GREYLIST: &str = "[greylist]\nenabled = true\ndelay = \"1s\"\n";

#[tokio::test]
async fn greylisting_defers_the_first_attempt_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let running = server::start(&settings(GREYLIST, &data)).await.unwrap();
    let addr = running.smtp_addr;
    let mut c = Client::greeted(addr).await;
    c.transcript(
        "C: EHLO client.example
         S: 250
         C: MAIL FROM:<grey@example.net>
         S: 250 2.1.0
         C: RCPT TO:<carol@example.test>
         S: 451 4.7.1 Greylisted, please try again later
         C: DATA
         S: 503 5.5.1 Need RCPT before DATA
         C: QUIT
         S: 221",
    )
    .await;
    let greylisted = "451 4.7.1 Greylisted, please try again later";
    assert_eq!(
        rcpt(addr, "grey@example.net", "carol@example.test").await,
        greylisted,
        "a retry before the delay"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut c = Client::greeted(addr).await;
    c.transcript(
        "C: EHLO client.example
         S: 250
         C: MAIL FROM:<grey@example.net>
         S: 250 2.1.0
         C: RCPT TO:<carol@example.test>
         S: 250 2.1.5
         C: RCPT TO:<dave@example.test>
         S: 451 4.7.1
         C: DATA
         S: 354",
    )
    .await;
    c.send(b"Subject: after the delay\r\n\r\nhi\r\n.\r\n").await;
    assert_eq!(c.reply().await.head(), "250 2.0.0");
    running.stop().await.unwrap();

    // After a restart the triplet that passed is still known; a new one is still deferred.
    let running = server::start(&settings(GREYLIST, &data)).await.unwrap();
    let addr = running.smtp_addr;
    assert_eq!(
        rcpt(addr, "grey@example.net", "carol@example.test").await,
        "250 2.1.5 Recipient OK"
    );
    assert_eq!(
        rcpt(addr, "new@example.net", "carol@example.test").await,
        greylisted
    );
    let page = intake_core::Page::default();
    let stored = running
        .store
        .list_mailbox("carol@example.test", page)
        .await
        .unwrap();
    assert_eq!(stored.messages.len(), 1);
    assert_eq!(stored.messages[0].rcpt_to, ["carol@example.test"]);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn allowed_networks_and_known_recipients_come_before_greylisting() {
    let srv =
        TestServer::start("[greylist]\nenabled = true\nallow_networks = [\"127.0.0.0/8\"]\n").await;
    assert_eq!(
        rcpt(srv.addr, "a@example.net", "b@example.test").await,
        "250 2.1.5 Recipient OK"
    );
    let srv = TestServer::start(
        "[greylist]\nenabled = true\n[recipients]\naddresses = [\"alice@example.test\"]\n",
    )
    .await;
    assert_eq!(
        rcpt(srv.addr, "a@example.net", "bob@example.test").await,
        "550 5.1.1 Recipient address rejected: user unknown",
        "an unknown user is refused, not greylisted"
    );
    assert_eq!(
        rcpt(srv.addr, "a@example.net", "alice@example.test").await,
        "451 4.7.1 Greylisted, please try again later"
    );
}
