//! Virus scanning with ClamAV's clamd: at the end of data the message is streamed to clamd
//! with `zINSTREAM` (4-byte big-endian length-prefixed chunks, ended by a zero length),
//! over TCP (`host:port`) or a unix socket (a path). clamd answers `stream: OK` (pass) or
//! `stream: <signature> FOUND`: the message is refused with `554 5.7.1` naming the
//! signature ([`Reason::Virus`]), or with `action = "tag"` accepted with an
//! `X-Virus-Found:` header and the signature among its findings.
//!
//! Messages over `max_size` are not scanned: they go on marked `X-Intake-Unchecked:
//! clamav; larger than clamav.max_size (<n> octets)`, so unscanned mail never looks
//! scanned (deferring them would only make the sender retry until it bounces). clamd away,
//! slow, or refusing the stream (its own `StreamMaxLength`) is "could not decide":
//! `on_error` applies (defer by default: a virus scanner that is down should not let mail
//! through unscanned).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use intake_core::{Check, CheckCtx, CheckError, Findings, OnError, Reason, Stage, Verdict};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// Where clamd listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClamdAddress {
    /// `host:port` (clamd's `TCPSocket`/`TCPAddr`).
    Tcp(String),
    /// A unix socket path (clamd's `LocalSocket`).
    Unix(PathBuf),
}

impl ClamdAddress {
    /// A path (starting with `/`, or `unix:` before it) is a unix socket; anything else
    /// is `host:port`.
    pub fn parse(s: &str) -> ClamdAddress {
        let s = s.trim();
        match s.strip_prefix("unix:") {
            Some(path) => ClamdAddress::Unix(PathBuf::from(path)),
            None if s.starts_with('/') => ClamdAddress::Unix(PathBuf::from(s)),
            None => ClamdAddress::Tcp(s.to_string()),
        }
    }
}

impl fmt::Display for ClamdAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClamdAddress::Tcp(a) => f.write_str(a),
            ClamdAddress::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// What to do with an infected message (`clamav.action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClamavAction {
    /// Refuse it: `554 5.7.1` naming the signature (the default).
    Reject,
    /// Accept it with an `X-Virus-Found:` header.
    Tag,
}

impl ClamavAction {
    /// From `clamav.action`: `reject` or `tag`.
    pub fn parse(s: &str) -> Option<ClamavAction> {
        match s.trim().to_ascii_lowercase().as_str() {
            "reject" => Some(ClamavAction::Reject),
            "tag" => Some(ClamavAction::Tag),
            _ => None,
        }
    }
}

/// Settings of the ClamAV check (`[clamav]`).
#[derive(Debug, Clone)]
pub struct ClamavConfig {
    /// Off by default.
    pub enabled: bool,
    /// clamd's address.
    pub address: ClamdAddress,
    /// Refuse or tag an infected message.
    pub action: ClamavAction,
    /// Larger messages are not scanned (they go on marked `X-Intake-Unchecked:`).
    pub max_size: usize,
    /// How long a scan may take (connect, stream, answer).
    pub timeout: Duration,
    /// When clamd cannot scan: defer (default) or accept.
    pub on_error: OnError,
}

impl Default for ClamavConfig {
    fn default() -> Self {
        ClamavConfig {
            enabled: false,
            address: ClamdAddress::Tcp("127.0.0.1:3310".into()),
            action: ClamavAction::Reject,
            max_size: 25 * 1024 * 1024,
            timeout: Duration::from_secs(30),
            on_error: OnError::Defer,
        }
    }
}

/// What clamd said about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanResult {
    /// `stream: OK`.
    Clean,
    /// `stream: <signature> FOUND`.
    Infected(String),
}

