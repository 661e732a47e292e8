//! Content scanning with rspamd: the message goes to its normal worker (`POST /checkv2`,
//! port 11333) with the envelope in request headers, and Intake acts on the `action` rspamd
//! answers: `reject` → `550 5.7.1`, `soft reject` → `451 4.7.1`, `greylist` → `451 4.7.1`
//! (greylisted), `add header` / `rewrite subject` → tagged (`X-Spam: Yes`, score), `no
//! action` → accepted. Score, action and symbols are stored with the message. rspamd down
//! or slow: `on_error` (accept by default).

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use intake_core::{Check, CheckCtx, CheckError, Findings, OnError, Reason, Stage, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// The rspamd check (at end of data).
pub struct Rspamd {
    cfg: RspamdConfig,
}

impl Rspamd {
    /// The check with these settings.
    pub fn new(cfg: RspamdConfig) -> Rspamd {
        Rspamd { cfg }
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

/// Sends one HTTP/1.1 request (closing the connection after it) and returns the status and
/// the body.
pub(crate) async fn http_post(
    address: SocketAddr,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Result<(u16, Vec<u8>), String> {
    let mut stream = TcpStream::connect(address)
        .await
        .map_err(|e| format!("{address}: {e}"))?;
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        req.push_str(&format!("{name}: {}\r\n", header_value(value)));
    }
    req.push_str("\r\n");
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    stream.write_all(body).await.map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP header in the answer")?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no HTTP status in the answer")?;
    let mut body = answer[split + 4..].to_vec();
    if head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"))
    {
        body = dechunk(&body).ok_or("bad chunked body")?;
    }
    Ok((status, body))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
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
        let (status, body) = http_post(self.cfg.address, "/checkv2", &headers, &cx.content)
            .await
            .map_err(|e| CheckError::Backend(format!("rspamd: {e}")))?;
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
