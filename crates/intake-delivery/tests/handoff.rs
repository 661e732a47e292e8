//! The webhook and program targets, seen from the sending client: a small HTTP(S) server
//! written here (success, 500, no answer, the signature checked, HTTPS with a trusted and an
//! untrusted certificate) and small shell scripts (exit 0, 75, 1, a hang).

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use intake_core::DeliveryTarget;
use intake_delivery::program::{ProgramConfig, ProgramTarget};
use intake_delivery::webhook::{WebhookConfig, WebhookTarget};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

async fn intake(target: Arc<dyn DeliveryTarget>) -> (SocketAddr, CancellationToken) {
    common::listener("app.test", target).await
}

/// Sends one message; returns the reply after the final dot.
async fn send(addr: SocketAddr, from: &str, rcpts: &[&str]) -> String {
    let mut r = BufReader::new(TcpStream::connect(addr).await.unwrap());
    async fn reply(r: &mut BufReader<TcpStream>) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            assert!(r.read_line(&mut line).await.unwrap() > 0, "closed: {all}");
            all.push_str(&line);
            if line.as_bytes().get(3) == Some(&b' ') {
                return all;
            }
        }
    }
    reply(&mut r).await;
    let mut lines = vec![
        "EHLO client.test".to_string(),
        format!("MAIL FROM:<{from}>"),
    ];
    lines.extend(rcpts.iter().map(|x| format!("RCPT TO:<{x}>")));
    lines.push("DATA".into());
    for l in lines {
        r.get_mut()
            .write_all(format!("{l}\r\n").as_bytes())
            .await
            .unwrap();
        let got = reply(&mut r).await;
        assert!(got.starts_with('2') || got.starts_with('3'), "{l}: {got}");
    }
    r.get_mut()
        .write_all(b"Subject: hand-off\r\n\r\nhello app\r\n.\r\n")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), reply(&mut r))
        .await
        .unwrap()
}

/// What the HTTP server received.
#[derive(Debug, Clone, Default)]
struct Request {
    head: String,
    body: Vec<u8>,
}

/// A small HTTP/1.1 server: answers every POST with `status` (after `delay`), or never
/// (`status` 0). Returns its address and what it received.
async fn http_server(status: u16, delay: Duration) -> (SocketAddr, Arc<Mutex<Vec<Request>>>) {
    serve_http(status, delay, None).await
}

/// The same over TLS with this acceptor (HTTPS).
async fn serve_http(
    status: u16,
    delay: Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (SocketAddr, Arc<Mutex<Vec<Request>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (sock, _) = l.accept().await.unwrap();
            let log = log.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let sock: Box<dyn Stream> = match tls {
                    Some(acceptor) => match acceptor.accept(sock).await {
                        Ok(s) => Box::new(s),
                        Err(_) => return, // the client refused our certificate
                    },
                    None => Box::new(sock),
                };
                let mut r = BufReader::new(sock);
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).await.unwrap() == 0 {
                        return;
                    }
                    head.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
                let mut body = vec![0; len];
                r.read_exact(&mut body).await.unwrap();
                log.lock().unwrap().push(Request { head, body });
                if status == 0 {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                }
                tokio::time::sleep(delay).await;
                let resp = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                let _ = r.get_mut().write_all(resp.as_bytes()).await;
            });
        }
    });
    (addr, seen)
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

fn webhook(addr: SocketAddr, timeout: Duration) -> Arc<dyn DeliveryTarget> {
    Arc::new(
        WebhookTarget::new(WebhookConfig {
            url: format!("http://{addr}/incoming"),
            secret: "s3cret".into(),
            timeout,
            tls_ca: None,
        })
        .unwrap(),
    )
}

/// A self-signed certificate for 127.0.0.1: the acceptor and the certificate's PEM.
fn https_identity() -> (tokio_rustls::TlsAcceptor, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    (
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
        ck.cert.pem(),
    )
}

fn https_webhook(addr: SocketAddr, ca: Option<std::path::PathBuf>) -> Arc<dyn DeliveryTarget> {
    Arc::new(
        WebhookTarget::new(WebhookConfig {
            url: format!("https://{addr}/incoming"),
            secret: "s3cret".into(),
            timeout: Duration::from_secs(5),
            tls_ca: ca,
        })
        .unwrap(),
    )
}

