//! PROXY protocol: the client address comes from the trusted balancer's header; anything else
//! is closed without a greeting. And the real thing: HAProxy in front of Intake.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::{Client, TestServer};

async fn stored(srv: &TestServer, mailbox: &str) -> intake_core::StoredMessage {
    let l = srv
        .running
        .store
        .list_mailbox(mailbox, intake_core::Page::default())
        .await
        .unwrap();
    srv.running
        .store
        .fetch(l.messages[0].id)
        .await
        .unwrap()
        .unwrap()
}

async fn client_of(srv: &TestServer, mailbox: &str) -> SocketAddr {
    stored(srv, mailbox).await.client
}

async fn send_after(addr: SocketAddr, header: &[u8], rcpt: &str) -> Client {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(header).await.unwrap();
    let mut c = Client::from_stream(s);
    assert_eq!(c.reply().await.code, 220);
    c.transcript(&format!(
        "C: EHLO behind.proxy
         S: 250
         C: MAIL FROM:<a@b.test>
         S: 250
         C: RCPT TO:<{rcpt}>
         S: 250
         C: DATA
         S: 354"
    ))
    .await;
    c.send(b"Subject: proxied\r\n\r\n.\r\n").await;
    assert_eq!(c.reply().await.code, 250);
    c
}

async fn closed_without_greeting(addr: SocketAddr, bytes: &[u8]) -> bool {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut got = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    r.is_ok() && got.is_empty()
}

#[tokio::test]
async fn header_sets_the_client_address() {
    let srv = TestServer::start("[smtp]\nproxy_protocol = true\n").await;
    send_after(
        srv.addr,
        b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 25\r\n",
        "v1@q.test",
    )
    .await;
    assert_eq!(
        client_of(&srv, "v1@q.test").await,
        "203.0.113.7:40000".parse().unwrap()
    );
    let v2 = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (
            "[2001:db8::9]:5555".parse::<SocketAddr>().unwrap(),
            "[2001:db8::1]:25".parse::<SocketAddr>().unwrap(),
        ),
    )
    .build()
    .unwrap();
    send_after(srv.addr, &v2, "v2@q.test").await;
    assert_eq!(
        client_of(&srv, "v2@q.test").await,
        "[2001:db8::9]:5555".parse().unwrap()
    );
    let raw = stored(&srv, "v2@q.test").await.raw;
    assert!(
        String::from_utf8_lossy(&raw).contains("([2001:db8::9] port 5555)"),
        "the Received: header names the real client"
    );
}

#[tokio::test]
async fn missing_malformed_or_untrusted_headers_get_no_greeting() {
    let srv = TestServer::start("[smtp]\nproxy_protocol = true\nproxy_timeout = 1\n").await;
    assert!(
        closed_without_greeting(srv.addr, b"EHLO no.header\r\n").await,
        "no header"
    );
    assert!(
        closed_without_greeting(srv.addr, b"PROXY TCP4 garbage\r\n").await,
        "malformed"
    );
    assert!(
        closed_without_greeting(srv.addr, b"").await,
        "nothing sent: timeout"
    );
    let untrusted =
        TestServer::start("[smtp]\nproxy_protocol = true\nproxy_trusted = [\"192.0.2.0/24\"]\n")
            .await;
    assert!(
        closed_without_greeting(
            untrusted.addr,
            b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 25\r\n"
        )
        .await,
        "a header from an untrusted address"
    );
}

#[tokio::test]
async fn limits_apply_to_the_real_client() {
    let srv = TestServer::start(
        "[smtp]\nproxy_protocol = true\nlimits_exempt = []\nmax_connections_per_ip = 1\n",
    )
    .await;
    let _first = send_after(
        srv.addr,
        b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 25\r\n",
        "l@q.test",
    )
    .await;
    // Another client behind the same balancer is not affected...
    let _other = send_after(
        srv.addr,
        b"PROXY TCP4 203.0.113.8 192.0.2.1 40001 25\r\n",
        "l@q.test",
    )
    .await;
    // ...but a second connection of the first client is.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"PROXY TCP4 203.0.113.7 192.0.2.1 40002 25\r\n")
        .await
        .unwrap();
    let mut c = Client::from_stream(s);
    assert_eq!(c.reply().await.head(), "421 4.7.0");
}

#[tokio::test]
async fn behind_a_real_haproxy() {
    let srv =
        TestServer::start("[smtp]\nproxy_protocol = true\nproxy_trusted = [\"127.0.0.1\"]\n").await;
    let dir = tempfile::tempdir().unwrap();
    let (haproxy, front_addr) = crate::support::haproxy(
        dir.path(),
        &format!("  server intake {} send-proxy-v2\n", srv.addr),
    )
    .await;
    // Connect from 127.0.0.2: HAProxy itself reaches Intake from 127.0.0.1.
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let stream = sock.connect(front_addr).await.unwrap();
    let mut c = Client::from_stream(stream);
    assert_eq!(c.reply().await.code, 220);
    c.cmd("EHLO through.haproxy").await;
    c.cmd("MAIL FROM:<a@b.test>").await;
    c.cmd("RCPT TO:<ha@q.test>").await;
    c.cmd("DATA").await;
    c.send(b"Subject: via haproxy\r\n\r\n.\r\n").await;
    assert_eq!(c.reply().await.code, 250);
    let client = client_of(&srv, "ha@q.test").await;
    drop(haproxy);
    assert_eq!(
        client.ip().to_string(),
        "127.0.0.2",
        "the address HAProxy saw, not HAProxy's own"
    );
}
