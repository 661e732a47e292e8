//! Intake's delivery targets: where an accepted message goes while the client waits.
//!
//! | target | module | what it does |
//! |---|---|---|
//! | `store` | `intake_core::StoreTarget` | the local store (durable before the 250) |
//! | `relay` | [`relay`] | a downstream SMTP/LMTP server (pooled connections, STARTTLS, AUTH); with `verify_recipients`, a RCPT-time check asking it about each recipient |
//! | `webhook` | [`webhook`] | an HTTP POST of JSON (signed), on `intake-client`'s HTTP client |
//! | `program` | [`program`] | a command, the message on its standard input |
//!
//! Each is an [`intake_core::DeliveryTarget`] answering per recipient, never an error.
//! [`registry`] lists them by their configuration name and builds the configured ones
//! once ([`TargetSet`]); listeners pick theirs by name. The SMTP crate knows none of them:
//! it only sees `intake_core::Targets`.
#![warn(missing_docs)]

pub mod program;
pub mod registry;
pub mod relay;
pub mod settings;
mod target;
pub mod webhook;

pub use registry::{
    Built, RouteSpec, TARGETS, TargetContext, TargetEntry, TargetError, TargetName, TargetSet,
    TargetsConfig, Verifier,
};
