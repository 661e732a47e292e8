//! Intake's mail stores.
//!
//! The embedded default is [`SqliteStore`]: one SQLite database (WAL) in the data directory,
//! written by a single thread that commits many sessions' messages at once (group commit)
//! with `synchronous=FULL`, so every message is fsync'd before its session answers 250.
//! Reads use separate connections and never wait for the writer.
#![warn(missing_docs)]

mod sqlite;

pub use sqlite::{SqliteConfig, SqliteStore, database_exists};
