//! SPF at MAIL FROM (`sender_auth.spf_at_mail`) over real sockets, with DNS from the
//! in-process test server: the exact replies a sending server sees, before any data; what a
//! DNS failure or timeout does in each mode; one SPF lookup per transaction.

use intake_policy::testdns::{Answers, DnsServer, RecordType, Zone};

use crate::support::{Client, TestServer};

/// SPF records: `forged.test` and `bad-helo.test` allow nobody, `example.test` and
/// `good-helo.test` allow loopback. TTL 0: nothing is cached, every lookup reaches the
/// server (and is counted).
async fn dns() -> DnsServer {
    Zone::default()
        .ttl(0)
        .txt("forged.test", "v=spf1 -all")
        .txt("bad-helo.test", "v=spf1 -all")
        .txt("example.test", "v=spf1 ip4:127.0.0.0/8 -all")
        .txt("good-helo.test", "v=spf1 ip4:127.0.0.0/8 -all")
        .start()
        .await
}

async fn server(dns: &DnsServer, mode: &str, extra: &str) -> TestServer {
    TestServer::start(&format!(
        "[http]\nrate_limit = 0\n[dns]\nservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n\
         [sender_auth]\nspf_at_mail = \"{mode}\"\n{extra}",
        dns.addr
    ))
    .await
}

/// The reply to MAIL FROM on a fresh connection after `EHLO helo`.
async fn mail(srv: &TestServer, helo: &str, from: &str) -> String {
    let mut c = Client::greeted(srv.addr).await;
    assert_eq!(c.cmd(&format!("EHLO {helo}")).await.code, 250);
    let r = c.cmd(&format!("MAIL FROM:<{from}>")).await.text();
    c.cmd("QUIT").await;
    r
}

#[tokio::test]
async fn a_forged_sender_is_refused_at_mail_before_any_data() {
    let dns = dns().await;
    let srv = server(&dns, "reject", "").await;
    let mut c = Client::greeted(srv.addr).await;
    c.transcript(
        "C: EHLO good-helo.test
         S: 250
         C: MAIL FROM:<ceo@forged.test>
         S: 550 5.7.23 SPF of forged.test does not allow 127.0.0.1 to send its mail
         C: RCPT TO:<bob@example.test>
         S: 503 5.5.1 Need MAIL before RCPT
         C: DATA
         S: 503 5.5.1
         C: MAIL FROM:<alice@example.test>
         S: 250 2.1.0
         C: RCPT TO:<bob@example.test>
         S: 250 2.1.5
         C: DATA
         S: 354",
    )
    .await;
    c.send(b"Subject: allowed\r\n\r\nhi\r\n.\r\n").await;
    assert_eq!(c.reply().await.head(), "250 2.0.0");
    assert_eq!(srv.subjects("bob@example.test").await, ["allowed"]);
}

#[tokio::test]
async fn the_null_sender_is_judged_by_the_helo_name() {
    let dns = dns().await;
    let srv = server(&dns, "reject", "").await;
    assert_eq!(
        mail(&srv, "bad-helo.test", "").await,
        "550 5.7.23 SPF of bad-helo.test does not allow 127.0.0.1 to send its mail"
    );
    assert_eq!(
        mail(&srv, "good-helo.test", "").await,
        "250 2.1.0 Sender OK"
    );
    // With a MAIL FROM address its domain decides, not the HELO name.
    assert_eq!(
        mail(&srv, "bad-helo.test", "alice@example.test").await,
        "250 2.1.0 Sender OK"
    );
    // A bounce from a server whose HELO name allows it is delivered.
    let mut c = Client::greeted(srv.addr).await;
    c.transcript(
        "C: EHLO good-helo.test
         S: 250
         C: MAIL FROM:<>
         S: 250 2.1.0
         C: RCPT TO:<bob@example.test>
         S: 250 2.1.5
         C: DATA
         S: 354",
    )
    .await;
    c.send(b"Subject: bounce\r\n\r\nundeliverable\r\n.\r\n")
        .await;
    assert_eq!(c.reply().await.head(), "250 2.0.0");
}

const DEFERRED: &str = "451 4.7.24 SPF of example.test could not be checked now, try again later";

#[tokio::test]
async fn servfail_is_deferred_with_defer_and_passed_with_reject_and_never_kept() {
    let dns = dns().await;
    dns.answer(Answers::ServFail);
    let defer = server(&dns, "defer", "").await;
    assert_eq!(
        mail(&defer, "good-helo.test", "alice@example.test").await,
        DEFERRED
    );
    let reject = server(&dns, "reject", "").await;
    assert_eq!(
        mail(&reject, "good-helo.test", "alice@example.test").await,
        "250 2.1.0 Sender OK"
    );
    // DNS is back: the sender's retry is judged on the record, not on a kept temperror.
    dns.answer(Answers::Records);
    assert_eq!(
        mail(&defer, "good-helo.test", "alice@example.test").await,
        "250 2.1.0 Sender OK"
    );
    assert_eq!(
        mail(&defer, "good-helo.test", "ceo@forged.test").await,
        "550 5.7.23 SPF of forged.test does not allow 127.0.0.1 to send its mail"
    );
}

#[tokio::test]
async fn dns_slower_than_the_timeout_is_deferred_with_defer_and_passed_with_reject() {
    let dns = dns().await;
    dns.answer(Answers::Nothing);
    // Each query may take 5 s, SPF at MAIL only 1 s: the timeout is a temperror.
    let slow_dns = "[dns]\ntimeout = \"5s\"\n";
    let timeout = "timeout = \"1s\"\n";
    let make = |mode: &'static str| {
        let dns = dns.clone();
        async move {
            TestServer::start(&format!(
                "{slow_dns}servers = [\"{}\"]\n[sender_auth]\nspf_at_mail = \"{mode}\"\n{timeout}",
                dns.addr
            ))
            .await
        }
    };
    let defer = make("defer").await;
    assert_eq!(
        mail(&defer, "good-helo.test", "alice@example.test").await,
        DEFERRED
    );
    let reject = make("reject").await;
    assert_eq!(
        mail(&reject, "good-helo.test", "alice@example.test").await,
        "250 2.1.0 Sender OK"
    );
}

#[tokio::test]
async fn one_transaction_asks_dns_for_spf_once() {
    let dns = dns().await;
    let srv = server(&dns, "reject", "enabled = true\n").await;
    let mut c = Client::greeted(srv.addr).await;
    c.transcript(
        "C: EHLO good-helo.test
         S: 250
         C: MAIL FROM:<alice@example.test>
         S: 250 2.1.0
         C: RCPT TO:<bob@example.test>
         S: 250 2.1.5
         C: DATA
         S: 354",
    )
    .await;
    c.send(b"From: alice@example.test\r\nSubject: once\r\n\r\nhi\r\n.\r\n")
        .await;
    let r = c.reply().await;
    assert_eq!(r.head(), "250 2.0.0", "{}", r.text());
    assert_eq!(
        dns.queries("example.test", RecordType::TXT),
        1,
        "MAIL FROM asked; the end of data reused its result"
    );
    // The end of data did evaluate SPF: its result is stored with the message.
    let id = r.text().split_whitespace().last().unwrap().to_string();
    let http = srv.running.http_addr.unwrap();
    let m = crate::http::get(http, &format!("/api/v1/messages/{id}"))
        .await
        .json();
    assert_eq!(m["checks"]["spf"], "pass", "{m}");
}
