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
    let p = Process::start(
        &data,
        &[
            ("INTAKE_RECIPIENTS__FILE", &file_var),
            ("INTAKE_RECIPIENTS__STORE", "true"),
        ],
    );
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
    // The CLI here runs without the server's environment: it says the table is not read.
    assert!(err.contains("recipients.store is off"), "{err}");
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

/// A DNS server on loopback with a blocklist entry for 127.0.0.1 and the SPF and DMARC
/// records of `example.test`.
async fn fixture_dns() -> std::net::SocketAddr {
    intake_policy::testdns::Zone::default()
        .a("1.0.0.127.bl.test", "127.0.0.2")
        .a("1.0.0.127.wl.test", "127.0.9.1")
        .txt("example.test", "v=spf1 ip4:127.0.0.0/8 -all")
        .txt("_dmarc.example.test", "v=DMARC1; p=reject")
        .serve()
        .await
}

#[tokio::test]
async fn a_listed_client_is_refused_at_connect() {
    let dns = fixture_dns().await;
    let srv = TestServer::start(&format!(
        "[dns]\nservers = [\"{dns}\"]\n[dnsbl]\nzones = [\"bl.test=127.0.0.[2..11]\"]\n"
    ))
    .await;
    let mut c = srv.client().await;
    assert_eq!(
        c.reply().await.text(),
        "554 5.7.1 Service unavailable; client [127.0.0.1] blocked using bl.test"
    );
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn the_mx_records_authentication_and_lists_and_the_api_shows_them() {
    let dns = fixture_dns().await;
    let srv = TestServer::start(&format!(
        "[smtp]\nhostname = \"mx.test\"\n[http]\nrate_limit = 0\n\
         [dns]\nservers = [\"{dns}\"]\n\
         [dnsbl]\nzones = [\"bl.test\"]\naction = \"tag\"\n\
         [helo]\nreject_bare_ip = true\nreject_non_fqdn = true\n\
         [sender_auth]\nenabled = true\ndmarc_enforce = true\n"
    ))
    .await;
    let http = srv.running.http_addr.unwrap();
    let mut c = Client::greeted(srv.addr).await;
    c.transcript(
        "C: EHLO [127.0.0.1]
         S: 550 5.7.1 Helo command rejected: use your host name, not an IP address
         C: EHLO localhost
         S: 550 5.7.1 Helo command rejected: need fully-qualified hostname
         C: EHLO client.example.test
         S: 250
         C: MAIL FROM:<alice@example.test>
         S: 250 2.1.0
         C: RCPT TO:<bob@example.test>
         S: 250 2.1.5
         C: DATA
         S: 354",
    )
    .await;
    // A forged result claiming our name, and one of another host (kept).
    c.send(
        b"Authentication-Results: mx.test; dmarc=pass header.from=example.test\r\n\
          Authentication-Results: relay.example; spf=pass\r\n\
          From: Alice <alice@example.test>\r\nSubject: checked\r\n\r\nhi\r\n.\r\n",
    )
    .await;
    let r = c.reply().await;
    assert_eq!(r.head(), "250 2.0.0", "{}", r.text());
    let id = r.text().split_whitespace().last().unwrap().to_string();
    let m = crate::http::get(http, &format!("/api/v1/messages/{id}"))
        .await
        .json();
    let checks = &m["checks"];
    assert_eq!(checks["spf"], "pass");
    assert_eq!(checks["dkim"], "none");
    assert_eq!(checks["dmarc"], "pass (p=reject)");
    assert_eq!(checks["lists"], serde_json::json!(["bl.test=1"]));
    assert_eq!(checks["symbols"], serde_json::json!(["DNSBL_LISTED"]));
    assert_eq!(checks["score"], 1.0);
    let headers: Vec<(String, String)> = m["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap().to_string(),
                h["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names[..5],
        [
            "Received",
            "X-Intake-DNSBL",
            "Authentication-Results",
            "Authentication-Results",
            "From"
        ]
    );
    let ours = &headers[2].1;
    assert!(ours.starts_with("mx.test;"), "{ours}");
    assert!(
        ours.contains("spf=pass") && ours.contains("dmarc=pass"),
        "{ours}"
    );
    assert!(
        headers[3].1.starts_with("relay.example;"),
        "the forged one is gone"
    );

    // DMARC says reject, enforcement is on: a message with a From of example.test from a
    // sender domain without SPF fails and is refused.
    c.transcript(
        "C: MAIL FROM:<someone@elsewhere.test>
         S: 250 2.1.0
         C: RCPT TO:<bob@example.test>
         S: 250 2.1.5
         C: DATA
         S: 354",
    )
    .await;
    c.send(b"From: ceo@example.test\r\nSubject: wire money\r\n\r\nnow\r\n.\r\n")
        .await;
    assert_eq!(
        c.reply().await.text(),
        "550 5.7.1 DMARC policy of example.test rejects this message"
    );
    assert_eq!(srv.subjects("bob@example.test").await, ["checked"]);
}

#[tokio::test]
async fn an_allowlisted_client_is_not_greylisted() {
    let dns = fixture_dns().await;
    let greylisting = "[greylist]\nenabled = true\n";
    // Listed in bl.test, but wl.test outweighs it: allowlisted, so not greylisted.
    let srv = TestServer::start(&format!(
        "[dns]\nservers = [\"{dns}\"]\n[dnsbl]\nzones = [\"bl.test*1\", \"wl.test*-5\"]\n{greylisting}"
    ))
    .await;
    let mut c = Client::greeted(srv.addr).await;
    c.transcript(
        "C: EHLO client.example.test
         S: 250
         C: MAIL FROM:<alice@example.test>
         S: 250 2.1.0
         C: RCPT TO:<bob@example.test>
         S: 250 2.1.5",
    )
    .await;
    // Without the allowlist the same client is greylisted.
    let srv = TestServer::start(&format!(
        "[dns]\nservers = [\"{dns}\"]\n[dnsbl]\nzones = [\"bl.test*1\"]\nthreshold = 2\n{greylisting}"
    ))
    .await;
    let mut c = Client::greeted(srv.addr).await;
    c.transcript(
        "C: EHLO client.example.test
         S: 250
         C: MAIL FROM:<alice@example.test>
         S: 250 2.1.0
         C: RCPT TO:<bob@example.test>
         S: 451 4.7.1",
    )
    .await;
}

/// Sends one message on a fresh connection; returns the reply after the content.
async fn send(srv: &TestServer, subject: &str) -> crate::support::Reply {
    let mut c = Client::greeted(srv.addr).await;
    c.transcript(
        "C: EHLO client.example.test
         S: 250
         C: MAIL FROM:<alice@sender.test>
         S: 250 2.1.0
         C: RCPT TO:<bob@example.test>
         S: 250 2.1.5
         C: DATA
         S: 354",
    )
    .await;
    c.send(
        format!(
            "From: Alice <alice@sender.test>\r\nTo: bob@example.test\r\nSubject: {subject}\r\n\
             Date: Sun, 06 Dec 2026 00:00:00 +0000\r\nMessage-ID: <{subject}@sender.test>\r\n\r\nhello\r\n.\r\n"
        )
        .as_bytes(),
    )
    .await;
    c.reply().await
}

/// The stored message a 250 reply names, as the API shows it.
async fn fetch(srv: &TestServer, r: &crate::support::Reply) -> serde_json::Value {
    assert_eq!(r.head(), "250 2.0.0", "{}", r.text());
    let id = r.text().split_whitespace().last().unwrap().to_string();
    let http = srv.running.http_addr.unwrap();
    crate::http::get(http, &format!("/api/v1/messages/{id}"))
        .await
        .json()
}

/// The value of the first header field called `name` of a message as the API shows it.
fn header(m: &serde_json::Value, name: &str) -> Option<String> {
    m["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"].as_str() == Some(name))
        .map(|h| h["value"].as_str().unwrap().to_string())
}

/// A scanner that accepts connections and never answers.
async fn silent_scanner() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = l.accept().await {
            held.push(sock);
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_scanner_that_cannot_decide_leaves_the_message_marked_unchecked() {
    let (scanner, _task) = silent_scanner().await;
    let srv = TestServer::start(&format!(
        "[smtp]\nhostname = \"mx.test\"\n[http]\nrate_limit = 0\n\
         [spamd]\nenabled = true\naddress = \"{scanner}\"\ntimeout = \"1s\"\non_error = \"pass\"\n"
    ))
    .await;
    let m = fetch(&srv, &send(&srv, "unscanned").await).await;
    assert_eq!(
        header(&m, "X-Intake-Unchecked").as_deref(),
        Some("spamd; timed out after 1s"),
        "{m}"
    );
    assert_eq!(
        m["checks"]["undecided"],
        serde_json::json!([{ "check": "spamd", "reason": "timed out after 1s" }]),
        "{m}"
    );
    assert_eq!(m["checks"]["scanner"], serde_json::Value::Null);
}

#[tokio::test]
async fn spamd_sees_the_client_in_our_received_header() {
    let spamd = intake_policy::testspamd::Spamd::start();
    let srv = TestServer::start(&format!(
        "[smtp]\nhostname = \"mx.test\"\ndomains = [\"example.test\"]\n[http]\nrate_limit = 0\n\
         [spamd]\nenabled = true\naddress = \"{}\"\ntimeout = \"60s\"\non_error = \"defer\"\n",
        spamd.addr
    ))
    .await;
    // Until spamd has loaded its rules and listens, the message is deferred (451 4.4.3).
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let reply = loop {
        let r = send(&srv, "relayed").await;
        if r.code != 451 || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let m = fetch(&srv, &reply).await;
    let symbols: Vec<&str> = m["checks"]["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        m["checks"]["scanner"]
            .as_str()
            .unwrap()
            .starts_with("spamd: "),
        "{m}"
    );
    for rule in ["SA:NO_RECEIVED", "SA:NO_RELAYS"] {
        assert!(!symbols.contains(&rule), "{rule} in {symbols:?}");
    }
    assert!(
        symbols.contains(&"SA:ALL_TRUSTED"),
        "the relay from 127.0.0.1 was seen: {symbols:?}"
    );
}
