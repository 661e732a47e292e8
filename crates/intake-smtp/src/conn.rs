//! The connection driver: the only code that reads or writes an SMTP socket.
//!
//! It decodes input with `intake-proto`, passes commands to the [`Session`], and carries
//! out the returned [`Step`]s: buffering replies, switching to DATA/BDAT content, handing
//! complete messages to the store. Replies are flushed once no complete command is left in
//! the input, so a pipelined batch (RFC 2920) gets its replies in one write, in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;

use bytes::{Buf, Bytes, BytesMut};
use intake_core::{
    ArrivalGuard, AuthResult, DeliveryReport, Handoff, Incoming, RcptOutcome, Stage, Targets,
};
use intake_proto::{BdatDecoder, CommandDecoder, DataDecoder, Reply, replies};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::config::SessionConfig;
use crate::session::{Delivery, Effect, Outcome, Session, Step};

/// How input is being read.
enum Mode {
    Command,
    /// One raw line of a SASL exchange (AUTH), not a command.
    Line,
    Data(DataDecoder),
    Bdat(BdatDecoder),
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

/// Keep at most this much spare capacity in the content buffer between messages.
const KEEP_CAPACITY: usize = 1 << 20;

/// Room in front of message content for the header fields we prepend (our `Received:`,
/// those added by checks). Fields longer than that together cost one copy of the message.
const HEADROOM: usize = 2048;

/// Content room a new buffer starts with; larger messages grow it.
const INITIAL_CONTENT: usize = 16 * 1024;

/// Message content as it arrives, behind room for our header fields: the message handed to
/// the targets is this buffer with the fields written in front, not a copy of it.
#[derive(Default)]
struct Content {
    /// [`HEADROOM`] bytes, then the content; empty until the first call to `sink`.
    buf: BytesMut,
}

impl Content {
    /// Where the DATA and BDAT decoders append.
    fn sink(&mut self) -> &mut BytesMut {
        if self.buf.is_empty() {
            // Room for a typical message at once: growing from nothing copies it several
            // times over (and the allocator's work showed in the receive profile).
            self.buf.reserve(HEADROOM + INITIAL_CONTENT);
            self.buf.resize(HEADROOM, 0);
        }
        &mut self.buf
    }

    /// The content received so far.
    fn body(&self) -> &[u8] {
        self.buf.get(HEADROOM..).unwrap_or_default()
    }

    fn is_empty(&self) -> bool {
        self.buf.len() <= HEADROOM
    }

    /// Forgets the content, keeping a moderate buffer for the next message.
    fn clear(&mut self) {
        self.buf.clear();
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = BytesMut::new();
        }
    }

    /// The content as shared bytes (for checks), without a copy; hand the returned whole
    /// buffer back with [`Content::give_back`] once they are done.
    fn lend(&mut self) -> (Bytes, Bytes) {
        self.sink();
        let whole = std::mem::take(&mut self.buf).freeze();
        (whole.slice(HEADROOM..), whole)
    }

    fn give_back(&mut self, whole: Bytes) {
        // Copied only if a check kept a reference to the content.
        self.buf = whole
            .try_into_mut()
            .unwrap_or_else(|kept| BytesMut::from(&kept[..]));
    }

    /// The message: `header`, then the content. The buffer moves into the message (the
    /// header is written into the room in front of the content) unless the header does not
    /// fit. Leaves this empty.
    fn take_message(&mut self, header: &[u8]) -> Bytes {
        self.sink();
        let buf = std::mem::take(&mut self.buf);
        match HEADROOM.checked_sub(header.len()) {
            Some(start) => {
                let mut buf = buf;
                buf[start..HEADROOM].copy_from_slice(header);
                let mut raw = buf.freeze();
                raw.advance(start);
                raw
            }
            None => {
                let mut raw = BytesMut::with_capacity(header.len() + buf.len() - HEADROOM);
                raw.extend_from_slice(header);
                raw.extend_from_slice(&buf[HEADROOM..]);
                raw.freeze()
            }
        }
    }

    /// Takes a delivered message's buffer back for the next message, if no target kept it.
    fn reuse(&mut self, raw: Bytes) {
        if let Ok(mut buf) = raw.try_into_mut()
            && buf.capacity() <= KEEP_CAPACITY
        {
            buf.clear();
            self.buf = buf;
        }
    }
}

