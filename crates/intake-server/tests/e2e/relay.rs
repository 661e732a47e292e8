//! The gateway: Intake relaying to a second Intake before it replies. The downstream is a
//! real server with its own store, so "delivered" is checked where the mail ends up.

use std::process::Stdio;

use intake_core::Page;

use crate::support::{Client, Process, Reply, TestServer, free_port, send_message};

/// The downstream mailbox server: takes mail for example.test only.
async fn downstream(extra: &str) -> TestServer {
    TestServer::start(&format!("[smtp]\ndomains = [\"example.test\"]\n{extra}")).await
}

/// One message to `rcpts` through `addr`, the replies to every RCPT being 250.
async fn send(addr: std::net::SocketAddr, rcpts: &[&str], subject: &str) -> Reply {
    send_message(
        addr,
        "sender@example.net",
        rcpts,
        &format!("Subject: {subject}\r\n\r\nhello\r\n"),
    )
    .await
}

/// The whole stored message (bytes) of the newest message in `mailbox` downstream.
async fn newest_raw(srv: &TestServer, mailbox: &str) -> String {
    let page = Page::FIRST;
    let store = &srv.running.store;
    let list = store.list_mailbox(mailbox, page).await.unwrap();
    let id = list.messages.first().expect("a message downstream").id;
    let m = store.fetch(id).await.unwrap().unwrap();
    String::from_utf8_lossy(&m.raw).into_owned()
}

#[tokio::test]
async fn the_environment_contract_relays_every_message_to_the_downstream() {
    let down = downstream("").await;
    let data = tempfile::tempdir().unwrap();
    let relay = down.addr.to_string();
    // The real binary, configured as the acceptance check does.
    let gw = Process::start_logging(
        data.path(),
        &[
            ("INTAKE_DELIVERY__TARGETS", "[\"relay\"]"),
            ("INTAKE_RELAY__SERVER", &relay),
        ],
        Stdio::null(),
    );
    let r = send(
        gw.addr,
        &["alice@example.test", "bob@example.test"],
        "through",
    )
    .await;
    assert_eq!(r.head(), "250 2.0.0", "{}", r.text());
    assert!(r.text().contains("accepted as"), "{}", r.text());
    // The 250 came after the downstream stored it, for each recipient.
    assert_eq!(down.subjects("alice@example.test").await, ["through"]);
    assert_eq!(down.subjects("bob@example.test").await, ["through"]);
    // Both Received: fields: the gateway's, then the downstream's on top.
    let raw = newest_raw(&down, "alice@example.test").await;
    assert_eq!(raw.matches("Received: ").count(), 2, "{raw}");
    // Relay only: nothing is kept on the gateway.
    let (_, out, _) = crate::support::cli(data.path(), &["mailbox", "list"]);
    assert!(!out.contains("alice@example.test"), "{out}");
    gw.terminate();
}

#[tokio::test]
async fn downstream_refusals_map_per_recipient() {
    let down = downstream("").await;
    let gw = TestServer::start(&format!(
        "[delivery]\ntargets = [\"relay\"]\n[relay]\nserver = \"{}\"\n",
        down.addr
    ))
    .await;
    // The downstream refuses the foreign domain at RCPT: one of three refused for good is
    // a 4xx for the message (never a 250 that hides it, never a 5xx for all three).
    let r = send(
        gw.addr,
        &[
            "alice@example.test",
            "carol@elsewhere.test",
            "dave@example.test",
        ],
        "one of three",
    )
    .await;
    assert_eq!(r.head(), "451 4.5.0", "{}", r.text());
    // Every recipient refused: the downstream's own 5xx and text.
    let r = send(gw.addr, &["carol@elsewhere.test"], "refused").await;
    assert_eq!(r.head(), "550 5.7.1", "{}", r.text());
    assert!(
        r.text().contains("Downstream: Relay access denied"),
        "{}",
        r.text()
    );
    assert!(down.subjects("carol@elsewhere.test").await.is_empty());
}

#[tokio::test]
async fn downstream_down_is_4xx_and_nothing_is_reported_delivered() {
    let port = free_port();
    let gw = TestServer::start(&format!(
        "[delivery]\ntargets = [\"store\", \"relay\"]\n[relay]\nserver = \"127.0.0.1:{port}\"\n"
    ))
    .await;
    let r = send(gw.addr, &["alice@example.test"], "nowhere").await;
    assert_eq!(r.head(), "451 4.4.0", "{}", r.text());
    // A downstream that comes up later gets the client's retry.
    let down = TestServer::start(&format!(
        "[smtp]\nlisten = \"127.0.0.1:{port}\"\ndomains = [\"example.test\"]\n"
    ))
    .await;
    let r = send(gw.addr, &["alice@example.test"], "retry").await;
    assert_eq!(r.head(), "250 2.0.0", "{}", r.text());
    assert!(
        r.text().contains("stored as"),
        "store and relay both took it"
    );
    assert_eq!(down.subjects("alice@example.test").await, ["retry"]);
    assert_eq!(gw.subjects("alice@example.test").await[0], "retry");
}

