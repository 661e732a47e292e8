//! The webhook target: POSTs each message to a URL while the client waits.
//!
//! The body is JSON: the envelope, the session, the parsed header fields and attachments
//! (as the store keeps them), and the raw message in base64. The request is signed:
//! `X-Intake-Signature: t=<unix seconds>,v1=<hex HMAC-SHA-256 of "<t>.<body>">` under the
//! configured secret, so the receiver can check who sent it and refuse old replays.
//! A 2xx answer accepts the message for every recipient; any other answer, no connection
//! or a timeout is a temporary failure (the client gets a 4xx and retries).
//!
//! `http://` (loopback or a trusted network) or `https://`, verified against the system's
//! trusted roots or against `tls_ca` alone: a small HTTP/1.1 client of our own, one
//! connection per message (Intake sends nothing but this one POST and reads only the status
//! line, so a general HTTP client would add more than it saves).

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use hmac::{Hmac, Mac};
use intake_core::{DeliveryTarget, Handoff, RcptOutcome};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::tls_client::{self, Trust};

/// Where and how to POST.
#[derive(Clone)]
pub struct WebhookConfig {
    /// `http://host:port/path` or `https://…`.
    pub url: String,
    /// For `https://`: trust only the CA certificates in this PEM file (a private CA, a
    /// self-signed application); without it, the system's trusted roots.
    pub tls_ca: Option<std::path::PathBuf>,
    /// The HMAC key; empty: requests are not signed.
    pub secret: String,
    /// How long connecting, sending and the answer may take together.
    pub timeout: Duration,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("secret", &if self.secret.is_empty() { "" } else { "***" })
            .field("timeout", &self.timeout)
            .field("tls_ca", &self.tls_ca)
            .finish()
    }
}

/// A parsed `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `https://`.
    pub tls: bool,
    /// `host:port` to connect to.
    pub authority: String,
    /// The `Host:` header value.
    pub host: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl HttpUrl {
    /// Parses `http[s]://host[:port][/path]`; `None` for anything else.
    pub fn parse(url: &str) -> Option<HttpUrl> {
        let (tls, rest) = match url.strip_prefix("https://") {
            Some(rest) => (true, rest),
            None => (false, url.strip_prefix("http://")?),
        };
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if host.is_empty() || host.contains('@') || path.contains(['\r', '\n', ' ']) {
            return None;
        }
        let has_port = match host.rfind(':') {
            Some(i) => !host[i..].contains(']'),
            None => false,
        };
        let authority = if has_port {
            host.to_string()
        } else {
            format!("{host}:{}", if tls { 443 } else { 80 })
        };
        Some(HttpUrl {
            tls,
            authority,
            host: host.to_string(),
            path: path.to_string(),
        })
    }

    /// The host name without the port (what a certificate must name).
    pub fn hostname(&self) -> &str {
        match self.host.rfind(':') {
            Some(i) if !self.host[i..].contains(']') => &self.host[..i],
            _ => &self.host,
        }
    }
}

/// The webhook [`DeliveryTarget`].
pub struct WebhookTarget {
    cfg: WebhookConfig,
    url: HttpUrl,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
}

impl WebhookTarget {
    /// A webhook for `cfg`. Fails when the URL is not `http[s]://…`, or, for `https://`,
    /// when the CA file (or the system's roots) cannot be read.
    pub fn new(cfg: WebhookConfig) -> std::io::Result<WebhookTarget> {
        let url = HttpUrl::parse(&cfg.url).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{:?} is not an http:// or https:// URL", cfg.url),
            )
        })?;
        let tls = if url.tls {
            let trust = match cfg.tls_ca.as_deref() {
                Some(ca) => Trust::CaFile(ca),
                None => Trust::System,
            };
            Some((
                tls_client::connector(trust)?,
                tls_client::server_name(url.hostname())?,
            ))
        } else {
            None
        };
        Ok(WebhookTarget { cfg, url, tls })
    }
}

/// The signature header value for `body` at `t` (Unix seconds).
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={t},v1={hex}")
}

/// The JSON body for a message.
pub fn body(msg: &Handoff) -> Vec<u8> {
    let m = &msg.message;
    let received = jiff::Timestamp::from_millisecond(m.received_at)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let v = serde_json::json!({
        "id": m.id.to_string(),
        "received_at": received,
        "envelope": {
            "mail_from": m.envelope.mail_from,
            "rcpt_to": m.envelope.rcpt_to,
            "smtputf8": msg.params.smtputf8,
            "eight_bit_mime": msg.params.body == intake_core::BodyType::EightBitMime,
        },
        "session": {
            "client": m.session.client.to_string(),
            "helo": m.session.helo,
            "tls": m.session.tls,
        },
        "size": m.size,
        "sha256": m.sha256,
        "parsed": m.meta,
        "raw": base64::engine::general_purpose::STANDARD.encode(&m.raw),
    });
    serde_json::to_vec(&v).expect("JSON of plain values")
}