/// One SMTP connection.
pub struct Connection<S> {
    io: S,
    session: Session,
    decoder: CommandDecoder,
    mode: Mode,
    inbuf: BytesMut,
    content: Content,
    out: Vec<u8>,
    /// Where accepted messages go (the store, a relay, ...).
    targets: Targets,
    client: SocketAddr,
    /// Held while message content is being received, so a batching store can wait for it.
    arrival: Option<ArrivalGuard>,
    /// Send the 220 greeting first (not when resuming after STARTTLS).
    greet: bool,
    /// When the first byte of the command line now in the buffer arrived.
    line_started: Option<Instant>,
    /// Metric handles for accepted messages, registered at the first one (not looked up
    /// by name and labels for every message; an idle connection pays one pointer).
    metrics: Option<Box<AcceptedMetrics>>,
}

/// What an accepted message counts in.
struct AcceptedMetrics {
    messages: metrics::Counter,
    bytes: metrics::Counter,
    deliver_seconds: metrics::Histogram,
}

impl AcceptedMetrics {
    fn new(listener: &str) -> AcceptedMetrics {
        AcceptedMetrics {
            messages: metrics::counter!("intake_smtp_messages_total", "result" => "accepted",
                "reason" => "2.0.0", "listener" => listener.to_string()),
            bytes: metrics::counter!("intake_smtp_received_bytes_total"),
            deliver_seconds: metrics::histogram!("intake_smtp_deliver_seconds"),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Connection<S> {
    /// A connection from `client` over `io`.
    pub fn new(
        io: S,
        client: SocketAddr,
        cfg: Arc<SessionConfig>,
        targets: impl Into<Targets>,
    ) -> Self {
        Connection::resume(io, Session::new(cfg, client), targets.into(), true)
    }

    /// Continues `session` over a new stream (after a TLS handshake); `greet` sends the 220
    /// first (implicit TLS) or not (STARTTLS, where the client says EHLO next).
    pub fn resume(io: S, session: Session, targets: Targets, greet: bool) -> Self {
        let cfg = session.config();
        let decoder = CommandDecoder::new(cfg.max_line_length, cfg.line_endings);
        let client = session.client();
        Connection {
            io,
            session,
            decoder,
            mode: Mode::Command,
            inbuf: BytesMut::new(),
            content: Content::default(),
            out: Vec::with_capacity(256),
            targets,
            client,
            arrival: None,
            greet,
            line_started: None,
            metrics: None,
        }
    }

    /// Runs the session until it ends or asks for TLS. I/O errors end it (the peer went
    /// away).
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
            if self.greet {
                let early = Box::pin(self.talks_first()).await?;
                if early {
                    tracing::info!(client = %self.client, "early talker: data before the greeting");
                }
                let step = self.session.on_connect(early);
                match Box::pin(self.settle(step)).await.0 {
                    Step::Reply(r) => r.write_to(&mut self.out),
                    Step::Close(r) => {
                        tracing::info!(client = %self.client, reply = %r, "refused at connect");
                        Box::pin(self.close_with(r)).await?;
                        return Ok(Ended::Closed);
                    }
                    other => {
                        tracing::error!(step = ?other, "unexpected step at connect");
                        Box::pin(self.close_with(replies::SHUTTING_DOWN)).await?;
                        return Ok(Ended::Closed);
                    }
                }
            }
            loop {
                match self.process().await {
                    Flow::Close => {
                        self.flush().await?;
                        let _ = self.io.shutdown().await;
                        return Ok(Ended::Closed);
                    }
                    Flow::UpgradeTls => {
                        self.flush().await?;
                        // Whatever the client pipelined after STARTTLS is dropped unread.
                        self.inbuf.clear();
                        return Ok(Ended::StartTls(self.io, Box::new(self.session)));
                    }
                    Flow::Continue => {}
                }
                self.flush().await?;
                let in_content = matches!(self.mode, Mode::Data(_) | Mode::Bdat(_));
                let idle = if in_content {
                    self.session.config().data_timeout
                } else {
                    self.session.config().command_timeout
                };
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    Box::pin(self.close_with(replies::SESSION_TOO_LONG)).await?;
                    return Ok(Ended::Closed);
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
                        Box::pin(self.close_with(replies::TIMEOUT)).await?;
                        return Ok(Ended::Closed);
                    }
                    idle = idle.min(line_left);
                }
                // Between transactions a shutdown ends the session at once; inside one we let
                // the client finish (the listener bounds how long).
                let interruptible = !in_content && !self.session.in_transaction();
                // Idle sessions hold little: a small buffer for commands, a larger one for content.
                self.inbuf.reserve(if in_content { 16 * 1024 } else { 512 });
                let read = tokio::select! {
                    r = timeout(idle, self.io.read_buf(&mut self.inbuf)) => r,
                    _ = shutdown.cancelled(), if interruptible => {
                        Box::pin(self.close_with(replies::SHUTTING_DOWN)).await?;
                        return Ok(Ended::Closed);
                    }
                };
                match read {
                    Err(_elapsed) => {
                        let reply = if Instant::now() >= deadline {
                            replies::SESSION_TOO_LONG
                        } else {
                            replies::TIMEOUT
                        };
                        Box::pin(self.close_with(reply)).await?;
                        return Ok(Ended::Closed);
                    }
                    Ok(Err(e)) => return Err(e),
                    Ok(Ok(0)) => {
                        if in_content {
                            tracing::info!(client = %self.client, outcome = "aborted", "connection closed during message content");
                        }
                        return Ok(Ended::Closed);
                    }
                    Ok(Ok(_)) => {}
                }
            }
        }
    }

    /// Whether the client sent something before our greeting (waiting `greeting_delay`
    /// for it; with no delay, only what has already arrived counts).
    async fn talks_first(&mut self) -> std::io::Result<bool> {
        if !self.inbuf.is_empty() {
            return Ok(true);
        }
        let delay = self.session.config().greeting_delay;
        let n = if delay.is_zero() {
            match self.io.read_buf(&mut self.inbuf).now_or_never() {
                Some(r) => Some(r?),
                None => None,
            }
        } else {
            match tokio::time::timeout(delay, self.io.read_buf(&mut self.inbuf)).await {
                Ok(r) => Some(r?),
                Err(_) => None,
            }
        };
        // Some(0): the client connected and closed at once; that is not talking.
        Ok(matches!(n, Some(k) if k > 0))
    }

    async fn close_with(&mut self, reply: Reply) -> std::io::Result<()> {
        reply.write_to(&mut self.out);
        self.flush().await?;
        let _ = self.io.shutdown().await;
        Ok(())
    }

    /// Writes the buffered replies. A client that does not read them within the command
    /// timeout is cut off: its socket buffer is full and it would hold the session for ever.
    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            let limit = self.session.config().command_timeout;
            let write = async {
                self.io.write_all(&self.out).await?;
                self.io.flush().await
            };
            match tokio::time::timeout(limit, write).await {
                Ok(r) => r?,
                Err(_) => {
                    tracing::info!(client = %self.client, "client does not read its replies: closed");
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "reply not read in time",
                    ));
                }
            }
            self.out.clear();
        }
        Ok(())
    }

    /// Handles everything complete in the input buffer.
    async fn process(&mut self) -> Flow {
        // Commands decoded from this batch of input, and whether the client had been
        // offered PIPELINING before it (RFC 2920: otherwise it must wait for each reply).
        let mut batch_commands = 0usize;
        let may_pipeline = self.session.pipelining_offered();
        loop {
            let step = match &mut self.mode {
                Mode::Command => match self.decoder.decode(&mut self.inbuf) {
                    Ok(None) => return Flow::Continue,
                    Ok(Some(cmd)) => {
                        self.line_started = None;
                        batch_commands += 1;
                        if batch_commands > 1 && !may_pipeline {
                            tracing::debug!(client = %self.client, verb = cmd.verb(), "pipelining before PIPELINING was offered");
                            self.session.on_unoffered_pipelining(cmd)
                        } else {
                            self.session.on_command(cmd)
                        }
                    }
                    Err(e) => {
                        tracing::debug!(client = %self.client, error = %e, "bad command line");
                        self.session.on_proto_error(&e)
                    }
                },
                Mode::Line => {
                    let Some(end) = self.inbuf.iter().position(|&b| b == b'\n') else {
                        if self.inbuf.len() > self.session.config().max_line_length {
                            // RFC 4954 §4: a response line may be long, but not without end.
                            self.inbuf.clear();
                            self.mode = Mode::Command;
                            replies::AUTH_CANCELLED.write_to(&mut self.out);
                            return Flow::Close;
                        }
                        return Flow::Continue;
                    };
                    let line = self.inbuf.split_to(end + 1);
                    self.mode = Mode::Command;
                    self.line_started = None;
                    let text = String::from_utf8_lossy(&line).into_owned();
                    self.session.on_line(&text)
                }
                Mode::Data(dec) => match dec.decode(&mut self.inbuf, self.content.sink()) {
                    None => {
                        if dec.is_over_limit() && !self.content.is_empty() {
                            // Refused already: free what was kept while the rest streams by.
                            self.discard_content();
                        }
                        return Flow::Continue;
                    }
                    Some(outcome) => {
                        let size = dec.size();
                        self.mode = Mode::Command;
                        self.arrival = None;
                        let (sender, rcpts) = self
                            .session
                            .transaction_summary()
                            .map(|(s, n)| (s.to_string(), n))
                            .unwrap_or_default();
                        let step = self.session.data_done(outcome);
                        let (step, delivered) = Box::pin(self.settle(step)).await;
                        if let (Step::Reply(r) | Step::Close(r), false) = (&step, delivered) {
                            tracing::info!(
                                id = "-", client = %self.client, sender = %sender, rcpts, size,
                                outcome = %r, "message rejected"
                            );
                            count_refused(r, &self.session.config().listener);
                            self.discard_content();
                        }
                        step
                    }
                },
                Mode::Bdat(dec) => {
                    if !dec.decode(&mut self.inbuf, self.content.sink()) {
                        return Flow::Continue;
                    }
                    self.mode = Mode::Command;
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
                            tracing::info!(
                                id = "-", client = %self.client, sender = %sender, rcpts,
                                outcome = %r, "message rejected"
                            );
                            count_refused(r, &self.session.config().listener);
                        }
                        self.discard_content();
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
                        self.discard_content();
                    }
                }
                Step::ReadData(r, dec) => {
                    r.write_to(&mut self.out);
                    self.content.clear();
                    self.mode = Mode::Data(dec);
                    self.arrival = self.targets.arrivals().map(|a| a.start());
                }
                Step::ReadChunk { decoder, keep } => {
                    if !keep {
                        self.discard_content();
                    }
                    self.mode = Mode::Bdat(decoder);
                    if keep {
                        self.arrival = self.targets.arrivals().map(|a| a.start());
                    }
                }
                Step::Await(effect) => {
                    tracing::error!(?effect, "effect left unsettled");
                    replies::CHECK_UNAVAILABLE.write_to(&mut self.out);
                }
                Step::Close(r) => {
                    r.write_to(&mut self.out);
                    return Flow::Close;
                }
                Step::StartTls(r) => {
                    r.write_to(&mut self.out);
                    return Flow::UpgradeTls;
                }
                Step::ReadLine(r) => {
                    r.write_to(&mut self.out);
                    self.mode = Mode::Line;
                }
            }
        }
    }

    fn discard_content(&mut self) {
        self.content.clear();
    }

    /// Carries out the session's effects until it gives a step that needs no waiting.
    /// The flag says whether a delivery was attempted (it logs its own outcome).
    async fn settle(&mut self, mut step: Step) -> (Step, bool) {
        let mut delivered = false;
        while let Step::Await(effect) = step {
            let outcome = match effect {
                Effect::Check(mut cx) => {
                    // Content checks see the content itself, not a copy of it.
                    let lent = (cx.stage == Stage::Data).then(|| {
                        let (body, whole) = self.content.lend();
                        cx.content = body;
                        whole
                    });
                    let checks = self.session.config().checks.clone();
                    let verdicts = Box::pin(checks.run(&cx)).await;
                    drop(cx);
                    if let Some(whole) = lent {
                        self.content.give_back(whole);
                    }
                    Outcome::Checked(verdicts)
                }
                Effect::Deliver(d) => {
                    delivered = true;
                    Outcome::Delivered(Box::pin(self.deliver(d)).await)
                }
                Effect::Authenticate(c) => {
                    let auth = self.session.config().auth.authenticator.clone();
                    let limit = self.session.config().command_timeout;
                    match auth {
                        Some(a) => match Box::pin(timeout(limit, a.authenticate(&c))).await {
                            Ok(r) => Outcome::Authenticated(r),
                            Err(_) => Outcome::Authenticated(AuthResult::Unavailable),
                        },
                        None => Outcome::Authenticated(AuthResult::Unavailable),
                    }
                }
            };
            step = self.session.resume(outcome);
        }
        (step, delivered)
    }

    /// Hands a message to the delivery targets under the delivery deadline and logs the
    /// outcome.
    async fn deliver(&mut self, d: Delivery) -> DeliveryReport {
        let started = Instant::now();
        let rcpts = d.envelope.rcpt_to.len();
        let sender = d.envelope.mail_from.clone();
        let header = d.headers.concat();
        let received_at = d.received_at.as_millisecond();
        // RFC 8601 §5: Authentication-Results fields that claim to be ours are forgeries.
        let cleaned = match intake_core::mime::without_auth_results(
            self.content.body(),
            &self.session.config().hostname,
        ) {
            std::borrow::Cow::Owned(cleaned) => Some(cleaned),
            std::borrow::Cow::Borrowed(_) => None,
        };
        let mut message = match cleaned {
            // The usual case: the content buffer becomes the message, header in front.
            None => {
                let raw = self.content.take_message(header.as_bytes());
                Incoming::from_raw(d.id, received_at, d.envelope, d.session, raw, header.len())
            }
            Some(cleaned) => {
                self.discard_content();
                Incoming::new(d.id, received_at, d.envelope, d.session, &header, &cleaned)
            }
        };
        message.findings = *d.findings;
        let size = message.size;
        let handoff = Handoff {
            message,
            params: d.params,
        };
        let limit = self.session.config().deliver_timeout;
        let report = match timeout(limit, self.targets.deliver(&handoff)).await {
            Ok(r) => r,
            Err(_) => {
                tracing::error!(id = %d.id, targets = ?self.targets.names(), ?limit,
                    "delivery not finished within smtp.deliver_timeout");
                DeliveryReport::all(rcpts, RcptOutcome::TEMP, self.targets.has_store())
            }
        };
        self.content.reuse(handoff.message.raw);
        let accepted = report.rcpts.iter().filter(|o| o.is_accepted()).count();
        let outcome = crate::session::final_reply(d.id, &report);
        if accepted == rcpts {
            tracing::info!(
                id = %d.id, client = %self.client, sender = %sender, rcpts, size,
                micros = started.elapsed().as_micros() as u64, outcome = "accepted",
                targets = ?self.targets.names(), "message delivered"
            );
            let listener = &self.session.config().listener;
            let m = self
                .metrics
                .get_or_insert_with(|| Box::new(AcceptedMetrics::new(listener)));
            m.messages.increment(1);
            m.bytes.increment(size);
            m.deliver_seconds.record(started.elapsed());
        } else {
            tracing::error!(
                id = %d.id, client = %self.client, sender = %sender, rcpts, accepted, size,
                outcomes = ?report.rcpts, outcome = %outcome, "message not delivered"
            );
            count_refused(&outcome, &self.session.config().listener);
        }
        report
    }
}

