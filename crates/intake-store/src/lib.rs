//! Intake's mail stores.
//!
//! Three layers, top down:
//!
//! - [`open`]: the one factory, from `[store]` ([`StoreSettings`]) and a [`Mode`] to a
//!   [`Store`]. The server, the CLI and the tests all open stores through it.
//! - [`Store`]: the layer every consumer uses (it implements [`intake_core::MailStore`]).
//!   It resolves alias recipients before a delivery, publishes [`intake_core::Event`]s
//!   after each committed change (on the local [`intake_core::EventBus`], and on an
//!   [`intake_core::EventFeed`] when one is set), and runs the retention schedule
//!   ([`spawn_retention`]).
//! - Backends ([`intake_core::Backend`]): storage only. [`SqliteStore`] is the embedded
//!   default: one SQLite database (WAL) in the data directory, written by a single thread
//!   that commits many sessions' messages at once (group commit) with `synchronous=FULL`.
//!   [`postgres::PostgresStore`] (feature `postgres`) keeps the same data in PostgreSQL, for
//!   several nodes on one database (group commit on a dedicated connection, events between
//!   nodes over `LISTEN/NOTIFY`). [`memory::MemoryBackend`] keeps everything in memory, for
//!   tests.
//!
//! Every backend passes the same [`conformance`] suite (feature `testing`).
#![warn(missing_docs)]

mod columns;
#[cfg(any(test, feature = "testing"))]
pub mod conformance;
mod gather;
mod layer;
pub mod memory;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
mod settings;
mod sqlite;

pub use layer::{Store, spawn_retention};
#[cfg(feature = "mysql")]
pub use mysql::{MysqlConfig, MysqlStore};
pub use settings::{
    Mode, MysqlOptions, PoolOptions, RedisOptions, SqliteOptions, StoreKind, StoreSettings, open,
};
pub use sqlite::{SqliteConfig, SqliteStore, database_exists};
