//! The connection driver: the only code that reads or writes an SMTP socket.
//!
//! It decodes input with `intake-proto`, passes commands to the [`Session`], and carries
//! out the returned [`Step`]s: buffering replies, switching to DATA/BDAT content, handing
//! complete messages to the store. Replies are flushed once no complete command is left in
//! the input, so a pipelined batch (RFC 2920) gets its replies in one write, in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use intake_core::{ArrivalGuard, Incoming, MailStore};
use intake_proto::{BdatDecoder, CommandDecoder, DataDecoder, Reply, replies};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::config::SessionConfig;
use crate::session::{Delivery, Session, Step};

/// How input is being read.
enum Mode {
    Command,
    Data(DataDecoder),
    Bdat(BdatDecoder),
}

/// What the driver does after processing the buffered input.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

/// Keep at most this much spare capacity in the content buffer between messages.
const KEEP_CAPACITY: usize = 1 << 20;

/// One SMTP connection.
pub struct Connection<S> {
    io: S,
    session: Session,
    decoder: CommandDecoder,
    mode: Mode,
    inbuf: BytesMut,
    content: BytesMut,
    out: Vec<u8>,
    store: Arc<dyn MailStore>,
    client: SocketAddr,
    /// Held while message content is being received, so a batching store can wait for it.
    arrival: Option<ArrivalGuard>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Connection<S> {
    /// A connection from `client` over `io`.
    pub fn new(
        io: S,
        client: SocketAddr,
        cfg: Arc<SessionConfig>,
        store: Arc<dyn MailStore>,
    ) -> Self {
        let decoder = CommandDecoder::new(cfg.max_line_length, cfg.line_endings);
        Connection {
            io,
            session: Session::new(cfg, client),
            decoder,
            mode: Mode::Command,
            inbuf: BytesMut::with_capacity(8192),
            content: BytesMut::new(),
            out: Vec::with_capacity(1024),
            store,
            client,
            arrival: None,
        }
    }

    /// Runs the session to its end. I/O errors end it silently (the peer went away).
    pub async fn run(mut self, shutdown: CancellationToken) -> std::io::Result<()> {
        self.session.greeting().write_to(&mut self.out);
        loop {
            if self.process().await == Flow::Close {
                self.flush().await?;
                let _ = self.io.shutdown().await;
                return Ok(());
            }
            self.flush().await?;
            let in_content = !matches!(self.mode, Mode::Command);
            let idle = if in_content {
                self.session.config().data_timeout
            } else {
                self.session.config().command_timeout
            };
            // Between transactions a shutdown ends the session at once; inside one we let
            // the client finish (the listener bounds how long).
            let interruptible = !in_content && !self.session.in_transaction();
            self.inbuf.reserve(8192);
            let read = tokio::select! {
                r = timeout(idle, self.io.read_buf(&mut self.inbuf)) => r,
                _ = shutdown.cancelled(), if interruptible => {
                    return self.close_with(replies::SHUTTING_DOWN).await;
                }
            };
            match read {
                Err(_elapsed) => return self.close_with(replies::TIMEOUT).await,
                Ok(Err(e)) => return Err(e),
                Ok(Ok(0)) => {
                    if in_content {
                        tracing::info!(client = %self.client, outcome = "aborted", "connection closed during message content");
                    }
                    return Ok(());
                }
                Ok(Ok(_)) => {}
            }
        }
    }

    async fn close_with(&mut self, reply: Reply) -> std::io::Result<()> {
        reply.write_to(&mut self.out);
        self.flush().await?;
        let _ = self.io.shutdown().await;
        Ok(())
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.io.write_all(&self.out).await?;
            self.io.flush().await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Handles everything complete in the input buffer.
    async fn process(&mut self) -> Flow {
        loop {
            let step = match &mut self.mode {
                Mode::Command => match self.decoder.decode(&mut self.inbuf) {
                    Ok(None) => return Flow::Continue,
                    Ok(Some(cmd)) => self.session.on_command(cmd),
                    Err(e) => {
                        tracing::debug!(client = %self.client, error = %e, "bad command line");
                        self.session.on_proto_error(&e)
                    }
                },
                Mode::Data(dec) => match dec.decode(&mut self.inbuf, &mut self.content) {
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
                        if let Step::Reply(r) | Step::Close(r) = &step {
                            tracing::info!(
                                id = "-", client = %self.client, sender = %sender, rcpts, size,
                                outcome = %r, "message rejected"
                            );
                            self.discard_content();
                        }
                        step
                    }
                },
                Mode::Bdat(dec) => {
                    if !dec.decode(&mut self.inbuf, &mut self.content) {
                        return Flow::Continue;
                    }
                    self.mode = Mode::Command;
                    self.arrival = None;
                    let summary = self
                        .session
                        .transaction_summary()
                        .map(|(s, n)| (s.to_string(), n));
                    let step = self.session.bdat_done();
                    if let Step::Reply(r) = &step
                        && r.is_error()
                    {
                        if let (Some((sender, rcpts)), false) =
                            (summary, self.session.in_transaction())
                        {
                            tracing::info!(
                                id = "-", client = %self.client, sender = %sender, rcpts,
                                outcome = %r, "message rejected"
                            );
                        }
                        self.discard_content();
                    }
                    step
                }
            };
            match step {
                Step::Reply(r) => r.write_to(&mut self.out),
                Step::ReadData(r, dec) => {
                    r.write_to(&mut self.out);
                    self.content.clear();
                    self.mode = Mode::Data(dec);
                    self.arrival = self.store.arrivals().map(|a| a.start());
                }
                Step::ReadChunk { decoder, keep } => {
                    if !keep {
                        self.discard_content();
                    }
                    self.mode = Mode::Bdat(decoder);
                    if keep {
                        self.arrival = self.store.arrivals().map(|a| a.start());
                    }
                }
                Step::Deliver(d) => {
                    let reply = self.deliver(d).await;
                    reply.write_to(&mut self.out);
                }
                Step::Close(r) => {
                    r.write_to(&mut self.out);
                    return Flow::Close;
                }
            }
        }
    }

    fn discard_content(&mut self) {
        self.content.clear();
        if self.content.capacity() > KEEP_CAPACITY {
            self.content = BytesMut::new();
        }
    }

    async fn deliver(&mut self, d: Delivery) -> Reply {
        let started = Instant::now();
        let now = jiff::Timestamp::now();
        let rcpts = d.envelope.rcpt_to.len();
        let sender = d.envelope.mail_from.clone();
        let msg = Incoming::new(
            d.id,
            now.as_millisecond(),
            d.envelope,
            d.session,
            &d.received_header,
            &self.content,
        );
        let size = msg.size;
        self.discard_content();
        let result = self.store.deliver(msg).await;
        let reply = self.session.delivered(d.id, &result);
        match &result {
            Ok(()) => tracing::info!(
                id = %d.id, client = %self.client, sender = %sender, rcpts, size,
                micros = started.elapsed().as_micros() as u64, outcome = "accepted", "message stored"
            ),
            Err(e) => tracing::error!(
                id = %d.id, client = %self.client, sender = %sender, rcpts, size,
                error = %e, outcome = %reply, "message not stored"
            ),
        }
        reply
    }
}
