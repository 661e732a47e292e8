//! TLS: STARTTLS (RFC 3207), implicit TLS, `required` mode, the STARTTLS command-injection
//! defence, certificate reload, and what is stored about the session.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::submit::{Submission, any_cert};
use crate::support::TestServer;

/// Writes a fresh self-signed certificate and key; returns their paths.
pub fn make_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_string(), "localhost".to_string()])
        .unwrap();
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// Accepts any certificate (tests only) and remembers the last one seen.
#[derive(Debug)]
struct AcceptAny(Arc<std::sync::Mutex<Vec<u8>>>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.0.lock().unwrap() = end_entity.to_vec();
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_tls12_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn connector(seen: Arc<std::sync::Mutex<Vec<u8>>>) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(seen)))
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// Reads one whole reply from any stream.
async fn reply<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> String {
    loop {
        if let Some(text) = complete(buf) {
            return text;
        }
        let mut chunk = vec![0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("reply in time")
            .unwrap_or(0);
        if n == 0 {
            return "closed".into();
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn complete(buf: &mut Vec<u8>) -> Option<String> {
    let mut start = 0;
    while let Some(pos) = buf[start..].windows(2).position(|w| w == b"\r\n") {
        let line = &buf[start..start + pos];
        let end = start + pos + 2;
        if line.len() < 4 || line[3] != b'-' {
            let text = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end);
            return Some(text);
        }
        start = end;
    }
    None
}

async fn cmd<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    line: &str,
) -> String {
    s.write_all(format!("{line}\r\n").as_bytes()).await.unwrap();
    reply(s, buf).await
}

fn tls_config(dir: &Path, mode: &str) -> String {
    let (cert, key) = make_cert(dir, "mx.test");
    format!(
        "[smtp]\ntls = \"{mode}\"\ntls_listen = \"127.0.0.1:0\"\n[tls]\ncertificate = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    )
}

#[tokio::test]
async fn starttls_then_mail_is_stored_with_tls_details() {
    let certs = tempfile::tempdir().unwrap();
    let srv = TestServer::start(&tls_config(certs.path(), "optional")).await;
    let mut plain = TcpStream::connect(srv.addr).await.unwrap();
    let mut buf = Vec::new();
    assert!(reply(&mut plain, &mut buf).await.starts_with("220"));
    assert!(
        cmd(&mut plain, &mut buf, "EHLO c.test")
            .await
            .contains("STARTTLS")
    );
    // The injection: commands pipelined after STARTTLS in the same write must never run.
    plain
        .write_all(b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\nRCPT TO:<victim@q.test>\r\n")
        .await
        .unwrap();
    assert!(reply(&mut plain, &mut buf).await.starts_with("220 2.0.0"));
    assert!(buf.is_empty(), "nothing after the 220 in plaintext");
    let mut tls = connector(Default::default())
        .connect(ServerName::try_from("mx.test").unwrap(), plain)
        .await
        .unwrap();
    // After TLS: no transaction (the injected MAIL was dropped), and EHLO is needed again.
    assert!(
        cmd(&mut tls, &mut buf, "RCPT TO:<victim@q.test>")
            .await
            .starts_with("503")
    );
    let ehlo = cmd(&mut tls, &mut buf, "EHLO c.test").await;
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(
        cmd(&mut tls, &mut buf, "MAIL FROM:<a@b.test>")
            .await
            .starts_with("250")
    );
    assert!(
        cmd(&mut tls, &mut buf, "RCPT TO:<secure@q.test>")
            .await
            .starts_with("250")
    );
    assert!(cmd(&mut tls, &mut buf, "DATA").await.starts_with("354"));
    let r = cmd(&mut tls, &mut buf, "Subject: over tls\r\n\r\nsecret\r\n.").await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    let list = srv
        .running
        .store
        .list_mailbox("secure@q.test", intake_core::Page::default())
        .await
        .unwrap();
    let m = srv
        .running
        .store
        .fetch(list.messages[0].id)
        .await
        .unwrap()
        .unwrap();
    let t = m.tls.expect("TLS recorded");
    assert_eq!(t.version, "TLSv1.3");
    assert!(t.cipher.starts_with("TLS13_"), "{}", t.cipher);
    let raw = String::from_utf8_lossy(&m.raw);
    assert!(
        raw.contains("with ESMTPS")
            && raw.contains(&format!("(using TLSv1.3 with cipher {})", t.cipher)),
        "{raw}"
    );
    assert!(
        srv.subjects("victim@q.test").await.is_empty(),
        "the injected transaction never happened"
    );
}

#[tokio::test]
async fn lettre_uses_starttls() {
    let certs = tempfile::tempdir().unwrap();
    let srv = TestServer::start(&tls_config(certs.path(), "required")).await;
    Submission {
        tls: lettre::transport::smtp::client::Tls::Required(any_cert("mx.test")),
        login: None,
        from: "a@example.net",
        to: "tls@q.test",
        subject: "via lettre over TLS",
    }
    .send(srv.addr)
    .await
    .expect("250 over STARTTLS");
    assert_eq!(srv.subjects("tls@q.test").await, ["via lettre over TLS"]);
}

#[tokio::test]
async fn required_mode_refuses_plaintext_mail() {
    let certs = tempfile::tempdir().unwrap();
    let srv = TestServer::start(&tls_config(certs.path(), "required")).await;
    let mut c = crate::support::Client::greeted(srv.addr).await;
    c.transcript(
        "C: EHLO c.test
         S: 250 STARTTLS
         C: MAIL FROM:<a@b.test>
         S: 530 5.7.0",
    )
    .await;
}

#[tokio::test]
async fn implicit_tls_listener_greets_inside_tls() {
    let certs = tempfile::tempdir().unwrap();
    let srv = TestServer::start(&tls_config(certs.path(), "optional")).await;
    let addr = srv.running.smtps_addr.expect("implicit TLS listener");
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = connector(Default::default())
        .connect(ServerName::try_from("mx.test").unwrap(), tcp)
        .await
        .unwrap();
    let mut buf = Vec::new();
    assert!(reply(&mut tls, &mut buf).await.starts_with("220 mx.test"));
    let ehlo = cmd(&mut tls, &mut buf, "EHLO c.test").await;
    assert!(!ehlo.contains("STARTTLS"));
    assert!(cmd(&mut tls, &mut buf, "STARTTLS").await.starts_with("503"));
    // A client that speaks plaintext to the TLS port gets nothing but a closed connection.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"EHLO plain\r\n").await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        plain.read_to_end(&mut sink),
    )
    .await;
    assert!(!String::from_utf8_lossy(&sink).contains("250"));
}

#[tokio::test]
async fn certificates_reload_for_new_handshakes() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(dir.path(), "first.test");
    let certs = intake_smtp::tls::TlsCerts::load(&cert, &key).unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshake = |acceptor: tokio_rustls::TlsAcceptor| {
        let seen = seen.clone();
        let listener = &listener;
        async move {
            let client = tokio::spawn(async move {
                let tcp = TcpStream::connect(addr).await.unwrap();
                let _ = connector(seen)
                    .connect(ServerName::try_from("x.test").unwrap(), tcp)
                    .await;
            });
            let (sock, _) = listener.accept().await.unwrap();
            let _ = acceptor.accept(sock).await;
            client.await.unwrap();
        }
    };
    handshake(certs.acceptor()).await;
    let first = seen.lock().unwrap().clone();
    // A broken file is refused and the old certificate stays.
    std::fs::write(&cert, "not a certificate").unwrap();
    assert!(certs.reload().is_err());
    handshake(certs.acceptor()).await;
    assert_eq!(*seen.lock().unwrap(), first);
    // A new certificate at the same paths is served after reload.
    let (c2, k2) = make_cert(dir.path(), "second.test");
    std::fs::copy(c2, &cert).unwrap();
    std::fs::copy(k2, &key).unwrap();
    certs.reload().unwrap();
    handshake(certs.acceptor()).await;
    assert_ne!(
        *seen.lock().unwrap(),
        first,
        "new handshakes see the new certificate"
    );
}

#[tokio::test]
async fn stalled_handshakes_are_dropped() {
    let certs = tempfile::tempdir().unwrap();
    let cfg = tls_config(certs.path(), "optional")
        .replace("[smtp]\n", "[smtp]\ntls_handshake_timeout = 1\n");
    let srv = TestServer::start(&cfg).await;
    let started = std::time::Instant::now();
    // Implicit TLS: connect and say nothing.
    let mut silent = TcpStream::connect(srv.running.smtps_addr.unwrap())
        .await
        .unwrap();
    let mut sink = Vec::new();
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        silent.read_to_end(&mut sink),
    )
    .await;
    assert!(r.is_ok(), "closed by the server");
    // STARTTLS, then nothing.
    let mut c = crate::support::Client::greeted(srv.addr).await;
    c.cmd("EHLO c.test").await;
    assert_eq!(c.cmd("STARTTLS").await.code, 220);
    assert!(c.is_closed().await);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // Others are served meanwhile.
    crate::support::store_message(
        srv.addr,
        "a@b.test",
        &["fine@q.test"],
        "Subject: fine\r\n\r\n",
    )
    .await;
}

#[tokio::test]
async fn sighup_reloads_the_certificate_of_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(dir.path(), "before.test");
    let tls_port = crate::support::free_port();
    let p = crate::support::Process::start(
        &dir.path().join("data"),
        &[
            ("INTAKE_TLS__CERTIFICATE", cert.to_str().unwrap()),
            ("INTAKE_TLS__KEY", key.to_str().unwrap()),
            ("INTAKE_SMTP__TLS_LISTEN", &format!("127.0.0.1:{tls_port}")),
        ],
    );
    let addr: std::net::SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    async fn served_cert(addr: std::net::SocketAddr) -> Vec<u8> {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tls = connector(seen.clone())
            .connect(ServerName::try_from("x.test").unwrap(), tcp)
            .await
            .unwrap();
        let mut buf = Vec::new();
        assert!(reply(&mut tls, &mut buf).await.starts_with("220"));
        seen.lock().unwrap().clone()
    }
    // Process::start waits for the SMTP port only; the TLS listener is bound just after it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "no TLS listener");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let before = served_cert(addr).await;
    // A session opened before the reload keeps working after it.
    let mut plain = crate::support::Client::greeted(p.addr).await;
    let (c2, k2) = make_cert(dir.path(), "after.test");
    std::fs::copy(c2, &cert).unwrap();
    std::fs::copy(k2, &key).unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &p.pid().to_string()])
        .status()
        .unwrap();
    let mut after = before.clone();
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        after = served_cert(addr).await;
        if after != before {
            break;
        }
    }
    assert_ne!(after, before, "the new certificate is served after SIGHUP");
    assert_eq!(
        plain.cmd("NOOP").await.code,
        250,
        "open sessions were not dropped"
    );
    assert!(p.terminate().success());
}
