//! Content scanning with SpamAssassin's spamd (`SPAMC/1.5` over TCP, port 783): the
//! message is sent with `SYMBOLS`, and spamd answers with its score, its threshold and the
//! rules that hit. Intake decides by its own thresholds: at `reject_score` or more the
//! message is refused (`550 5.7.1`); at `tag_score` or more (by default: when spamd calls it
//! spam) it is tagged (`X-Spam-Flag: YES`, `X-Spam-Score`). Score and rules are stored with
//! the message. spamd down or slow: `on_error` (accept by default).

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use intake_core::{Check, CheckCtx, CheckError, Findings, OnError, Reason, Stage, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest answer read from spamd (its header and the list of rules that hit); more
/// is refused (the check then could not decide).
pub const MAX_ANSWER: usize = 64 * 1024;

/// Settings of the spamd check.
#[derive(Debug, Clone)]
pub struct SpamdConfig {
    /// Off by default.
    pub enabled: bool,
    /// spamd's address.
    pub address: SocketAddr,
    /// Refuse at this score or more (none: never refuse).
    pub reject_score: Option<f32>,
    /// Tag at this score or more (none: when spamd says it is spam).
    pub tag_score: Option<f32>,
    /// Larger messages are not scanned.
    pub max_size: usize,
    /// How long a scan may take.
    pub timeout: Duration,
    /// When spamd cannot be reached: accept (default) or defer.
    pub on_error: OnError,
}

impl Default for SpamdConfig {
    fn default() -> Self {
        SpamdConfig {
            enabled: false,
            address: SocketAddr::from(([127, 0, 0, 1], 783)),
            reject_score: None,
            tag_score: None,
            max_size: 10 * 1024 * 1024,
            timeout: Duration::from_secs(30),
            on_error: OnError::FailOpen,
        }
    }
}

/// The spamd check (at end of data).
pub struct Spamd {
    cfg: SpamdConfig,
}

impl Spamd {
    /// The check with these settings.
    pub fn new(cfg: SpamdConfig) -> Spamd {
        Spamd { cfg }
    }
}

/// What spamd said.
#[derive(Debug, PartialEq)]
pub struct SpamdAnswer {
    /// spamd's verdict.
    pub spam: bool,
    /// The score.
    pub score: f32,
    /// spamd's own threshold.
    pub threshold: f32,
    /// The rules that hit.
    pub symbols: Vec<String>,
}

/// Parses a `SPAMD/1.1 0 EX_OK` answer to `SYMBOLS`.
pub fn parse_answer(answer: &[u8]) -> Result<SpamdAnswer, String> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or("");
    let mut parts = status.split_whitespace();
    if !parts.next().unwrap_or("").starts_with("SPAMD/") || parts.next() != Some("0") {
        return Err(format!("spamd said {status:?}"));
    }
    let spam_line = lines
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.trim().eq_ignore_ascii_case("spam"))
                .map(|(_, v)| v.trim().to_string())
        })
        .ok_or("no Spam: line in spamd's answer")?;
    // `True ; 1000.0 / 5.0`
    let (flag, scores) = spam_line.split_once(';').ok_or("bad Spam: line")?;
    let (score, threshold) = scores.split_once('/').ok_or("bad Spam: line")?;
    let num = |s: &str| s.trim().parse::<f32>().map_err(|_| "bad score".to_string());
    Ok(SpamdAnswer {
        spam: flag.trim().eq_ignore_ascii_case("true") || flag.trim().eq_ignore_ascii_case("yes"),
        score: num(score)?,
        threshold: num(threshold)?,
        symbols: body
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

/// Sends `content` to spamd at `address` with `verb` (`SYMBOLS`, `REPORT`) and reads its
/// answer, at most [`MAX_ANSWER`] bytes (more is an error, and is not read).
pub async fn exchange(address: SocketAddr, verb: &str, content: &[u8]) -> Result<Vec<u8>, String> {
    let mut stream = TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    let head = format!(
        "{verb} SPAMC/1.5\r\nContent-length: {}\r\nUser: intake\r\n\r\n",
        content.len()
    );
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    stream.write_all(content).await.map_err(|e| e.to_string())?;
    stream.shutdown().await.map_err(|e| e.to_string())?;
    // Read at most MAX_ANSWER (+1 to tell a larger answer), never the whole of it.
    let mut answer = Vec::new();
    (&mut stream)
        .take(MAX_ANSWER as u64 + 1)
        .read_to_end(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    if answer.len() > MAX_ANSWER {
        return Err(format!("the answer is larger than {MAX_ANSWER} bytes"));
    }
    Ok(answer)
}

#[async_trait]
impl Check for Spamd {
    fn name(&self) -> &'static str {
        "spamd"
    }

    fn stage(&self) -> Stage {
        Stage::Data
    }

    async fn check(&self, cx: &CheckCtx) -> Result<Verdict, CheckError> {
        if cx.content.len() > self.cfg.max_size {
            return Ok(Verdict::Pass);
        }
        let fail = |e: String| CheckError::Backend(format!("spamd {}: {e}", self.cfg.address));
        let answer = exchange(self.cfg.address, "SYMBOLS", &cx.content)
            .await
            .map_err(fail)?;
        let a = parse_answer(&answer).map_err(fail)?;
        let findings = Findings {
            symbols: a.symbols.iter().map(|s| format!("SA:{s}")).collect(),
            scanner: Some(format!(
                "spamd: {} ({:.1}/{:.1})",
                if a.spam { "spam" } else { "ham" },
                a.score,
                a.threshold
            )),
            ..Findings::default()
        };
        if self.cfg.reject_score.is_some_and(|r| a.score >= r) {
            return Ok(Verdict::Reject {
                reason: Reason::Policy("Spam message rejected".into()),
            });
        }
        let spam = match self.cfg.tag_score {
            Some(t) => a.score >= t,
            None => a.spam,
        };
        Ok(Verdict::Tag {
            score: a.score,
            header: if spam {
                format!(
                    "X-Spam-Flag: YES\r\nX-Spam-Score: {:.1} / {:.1}\r\n",
                    a.score, a.threshold
                )
            } else {
                String::new()
            },
            findings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse() {
        let a = parse_answer(
            b"SPAMD/1.1 0 EX_OK\r\nContent-length: 20\r\nSpam: True ; 1002.3 / 5.0\r\n\r\nGTUBE,MISSING_DATE",
        )
        .unwrap();
        assert_eq!(
            a,
            SpamdAnswer {
                spam: true,
                score: 1002.3,
                threshold: 5.0,
                symbols: vec!["GTUBE".into(), "MISSING_DATE".into()],
            }
        );
        assert!(parse_answer(b"SPAMD/1.0 76 Bad header line: x\r\n").is_err());
    }

    #[tokio::test]
    async fn an_answer_past_the_bound_cannot_decide_and_is_not_read_whole() {
        // A "spamd" sending more than the bound and then waiting with the connection open.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = l.local_addr().unwrap();
        let (done, wait) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await.unwrap();
            let mut answer = b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 9.0 / 5.0\r\n\r\n".to_vec();
            answer.resize(MAX_ANSWER + 4096, b'A');
            s.write_all(&answer).await.unwrap();
            let _ = wait.await;
        });
        let check = Spamd::new(SpamdConfig {
            enabled: true,
            address,
            ..SpamdConfig::default()
        });
        let mut cx = CheckCtx::new(Stage::Data, "192.0.2.1:40000".parse().unwrap());
        cx.content = bytes::Bytes::from_static(b"Subject: x\r\n\r\nhi\r\n");
        let e = check.check(&cx).await.unwrap_err();
        assert!(
            e.to_string()
                .ends_with(&format!("the answer is larger than {MAX_ANSWER} bytes")),
            "{e}"
        );
        drop(done);
    }
}