#[tokio::test]
async fn an_https_webhook_is_verified_against_its_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (acceptor, pem) = https_identity();
    let ca = dir.path().join("app-ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let (http, seen) = serve_http(200, Duration::ZERO, Some(acceptor)).await;
    let (addr, _stop) = intake(https_webhook(http, Some(ca))).await;
    let r = send(addr, "user@example.org", &["app@example.test"]).await;
    assert!(r.starts_with("250 2.0.0 Message accepted as "), "{r}");
    let req = seen.lock().unwrap()[0].clone();
    assert!(req.head.starts_with("POST /incoming HTTP/1.1\r\n"));
    assert!(req.head.contains("X-Intake-Signature: t="), "{}", req.head);
    let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(
        v["envelope"]["rcpt_to"],
        serde_json::json!(["app@example.test"])
    );
}

#[tokio::test]
async fn an_https_webhook_with_a_certificate_we_do_not_trust_is_a_4xx_and_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (acceptor, _pem) = https_identity();
    // Another CA than the server's, then the system's roots: neither issued it.
    let (_, other) = https_identity();
    let ca = dir.path().join("other-ca.pem");
    std::fs::write(&ca, other).unwrap();
    let (http, seen) = serve_http(200, Duration::ZERO, Some(acceptor)).await;
    for target in [
        https_webhook(http, Some(ca.clone())),
        https_webhook(http, None),
    ] {
        let (addr, _stop) = intake(target).await;
        let r = send(addr, "user@example.org", &["app@example.test"]).await;
        assert!(r.starts_with("451 4.4.0 "), "{r}");
    }
    assert!(seen.lock().unwrap().is_empty(), "no message left over TLS");
}

#[test]
fn a_webhook_refuses_urls_it_cannot_post_to() {
    let cfg = |url: &str| WebhookConfig {
        url: url.into(),
        secret: String::new(),
        timeout: Duration::from_secs(1),
        tls_ca: None,
    };
    assert!(WebhookTarget::new(cfg("ftp://127.0.0.1/")).is_err());
    let mut c = cfg("https://127.0.0.1/");
    c.tls_ca = Some("/nonexistent/ca.pem".into());
    assert!(
        WebhookTarget::new(c).is_err(),
        "an unreadable CA file fails at start"
    );
}

#[tokio::test]
async fn a_webhook_2xx_accepts_and_the_request_is_signed() {
    let (http, seen) = http_server(204, Duration::ZERO).await;
    let (addr, _stop) = intake(webhook(http, Duration::from_secs(5))).await;
    let r = send(
        addr,
        "user@example.org",
        &["app@example.test", "b@example.test"],
    )
    .await;
    assert!(r.starts_with("250 2.0.0 Message accepted as "), "{r}");
    let req = seen.lock().unwrap()[0].clone();
    assert!(
        req.head.starts_with("POST /incoming HTTP/1.1\r\n"),
        "{}",
        req.head
    );
    // The receiver's check: HMAC-SHA-256 over "<t>.<body>" with the shared secret.
    let sig = req
        .head
        .lines()
        .find_map(|l| l.strip_prefix("X-Intake-Signature: "))
        .expect("signed");
    let (t, v1) = sig.split_once(",v1=").unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let now = jiff::Timestamp::now().as_second();
    assert!((now - t.parse::<i64>().unwrap()).abs() < 60);
    let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&req.body);
    assert_eq!(v1, hex::encode(mac.finalize().into_bytes()));
    // A tampered body does not verify.
    let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&req.body[1..]);
    assert!(mac.verify_slice(&hex::decode(v1).unwrap()).is_err());
    // The body: envelope, parsed fields and the raw message.
    let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(v["envelope"]["mail_from"], "user@example.org");
    assert_eq!(
        v["envelope"]["rcpt_to"],
        serde_json::json!(["app@example.test", "b@example.test"])
    );
    assert_eq!(v["parsed"]["subject"], "hand-off");
    assert_eq!(v["session"]["helo"], "client.test");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(v["raw"].as_str().unwrap())
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    assert!(raw.starts_with("Received: from client.test"), "{raw}");
    assert!(
        raw.ends_with("Subject: hand-off\r\n\r\nhello app\r\n"),
        "{raw}"
    );
}

