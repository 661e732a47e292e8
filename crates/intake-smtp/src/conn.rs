//! The connection driver: the only code that reads or writes an SMTP socket.
//!
//! It decodes input with `intake-proto` as the session's phase says ([`Input`]), passes
//! commands to the [`Session`], and carries out the returned [`Step`]s: buffering replies,
//! reading DATA/BDAT content into the message buffer ([`Content`]), and running what the
//! session waits for through the injected [`Effects`] (checks, delivery, AUTH), each under
//! its deadline. Replies are flushed once no complete command is left in the input, so a
//! pipelined batch (RFC 2920) gets its replies in one write, in order.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Poll, ready};
use std::time::Instant;

use futures_util::FutureExt;

use bytes::BytesMut;
use intake_core::{ArrivalGuard, Arrivals};
use intake_proto::{CommandDecoder, Reply, replies};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::assemble::Content;
use crate::config::SessionConfig;
use crate::effects::Effects;
use crate::failure::Failure;
use crate::session::{Input, Session, Step};
use refused::{count_refused, log_due};
use wait::{COMMAND_ROOM, Waited};

/// What the driver does after processing the buffered input.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
    /// STARTTLS was accepted: hand the socket over for the handshake.
    UpgradeTls,
}

/// How a connection's plaintext part ended.
pub enum Ended<S> {
    /// The session is over.
    Closed,
    /// The client asked for TLS: run the handshake on `io`, call
    /// [`Session::tls_started`], then [`Connection::resume`].
    StartTls(S, Box<Session>),
}

/// What a connection needs besides its socket and session: the effects it runs and the
/// group-commit counter it reports content arrivals to.
#[derive(Clone)]
pub struct Services {
    /// Checks, delivery and AUTH.
    pub effects: Arc<dyn Effects>,
    /// Sessions receiving content now, for a store that commits in groups (`None`: no
    /// such store).
    pub arrivals: Option<Arrivals>,
}

/// One SMTP connection.
pub struct Connection<S> {
    io: S,
    session: Session,
    decoder: CommandDecoder,
    inbuf: BytesMut,
    content: LazyContent,
    out: Vec<u8>,
    /// Checks, delivery, AUTH, and the arrivals counter (shared by the listener's
    /// connections).
    services: Arc<Services>,
    /// Held while message content is being received, so a batching store can wait for it.
    arrival: Option<ArrivalGuard>,
    /// When the first byte of the command line now in the buffer arrived.
    line_started: Option<Instant>,
    /// Metric handles for accepted messages, registered at the first one (not looked up
    /// by name and labels for every message; an idle connection pays one pointer).
    metrics: Option<Box<settle::AcceptedMetrics>>,
}

/// The message content buffer, allocated for the first message (most idle connections
/// never send one) and given back by a parked session that holds no content.
#[derive(Default)]
struct LazyContent(Option<Box<Content>>);

impl LazyContent {
    fn get(&mut self) -> &mut Content {
        self.0.get_or_insert_default()
    }

    fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|c| c.is_empty())
    }

    fn clear(&mut self) {
        if let Some(c) = &mut self.0 {
            c.clear();
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Connection<S> {
    /// A connection from `client` over `io`.
    pub fn new(
        io: S,
        client: SocketAddr,
        cfg: Arc<SessionConfig>,
        services: Arc<Services>,
    ) -> Self {
        Connection::resume(io, Session::new(cfg, client), services)
    }

    /// Continues `session` over a new stream (after a TLS handshake). A session not yet
    /// greeted (implicit TLS) gets the 220 first; one that asked for STARTTLS does not (its
    /// client says EHLO next).
    pub fn resume(io: S, session: Session, services: Arc<Services>) -> Self {
        let cfg = session.config();
        let decoder = CommandDecoder::new(cfg.max_line_length, cfg.line_endings);
        Connection {
            io,
            session,
            decoder,
            inbuf: BytesMut::new(),
            content: LazyContent::default(),
            // Grown by the first reply (the greeting) to what it needs, not reserved ahead:
            // an idle connection keeps what it allocates.
            out: Vec::new(),
            services,
            arrival: None,
            line_started: None,
            metrics: None,
        }
    }

    /// Runs the session until it ends or asks for TLS. I/O errors end it (the peer went
    /// away; logged at debug level).
    ///
    /// An async block rather than an `async fn`: the block keeps the connection where it
    /// captured it, while an `async fn` future holds it twice (the argument, and the local
    /// it is moved into), a kilobyte more in every idle connection's task.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would hold its arguments twice"
    )]
    pub fn run(
        mut self,
        shutdown: CancellationToken,
    ) -> impl Future<Output = std::io::Result<Ended<S>>> {
        async move {
            let deadline = Instant::now() + self.session.config().session_timeout;
            // Boxed: the greeting's locals would otherwise keep their room in the task
            // for the life of the connection.
            if !self.session.greeted() && !Box::pin(self.send_greeting()).await? {
                return Ok(Ended::Closed);
            }
            loop {
                match self.process().await {
                    Flow::Close => {
                        self.flush().await.map_err(|e| self.failed(e))?;
                        let _ = self.io.shutdown().await;
                        return Ok(Ended::Closed);
                    }
                    Flow::UpgradeTls => {
                        self.flush().await.map_err(|e| self.failed(e))?;
                        // Whatever the client pipelined after STARTTLS is dropped unread.
                        self.inbuf.clear();
                        return Ok(Ended::StartTls(self.io, Box::new(self.session)));
                    }
                    Flow::Continue => {}
                }
                self.flush().await.map_err(|e| self.failed(e))?;
                // The wait is worked out by a plain function: its temporaries are not kept
                // in the task while it waits.
                let wait = match self.next_wait(deadline) {
                    Ok(w) => Some(w),
                    Err(reply) => {
                        reply.write_to(&mut self.out);
                        None
                    }
                };
                let Some(wait) = wait else {
                    Box::pin(self.close()).await.map_err(|e| self.failed(e))?;
                    return Ok(Ended::Closed);
                };
                // The wait is polled here rather than in a future of its own, which would
                // keep a second copy of its arguments in every idle connection's task.
                let waited = {
                    let mut sleep = pin!(tokio::time::sleep(wait.first_timer()));
                    let mut cancelled = pin!(shutdown.cancelled());
                    let mut wait = wait;
                    let conn = &mut self;
                    poll_fn(move |cx| {
                        conn.poll_input(cx, &mut wait, sleep.as_mut(), cancelled.as_mut())
                    })
                    .await
                };
                // The reply is worked out before anything is awaited, so that the outcome
                // of the wait is not kept in the task.
                let close = match waited {
                    Waited::Read(Ok(n)) if n > 0 => continue,
                    Waited::Read(Ok(_)) => {
                        if self.session.reading_content() {
                            tracing::info!(client = %self.session.client(), outcome = "aborted", "connection closed during message content");
                        }
                        return Ok(Ended::Closed);
                    }
                    Waited::Read(Err(e)) => return Err(self.failed(e)),
                    Waited::Shutdown => replies::SHUTTING_DOWN,
                    Waited::TimedOut if Instant::now() >= deadline => replies::SESSION_TOO_LONG,
                    Waited::TimedOut => replies::TIMEOUT,
                };
                Box::pin(self.close_with(close))
                    .await
                    .map_err(|e| self.failed(e))?;
                return Ok(Ended::Closed);
            }
        }
    }

    /// The greeting: the session's verdict on the client (an early talker, a refusal), then
    /// the 220 or the reply that closes. Answers whether the session goes on.
    async fn send_greeting(&mut self) -> std::io::Result<bool> {
        let early = Box::pin(self.talks_first())
            .await
            .map_err(|e| self.failed(e))?;
        if early {
            tracing::info!(client = %self.session.client(), "early talker: data before the greeting");
        }
        let step = self.session.on_connect(early);
        // The reply is taken out of the step before anything is awaited: a step held across
        // an await would take its (large) room in the future.
        let greeting = match Box::pin(self.settle(step)).await.0 {
            Step::Reply(r) => Ok(r),
            Step::Close(r) => Err(Some(r)),
            other => {
                tracing::error!(step = ?other, "unexpected step at connect");
                Err(None)
            }
        };
        let close = match greeting {
            Ok(r) => {
                // The greeting's buffer is given back once it is sent: a client that never
                // speaks holds none (the first reply takes a new one).
                r.write_to(&mut self.out);
                self.flush().await.map_err(|e| self.failed(e))?;
                self.out = Vec::new();
                return Ok(true);
            }
            Err(Some(r)) => {
                tracing::info!(client = %self.session.client(), reply = %r, "refused at connect");
                r
            }
            Err(None) => replies::SHUTTING_DOWN,
        };
        self.close_with(close).await.map_err(|e| self.failed(e))?;
        Ok(false)
    }

    /// Logs the I/O error that ends the session, and passes it on.
    fn failed(&self, e: std::io::Error) -> std::io::Error {
        tracing::debug!(client = %self.session.client(), error = %e, "connection ended with an error");
        e
    }

    /// Whether the client sent something before our greeting (waiting `greeting_delay`
    /// for it; with no delay, only what has already arrived counts).
    async fn talks_first(&mut self) -> std::io::Result<bool> {
        if !self.inbuf.is_empty() {
            return Ok(true);
        }
        let delay = self.session.config().greeting_delay;
        let n = if delay.is_zero() {
            match self.fill(COMMAND_ROOM).now_or_never() {
                Some(r) => Some(r?),
                None => None,
            }
        } else {
            match tokio::time::timeout(delay, self.fill(COMMAND_ROOM)).await {
                Ok(r) => Some(r?),
                Err(_) => None,
            }
        };
        // Some(0): the client connected and closed at once; that is not talking.
        Ok(matches!(n, Some(k) if k > 0))
    }

    async fn close_with(&mut self, reply: Reply) -> std::io::Result<()> {
        reply.write_to(&mut self.out);
        self.close().await
    }

    /// Sends what is buffered, then closes.
    async fn close(&mut self) -> std::io::Result<()> {
        self.flush().await?;
        let _ = self.io.shutdown().await;
        Ok(())
    }

    /// Writes the buffered replies. A client that does not read them within the command
    /// timeout is cut off: its socket buffer is full and it would hold the session for ever.
    ///
    /// Nearly always the socket takes the replies at once, so the timer is only made (and
    /// boxed) once a write has to wait: every connection's task holds this future while it
    /// writes, and a timer inline would cost each of them its size for the life of the task.
    async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let mut written = 0;
        let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
        poll_fn(|cx| {
            loop {
                let step = if written < self.out.len() {
                    Pin::new(&mut self.io).poll_write(cx, &self.out[written..])
                } else {
                    Pin::new(&mut self.io).poll_flush(cx).map_ok(|()| 0)
                };
                match step {
                    Poll::Ready(Ok(0)) if written < self.out.len() => {
                        return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                    }
                    Poll::Ready(Ok(0)) => return Poll::Ready(Ok(())),
                    Poll::Ready(Ok(n)) => written += n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        let limit = self.session.config().command_timeout;
                        let timer =
                            timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                        ready!(timer.as_mut().poll(cx));
                        tracing::info!(client = %self.session.client(), "client does not read its replies: closed");
                        return Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "reply not read in time",
                        )));
                    }
                }
            }
        })
        .await?;
        self.out.clear();
        Ok(())
    }

    /// Handles everything complete in the input buffer.
    async fn process(&mut self) -> Flow {
        // Commands decoded from this batch of input, and whether the client had been
        // offered PIPELINING before it (RFC 2920: otherwise it must wait for each reply).
        let mut batch_commands = 0usize;
        let may_pipeline = self.session.pipelining_offered();
        loop {
            let step = match self.session.input() {
                Input::Command => match self.decoder.decode(&mut self.inbuf) {
                    Ok(None) => return Flow::Continue,
                    Ok(Some(cmd)) => {
                        self.line_started = None;
                        batch_commands += 1;
                        if batch_commands > 1 && !may_pipeline {
                            tracing::debug!(client = %self.session.client(), verb = cmd.verb(), "pipelining before PIPELINING was offered");
                            self.session.on_unoffered_pipelining(cmd)
                        } else {
                            self.session.on_command(cmd)
                        }
                    }
                    Err(e) => {
                        tracing::debug!(client = %self.session.client(), error = %e, "bad command line");
                        self.session.on_proto_error(&e)
                    }
                },
                Input::Line => match self.inbuf.iter().position(|&b| b == b'\n') {
                    None if self.inbuf.len() > self.session.config().max_line_length => {
                        self.inbuf.clear();
                        self.session.on_endless_line()
                    }
                    None => return Flow::Continue,
                    Some(end) => {
                        let line = self.inbuf.split_to(end + 1);
                        self.line_started = None;
                        let text = String::from_utf8_lossy(&line).into_owned();
                        self.session.on_line(&text)
                    }
                },
                Input::Data(dec) => match dec.decode(&mut self.inbuf, self.content.get().sink()) {
                    None => {
                        if dec.is_over_limit() && !self.content.is_empty() {
                            // Refused already: free what was kept while the rest streams by.
                            self.content.clear();
                        }
                        return Flow::Continue;
                    }
                    Some(outcome) => {
                        let size = dec.size();
                        self.arrival = None;
                        let (sender, rcpts) = self
                            .session
                            .transaction_summary()
                            .map(|(s, n)| (s.to_string(), n))
                            .unwrap_or_default();
                        let step = self.session.data_done(outcome);
                        let (step, delivered) = Box::pin(self.settle(step)).await;
                        if let (Step::Reply(r) | Step::Close(r), false) = (&step, delivered) {
                            if let Some(repeats) = log_due(r) {
                                tracing::info!(
                                    id = "-", client = %self.session.client(), sender = %sender, rcpts, size,
                                    outcome = %r, repeats, "message rejected"
                                );
                            }
                            count_refused(r, &self.session.config().listener);
                            self.content.clear();
                        }
                        step
                    }
                },
                Input::Chunk(dec) => {
                    if !dec.decode(&mut self.inbuf, self.content.get().sink()) {
                        return Flow::Continue;
                    }
                    self.arrival = None;
                    let summary = self
                        .session
                        .transaction_summary()
                        .map(|(s, n)| (s.to_string(), n));
                    let step = self.session.bdat_done();
                    let (step, delivered) = Box::pin(self.settle(step)).await;
                    if let Step::Reply(r) = &step
                        && r.is_error()
                        && !delivered
                    {
                        if let (Some((sender, rcpts)), false) =
                            (summary, self.session.in_transaction())
                        {
                            if let Some(repeats) = log_due(r) {
                                tracing::info!(
                                    id = "-", client = %self.session.client(), sender = %sender, rcpts,
                                    outcome = %r, repeats, "message rejected"
                                );
                            }
                            count_refused(r, &self.session.config().listener);
                        }
                        self.content.clear();
                    }
                    step
                }
            };
            let step = match step {
                Step::Await(_) => Box::pin(self.settle(step)).await.0,
                other => other,
            };
            match step {
                Step::Reply(r) => {
                    r.write_to(&mut self.out);
                    if !self.session.in_transaction() && !self.content.is_empty() {
                        // A content check refused the message.
                        self.content.clear();
                    }
                }
                Step::ReadData(r) => {
                    r.write_to(&mut self.out);
                    self.content.clear();
                    self.arrival = self.services.arrivals.as_ref().map(Arrivals::start);
                }
                Step::ReadChunk { keep } => {
                    if keep {
                        self.arrival = self.services.arrivals.as_ref().map(Arrivals::start);
                    } else {
                        self.content.clear();
                    }
                }
                Step::Await(effect) => {
                    tracing::error!(?effect, "effect left unsettled");
                    Failure::Check.reply().write_to(&mut self.out);
                }
                Step::Close(r) => {
                    r.write_to(&mut self.out);
                    return Flow::Close;
                }
                Step::StartTls(r) => {
                    r.write_to(&mut self.out);
                    return Flow::UpgradeTls;
                }
                Step::ReadLine(r) => r.write_to(&mut self.out),
            }
        }
    }
}

mod refused;
mod settle;
#[cfg(test)]
mod tests;
mod wait;
