//! The SMTP session state machine (RFC 5321 §4.1.4 command ordering).
//!
//! Synchronous and free of I/O: the driver passes each decoded command to
//! [`Session::on_command`] and acts on the returned [`Step`]. Message content is read by
//! the driver with the decoder the step hands over; the session is told how it ended
//! ([`Session::data_done`], [`Session::bdat_done`]) and, after the store has answered,
//! what became of the delivery ([`Session::delivered`]).

mod data;
mod helo;
mod mail;
mod rcpt;
mod received;
mod starttls;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use intake_core::{Envelope, SessionInfo, TlsInfo};
use intake_proto::{BdatDecoder, Body, Command, DataDecoder, ProtoError, Reply, replies};

use crate::config::SessionConfig;

/// What the driver must do next.
#[derive(Debug)]
pub enum Step {
    /// Send this reply and go on reading commands.
    Reply(Reply),
    /// Send the 354 reply, then read message content with this decoder and call
    /// [`Session::data_done`] when it reports the end.
    ReadData(Reply, DataDecoder),
    /// Read one BDAT chunk with this decoder (no reply yet), then call
    /// [`Session::bdat_done`]. `keep` false: drop the octets (the transaction failed).
    ReadChunk {
        /// Reads exactly the announced octets.
        decoder: BdatDecoder,
        /// Keep the octets as message content, or drop them.
        keep: bool,
    },
    /// Send this reply, discard any input already buffered (RFC 3207 §4.2: pipelined
    /// commands after STARTTLS are never executed), then run the TLS handshake and call
    /// [`Session::tls_started`].
    StartTls(Reply),
    /// The message is complete: store it (with [`Delivery::received_header`] prepended to
    /// the content), then call [`Session::delivered`].
    Deliver(Delivery),
    /// Send this reply and close the connection.
    Close(Reply),
}

/// A complete message's envelope and trace header, ready for the store.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The envelope.
    pub envelope: Envelope,
    /// Who sent it.
    pub session: SessionInfo,
    /// `Received:` header to prepend, CRLF-terminated.
    pub received_header: String,
    /// The message id the header names.
    pub id: intake_core::MessageId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContentMode {
    /// No content command yet.
    None,
    /// DATA in progress.
    Data,
    /// BDAT chunks have been sent.
    Bdat,
}

/// One mail transaction: MAIL, RCPTs, content.
#[derive(Debug)]
struct Transaction {
    mail_from: String,
    rcpt_to: Vec<String>,
    smtputf8: bool,
    #[allow(dead_code)]
    body: Body,
    mode: ContentMode,
    /// Octets of BDAT content announced so far.
    bdat_size: u64,
    /// Set when a BDAT chunk failed: every later chunk is dropped and answered with it.
    bdat_error: Option<Reply>,
}

/// The state of one SMTP session.
#[derive(Debug)]
pub struct Session {
    cfg: Arc<SessionConfig>,
    client: SocketAddr,
    /// EHLO/HELO name once the client introduced itself.
    helo: Option<String>,
    /// The client used EHLO (extensions allowed) rather than HELO.
    esmtp: bool,
    tls: Option<TlsInfo>,
    tx: Option<Transaction>,
    errors: u32,
    /// The error to answer once the octets of a BDAT chunk sent outside a usable
    /// transaction have been read.
    pending_chunk_error: Option<Reply>,
    /// The BDAT being read carried LAST.
    pending_last: bool,
    /// Transactions started (MAIL accepted) in this connection.
    messages: usize,
}

impl Session {
    /// A new session for a client.
    pub fn new(cfg: Arc<SessionConfig>, client: SocketAddr) -> Session {
        Session {
            cfg,
            client,
            helo: None,
            esmtp: false,
            tls: None,
            tx: None,
            errors: 0,
            pending_chunk_error: None,
            pending_last: false,
            messages: 0,
        }
    }

    /// The 220 greeting.
    pub fn greeting(&self) -> Reply {
        Reply::plain(220, format!("{} ESMTP Intake ready", self.cfg.hostname))
    }

    /// The settings this session runs with.
    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// The client's address.
    pub fn client(&self) -> SocketAddr {
        self.client
    }

    /// Whether the client may pipeline: PIPELINING was offered (after EHLO).
    pub fn pipelining_offered(&self) -> bool {
        self.esmtp
    }

    /// Whether a mail transaction is open (MAIL accepted, not yet finished or reset).
    pub fn in_transaction(&self) -> bool {
        self.tx.is_some()
    }

    /// The open transaction's sender and recipient count (for log lines).
    pub fn transaction_summary(&self) -> Option<(&str, usize)> {
        self.tx
            .as_ref()
            .map(|t| (t.mail_from.as_str(), t.rcpt_to.len()))
    }

    /// Records TLS parameters (after a handshake).
    pub fn set_tls(&mut self, tls: TlsInfo) {
        self.tls = Some(tls);
    }

    /// The session facts stored with each message.
    pub fn info(&self) -> SessionInfo {
        SessionInfo {
            helo: self.helo.clone().unwrap_or_default(),
            client: self.client,
            tls: self.tls.clone(),
        }
    }

    /// Decides what to do with one command.
    pub fn on_command(&mut self, cmd: Command) -> Step {
        match cmd {
            Command::Ehlo(name) => self.handle_helo(name, true),
            Command::Helo(name) => self.handle_helo(name, false),
            Command::Mail(from) => self.handle_mail_from(from),
            Command::Rcpt(to) => self.handle_rcpt_to(to),
            Command::Data => self.handle_data(),
            Command::Bdat { size, last } => self.handle_bdat(size, last),
            Command::Rset => {
                self.tx = None;
                Step::Reply(replies::OK)
            }
            Command::Noop => Step::Reply(replies::OK),
            Command::Vrfy => Step::Reply(replies::VRFY),
            Command::Help => Step::Reply(replies::HELP),
            Command::Quit => Step::Close(replies::BYE),
            Command::StartTls => self.handle_starttls(),
            Command::NotImplemented(_) => self.client_error(replies::NOT_IMPLEMENTED),
        }
    }

    /// Refuses a command the driver found to break the protocol (the reply says how).
    pub fn on_violation(&mut self, reply: Reply) -> Step {
        self.client_error(reply)
    }

    /// Answers a line the decoder refused.
    pub fn on_proto_error(&mut self, e: &ProtoError) -> Step {
        self.client_error(Reply::from(e))
    }

    /// Answers a client mistake, closing the session once it has made too many.
    fn client_error(&mut self, reply: Reply) -> Step {
        self.errors += 1;
        if self.errors >= self.cfg.max_errors {
            Step::Close(replies::TOO_MANY_ERRORS)
        } else {
            Step::Reply(reply)
        }
    }
}
