//! Intake's outbound connections, shared by the crates that talk to other servers.
//!
//! - [`tls`]: client TLS configurations (rustls on ring): a CA file, the system's roots, or
//!   any certificate (opportunistic STARTTLS). Used by the relay and by `https://` requests.
//! - [`http`]: one HTTP/1.1 client on hyper for every HTTP request Intake makes (the webhook
//!   target, the rspamd check): one connection per request, the whole exchange under the
//!   caller's timeout, every response body read up to a bound.
//!
//! A crate of its own so that `intake-delivery` and `intake-policy` share it without either
//! depending on the other, and `intake-core` stays free of hyper and rustls.
#![warn(missing_docs)]

pub mod http;
pub mod tls;

pub use http::{HttpClient, HttpError, HttpUrl, Response};
pub use tls::Trust;