impl WebhookTarget {
    async fn post(&self, msg: &Handoff) -> std::io::Result<u16> {
        let body = body(msg);
        let now = jiff::Timestamp::now().as_second();
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: Intake\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\nX-Intake-Id: {}\r\n",
            self.url.path,
            self.url.host,
            body.len(),
            msg.message.id
        );
        if !self.cfg.secret.is_empty() {
            head.push_str(&format!(
                "X-Intake-Signature: {}\r\n",
                signature(&self.cfg.secret, now, &body)
            ));
        }
        head.push_str("\r\n");
        let s = TcpStream::connect(&self.url.authority).await?;
        let _ = s.set_nodelay(true);
        match &self.tls {
            Some((connector, name)) => {
                let s = connector.connect(name.clone(), s).await?;
                exchange(s, head.as_bytes(), &body).await
            }
            None => exchange(s, head.as_bytes(), &body).await,
        }
    }
}

/// Sends the request and reads the status code.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    head: &[u8],
    body: &[u8],
) -> std::io::Result<u16> {
    s.write_all(head).await?;
    s.write_all(body).await?;
    s.flush().await?;
    // Only the status line matters.
    let mut buf = Vec::with_capacity(256);
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            return status_code(&buf[..end]).ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "bad HTTP status line")
            });
        }
        if buf.len() > 8192 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "status line too long",
            ));
        }
        let mut chunk = [0u8; 1024];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `HTTP/1.x NNN reason` → NNN.
fn status_code(line: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

#[async_trait]
impl DeliveryTarget for WebhookTarget {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn deliver(&self, msg: &Handoff) -> Vec<RcptOutcome> {
        let n = msg.message.envelope.rcpt_to.len();
        let outcome = match tokio::time::timeout(self.cfg.timeout, self.post(msg)).await {
            Ok(Ok(code)) if (200..300).contains(&code) => RcptOutcome::Accepted,
            Ok(Ok(code)) => {
                tracing::warn!(id = %msg.message.id, url = %self.cfg.url, status = code,
                    "webhook did not accept the message");
                RcptOutcome::TEMP
            }
            Ok(Err(e)) => {
                tracing::warn!(id = %msg.message.id, url = %self.cfg.url, error = %e, "webhook failed");
                RcptOutcome::TEMP
            }
            Err(_) => {
                tracing::warn!(id = %msg.message.id, url = %self.cfg.url, timeout = ?self.cfg.timeout,
                    "webhook did not answer in time");
                RcptOutcome::TEMP
            }
        };
        vec![outcome; n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = HttpUrl::parse("http://127.0.0.1:8080/hook?x=1").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.host.as_str(), u.path.as_str()),
            ("127.0.0.1:8080", "127.0.0.1:8080", "/hook?x=1")
        );
        let u = HttpUrl::parse("http://app.internal").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("app.internal:80", "/")
        );
        let u = HttpUrl::parse("http://[::1]/in").unwrap();
        assert_eq!(u.authority, "[::1]:80");
        let u = HttpUrl::parse("https://hooks.example.com/in").unwrap();
        assert!(u.tls);
        assert_eq!(
            (u.authority.as_str(), u.hostname()),
            ("hooks.example.com:443", "hooks.example.com")
        );
        let u = HttpUrl::parse("https://[::1]:8443/in").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.hostname()),
            ("[::1]:8443", "[::1]")
        );
        assert!(!HttpUrl::parse("http://a/").unwrap().tls);
        assert!(HttpUrl::parse("ftp://example.com/").is_none());
        assert!(HttpUrl::parse("http://u:p@host/").is_none());
        assert!(HttpUrl::parse("http://host/a b").is_none());
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 204 No Content"), Some(204));
        assert_eq!(status_code(b"HTTP/1.0 500"), Some(500));
        assert_eq!(status_code(b"SMTP 250 ok"), None);
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2 key and data, with the data split as "<t>.<body>".
        let s = signature("Jefe", 0, b"");
        assert!(s.starts_with("t=0,v1="));
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"0.");
        let want: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(s, format!("t=0,v1={want}"));
        assert_ne!(signature("Jefe", 1, b""), s, "the timestamp is signed");
    }
}
