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
    /// Send the 354 reply, then read message content as [`Session::input`] says and call
    /// [`Session::data_done`] when it reports the end.
    ReadData(Reply),
    /// Read one BDAT chunk as [`Session::input`] says (no reply yet), then call
    /// [`Session::bdat_done`]. `keep` false: drop the octets (the transaction failed).
    ReadChunk {
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

/// How the driver reads the next input.
#[derive(Debug)]
pub enum Input<'a> {
    /// A command line.
    Command,
    /// One raw line of a SASL exchange (AUTH), not a command: [`Session::on_line`].
    Line,
    /// DATA content, with this decoder: [`Session::data_done`] at its end.
    Data(&'a mut DataDecoder),
    /// The octets of one BDAT chunk, with this decoder: [`Session::bdat_done`] at its end.
    Chunk(&'a mut BdatDecoder),
}

/// Something the session waits for: the driver does it and calls [`Session::resume`].
#[derive(Debug)]
pub enum Effect {
    /// Run the checks of `cx.stage` and resume with [`Outcome::Checked`]. At
    /// [`Stage::Data`] the driver sets `cx.content` to the message as it will be stored
    /// so far: `header` (our `Received:` first, then the fields earlier checks added),
    /// then the content; at other stages `header` is empty.
    Check {
        /// What the checks look at.
        cx: CheckCtx,
        /// The header fields in front of the content, at [`Stage::Data`].
        header: String,
    },
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

/// What a complete message is known by from the end of its content on: its id, when it
/// arrived, and our `Received:` header naming both.
#[derive(Debug)]
struct Stamp {
    id: MessageId,
    at: jiff::Timestamp,
    received: String,
}

/// What connect and HELO checks added to every message of a session.
#[derive(Debug, Default)]
struct SessionTags {
    /// Header fields, each once.
    headers: Vec<String>,
    /// Findings (scores, symbols, lists).
    findings: intake_core::Findings,
}

/// What the session is waiting for (the [`Effect`] it asked for last).
#[derive(Debug)]
enum Pending {
    /// Checks at connect; then the greeting.
    Connect,
    /// Checks of an EHLO/HELO name; then its reply.
    Helo { name: String, esmtp: bool },
    /// Checks of MAIL FROM; then the transaction starts. (This and `Data` are boxed: the
    /// phase is part of every idle session.)
    Mail(Box<MailFrom>),
    /// Checks of one recipient; then it is added.
    Rcpt(String),
    /// Checks of the content; then delivery.
    Data(Box<Stamp>),
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

/// Where a session is: the one state the session and its driver go by.
#[derive(Debug)]
enum Phase {
    /// Waiting for a command, no mail transaction open.
    Idle,
    /// A mail transaction is open (MAIL accepted; recipients and BDAT chunks arriving).
    Mail(Box<Transaction>),
    /// Reading DATA content for the transaction.
    Data(Box<Transaction>, DataDecoder),
    /// Reading the octets of one BDAT chunk: kept for the transaction, or dropped.
    Chunk {
        /// The transaction, if one is open.
        tx: Option<Box<Transaction>>,
        decoder: BdatDecoder,
        /// The chunk carried LAST.
        last: bool,
        /// The chunk came outside a usable transaction: answer this once it is read.
        refusal: Option<Box<Reply>>,
    },
    /// A SASL exchange: the next line is a response, not a command.
    Auth(auth::Sasl),
    /// Waiting for an effect the driver carries out, with the transaction if one is open.
    Waiting {
        pending: Pending,
        tx: Option<Box<Transaction>>,
    },
}

/// The state of one SMTP session.
#[derive(Debug)]
pub struct Session {
    cfg: Arc<SessionConfig>,
    client: SocketAddr,
    /// Where the session is.
    phase: Phase,
    /// EHLO/HELO name once the client introduced itself.
    helo: Option<Box<str>>,
    /// The client used EHLO (extensions allowed) rather than HELO.
    esmtp: bool,
    /// The connect step has run (the greeting or a refusal was given): a session resumed
    /// after STARTTLS is not greeted again.
    greeted: bool,
    /// Boxed, as most sessions have none: an idle session is small.
    tls: Option<Box<TlsInfo>>,
    errors: u32,
    /// Transactions started (MAIL accepted) in this connection.
    messages: usize,
    /// What connect and HELO checks added and found, for every message of the session
    /// (boxed, as are the transaction and the user: an idle session is small).
    session_tags: Option<Box<SessionTags>>,
    /// The logged-in user (AUTH), if any.
    user: Option<Box<User>>,
}

impl Session {
    /// A new session for a client.
    pub fn new(cfg: Arc<SessionConfig>, client: SocketAddr) -> Session {
        Session {
            cfg,
            client,
            phase: Phase::Idle,
            helo: None,
            esmtp: false,
            greeted: false,
            tls: None,
            errors: 0,
            messages: 0,
            session_tags: None,
            user: None,
        }
    }

    /// The client connected. `early_talker`: it sent something before our greeting.
    /// Returns the greeting, a refusal, or the connect checks to run first.
    pub fn on_connect(&mut self, early_talker: bool) -> Step {
        self.greeted = true;
        if early_talker && self.cfg.early_talkers == ViolationPolicy::Reject {
            return Step::Close(replies::EARLY_TALKER);
        }
        self.ask(Pending::Connect, Stage::Connect, None)
            .unwrap_or_else(|| Step::Reply(self.greeting()))
    }

    /// Whether the connect step has run ([`Session::on_connect`]): a new session, also one
    /// over implicit TLS, has not; one resumed after STARTTLS has.
    pub fn greeted(&self) -> bool {
        self.greeted
    }

    /// The 220 greeting.
    fn greeting(&self) -> Reply {
        Reply::plain(220, format!("{} ESMTP Intake ready", self.cfg.hostname))
    }

    /// The settings this session runs with.
    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// The settings this session runs with, as shared with the listener.
    pub(crate) fn shared_config(&self) -> &Arc<SessionConfig> {
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
        self.tx().is_some()
    }

    /// The open transaction's sender and recipient count (for log lines).
    pub fn transaction_summary(&self) -> Option<(&str, usize)> {
        self.tx().map(|t| (t.mail_from.as_str(), t.rcpt_to.len()))
    }

    /// How the driver reads the next input.
    pub fn input(&mut self) -> Input<'_> {
        match &mut self.phase {
            Phase::Data(_, decoder) => Input::Data(decoder),
            Phase::Chunk { decoder, .. } => Input::Chunk(decoder),
            Phase::Auth(_) => Input::Line,
            Phase::Idle | Phase::Mail(_) | Phase::Waiting { .. } => Input::Command,
        }
    }

    /// Whether message content is being read (DATA or a BDAT chunk).
    pub fn reading_content(&self) -> bool {
        matches!(self.phase, Phase::Data(..) | Phase::Chunk { .. })
    }

    /// The open transaction, if any.
    fn tx(&self) -> Option<&Transaction> {
        match &self.phase {
            Phase::Mail(tx) | Phase::Data(tx, _) => Some(tx),
            Phase::Chunk { tx, .. } | Phase::Waiting { tx, .. } => tx.as_deref(),
            Phase::Idle | Phase::Auth(_) => None,
        }
    }

    /// The open transaction, if any, to change.
    fn tx_mut(&mut self) -> Option<&mut Transaction> {
        match &mut self.phase {
            Phase::Mail(tx) | Phase::Data(tx, _) => Some(tx),
            Phase::Chunk { tx, .. } | Phase::Waiting { tx, .. } => tx.as_deref_mut(),
            Phase::Idle | Phase::Auth(_) => None,
        }
    }

    /// Leaves the current phase for [`Phase::Idle`], returning it.
    fn take_phase(&mut self) -> Phase {
        std::mem::replace(&mut self.phase, Phase::Idle)
    }

    /// Goes back to the open transaction, if there is one, or to [`Phase::Idle`].
    fn back_to(&mut self, tx: Option<Box<Transaction>>) {
        self.phase = tx.map_or(Phase::Idle, Phase::Mail);
    }

    /// Ends the open transaction, if any (RSET, a new EHLO, a refused or delivered
    /// message).
    fn end_transaction(&mut self) {
        self.phase = Phase::Idle;
    }

    /// Waits for an effect: remembers what to do after, with the open transaction.
    fn wait(&mut self, pending: Pending, effect: Effect) -> Step {
        let tx = match self.take_phase() {
            Phase::Mail(tx) => Some(tx),
            _ => None,
        };
        self.phase = Phase::Waiting { pending, tx };
        Step::Await(effect)
    }

    /// Records TLS parameters (after a handshake).
    pub fn set_tls(&mut self, tls: TlsInfo) {
        self.tls = Some(Box::new(tls));
    }

    /// The session facts stored with each message.
    pub fn info(&self) -> SessionInfo {
        SessionInfo {
            helo: self.helo.as_deref().unwrap_or_default().to_string(),
            client: self.client,
            tls: self.tls.as_deref().cloned(),
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
                self.end_transaction();
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
