//! Intake's mail stores.
//!
//! Three layers, top down:
//!
//! - [`open()`] (open.rs): the one factory, from `[store]` ([`StoreSettings`]) and a
//!   [`Mode`] to an [`Opened`] store and its engine's group-commit [`intake_core::Arrivals`]
//!   counter. The server, the CLI and the tests all open stores through it.
//! - [`Store`] (layer.rs): the layer every caller uses. It implements each capability's
//!   caller trait ([`intake_core::MailStore`], [`intake_core::UserDirectory`],
//!   [`intake_core::RecipientTable`], [`intake_core::PolicyState`]) over the engine's
//!   ([`Backends`]): keys normalized, alias recipients resolved before a delivery,
//!   [`intake_core::Event`]s published after each committed change (on the local
//!   [`intake_core::EventBus`], and on an [`intake_core::EventFeed`] when one is set), and
//!   the retention schedule ([`spawn_retention`]).
//! - Engines: storage only, each implementing [`intake_core::MailBackend`],
//!   [`intake_core::DirectoryBackend`] and [`intake_core::PolicyBackend`], each owning its
//!   options and its event feed. [`SqliteBackend`] is the embedded default (group commit on
//!   one writer thread, `synchronous=FULL`); [`postgres::PostgresBackend`] (feature
//!   `postgres`, events between nodes over `LISTEN/NOTIFY`), [`mysql::MysqlBackend`]
//!   (feature `mysql`) and [`redis::RedisBackend`] (feature `redis`) are the server engines;
//!   [`memory::MemoryBackend`] keeps everything in memory, for tests.
//!
//! Every engine passes the same [`conformance`] suite (feature `testing`).
#![warn(missing_docs)]

mod columns;
mod common;
#[cfg(any(test, feature = "testing"))]
pub mod conformance;
mod evict;
mod gather;
mod layer;
pub mod memory;
#[cfg(feature = "mysql")]
pub mod mysql;
/// MariaDB/MySQL is not built in (cargo feature `mysql`); its options still read.
#[cfg(not(feature = "mysql"))]
pub mod mysql {
    mod options;
    pub use options::MysqlOptions;
}
mod open;
#[cfg(feature = "postgres")]
pub mod postgres;
mod queue;
pub mod read;
#[cfg(feature = "redis")]
pub mod redis;
/// Redis is not built in (cargo feature `redis`); its options still read.
#[cfg(not(feature = "redis"))]
pub mod redis {
    mod options;
    pub use options::RedisOptions;
}
mod settings;
mod sqlite;
mod tagging;

pub use common::{Mode, PoolOptions};
pub use layer::{Backends, Store, spawn_retention};
pub use mysql::MysqlOptions;
pub use open::{Opened, open};
pub use redis::RedisOptions;
pub use settings::{StoreKind, StoreSettings};
pub use sqlite::{SqliteBackend, SqliteConfig, SqliteOptions, database_exists};
pub use tagging::DeliveryTags;