#[tokio::test]
async fn starttls_to_the_downstream_when_required() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = crate::tls::make_cert(dir.path(), "mail.example.test");
    let down = downstream(&format!(
        "tls = \"required\"\n[tls]\ncertificate = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    ))
    .await;
    let gw = TestServer::start(&format!(
        "[delivery]\ntargets = [\"relay\"]\n[relay]\nserver = \"{}\"\ntls = \"required\"\n",
        down.addr
    ))
    .await;
    let r = send(gw.addr, &["alice@example.test"], "encrypted").await;
    assert_eq!(r.head(), "250 2.0.0", "{}", r.text());
    let raw = newest_raw(&down, "alice@example.test").await;
    assert!(raw.contains("with ESMTPS"), "the downstream saw TLS: {raw}");

    // Verifying against a CA that did not sign the downstream's certificate: no relay.
    let (other, _) = crate::tls::make_cert(dir.path(), "other.test");
    let strict = TestServer::start(&format!(
        "[delivery]\ntargets = [\"relay\"]\n[relay]\nserver = \"{}\"\ntls = \"required\"\ntls_ca = \"{}\"\n",
        down.addr,
        other.display()
    ))
    .await;
    let r = send(strict.addr, &["alice@example.test"], "unverified").await;
    assert_eq!(r.head(), "451 4.4.0", "{}", r.text());
    assert_eq!(down.subjects("alice@example.test").await, ["encrypted"]);
}

#[tokio::test]
async fn a_downstream_without_starttls_gets_nothing_when_tls_is_required() {
    let down = downstream("").await;
    let gw = TestServer::start(&format!(
        "[delivery]\ntargets = [\"relay\"]\n[relay]\nserver = \"{}\"\ntls = \"required\"\n",
        down.addr
    ))
    .await;
    let r = send(gw.addr, &["alice@example.test"], "plain").await;
    assert_eq!(r.head(), "451 4.4.0", "{}", r.text());
    assert!(down.subjects("alice@example.test").await.is_empty());
    let _ = Client::connect(gw.addr).await; // the gateway still serves
}

#[tokio::test]
async fn routes_send_some_domains_downstream_and_keep_the_rest() {
    let down = TestServer::start("[smtp]\ndomains = [\"relayed.test\"]\n").await;
    let gw = TestServer::start(&format!(
        "[delivery]\ntargets = [\"store\"]\n[relay]\nserver = \"{}\"\n\
         [[route]]\ndomains = [\"relayed.test\"]\ntargets = [\"relay\"]\n",
        down.addr
    ))
    .await;
    let r = send(gw.addr, &["a@local.test", "b@Relayed.test"], "split").await;
    assert_eq!(r.head(), "250 2.0.0", "{}", r.text());
    assert_eq!(gw.subjects("a@local.test").await, ["split"]);
    assert!(
        gw.subjects("b@relayed.test").await.is_empty(),
        "not kept here"
    );
    assert_eq!(down.subjects("b@relayed.test").await, ["split"]);
    assert!(
        down.subjects("a@local.test").await.is_empty(),
        "not sent there"
    );
}

#[tokio::test]
async fn verify_recipients_answers_each_rcpt_with_the_downstreams_word() {
    let down = TestServer::start(
        "[smtp]\ndomains = [\"example.test\"]\n[recipients]\naddresses = [\"alice@example.test\"]\n",
    )
    .await;
    let gw = TestServer::start(&format!(
        "[delivery]\ntargets = [\"relay\"]\n[relay]\nserver = \"{}\"\nverify_recipients = true\n",
        down.addr
    ))
    .await;
    let mut c = Client::greeted(gw.addr).await;
    let replies = c
        .transcript(
            "C: EHLO client.test
             S: 250
             C: MAIL FROM:<sender@example.net>
             S: 250 2.1.0
             C: RCPT TO:<bob@example.test>
             S: 550 5.1.1
             C: RCPT TO:<carol@elsewhere.test>
             S: 550 5.7.1
             C: RCPT TO:<alice@example.test>
             S: 250 2.1.5
             C: DATA
             S: 354",
        )
        .await;
    assert!(
        replies[3]
            .text()
            .contains("Downstream: Relay access denied"),
        "{}",
        replies[3].text()
    );
    c.send(b"Subject: verified\r\n\r\nhi\r\n.\r\n").await;
    // Only the recipient the downstream takes is in the envelope: a plain 250.
    assert_eq!(c.reply().await.head(), "250 2.0.0");
    assert_eq!(down.subjects("alice@example.test").await, ["verified"]);
    // The downstream gone: RCPT is deferred (the check cannot decide), never accepted.
    down.stop().await;
    let mut c = Client::greeted(gw.addr).await;
    c.cmd("EHLO client.test").await;
    c.cmd("MAIL FROM:<sender@example.net>").await;
    assert_eq!(
        c.cmd("RCPT TO:<alice@example.test>").await.head(),
        "451 4.4.3"
    );
}
