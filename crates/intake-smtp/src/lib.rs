//! Intake's SMTP server.
//!
//! Three layers, each testable without the one above it:
//! - [`session`]: the synchronous state machine. It decides every reply from the commands
//!   it is given and never touches a socket or awaits anything; when it must wait (policy
//!   checks, the store, AUTH) it asks the driver with [`session::Step::Await`] and is
//!   resumed with the [`session::Outcome`]. Its state is one [`session`] phase.
//! - [`conn`]: the driver. The only code that reads or writes the socket: it frames input
//!   with `intake-proto`, runs timeouts and shutdown, carries out the session's effects
//!   through the injected [`effects::Effects`] (each under a deadline) and flushes replies
//!   once per pipelined batch.
//! - [`listener`]: the accept loop, the connection limit and graceful shutdown.
//!
//! [`assemble`] turns received content into the message checks and targets see (our
//! header fields in front, forged `Authentication-Results:` removed, hashed and parsed);
//! [`failure`] maps our own failures (store, delivery, checks, AUTH) to replies, the one
//! place that does.
#![warn(missing_docs)]

pub mod assemble;
pub mod config;
pub mod conn;
pub mod effects;
pub mod failure;
pub mod limits;
pub mod listener;
pub mod proxy;
pub mod session;
pub mod settings;
pub mod tls;

pub use config::{DomainPolicy, SessionConfig, TlsMode};
pub use listener::{LiveConfig, Service, serve_with};