/// Counts a message refused at the end of its content: 5xx rejected, 4xx deferred, by its
/// enhanced status code and listener.
fn count_refused(r: &Reply, listener: &str) {
    let result = if r.code >= 500 {
        "rejected"
    } else {
        "deferred"
    };
    let reason = r
        .status
        .map(|s| s.to_string())
        .unwrap_or_else(|| r.code.to_string());
    metrics::counter!("intake_smtp_messages_total", "result" => result, "reason" => reason,
        "listener" => listener.to_string())
    .increment(1);
}

#[cfg(test)]
mod tests {
    //! The driver over an in-memory stream: what the client sees, and how it is written.

    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};

    use async_trait::async_trait;
    use intake_core::{MailStore, Page, StoredMessage};
    use intake_store::Store;
    use intake_store::memory::MemoryBackend;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadBuf};

    use super::*;

    /// Every message the store holds, oldest first.
    async fn stored(store: &Store) -> Vec<StoredMessage> {
        let all = Page {
            offset: 0,
            limit: 1000,
        };
        let mut out = Vec::new();
        for m in store.list_all(all).await.unwrap().messages.iter().rev() {
            out.push(store.fetch(m.id).await.unwrap().unwrap());
        }
        out
    }

    /// The server's end of the connection, counting the writes it makes.
    struct Counting {
        inner: DuplexStream,
        writes: Arc<AtomicUsize>,
    }

    impl AsyncRead for Counting {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    async fn read_replies(c: &mut DuplexStream, n: usize) -> String {
        let mut text = String::new();
        while !ends_complete(&text, n) {
            let mut b = [0u8; 4096];
            let k = c.read(&mut b).await.unwrap();
            assert!(k > 0, "closed early: {text}");
            text.push_str(&String::from_utf8_lossy(&b[..k]));
        }
        text
    }

    /// Whether `text` holds `n` complete replies (last lines have a space after the code).
    fn ends_complete(text: &str, n: usize) -> bool {
        text.lines()
            .filter(|l| l.len() >= 4 && l.as_bytes()[3] == b' ')
            .count()
            >= n
    }

    #[tokio::test]
    async fn a_pipelined_batch_is_answered_in_one_write() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let writes = Arc::new(AtomicUsize::new(0));
        let store = intake_store::memory::store();
        let conn = Connection::new(
            Counting {
                inner: server,
                writes: writes.clone(),
            },
            "192.0.2.9:1234".parse().unwrap(),
            Arc::new(SessionConfig::default()),
            store.clone(),
        );
        let task = tokio::spawn(conn.run(CancellationToken::new()));
        read_replies(&mut client, 1).await; // greeting
        let before = writes.load(Ordering::SeqCst);
        client
            .write_all(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y.test>\r\nRCPT TO:<z@y.test>\r\nNOOP\r\nDATA\r\n")
            .await
            .unwrap();
        let text = read_replies(&mut client, 6).await;
        assert!(
            text.ends_with("354 2.0.0 Send message, end with <CRLF>.<CRLF>\r\n"),
            "{text}"
        );
        assert_eq!(
            writes.load(Ordering::SeqCst) - before,
            1,
            "six replies, one write"
        );
        client
            .write_all(b"Subject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n")
            .await
            .unwrap();
        let text = read_replies(&mut client, 2).await;
        assert!(text.starts_with("250 2.0.0 Message stored as "), "{text}");
        assert!(matches!(task.await.unwrap().unwrap(), Ended::Closed));
        let stored = stored(&store).await;
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].envelope.rcpt_to, ["x@y.test", "z@y.test"]);
        assert!(stored[0].raw.ends_with(b"Subject: x\r\n\r\nhi\r\n"));
    }

    #[tokio::test]
    async fn shutdown_answers_421_between_transactions() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let token = CancellationToken::new();
        let conn = Connection::new(
            server,
            "192.0.2.9:1234".parse().unwrap(),
            Arc::new(SessionConfig::default()),
            intake_store::memory::store(),
        );
        let task = tokio::spawn(conn.run(token.clone()));
        read_replies(&mut client, 1).await;
        client.write_all(b"EHLO c\r\n").await.unwrap();
        read_replies(&mut client, 1).await;
        token.cancel();
        let text = read_replies(&mut client, 1).await;
        assert!(text.starts_with("421 4.3.2"), "{text}");
        assert!(matches!(task.await.unwrap().unwrap(), Ended::Closed));
    }

    /// A check that answers after `delay`: rejects content containing "SPAM", tags the rest.
    struct ContentCheck {
        stage: intake_core::Stage,
        delay: std::time::Duration,
    }

    #[async_trait]
    impl intake_core::Check for ContentCheck {
        fn name(&self) -> &'static str {
            "content"
        }
        fn stage(&self) -> intake_core::Stage {
            self.stage
        }
        async fn check(
            &self,
            cx: &intake_core::CheckCtx,
        ) -> Result<intake_core::Verdict, intake_core::CheckError> {
            tokio::time::sleep(self.delay).await;
            if cx.content.windows(4).any(|w| w == b"SPAM") {
                return Ok(intake_core::Verdict::Reject {
                    reason: intake_core::Reason::Policy("Looks like spam".into()),
                });
            }
            Ok(intake_core::Verdict::Tag {
                score: 0.5,
                header: format!("X-Content-Checked: {} octets\r\n", cx.content.len()),
                findings: intake_core::Findings::default(),
            })
        }
    }

    fn with_checks(checks: Vec<(intake_core::Stage, u64)>) -> Arc<SessionConfig> {
        let mut p = intake_core::Pipeline::new();
        for (stage, delay_ms) in checks {
            p.add(
                Arc::new(ContentCheck {
                    stage,
                    delay: std::time::Duration::from_millis(delay_ms),
                }),
                std::time::Duration::from_millis(200),
                intake_core::OnError::Defer,
            );
        }
        Arc::new(SessionConfig {
            checks: Arc::new(p),
            ..SessionConfig::default()
        })
    }

    #[tokio::test]
    async fn checks_see_the_content_and_their_deadline_is_kept() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let store = intake_store::memory::store();
        let cfg = with_checks(vec![
            (intake_core::Stage::Data, 0),
            (intake_core::Stage::MailFrom, 10_000),
        ]);
        let conn = Connection::new(
            server,
            "192.0.2.9:1234".parse().unwrap(),
            cfg,
            store.clone(),
        );
        let task = tokio::spawn(conn.run(CancellationToken::new()));
        read_replies(&mut client, 1).await;
        client
            .write_all(b"EHLO c\r\nMAIL FROM:<a@b>\r\n")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let text = read_replies(&mut client, 2).await;
        assert!(
            text.ends_with("451 4.4.3 Unable to verify at this time, try again later\r\n"),
            "{text}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        client.write_all(b"QUIT\r\n").await.unwrap();
        read_replies(&mut client, 1).await;
        task.await.unwrap().unwrap();

        let (mut client, server) = tokio::io::duplex(1 << 16);
        let cfg = with_checks(vec![(intake_core::Stage::Data, 0)]);
        let conn = Connection::new(
            server,
            "192.0.2.9:1234".parse().unwrap(),
            cfg,
            store.clone(),
        );
        let task = tokio::spawn(conn.run(CancellationToken::new()));
        read_replies(&mut client, 1).await;
        client
            .write_all(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n")
            .await
            .unwrap();
        read_replies(&mut client, 4).await;
        client
            .write_all(b"Subject: SPAM\r\n\r\nbuy\r\n.\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n")
            .await
            .unwrap();
        let text = read_replies(&mut client, 4).await;
        assert!(text.starts_with("550 5.7.1 Looks like spam\r\n"), "{text}");
        client
            .write_all(b"Subject: fine\r\n\r\nhi\r\n.\r\nQUIT\r\n")
            .await
            .unwrap();
        let text = read_replies(&mut client, 2).await;
        assert!(text.starts_with("250 2.0.0 Message stored as "), "{text}");
        task.await.unwrap().unwrap();
        let stored = stored(&store).await;
        assert_eq!(stored.len(), 1, "the refused message was not stored");
        let raw = String::from_utf8_lossy(&stored[0].raw);
        assert!(raw.starts_with("Received: from c "), "{raw}");
        assert!(
            raw.contains("\r\nX-Content-Checked: 21 octets\r\nSubject: fine\r\n"),
            "{raw}"
        );
        assert_eq!(stored[0].size, 21, "our headers are not counted as content");
    }

    /// A check that adds one long header field (longer than the room kept in front of the
    /// content) to every message.
    struct LongHeader;

    #[async_trait]
    impl intake_core::Check for LongHeader {
        fn name(&self) -> &'static str {
            "long-header"
        }
        fn stage(&self) -> intake_core::Stage {
            intake_core::Stage::Data
        }
        async fn check(
            &self,
            _: &intake_core::CheckCtx,
        ) -> Result<intake_core::Verdict, intake_core::CheckError> {
            let folded = vec!["x".repeat(70); 60].join("\r\n ");
            Ok(intake_core::Verdict::Tag {
                score: 0.0,
                header: format!("X-Long: {folded}\r\n"),
                findings: intake_core::Findings::default(),
            })
        }
    }

    /// Sends `messages` in one session and returns what was stored.
    async fn store_in_one_session(
        cfg: Arc<SessionConfig>,
        messages: &[Vec<u8>],
    ) -> Vec<intake_core::StoredMessage> {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let store = intake_store::memory::store();
        let conn = Connection::new(
            server,
            "192.0.2.9:1234".parse().unwrap(),
            cfg,
            store.clone(),
        );
        let task = tokio::spawn(conn.run(CancellationToken::new()));
        read_replies(&mut client, 1).await;
        client.write_all(b"EHLO c\r\n").await.unwrap();
        read_replies(&mut client, 1).await;
        for m in messages {
            client
                .write_all(b"MAIL FROM:<a@b>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n")
                .await
                .unwrap();
            read_replies(&mut client, 3).await;
            client.write_all(m).await.unwrap();
            client.write_all(b".\r\n").await.unwrap();
            let text = read_replies(&mut client, 1).await;
            assert!(text.starts_with("250 2.0.0 Message stored as "), "{text}");
        }
        client.write_all(b"QUIT\r\n").await.unwrap();
        read_replies(&mut client, 1).await;
        task.await.unwrap().unwrap();
        let page = intake_core::Page {
            offset: 0,
            limit: 1000,
        };
        let listed = store.list_all(page).await.unwrap().messages;
        let mut stored = Vec::new();
        for summary in listed.iter().rev() {
            stored.push(store.fetch(summary.id).await.unwrap().unwrap());
        }
        stored
    }

    /// Our header fields, then exactly the content (the driver writes the fields into the
    /// room it keeps in front of the content buffer, and reuses the buffer afterwards).
    fn assert_stored(m: &intake_core::StoredMessage, content: &[u8], header_start: &str) {
        let header_len = m.raw.len() - content.len();
        let header = String::from_utf8_lossy(&m.raw[..header_len]);
        assert!(header.starts_with(header_start), "{header}");
        assert!(header.ends_with("\r\n"), "{header}");
        assert_eq!(&m.raw[header_len..], content);
        assert_eq!(m.size, content.len() as u64);
    }

    #[tokio::test]
    async fn each_message_of_a_session_is_stored_exactly_after_our_header() {
        let big = format!(
            "Subject: big\r\n\r\n{}",
            "y".repeat(76).repeat(2000) + "\r\n"
        );
        let messages = [
            big.into_bytes(),
            b"Subject: small\r\n\r\nhi\r\n".to_vec(),
            b"Subject: smaller\r\n\r\n".to_vec(),
        ];
        let stored = store_in_one_session(Arc::new(SessionConfig::default()), &messages).await;
        assert_eq!(stored.len(), 3);
        for (m, content) in stored.iter().zip(&messages) {
            assert_stored(m, content, "Received: from c ");
        }
    }

    #[tokio::test]
    async fn header_fields_longer_than_the_room_in_front_are_stored_too() {
        let mut p = intake_core::Pipeline::new();
        p.add(
            Arc::new(LongHeader),
            std::time::Duration::from_secs(5),
            intake_core::OnError::Defer,
        );
        let cfg = Arc::new(SessionConfig {
            checks: Arc::new(p),
            ..SessionConfig::default()
        });
        let messages = [
            b"Subject: one\r\n\r\nfirst\r\n".to_vec(),
            b"Subject: two\r\n\r\nsecond\r\n".to_vec(),
        ];
        let stored = store_in_one_session(cfg, &messages).await;
        assert_eq!(stored.len(), 2);
        for (m, content) in stored.iter().zip(&messages) {
            assert_stored(m, content, "Received: from c ");
            let raw = String::from_utf8_lossy(&m.raw);
            assert!(raw.len() > HEADROOM + content.len(), "{raw}");
            assert!(raw.contains("\r\nX-Long: xxx"), "{raw}");
        }
    }

    /// A store that never answers in time.
    fn stuck_store() -> Arc<Store> {
        let backend = Arc::new(MemoryBackend::new());
        backend.stall(true);
        Arc::new(Store::new(backend))
    }

    #[tokio::test]
    async fn a_delivery_past_its_deadline_is_451() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let cfg = Arc::new(SessionConfig {
            deliver_timeout: std::time::Duration::from_millis(100),
            ..SessionConfig::default()
        });
        let conn = Connection::new(
            server,
            "192.0.2.9:1234".parse().unwrap(),
            cfg,
            stuck_store(),
        );
        let task = tokio::spawn(conn.run(CancellationToken::new()));
        read_replies(&mut client, 1).await;
        client
            .write_all(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n")
            .await
            .unwrap();
        read_replies(&mut client, 4).await;
        client
            .write_all(b"Subject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n")
            .await
            .unwrap();
        let text = read_replies(&mut client, 2).await;
        assert!(text.starts_with("451 4.3.0 "), "{text}");
        task.await.unwrap().unwrap();
    }
}
