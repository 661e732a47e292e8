//! The relay target against real downstreams: Postfix's `smtp-sink` (SMTP and LMTP), and
//! a small LMTP server written here for per-recipient replies after DATA. What is asserted
//! is what the sending client sees from Intake.
//!
//! Needs `smtp-sink` (Debian: `apt-get install postfix`; the service is never started).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use intake_core::testing::{free_port, wait_port};
use intake_delivery::relay::{RelayConfig, RelayTarget, RelayTls};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

fn smtp_sink_binary() -> PathBuf {
    for p in ["/usr/sbin/smtp-sink", "/usr/bin/smtp-sink"] {
        if std::path::Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("smtp-sink not found: apt-get install postfix (the service need not run)");
}

/// A running `smtp-sink`, killed (by its pid) when dropped.
struct Sink {
    child: Child,
    addr: String,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts smtp-sink with `args` on a free loopback port and waits until it listens.
fn sink(args: &[&str]) -> Sink {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(smtp_sink_binary());
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false);
    if root {
        cmd.args(["-u", "nobody"]);
    }
    cmd.args(args)
        .arg(&addr)
        .arg("100")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = cmd.spawn().expect("smtp-sink starts");
    wait_port(port, Duration::from_secs(5), "smtp-sink");
    Sink { child, addr }
}

/// Intake with `relay` as its only target, on a free port.
async fn intake(relay: RelayConfig) -> (SocketAddr, CancellationToken) {
    common::listener("gw.test", Arc::new(RelayTarget::new(relay).unwrap())).await
}

fn relay_to(server: &str) -> RelayConfig {
    let mut c = RelayConfig::new(server);
    c.tls = RelayTls::Off;
    c.connect_timeout = Duration::from_secs(2);
    c.command_timeout = Duration::from_secs(5);
    c.data_timeout = Duration::from_secs(5);
    c
}

/// A plain SMTP client that reads whole replies.
struct Client {
    r: BufReader<TcpStream>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let mut c = Client {
            r: BufReader::new(TcpStream::connect(addr).await.unwrap()),
        };
        assert!(c.reply().await.starts_with("220 "));
        c
    }

    /// One reply, all lines joined.
    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(20), self.r.read_line(&mut line))
                .await
                .expect("a reply in time")
                .unwrap();
            assert!(n > 0, "connection closed; so far {all:?}");
            all.push_str(&line);
            if line.as_bytes().get(3) == Some(&b' ') {
                return all;
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.r
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        self.reply().await
    }

    /// A whole transaction; returns the reply after the final dot.
    async fn send(&mut self, mail: &str, rcpts: &[&str], content: &str) -> String {
        assert!(self.cmd("EHLO client.test").await.starts_with("250"));
        assert!(self.cmd(mail).await.starts_with("250"), "{mail}");
        for r in rcpts {
            let reply = self.cmd(&format!("RCPT TO:<{r}>")).await;
            assert!(reply.starts_with("250"), "{r}: {reply}");
        }
        assert!(self.cmd("DATA").await.starts_with("354"));
        self.cmd(&format!("{content}\r\n.")).await
    }
}

/// As sent on the wire: the line starting with a dot is stuffed (`..`).
const MESSAGE: &str = "Subject: relayed\r\n\r\n..a line that starts with a dot\r\nbye";

