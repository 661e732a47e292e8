//! The driver: the only code that touches a POP3 socket. It reads, decodes, hands each
//! command to the [`Session`], carries out its [`Step`]s (awaiting the authenticator and the
//! maildrop under a deadline) and flushes the replies of a pipelined batch once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::maildrop::{AuthError, Authenticator, Maildrop, MaildropError};
use crate::proto::{CommandDecoder, MAX_COMMAND_LINE, Reply};
use crate::session::{Session, Step};

/// Replies buffered beyond this are written before the next command is handled, so a
/// pipelined burst of RETRs does not pile up in memory.
const FLUSH_AT: usize = 64 * 1024;

/// What one connection needs besides its socket.
pub(crate) struct Ctx {
    pub client: SocketAddr,
    pub auth: Arc<dyn Authenticator>,
    pub maildrop: Arc<dyn Maildrop>,
    pub idle_timeout: Duration,
    pub store_timeout: Duration,
    pub login_failure_delay: Duration,
    pub shutdown: CancellationToken,
}

/// How a connection's run ended.
pub(crate) enum Ended<S> {
    /// The session is over (QUIT, timeout, shutdown, peer gone).
    Closed,
    /// STLS was accepted: the handshake comes next, on this stream, then the same session.
    StartTls(S, Box<Session>),
}

enum Flow {
    Continue,
    Close,
    UpgradeTls,
}

/// One connection: the stream, its buffers and the session.
pub(crate) struct Connection<S> {
    stream: S,
    inbuf: BytesMut,
    out: BytesMut,
    decoder: CommandDecoder,
    session: Session,
    /// Longest wait for one batch of replies to be written (a client that stops reading).
    write_timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Connection<S> {
    pub(crate) fn new(stream: S, session: Session) -> Self {
        Connection {
            stream,
            inbuf: BytesMut::with_capacity(1024),
            out: BytesMut::new(),
            decoder: CommandDecoder::new(),
            session,
            write_timeout: Duration::from_secs(600),
        }
    }

    /// Runs the session; `greet` sends the greeting first.
    pub(crate) async fn run(mut self, cx: &Ctx, greet: bool) -> std::io::Result<Ended<S>> {
        self.write_timeout = cx.idle_timeout;
        if greet {
            self.session.greeting().write_to(&mut self.out);
        }
        loop {
            // Every complete command already read, in order.
            loop {
                let step = match self.decoder.decode(&mut self.inbuf) {
                    Ok(None) => break,
                    Ok(Some(cmd)) => self.session.on_command(cmd),
                    Err(e) => {
                        tracing::debug!(client = %cx.client, error = %e, "POP3: bad command line");
                        self.session.on_error(&e)
                    }
                };
                match self.carry_out(step, cx).await? {
                    Flow::Continue => {}
                    Flow::Close => {
                        self.flush().await?;
                        let _ = self.stream.shutdown().await;
                        return Ok(Ended::Closed);
                    }
                    Flow::UpgradeTls => {
                        self.flush().await?;
                        if !self.inbuf.is_empty() {
                            // Plaintext sent after STLS must not run inside TLS (RFC 2595 §4).
                            tracing::info!(client = %cx.client, "POP3: input after STLS discarded");
                            self.inbuf.clear();
                        }
                        return Ok(Ended::StartTls(self.stream, Box::new(self.session)));
                    }
                }
                if self.out.len() >= FLUSH_AT {
                    self.flush().await?;
                }
            }
            self.flush().await?;
            self.inbuf.reserve(MAX_COMMAND_LINE * 4);
            tokio::select! {
                read = tokio::time::timeout(cx.idle_timeout, self.stream.read_buf(&mut self.inbuf)) => {
                    match read {
                        Err(_) => {
                            // RFC 1939 §3: an autologout timer; no UPDATE.
                            tracing::debug!(client = %cx.client, "POP3: idle timeout");
                            self.last_word(Reply::err("autologout: idle for too long")).await;
                            return Ok(Ended::Closed);
                        }
                        Ok(Ok(0)) => return Ok(Ended::Closed),
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(e),
                    }
                }
                _ = cx.shutdown.cancelled() => {
                    self.last_word(Reply::err("[SYS/TEMP] server shutting down")).await;
                    return Ok(Ended::Closed);
                }
            }
        }
    }

    /// Carries out a step and the ones that follow it until a reply.
    async fn carry_out(&mut self, mut step: Step, cx: &Ctx) -> std::io::Result<Flow> {
        loop {
            step = match step {
                Step::Reply(r) => {
                    r.write_to(&mut self.out);
                    return Ok(Flow::Continue);
                }
                Step::Close(r) => {
                    r.write_to(&mut self.out);
                    return Ok(Flow::Close);
                }
                Step::StartTls(r) => {
                    r.write_to(&mut self.out);
                    return Ok(Flow::UpgradeTls);
                }
                Step::Login { user, password } => {
                    let login = cx.auth.login(&user, &password, cx.client.ip());
                    let r = match tokio::time::timeout(cx.store_timeout, login).await {
                        Ok(r) => r,
                        Err(_) => Err(AuthError("timed out".into())),
                    };
                    let result = match &r {
                        Ok(Some(_)) => "ok",
                        Ok(None) => "refused",
                        Err(_) => "error",
                    };
                    metrics::counter!("intake_pop3_logins_total", "result" => result).increment(1);
                    match &r {
                        Ok(Some(g)) => {
                            tracing::info!(client = %cx.client, user, reach = ?g.reach, "POP3: login")
                        }
                        Ok(None) => {
                            tracing::info!(client = %cx.client, user, "POP3: wrong login or password")
                        }
                        Err(_) => {}
                    }
                    self.session.logged_in(r)
                }
                Step::Refused { reply, close } => {
                    // The reply is held back: guessing passwords costs the client time.
                    self.flush().await?;
                    tokio::select! {
                        _ = tokio::time::sleep(cx.login_failure_delay) => {}
                        _ = cx.shutdown.cancelled() => return Ok(Flow::Close),
                    }
                    reply.write_to(&mut self.out);
                    return Ok(if close { Flow::Close } else { Flow::Continue });
                }
                Step::Open(grant) => {
                    let listed = timed(cx.store_timeout, cx.maildrop.list(&grant.reach)).await;
                    self.session.opened(grant, listed)
                }
                Step::Fetch { uid, msg, top } => {
                    let fetched = timed(cx.store_timeout, cx.maildrop.fetch(&uid)).await;
                    if matches!(fetched, Ok(Some(_))) && top.is_none() {
                        metrics::counter!("intake_pop3_messages_retrieved_total").increment(1);
                    }
                    self.session.fetched(msg, top, fetched)
                }
                Step::Commit(uids) => {
                    // UPDATE: not interrupted by shutdown, each deletion under the deadline.
                    let mut failed = 0;
                    for uid in &uids {
                        match timed(cx.store_timeout, cx.maildrop.delete(uid)).await {
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(client = %cx.client, uid, error = %e, "POP3: delete failed");
                                failed += 1;
                            }
                        }
                    }
                    metrics::counter!("intake_pop3_messages_deleted_total")
                        .increment((uids.len() - failed) as u64);
                    self.session.committed(failed)
                }
            };
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        let write = async {
            if !self.out.is_empty() {
                self.stream.write_all(&self.out).await?;
                self.out.clear();
            }
            self.stream.flush().await
        };
        match tokio::time::timeout(self.write_timeout, write).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading",
            )),
        }
    }

    /// Sends a last reply without waiting long on a client that does not read.
    async fn last_word(&mut self, reply: Reply) {
        reply.write_to(&mut self.out);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.flush()).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.stream.shutdown()).await;
    }
}

