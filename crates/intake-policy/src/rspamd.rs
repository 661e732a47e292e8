//! Content scanning with rspamd: the message goes to its normal worker (`POST /checkv2`,
//! port 11333) with the envelope in request headers, and Intake acts on the `action` rspamd
//! answers: `reject` → `550 5.7.1`, `soft reject` → `451 4.7.1`, `greylist` → `451 4.7.1`
//! (greylisted), `add header` / `rewrite subject` → tagged (`X-Spam: Yes`, score), `no
//! action` → accepted. Score, action and symbols are stored with the message. rspamd down
//! or slow: `on_error` (accept by default).

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use intake_client::{HttpClient, Trust};
use intake_core::{Check, CheckCtx, CheckError, Findings, OnError, Reason, Stage, Verdict};

/// Settings of the rspamd check.
#[derive(Debug, Clone)]
pub struct RspamdConfig {
    /// Off by default.
    pub enabled: bool,
    /// rspamd's normal worker.
    pub address: SocketAddr,
    /// Act on `reject`, `soft reject` and `greylist`; false: tag those messages instead
    /// (a public inbox that wants to show spam rather than refuse it).
    pub refuse: bool,
    /// Larger messages are not scanned (accepted as they are).
    pub max_size: usize,
    /// How long a scan may take.
    pub timeout: Duration,
    /// When rspamd cannot be reached: accept (default) or defer.
    pub on_error: OnError,
}

impl Default for RspamdConfig {
    fn default() -> Self {
        RspamdConfig {
            enabled: false,
            address: SocketAddr::from(([127, 0, 0, 1], 11333)),
            refuse: true,
            max_size: 20 * 1024 * 1024,
            timeout: Duration::from_secs(20),
            on_error: OnError::FailOpen,
        }
    }
}

/// The largest answer read from rspamd: its JSON is a few kilobytes; more is refused
/// (the check then could not decide).
pub const MAX_ANSWER: usize = 1024 * 1024;

/// The rspamd check (at end of data).
pub struct Rspamd {
    cfg: RspamdConfig,
    client: HttpClient,
}

impl Rspamd {
    /// The check with these settings.
    pub fn new(cfg: RspamdConfig) -> Rspamd {
        let client = HttpClient::new(&format!("http://{}/checkv2", cfg.address), Trust::System)
            .expect("an http:// URL made from a socket address")
            .with_max_body(MAX_ANSWER);
        Rspamd { cfg, client }
    }
}

#[derive(serde::Deserialize)]
struct Answer {
    action: String,
    #[serde(default)]
    score: f32,
    #[serde(default)]
    required_score: f32,
    #[serde(default)]
    symbols: std::collections::BTreeMap<String, serde_json::Value>,
}

/// A header value: one line, printable.
fn header_value(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[async_trait]
impl Check for Rspamd {
    fn name(&self) -> &'static str {
        "rspamd"
    }

    fn stage(&self) -> Stage {
        Stage::Data
    }

    async fn check(&self, cx: &CheckCtx) -> Result<Verdict, CheckError> {
        if cx.content.len() > self.cfg.max_size {
            return Ok(Verdict::Pass);
        }
        let mut headers = vec![
            ("IP", cx.client.ip().to_canonical().to_string()),
            ("From", cx.mail_from.clone().unwrap_or_default()),
        ];
        if let Some(h) = &cx.helo {
            headers.push(("Helo", h.clone()));
        }
        for r in &cx.recipients {
            headers.push(("Rcpt", r.clone()));
        }
        let headers: Vec<(&str, String)> = headers
            .into_iter()
            .map(|(name, value)| (name, header_value(&value)))
            .collect();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let fail = |e: intake_client::HttpError| CheckError::Backend(format!("rspamd: {e}"));
        let answer = self
            .client
            .post(&headers, cx.content.clone(), self.cfg.timeout)
            .await
            .map_err(fail)?;
        let status = answer.status;
        let body = answer.bytes().await.map_err(fail)?;
        if status != 200 {
            return Err(CheckError::Backend(format!(
                "rspamd answered HTTP {status}: {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            )));
        }
        let a: Answer = serde_json::from_slice(&body)
            .map_err(|e| CheckError::Backend(format!("rspamd: unreadable answer: {e}")))?;
        let findings = Findings {
            symbols: a.symbols.keys().map(|s| format!("RSPAMD:{s}")).collect(),
            scanner: Some(format!(
                "rspamd: {} ({:.2}/{:.2})",
                a.action, a.score, a.required_score
            )),
            ..Findings::default()
        };
        let tag = |header: String| Verdict::Tag {
            score: a.score,
            header,
            findings: findings.clone(),
        };
        let spam_headers = || {
            format!(
                "X-Spam: Yes\r\nX-Spam-Action: {}\r\nX-Spam-Score: {:.2} / {:.2}\r\n",
                header_value(&a.action),
                a.score,
                a.required_score
            )
        };
        if !self.cfg.refuse && matches!(a.action.as_str(), "reject" | "soft reject" | "greylist") {
            return Ok(tag(spam_headers()));
        }
        Ok(match a.action.as_str() {
            "reject" => Verdict::Reject {
                reason: Reason::Policy("Spam message rejected".into()),
            },
            "soft reject" => Verdict::Defer {
                reason: Reason::Policy("Try again later".into()),
            },
            "greylist" => Verdict::Defer {
                reason: Reason::Greylisted,
            },
            "add header" | "rewrite subject" => tag(spam_headers()),
            _ => tag(String::new()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn an_answer_past_the_bound_cannot_decide_and_is_not_read_whole() {
        // A "scanner" announcing a 100 MB answer, sending a little and then waiting.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = l.local_addr().unwrap();
        let (done, wait) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n{\"action\":")
                .await
                .unwrap();
            let _ = wait.await;
        });
        let check = Rspamd::new(RspamdConfig {
            enabled: true,
            address,
            ..RspamdConfig::default()
        });
        let mut cx = CheckCtx::new(Stage::Data, "192.0.2.1:40000".parse().unwrap());
        cx.content = bytes::Bytes::from_static(b"Subject: x\r\n\r\nhi\r\n");
        let e = check.check(&cx).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            CheckError::Backend(format!(
                "rspamd: the response body is larger than {MAX_ANSWER} bytes"
            ))
            .to_string()
        );
        drop(done);
    }
}