#[tokio::test]
async fn a_webhook_500_is_a_4xx() {
    let (http, seen) = http_server(500, Duration::ZERO).await;
    let (addr, _stop) = intake(webhook(http, Duration::from_secs(5))).await;
    let r = send(addr, "user@example.org", &["app@example.test"]).await;
    assert!(r.starts_with("451 4.4.0 "), "{r}");
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_webhook_that_does_not_answer_in_time_is_a_4xx() {
    let (http, _seen) = http_server(0, Duration::ZERO).await;
    let (addr, _stop) = intake(webhook(http, Duration::from_secs(1))).await;
    let started = Instant::now();
    let r = send(addr, "user@example.org", &["app@example.test"]).await;
    assert!(r.starts_with("451 4.4.0 "), "{r}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

/// A script in a temporary directory, run as `sh <script> <dir>`.
fn program(dir: &std::path::Path, body: &str, timeout: Duration) -> Arc<dyn DeliveryTarget> {
    let script = dir.join("deliver.sh");
    std::fs::write(&script, body).unwrap();
    let mut cfg = ProgramConfig::new(vec![
        "/bin/sh".into(),
        script.display().to_string(),
        dir.display().to_string(),
    ]);
    cfg.timeout = timeout;
    Arc::new(ProgramTarget::new(cfg))
}

#[tokio::test]
async fn a_program_exiting_0_accepts_and_gets_the_message_and_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let target = program(
        dir.path(),
        "cat > \"$1/message\"\nenv | grep ^INTAKE_ | sort > \"$1/env\"\nexit 0\n",
        Duration::from_secs(10),
    );
    let (addr, _stop) = intake(target).await;
    let r = send(
        addr,
        "user@example.org",
        &["app@example.test", "b@example.test"],
    )
    .await;
    assert!(r.starts_with("250 2.0.0 Message accepted as "), "{r}");
    let message = std::fs::read_to_string(dir.path().join("message")).unwrap();
    assert!(
        message.starts_with("Received: from client.test"),
        "{message}"
    );
    assert!(message.ends_with("hello app\r\n"), "{message}");
    let env = std::fs::read_to_string(dir.path().join("env")).unwrap();
    assert!(env.contains("INTAKE_SENDER=user@example.org\n"), "{env}");
    assert!(
        env.contains("INTAKE_RECIPIENTS=app@example.test b@example.test\n"),
        "{env}"
    );
    assert!(env.contains("INTAKE_CLIENT_ADDRESS=127.0.0.1\n"), "{env}");
    assert!(env.contains("INTAKE_HELO=client.test\n"), "{env}");
}

#[tokio::test]
async fn program_exit_75_is_4xx_and_other_failures_5xx() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _stop) = intake(program(
        dir.path(),
        "cat >/dev/null\nexit 75\n",
        Duration::from_secs(10),
    ))
    .await;
    let r = send(addr, "user@example.org", &["app@example.test"]).await;
    assert!(r.starts_with("451 4.4.0 "), "{r}");

    let dir = tempfile::tempdir().unwrap();
    let (addr, _stop) = intake(program(
        dir.path(),
        "echo 'no such customer' >&2\nexit 1\n",
        Duration::from_secs(10),
    ))
    .await;
    let r = send(addr, "user@example.org", &["app@example.test"]).await;
    assert!(r.starts_with("550 5.0.0 "), "{r}");
    assert!(
        !r.contains("no such customer"),
        "the program's output stays in the log"
    );
}

#[tokio::test]
async fn a_hanging_program_is_killed_and_the_message_deferred() {
    let dir = tempfile::tempdir().unwrap();
    let target = program(
        dir.path(),
        "echo $$ > \"$1/pid\"\nexec sleep 30\n",
        Duration::from_secs(1),
    );
    let (addr, _stop) = intake(target).await;
    let started = Instant::now();
    let r = send(addr, "user@example.org", &["app@example.test"]).await;
    assert!(r.starts_with("451 4.4.0 "), "{r}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let pid = std::fs::read_to_string(dir.path().join("pid")).unwrap();
    let stat = format!("/proc/{}/stat", pid.trim());
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        // Gone, or a zombie waiting to be reaped: either way it no longer runs.
        match std::fs::read_to_string(&stat) {
            Err(_) => break,
            Ok(s) if s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')) => break,
            Ok(_) => {}
        }
        assert!(Instant::now() < deadline, "the program still runs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
