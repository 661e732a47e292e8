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
//! trusted roots or against `tls_ca` alone, through the one HTTP client
//! ([`intake_client::HttpClient`]), one connection per message. Only the status is read; the
//! response body is never read.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use hmac::{Hmac, Mac};
use intake_client::{HttpClient, HttpError, Trust};
use intake_core::net::Repeated;
use intake_core::{DeliveryTarget, Handoff, RcptOutcome};
use sha2::Sha256;

pub use intake_client::HttpUrl;

use crate::target::{Built, SetupError, TargetContext};

/// The registry's constructor: the `[webhook]` section.
pub(crate) fn build(cfg: &WebhookConfig, _cx: &TargetContext) -> Result<Built, SetupError> {
    let cfg = cfg.clone();
    let target = WebhookTarget::new(cfg).map_err(|e| SetupError {
        target: "webhook",
        keys: "webhook.url, webhook.tls_ca",
        source: Box::new(e),
    })?;
    Ok(Built::target(std::sync::Arc::new(target)))
}

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
            .field(
                "secret",
                &intake_core::redact::Redacted(self.secret.as_bytes()),
            )
            .field("timeout", &self.timeout)
            .field("tls_ca", &self.tls_ca)
            .finish()
    }
}

/// The webhook [`DeliveryTarget`].
pub struct WebhookTarget {
    cfg: WebhookConfig,
    client: HttpClient,
    /// Failures logged once, then summarized every ten seconds while they go on.
    failures: Repeated,
}

impl WebhookTarget {
    /// A webhook for `cfg`. Fails when the URL is not `http[s]://…`, or, for `https://`,
    /// when the CA file (or the system's roots) cannot be read.
    pub fn new(cfg: WebhookConfig) -> Result<WebhookTarget, HttpError> {
        let trust = match cfg.tls_ca.as_deref() {
            Some(ca) => Trust::CaFile(ca),
            None => Trust::System,
        };
        let client = HttpClient::new(&cfg.url, trust)?;
        Ok(WebhookTarget {
            cfg,
            client,
            failures: Repeated::new(Duration::from_secs(10)),
        })
    }
}

/// The signature header value for `body` at `t` (Unix seconds).
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
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
    /// POSTs the message; the status code of the answer (its body is not read).
    async fn post(&self, msg: &Handoff) -> Result<u16, HttpError> {
        let body = body(msg);
        let now = jiff::Timestamp::now().as_second();
        let id = msg.message.id.to_string();
        let signature =
            (!self.cfg.secret.is_empty()).then(|| signature(&self.cfg.secret, now, &body));
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("X-Intake-Id", id.as_str()),
        ];
        if let Some(sig) = &signature {
            headers.push(("X-Intake-Signature", sig.as_str()));
        }
        let answer = self
            .client
            .post(&headers, body.into(), self.cfg.timeout)
            .await?;
        Ok(answer.status)
    }
}

#[async_trait]
impl DeliveryTarget for WebhookTarget {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn deliver(&self, msg: &Handoff) -> Vec<RcptOutcome> {
        let n = msg.message.envelope.rcpt_to.len();
        let outcome = match self.post(msg).await {
            Ok(code) if (200..300).contains(&code) => RcptOutcome::Accepted,
            Ok(code) => {
                if let Some(n) = self.failures.hit(&format!("status {code}")) {
                    tracing::warn!(id = %msg.message.id, url = %self.cfg.url, status = code, messages = n,
                        "webhook did not accept the message");
                }
                RcptOutcome::TEMP
            }
            Err(HttpError::TimedOut(timeout)) => {
                if let Some(n) = self.failures.hit("timeout") {
                    tracing::warn!(id = %msg.message.id, url = %self.cfg.url, ?timeout, messages = n,
                        "webhook did not answer in time");
                }
                RcptOutcome::TEMP
            }
            Err(e) => {
                if let Some(n) = self.failures.hit(&e.to_string()) {
                    tracing::warn!(id = %msg.message.id, url = %self.cfg.url, error = %e, messages = n,
                        "webhook failed");
                }
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
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2 key and data, with the data split as "<t>.<body>".
        let s = signature("Jefe", 0, b"");
        assert!(s.starts_with("t=0,v1="));
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"0.");
        let want = hex::encode(mac.finalize().into_bytes());
        assert_eq!(s, format!("t=0,v1={want}"));
        assert_ne!(signature("Jefe", 1, b""), s, "the timestamp is signed");
    }
}