/// clamd could not scan.
#[derive(Debug, thiserror::Error)]
pub enum ClamavError {
    /// Connecting, writing or reading failed.
    #[error("clamd {address}: {source}")]
    Io {
        /// Where.
        address: String,
        /// What.
        source: std::io::Error,
    },
    /// clamd answered with an error (e.g. `INSTREAM size limit exceeded. ERROR`).
    #[error("clamd {address} said {answer:?}")]
    Refused {
        /// Where.
        address: String,
        /// Its answer.
        answer: String,
    },
    /// No answer within `clamav.timeout`.
    #[error("clamd {address}: no answer within {timeout:?}")]
    Timeout {
        /// Where.
        address: String,
        /// The limit.
        timeout: Duration,
    },
}

/// Bytes per INSTREAM chunk.
const CHUNK: usize = 64 * 1024;
/// clamd's answer is one short line; more is not clamd.
const MAX_ANSWER: usize = 4096;

/// Reads clamd's answer to a stream scan (`zINSTREAM`: NUL-terminated).
pub fn parse_answer(answer: &[u8]) -> Result<ScanResult, String> {
    let text = String::from_utf8_lossy(answer);
    let text = text.trim_end_matches(['\0', '\n', '\r']).trim();
    let verdict = text.strip_prefix("stream:").map(str::trim);
    match verdict {
        Some("OK") => Ok(ScanResult::Clean),
        Some(v) if v.ends_with(" FOUND") => {
            let name = v.trim_end_matches(" FOUND").trim();
            if name.is_empty() {
                Err(text.to_string())
            } else {
                Ok(ScanResult::Infected(name.to_string()))
            }
        }
        _ => Err(text.to_string()),
    }
}

/// Sends `content` with `zINSTREAM` on `stream` and returns clamd's raw answer. A write
/// that fails after clamd has answered (it stops reading at its size limit) still returns
/// that answer.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    content: &[u8],
) -> std::io::Result<Vec<u8>> {
    let sent = async {
        stream.write_all(b"zINSTREAM\0").await?;
        for chunk in content.chunks(CHUNK) {
            let len = u32::try_from(chunk.len()).expect("chunks are small");
            stream.write_all(&len.to_be_bytes()).await?;
            stream.write_all(chunk).await?;
        }
        stream.write_all(&0u32.to_be_bytes()).await?;
        stream.flush().await
    }
    .await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.contains(&0) || answer.len() > MAX_ANSWER {
                    break;
                }
            }
            Err(e) if answer.is_empty() => return Err(sent.err().unwrap_or(e)),
            Err(_) => break,
        }
    }
    match sent {
        Err(e) if answer.is_empty() => Err(e),
        _ => Ok(answer),
    }
}

/// The ClamAV check (at end of data).
pub struct Clamav {
    cfg: ClamavConfig,
}

impl Clamav {
    /// The check with these settings.
    pub fn new(cfg: ClamavConfig) -> Clamav {
        Clamav { cfg }
    }

    /// Scans `content` (whatever its size), within `clamav.timeout`.
    pub async fn scan(&self, content: &[u8]) -> Result<ScanResult, ClamavError> {
        let address = self.cfg.address.to_string();
        let io = |source| ClamavError::Io {
            address: address.clone(),
            source,
        };
        let run = async {
            let answer = match &self.cfg.address {
                ClamdAddress::Tcp(a) => exchange(TcpStream::connect(a).await?, content).await?,
                ClamdAddress::Unix(p) => exchange(UnixStream::connect(p).await?, content).await?,
            };
            Ok::<_, std::io::Error>(answer)
        };
        let answer = match tokio::time::timeout(self.cfg.timeout, run).await {
            Ok(a) => a.map_err(io)?,
            Err(_) => {
                return Err(ClamavError::Timeout {
                    address,
                    timeout: self.cfg.timeout,
                });
            }
        };
        parse_answer(&answer).map_err(|answer| ClamavError::Refused {
            address: address.clone(),
            answer,
        })
    }
}

