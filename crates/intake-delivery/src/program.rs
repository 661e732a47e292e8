//! The program target (the pipe transport): runs a command per message while the client
//! waits, the message on its standard input and the envelope in environment variables.
//!
//! Never through a shell: `command` is the program and its arguments, run as they are.
//! The environment is cleared and holds only `PATH` and the `INTAKE_*` variables below.
//! Exit status 0 accepts the message for every recipient; 75 (`EX_TEMPFAIL`, sysexits.h)
//! is a temporary failure (the client gets a 4xx and retries); any other status is a
//! permanent failure (5xx). A program that runs past `timeout` is killed: temporary
//! failure. At most `max_running` run at once; past that the message fails temporarily at
//! once (never queued).
//!
//! | variable | value |
//! |---|---|
//! | `INTAKE_ID` | the message id |
//! | `INTAKE_SENDER` | the envelope sender (empty for `<>`) |
//! | `INTAKE_RECIPIENTS` | the envelope recipients, separated by spaces |
//! | `INTAKE_RECIPIENT` | the first recipient |
//! | `INTAKE_CLIENT_ADDRESS` | the client's IP address |
//! | `INTAKE_HELO` | the client's EHLO/HELO name |
//! | `INTAKE_SIZE` | size of the content in octets |
//! | `INTAKE_TLS` | `1` if the session was encrypted, else `0` |

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use intake_core::{DeliveryTarget, Handoff, RcptOutcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::Semaphore;

use crate::target::{Built, SetupError, TargetContext};

/// The registry's constructor: the `[program]` section.
pub(crate) fn build(cfg: &ProgramConfig, _cx: &TargetContext) -> Result<Built, SetupError> {
    let cfg = cfg.clone();
    Ok(Built::target(Arc::new(ProgramTarget::new(cfg))))
}

/// sysexits.h `EX_TEMPFAIL`.
pub const EX_TEMPFAIL: i32 = 75;

/// What to run.
#[derive(Debug, Clone)]
pub struct ProgramConfig {
    /// The program (absolute path, or found on `PATH`) and its arguments.
    pub command: Vec<String>,
    /// How long it may run.
    pub timeout: Duration,
    /// How many may run at once.
    pub max_running: usize,
    /// `PATH` for the program.
    pub path: String,
    /// Working directory; `None`: the server's.
    pub dir: Option<PathBuf>,
}

impl ProgramConfig {
    /// Runs `command` with the defaults: 60 s, 10 at once.
    pub fn new(command: Vec<String>) -> ProgramConfig {
        ProgramConfig {
            command,
            timeout: Duration::from_secs(60),
            max_running: 10,
            path: "/usr/local/bin:/usr/bin:/bin".into(),
            dir: None,
        }
    }
}

/// The program [`DeliveryTarget`].
pub struct ProgramTarget {
    cfg: ProgramConfig,
    running: Arc<Semaphore>,
}

impl ProgramTarget {
    /// A target running `cfg.command` (which must not be empty).
    pub fn new(cfg: ProgramConfig) -> ProgramTarget {
        assert!(
            !cfg.command.is_empty(),
            "program.command is checked when loading"
        );
        ProgramTarget {
            running: Arc::new(Semaphore::new(cfg.max_running.max(1))),
            cfg,
        }
    }

    async fn run(&self, msg: &Handoff) -> RcptOutcome {
        let m = &msg.message;
        let mut cmd = Command::new(&self.cfg.command[0]);
        cmd.args(&self.cfg.command[1..])
            .env_clear()
            .env("PATH", &self.cfg.path)
            .env("INTAKE_ID", m.id.to_string())
            .env("INTAKE_SENDER", &m.envelope.mail_from)
            .env("INTAKE_RECIPIENTS", m.envelope.rcpt_to.join(" "))
            .env(
                "INTAKE_RECIPIENT",
                m.envelope.rcpt_to.first().map(String::as_str).unwrap_or(""),
            )
            .env("INTAKE_CLIENT_ADDRESS", m.session.client.ip().to_string())
            .env("INTAKE_HELO", &m.session.helo)
            .env("INTAKE_SIZE", m.size.to_string())
            .env(
                "INTAKE_TLS",
                if m.session.tls.is_some() { "1" } else { "0" },
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(d) = &self.cfg.dir {
            cmd.current_dir(d);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(id = %m.id, command = ?self.cfg.command, error = %e, "program did not start");
                return RcptOutcome::TEMP;
            }
        };
        let mut stdin = child.stdin.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let raw = m.raw.clone();
        let work = async move {
            // A program may exit without reading all of its input: not an error by itself.
            let feed = async move {
                let _ = stdin.write_all(&raw).await;
                let _ = stdin.shutdown().await;
            };
            let mut err = Vec::new();
            let read_err = async {
                // Keep the first 4 KiB for the log; drain the rest so the program never
                // blocks on a full pipe.
                let mut chunk = [0u8; 4096];
                loop {
                    match stderr.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) if err.len() < 4096 => err.extend_from_slice(&chunk[..n]),
                        Ok(_) => {}
                    }
                }
            };
            let ((), (), status) = tokio::join!(feed, read_err, child.wait());
            (status, err)
        };
        match tokio::time::timeout(self.cfg.timeout, work).await {
            Err(_) => {
                // Dropping the future dropped the child: kill_on_drop killed it.
                tracing::warn!(id = %m.id, command = ?self.cfg.command, timeout = ?self.cfg.timeout,
                    "program ran too long: killed");
                RcptOutcome::TEMP
            }
            Ok((Err(e), _)) => {
                tracing::error!(id = %m.id, error = %e, "program: no exit status");
                RcptOutcome::TEMP
            }
            Ok((Ok(status), err)) => {
                let err = String::from_utf8_lossy(&err);
                let err = err.trim();
                match status.code() {
                    Some(0) => RcptOutcome::Accepted,
                    Some(code) => {
                        tracing::warn!(id = %m.id, command = ?self.cfg.command, code, stderr = %err,
                            "program refused the message");
                        if code == EX_TEMPFAIL {
                            RcptOutcome::TEMP
                        } else {
                            RcptOutcome::PermFail(None)
                        }
                    }
                    None => {
                        tracing::warn!(id = %m.id, command = ?self.cfg.command, stderr = %err,
                            "program killed by a signal");
                        RcptOutcome::TEMP
                    }
                }
            }
        }
    }
}

#[async_trait]
impl DeliveryTarget for ProgramTarget {
    fn name(&self) -> &'static str {
        "program"
    }

    async fn deliver(&self, msg: &Handoff) -> Vec<RcptOutcome> {
        let n = msg.message.envelope.rcpt_to.len();
        let Ok(_permit) = self.running.clone().try_acquire_owned() else {
            tracing::warn!(id = %msg.message.id, limit = self.cfg.max_running,
                "program limit reached (program.max_running): deferred");
            return vec![RcptOutcome::TEMP; n];
        };
        vec![self.run(msg).await; n]
    }
}
