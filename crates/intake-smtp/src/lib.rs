//! Intake's SMTP server.
//!
//! Three layers, each testable without the one above it:
//! - [`session`]: the synchronous state machine. It decides every reply from the commands
//!   it is given and never touches a socket or awaits anything; when a message is complete
//!   it asks the driver to deliver it ([`session::Step::Deliver`]).
//! - [`conn`]: the driver. The only code that reads or writes the socket: it frames input
//!   with `intake-proto`, runs timeouts and shutdown, hands messages to the store and
//!   flushes replies once per pipelined batch.
//! - [`listener`]: the accept loop, the connection limit and graceful shutdown.
//!
//! [`failure`] maps store failures to replies (the one place that does).
#![warn(missing_docs)]

pub mod config;
pub mod conn;
pub mod failure;
pub mod limits;
pub mod listener;
pub mod proxy;
pub mod session;
pub mod tls;

pub use config::{DomainPolicy, SessionConfig, TlsMode};
pub use listener::{Service, serve, serve_with};
