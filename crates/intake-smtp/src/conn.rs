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
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use futures_util::FutureExt;

use bytes::BytesMut;
use intake_core::{ArrivalGuard, Arrivals};
use intake_proto::{CommandDecoder, Reply, replies};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::assemble::Content;
use crate::config::SessionConfig;
use crate::effects::Effects;
use crate::failure::Failure;
use crate::session::{Input, Session, Step};
use refused::{count_refused, log_due};

/// How long a session may wait for its next command before it parks (gives back its
/// buffers, see `Connection::park`): long enough that a client sending command after
/// command never pays for it, short enough that idle connections hold little.
const PARK_AFTER: std::time::Duration = std::time::Duration::from_secs(1);
/// Buffer room reserved for reading commands: a command line or a pipelined MAIL, RCPT and
/// DATA fit; a longer batch takes another read. Reserved once the client has sent
/// something (see `Connection::fill`): a connection that has only been greeted, or has
/// parked, holds no buffer.
const COMMAND_ROOM: usize = 128;
/// Buffer room reserved for reading message content.
const CONTENT_ROOM: usize = 16 * 1024;

/// A wait for input: how long, whether to park on the way, what room to read with,
/// whether a shutdown ends it.
///
/// Kept small: every idle connection's task holds it while it waits.
struct Wait {
    /// Milliseconds (rounded up).
    idle_ms: u32,
    park: bool,
    /// Reading message content (a larger buffer), not commands.
    content: bool,
    interruptible: bool,
    /// Set once the wait has parked the session (see [`PARK_AFTER`]).
    parked: bool,
}

impl Wait {
    fn idle(&self) -> Duration {
        Duration::from_millis(u64::from(self.idle_ms))
    }

    fn room(&self) -> usize {
        if self.content {
            CONTENT_ROOM
        } else {
            COMMAND_ROOM
        }
    }
}

/// How a wait for input ended.
enum Waited {
    /// The read returned (0: the client closed the connection).
    Read(std::io::Result<usize>),
    /// Nothing came within the time allowed.
    TimedOut,
    /// The server is shutting down.
    Shutdown,
}

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
                    let first = if wait.park { PARK_AFTER } else { wait.idle() };
                    let mut sleep = pin!(tokio::time::sleep(first));
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

    /// How to wait for the next input, or the reply to close with when the session or the
    /// command line in the buffer has run out of time.
    fn next_wait(&mut self, deadline: Instant) -> Result<Wait, Reply> {
        let in_content = self.session.reading_content();
        let idle = if in_content {
            self.session.config().data_timeout
        } else {
            self.session.config().command_timeout
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(replies::SESSION_TOO_LONG);
        }
        let mut idle = idle.min(left);
        // A command line must be complete within the command timeout however slowly it
        // trickles in (slowloris): the clock starts at its first byte.
        if in_content || self.inbuf.is_empty() {
            self.line_started = None;
        } else {
            let started = *self.line_started.get_or_insert_with(Instant::now);
            let line_left = (started + self.session.config().command_timeout)
                .saturating_duration_since(Instant::now());
            if line_left.is_zero() {
                return Err(replies::TIMEOUT);
            }
            idle = idle.min(line_left);
        }
        // Idle sessions hold little: a small buffer for commands, a larger one for
        // content. Between commands, a session quiet for PARK_AFTER gives even those
        // back until its client speaks again (`park`): most of an idle connection's
        // memory otherwise.
        Ok(Wait {
            idle_ms: u32::try_from(idle.as_micros().div_ceil(1000)).unwrap_or(u32::MAX),
            park: !in_content && self.inbuf.is_empty() && idle > PARK_AFTER,
            content: in_content,
            // Between transactions a shutdown ends the session at once; inside one we let
            // the client finish (the listener bounds how long).
            interruptible: !in_content && !self.session.in_transaction(),
            parked: false,
        })
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

    /// Polls a wait for more input: up to `wait.idle()` (parking after [`PARK_AFTER`] if
    /// `wait.park`), reading with `wait.room()` reserved; the shutdown ends it too if
    /// `wait.interruptible`. `sleep` is the wait's timer.
    ///
    /// A poll function rather than a `select!` of a `timeout`: every idle connection's
    /// task holds this wait, and this way it holds the timer, the shutdown waiter and a
    /// few references, nothing more.
    fn poll_input(
        &mut self,
        cx: &mut Context<'_>,
        wait: &mut Wait,
        mut sleep: Pin<&mut tokio::time::Sleep>,
        mut cancelled: Pin<&mut WaitForCancellationFuture<'_>>,
    ) -> Poll<Waited> {
        loop {
            if wait.interruptible && cancelled.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Waited::Shutdown);
            }
            if let Poll::Ready(r) = self.poll_fill(cx, wait.room()) {
                return Poll::Ready(Waited::Read(r));
            }
            ready!(sleep.as_mut().poll(cx));
            if !wait.park || wait.parked {
                return Poll::Ready(Waited::TimedOut);
            }
            self.park();
            wait.parked = true;
            sleep
                .as_mut()
                .reset(tokio::time::Instant::now() + (wait.idle() - PARK_AFTER));
        }
    }

    /// Gives back the buffers a session waiting for its next command does not need: the
    /// command buffer (a new one is reserved once the client speaks again, see `fill`), the
    /// reply buffer and an empty content buffer.
    fn park(&mut self) {
        self.inbuf = BytesMut::new();
        self.out = Vec::new();
        if self.content.is_empty() {
            self.content.0 = None;
        }
    }

    /// Reads more input into the command or content buffer, with `room` reserved first.
    /// A buffer with nothing allocated (a new session's, a parked one's) is not reserved
    /// until input has arrived: a zero-length read waits for it (on a socket, tokio waits
    /// until it is readable; on a TLS stream, until there is plaintext), so a connection
    /// whose client stays silent holds no buffer. That costs one more system call when a
    /// session starts or wakes from parking, none per command.
    fn poll_fill(&mut self, cx: &mut Context<'_>, room: usize) -> Poll<std::io::Result<usize>> {
        if self.inbuf.capacity() == 0 {
            // Any error or end of stream shows in the read that follows.
            let _ = ready!(pin!(self.io.read(&mut [])).poll(cx));
        }
        self.inbuf.reserve(room);
        pin!(self.io.read_buf(&mut self.inbuf)).poll(cx)
    }

    /// [`Connection::poll_fill`] as a future.
    fn fill(&mut self, room: usize) -> impl Future<Output = std::io::Result<usize>> + '_ {
        poll_fn(move |cx| self.poll_fill(cx, room))
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