#[async_trait]
impl Check for Clamav {
    fn name(&self) -> &'static str {
        "clamav"
    }

    fn stage(&self) -> Stage {
        Stage::Data
    }

    async fn check(&self, cx: &CheckCtx) -> Result<Verdict, CheckError> {
        if cx.content.len() > self.cfg.max_size {
            tracing::debug!(
                size = cx.content.len(),
                "clamav: over clamav.max_size, not scanned"
            );
            return Ok(Verdict::unchecked(
                "clamav",
                &format!("larger than clamav.max_size ({} octets)", self.cfg.max_size),
            ));
        }
        let result = self.scan(&cx.content).await.map_err(|e| match e {
            ClamavError::Timeout { timeout, .. } => CheckError::Timeout(timeout),
            other => CheckError::Backend(other.to_string()),
        })?;
        let ScanResult::Infected(name) = result else {
            return Ok(Verdict::Pass);
        };
        let name: String = name.chars().filter(|c| !c.is_control()).take(200).collect();
        Ok(match self.cfg.action {
            ClamavAction::Reject => Verdict::Reject {
                reason: Reason::Virus(name),
            },
            ClamavAction::Tag => Verdict::Tag {
                score: 0.0,
                header: format!("X-Virus-Found: {name}\r\n"),
                findings: Findings {
                    symbols: vec![format!("CLAMAV:{name}")],
                    ..Findings::default()
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse() {
        assert_eq!(parse_answer(b"stream: OK\0"), Ok(ScanResult::Clean));
        assert_eq!(
            parse_answer(b"stream: Eicar-Test-Signature FOUND\0"),
            Ok(ScanResult::Infected("Eicar-Test-Signature".into()))
        );
        assert_eq!(
            parse_answer(b"stream: Intake.Test.Pattern.UNOFFICIAL FOUND\n"),
            Ok(ScanResult::Infected(
                "Intake.Test.Pattern.UNOFFICIAL".into()
            ))
        );
        assert!(parse_answer(b"INSTREAM size limit exceeded. ERROR\0").is_err());
        assert!(parse_answer(b"stream:  FOUND\0").is_err());
        assert!(parse_answer(b"").is_err());
    }

    #[test]
    fn addresses_and_actions() {
        assert_eq!(
            ClamdAddress::parse("127.0.0.1:3310"),
            ClamdAddress::Tcp("127.0.0.1:3310".into())
        );
        assert_eq!(
            ClamdAddress::parse("/run/clamav/clamd.ctl"),
            ClamdAddress::Unix("/run/clamav/clamd.ctl".into())
        );
        assert_eq!(
            ClamdAddress::parse("unix:/tmp/c.sock"),
            ClamdAddress::Unix("/tmp/c.sock".into())
        );
        assert_eq!(ClamavAction::parse("Tag"), Some(ClamavAction::Tag));
        assert_eq!(ClamavAction::parse("reject"), Some(ClamavAction::Reject));
        assert_eq!(ClamavAction::parse("drop"), None);
    }

    /// What a client sends is exactly INSTREAM's framing.
    #[tokio::test]
    async fn the_stream_is_framed_in_chunks_and_ended_by_a_zero_length() {
        let (client, mut server) = tokio::io::duplex(1 << 20);
        let content = vec![b'x'; CHUNK + 10];
        let serve = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = server.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
                if got.ends_with(&[0, 0, 0, 0]) && got.len() > 10 + 8 + CHUNK {
                    break;
                }
            }
            server.write_all(b"stream: OK\0").await.unwrap();
            got
        });
        let answer = exchange(client, &content).await.unwrap();
        assert_eq!(answer, b"stream: OK\0");
        let got = serve.await.unwrap();
        let mut want = b"zINSTREAM\0".to_vec();
        want.extend_from_slice(&(CHUNK as u32).to_be_bytes());
        want.extend_from_slice(&content[..CHUNK]);
        want.extend_from_slice(&10u32.to_be_bytes());
        want.extend_from_slice(&content[CHUNK..]);
        want.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(got, want);
    }
}
