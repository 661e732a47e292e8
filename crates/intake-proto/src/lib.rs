//! The SMTP wire format for Intake: turning bytes into values and replies into bytes.
//!
//! This crate performs no I/O and has no tokio dependency. The connection driver in
//! `intake-smtp` owns the socket and feeds bytes in; the session state machine decides
//! what to answer. Everything here can be tested (and fuzzed) on byte slices alone.
//!
//! - [`command`]: line framing (length limit, CRLF discipline) and command parsing. The
//!   grammar of each verb is smtp-proto's; framing is ours so that line endings are
//!   checked before anything is parsed.
//! - [`data`]: the DATA decoder (dot-unstuffing, the `<CRLF>.<CRLF>` terminator, the size
//!   cap, bare CR/LF detection) and the BDAT chunk reader.
//! - [`reply`]: `Reply` and every fixed reply text Intake sends ([`replies`]).
//! - [`ehlo`]: the extensions Intake advertises and the EHLO reply writer.

pub mod command;
pub mod data;
pub mod ehlo;
pub mod replies;
pub mod reply;

pub use command::{Body, Command, CommandDecoder, MailFrom, Mechanism, ProtoError, RcptTo};
pub use data::{BdatDecoder, DataDecoder, DataOutcome, LineEndings};
pub use ehlo::Extensions;
pub use reply::{EnhancedStatus, Reply};
