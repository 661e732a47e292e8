//! The SMTP session state machine (RFC 5321 §4.1.4 command ordering).
//!
//! Synchronous and free of I/O: the driver passes each decoded command to
//! [`Session::on_command`] and acts on the returned [`Step`]. Message content is read by
//! the driver with the decoder the step hands over; the session is told how it ended
//! ([`Session::data_done`], [`Session::bdat_done`]).
//!
//! Anything that must wait (policy checks, the store) is a [`Step::Await`] of an
//! [`Effect`]: the driver carries it out, under a deadline, and hands the [`Outcome`] back
//! to [`Session::resume`], which goes on where the session stopped. The session never
//! depends on what runs a check: it sees [`Verdict`]s and maps them to replies from the
//! catalogue ([`policy`]).

mod auth;
mod data;
mod delivered;
pub use delivered::final_reply;
mod helo;
mod mail;
mod policy;
mod rcpt;
mod received;
mod starttls;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use intake_core::{
    AuthResult, CheckCtx, Credentials, DeliveryReport, Envelope, MailParams, MessageId,
    SessionInfo, Stage, TlsInfo, User, Verdict,
};
use intake_proto::{BdatDecoder, Body, Command, DataDecoder, MailFrom, ProtoError, Reply, replies};

use crate::config::{SessionConfig, ViolationPolicy};

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
    /// Send this reply (a SASL challenge), then read one line as it is, not as a command,
    /// and hand it to [`Session::on_line`].
    ReadLine(Reply),
    /// Carry out this effect (checks, delivery), then hand its result to
    /// [`Session::resume`]. Nothing else happens in the session meanwhile.
    Await(Effect),
    /// Send this reply and close the connection.
    Close(Reply),
}

/// Something the session waits for: the driver does it and calls [`Session::resume`].
#[derive(Debug)]
pub enum Effect {
    /// Run the checks of `ctx.stage` (the driver adds the content at [`Stage::Data`]) and
    /// resume with [`Outcome::Checked`].
    Check(CheckCtx),
    /// Hand the message (with [`Delivery::headers`] prepended to the content) to the
    /// listener's delivery targets (the store, a relay, ...) and resume with
    /// [`Outcome::Delivered`].
    Deliver(Delivery),
    /// Check a login with the listener's authenticator (slow hash work off the runtime)
    /// and resume with [`Outcome::Authenticated`].
    Authenticate(Credentials),
}

/// The result of an [`Effect`].
#[derive(Debug)]
pub enum Outcome {
    /// The verdicts of the checks that ran (the pipeline stops at the first deferral or
    /// rejection; a check that could not decide is already a pass or a deferral).
    Checked(Vec<Verdict>),
    /// What the targets said about the message of the last [`Effect::Deliver`], per
    /// recipient (a delivery that missed its deadline is a temporary failure).
    Delivered(DeliveryReport),
    /// What the authenticator said about the login of the last [`Effect::Authenticate`].
    Authenticated(AuthResult),
}

/// A complete message's envelope and header fields, ready for the store.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The envelope.
    pub envelope: Envelope,
    /// Who sent it.
    pub session: SessionInfo,
    /// Header fields to prepend, in order, each CRLF-terminated: our `Received:` first,
    /// then those added by checks.
    pub headers: Vec<String>,
    /// MAIL FROM parameters a relay passes on (BODY, SMTPUTF8).
    pub params: MailParams,
    /// The message id the `Received:` header names.
    pub id: MessageId,
    /// When the end of data was received (the session's clock).
    pub received_at: jiff::Timestamp,
    /// What the checks found (score, symbols, lists, SPF/DKIM/DMARC), stored with it.
    pub findings: Box<intake_core::Findings>,
}

/// What the session is waiting for (the [`Effect`] it asked for last).
#[derive(Debug)]
enum Pending {
    /// Checks at connect; then the greeting.
    Connect,
    /// Checks of an EHLO/HELO name; then its reply.
    Helo { name: String, esmtp: bool },
    /// Checks of MAIL FROM; then the transaction starts.
    Mail(MailFrom),
    /// Checks of one recipient; then it is added.
    Rcpt(String),
    /// Checks of the content; then delivery.
    Data,
    /// The store.
    Deliver(MessageId),
    /// The authenticator.
    Auth,
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
    body: Body,
    mode: ContentMode,
    /// Octets of BDAT content announced so far.
    bdat_size: u64,
    /// Set when a BDAT chunk failed: every later chunk is dropped and answered with it.
    bdat_error: Option<Reply>,
    /// Header fields added by checks for this message.
    headers: Vec<String>,
    /// Sum of the scores checks gave this message.
    score: f32,
    /// What checks found about this message (stored with it).
    findings: intake_core::Findings,
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
    /// Boxed (as are the findings and the user below): an idle session is small.
    tx: Option<Box<Transaction>>,
    errors: u32,
    /// The error to answer once the octets of a BDAT chunk sent outside a usable
    /// transaction have been read.
    pending_chunk_error: Option<Reply>,
    /// The BDAT being read carried LAST.
    pending_last: bool,
    /// Transactions started (MAIL accepted) in this connection.
    messages: usize,
    /// The effect the driver is carrying out for us, if any.
    pending: Option<Pending>,
    /// Header fields added by connect and HELO checks, for every message of the session.
    session_headers: Vec<String>,
    /// What connect and HELO checks found, for every message of the session.
    session_findings: Option<Box<intake_core::Findings>>,
    /// The logged-in user (AUTH), if any.
    user: Option<Box<User>>,
    /// A SASL exchange in progress.
    sasl: Option<auth::Sasl>,
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
            pending: None,
            session_headers: Vec::new(),
            session_findings: None,
            user: None,
            sasl: None,
        }
    }

    /// The client connected. `early_talker`: it sent something before our greeting.
    /// Returns the greeting, a refusal, or the connect checks to run first.
    pub fn on_connect(&mut self, early_talker: bool) -> Step {
        if early_talker && self.cfg.early_talkers == ViolationPolicy::Reject {
            return Step::Close(replies::EARLY_TALKER);
        }
        self.ask(Pending::Connect, Stage::Connect, None)
            .unwrap_or_else(|| Step::Reply(self.greeting()))
    }

    /// The 220 greeting.
    fn greeting(&self) -> Reply {
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
            Command::Auth { mechanism, initial } => self.handle_auth(mechanism, initial),
            Command::NotImplemented(_) => self.client_error(replies::NOT_IMPLEMENTED),
        }
    }

    /// A command that was pipelined although PIPELINING had not been offered (RFC 2920):
    /// refused or carried out, as configured.
    pub fn on_unoffered_pipelining(&mut self, cmd: Command) -> Step {
        if self.cfg.unauthorized_pipelining == ViolationPolicy::Reject {
            self.client_error(replies::UNAUTHORIZED_PIPELINING)
        } else {
            self.on_command(cmd)
        }
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
