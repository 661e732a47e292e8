//! The `intake` binary's library half: configuration, wiring and the CLI commands, so that
//! integration tests can start a server in-process.

pub mod cli;
pub mod config;
pub mod fdlimit;
pub mod logging;
pub mod metrics;
pub mod privileges;
pub mod server;

#[cfg(test)]
mod doc_citations;