#[tokio::test]
async fn a_message_is_relayed_through_smtp_sink_before_the_250() {
    let dumps = tempfile::tempdir().unwrap();
    // smtp-sink drops its privileges (to nobody when run as root) before writing.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dumps.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let template = format!("{}/%M.", dumps.path().display());
    let sink = sink(&["-d", &template]);
    let (addr, _stop) = intake(relay_to(&sink.addr)).await;
    for i in 0..3 {
        // One connection per message: the pooled downstream connection is reused.
        let mut c = Client::connect(addr).await;
        let r = c
            .send(
                "MAIL FROM:<a@example.org> BODY=8BITMIME",
                &["dave@example.test", "erin@example.test"],
                &format!("{MESSAGE} {i}"),
            )
            .await;
        assert!(r.starts_with("250 2.0.0 Message accepted as "), "{r}");
    }
    // smtp-sink wrote each transaction it took; the 250s came after.
    let files: Vec<_> = std::fs::read_dir(dumps.path())
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(files.len(), 3, "{files:?}");
    let one = files
        .iter()
        .find(|f| f.contains("bye 1"))
        .expect("message 1");
    assert!(
        one.contains("X-Mail-Args: <a@example.org> BODY=8BITMIME"),
        "{one}"
    );
    assert!(one.contains("X-Rcpt-Args: <dave@example.test>"), "{one}");
    assert!(one.contains("X-Rcpt-Args: <erin@example.test>"), "{one}");
    assert!(
        one.contains("Received: from client.test"),
        "our Received: goes along"
    );
    assert!(
        one.contains("\n.a line that starts with a dot"),
        "dot-stuffing undone: {one}"
    );
}

#[tokio::test]
async fn the_downstream_refusing_every_recipient_is_its_5xx() {
    let sink = sink(&["-f", "RCPT", "-B", "550 5.1.1 No such user here"]);
    let (addr, _stop) = intake(relay_to(&sink.addr)).await;
    let mut c = Client::connect(addr).await;
    let r = c
        .send(
            "MAIL FROM:<a@example.org>",
            &["nobody@example.test"],
            MESSAGE,
        )
        .await;
    assert_eq!(r, "550 5.1.1 Downstream: No such user here\r\n");
}

#[tokio::test]
async fn a_downstream_4xx_after_data_is_our_4xx() {
    let sink = sink(&["-r", ".", "-b", "452 4.3.1 Insufficient system storage"]);
    let (addr, _stop) = intake(relay_to(&sink.addr)).await;
    let mut c = Client::connect(addr).await;
    let r = c
        .send("MAIL FROM:<a@example.org>", &["dave@example.test"], MESSAGE)
        .await;
    assert_eq!(r, "452 4.3.1 Downstream: Insufficient system storage\r\n");
    // The session goes on: the client can try again at once.
    assert!(c.cmd("MAIL FROM:<a@example.org>").await.starts_with("250"));
}