/// A maildrop call under its deadline; running out of time is a store error.
async fn timed<T>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, MaildropError>>,
) -> Result<T, MaildropError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err(MaildropError::Store(intake_core::StoreError::Unavailable(
            "timed out".into(),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use bytes::Bytes;
    use tokio::io::{AsyncBufReadExt, BufReader};

    use super::*;
    use crate::maildrop::{Entry, Grant, Reach};
    use crate::session::SessionRules;

    struct Anyone;

    #[async_trait]
    impl Authenticator for Anyone {
        async fn login(
            &self,
            _: &str,
            _: &str,
            _: std::net::IpAddr,
        ) -> Result<Option<Grant>, AuthError> {
            Ok(Some(Grant {
                reach: Reach::All,
                may_delete: true,
            }))
        }
    }

    #[derive(Default)]
    struct OneMessage {
        deleted: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl Maildrop for OneMessage {
        async fn list(&self, _: &Reach) -> Result<Vec<Entry>, MaildropError> {
            Ok(vec![Entry {
                uid: "m1".into(),
                size: 4,
            }])
        }
        async fn fetch(&self, _: &str) -> Result<Option<Bytes>, MaildropError> {
            Ok(Some(Bytes::from_static(b"x\r\n")))
        }
        async fn delete(&self, uid: &str) -> Result<bool, MaildropError> {
            self.deleted.lock().unwrap().push(uid.into());
            Ok(true)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_session_is_logged_out_after_the_timeout_without_update() {
        let drop = Arc::new(OneMessage::default());
        let cx = Ctx {
            client: "127.0.0.1:1".parse().unwrap(),
            auth: Arc::new(Anyone),
            maildrop: drop.clone(),
            idle_timeout: Duration::from_secs(600),
            store_timeout: Duration::from_secs(30),
            login_failure_delay: Duration::from_secs(2),
            shutdown: CancellationToken::new(),
        };
        let rules = SessionRules {
            tls_available: false,
            plaintext_login: true,
            max_login_failures: 3,
        };
        let (client, server) = tokio::io::duplex(4096);
        let started = tokio::time::Instant::now();
        let run = tokio::spawn(async move {
            Connection::new(server, Session::new(rules))
                .run(&cx, true)
                .await
                .map(|e| matches!(e, Ended::Closed))
        });
        let mut c = BufReader::new(client);
        c.get_mut()
            .write_all(b"USER a\r\nPASS b\r\nDELE 1\r\n")
            .await
            .unwrap();
        let mut lines = Vec::new();
        let mut line = String::new();
        while c.read_line(&mut line).await.unwrap() > 0 {
            lines.push(std::mem::take(&mut line));
        }
        assert_eq!(
            lines.last().unwrap(),
            "-ERR autologout: idle for too long\r\n",
            "{lines:?}"
        );
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert!(started.elapsed() >= Duration::from_secs(600));
        assert!(run.await.unwrap().unwrap());
        assert!(drop.deleted.lock().unwrap().is_empty(), "no UPDATE");
    }
}