#[tokio::test]
async fn no_downstream_is_a_4xx_at_once() {
    let port = free_port(); // nothing listens there
    let (addr, _stop) = intake(relay_to(&format!("127.0.0.1:{port}"))).await;
    let mut c = Client::connect(addr).await;
    let started = Instant::now();
    let r = c
        .send("MAIL FROM:<a@example.org>", &["dave@example.test"], MESSAGE)
        .await;
    assert!(r.starts_with("451 4.4.0 "), "{r}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_slow_downstream_is_a_4xx_after_the_timeout_never_250() {
    // smtp-sink waits 4 s before answering DATA; we wait 1 s for any reply.
    let sink = sink(&["-w", "4"]);
    let mut cfg = relay_to(&sink.addr);
    cfg.command_timeout = Duration::from_secs(1);
    let (addr, _stop) = intake(cfg).await;
    let mut c = Client::connect(addr).await;
    let started = Instant::now();
    let r = c
        .send("MAIL FROM:<a@example.org>", &["dave@example.test"], MESSAGE)
        .await;
    assert!(r.starts_with("451 4.4.0 "), "{r}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test]
async fn at_the_connection_limit_the_next_message_gets_4xx_at_once() {
    let sink = sink(&["-w", "2"]);
    let mut cfg = relay_to(&sink.addr);
    cfg.max_connections = 1;
    let (addr, _stop) = intake(cfg).await;
    let first = tokio::spawn(async move {
        let mut c = Client::connect(addr).await;
        c.send("MAIL FROM:<a@example.org>", &["dave@example.test"], MESSAGE)
            .await
    });
    // Let the first message take the only downstream connection.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut c = Client::connect(addr).await;
    let started = Instant::now();
    let r = c
        .send("MAIL FROM:<b@example.org>", &["erin@example.test"], MESSAGE)
        .await;
    assert!(r.starts_with("451 4.4.0 "), "{r}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "never queued"
    );
    let r = first.await.unwrap();
    assert!(r.starts_with("250 "), "{r}");
}

#[tokio::test]
async fn lmtp_through_smtp_sink() {
    let sink = sink(&["-L"]);
    let mut cfg = relay_to(&sink.addr);
    cfg.lmtp = true;
    let (addr, _stop) = intake(cfg).await;
    let mut c = Client::connect(addr).await;
    let r = c
        .send(
            "MAIL FROM:<a@example.org>",
            &["dave@example.test", "erin@example.test"],
            MESSAGE,
        )
        .await;
    assert!(r.starts_with("250 2.0.0 Message accepted as "), "{r}");
}

/// A minimal LMTP server: accepts every RCPT, then answers the final dot with
/// `replies[i]` for the i-th recipient (RFC 2033 §4.2). Returns its address.
async fn lmtp_server(replies: Vec<&'static str>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (sock, _) = l.accept().await.unwrap();
            let replies = replies.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(sock);
                r.get_mut()
                    .write_all(b"220 lmtp.test LMTP\r\n")
                    .await
                    .unwrap();
                let mut rcpts = 0;
                let mut in_data = false;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let out: String = if in_data {
                        if line != ".\r\n" {
                            continue;
                        }
                        in_data = false;
                        let n = std::mem::take(&mut rcpts);
                        replies[..n].iter().map(|x| format!("{x}\r\n")).collect()
                    } else {
                        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                        match verb.as_str() {
                            "LHLO" => "250-lmtp.test\r\n250 PIPELINING\r\n".into(),
                            "MAIL" => "250 2.1.0 OK\r\n".into(),
                            "RCPT" => {
                                rcpts += 1;
                                "250 2.1.5 OK\r\n".into()
                            }
                            "DATA" => {
                                in_data = true;
                                "354 go ahead\r\n".into()
                            }
                            "RSET" => {
                                rcpts = 0;
                                "250 2.0.0 OK\r\n".into()
                            }
                            "QUIT" => {
                                let _ = r.get_mut().write_all(b"221 2.0.0 bye\r\n").await;
                                return;
                            }
                            _ => "502 5.5.2 what\r\n".into(),
                        }
                    };
                    r.get_mut().write_all(out.as_bytes()).await.unwrap();
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn lmtp_replies_per_recipient_fold_into_the_one_smtp_reply() {
    let rcpts = ["a@example.test", "b@example.test", "c@example.test"];
    let cases = [
        (
            vec!["250 2.0.0 a ok", "250 2.0.0 b ok", "250 2.0.0 c ok"],
            "250 2.0.0 Message accepted as ",
        ),
        // One of three refused for good: the client must not think all three got it, nor
        // bounce a message two got.
        (
            vec!["250 2.0.0 a ok", "550 5.1.1 b unknown", "250 2.0.0 c ok"],
            "451 4.5.0 ",
        ),
        (
            vec![
                "250 2.0.0 a ok",
                "452 4.2.2 b over quota",
                "550 5.1.1 c unknown",
            ],
            "452 4.2.2 Downstream: b over quota",
        ),
        (
            vec![
                "550 5.1.1 a unknown",
                "550 5.1.1 b unknown",
                "550 5.1.1 c unknown",
            ],
            "550 5.1.1 Downstream: a unknown",
        ),
    ];
    for (replies, want) in cases {
        let server = lmtp_server(replies.clone()).await;
        let mut cfg = relay_to(&server.to_string());
        cfg.lmtp = true;
        let (addr, _stop) = intake(cfg).await;
        let mut c = Client::connect(addr).await;
        let r = c.send("MAIL FROM:<x@example.org>", &rcpts, MESSAGE).await;
        assert!(r.starts_with(want), "{replies:?}: {r}");
    }
}
