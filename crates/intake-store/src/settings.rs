//! `[store]`: which engine and its settings, each engine's options as that engine defines
//! them. [`crate::open`] turns these into a running store.

use std::path::PathBuf;
use std::time::Duration;

use intake_core::SearchMode;

use crate::common::{PoolOptions, redact};
use crate::mysql::MysqlOptions;
use crate::redis::RedisOptions;
use crate::sqlite::SqliteOptions;

/// A storage engine (`store.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// The embedded SQLite database in `store.path` (the default).
    Sqlite,
    /// PostgreSQL at `store.url`.
    Postgres,
    /// MySQL or MariaDB at `store.url` (feature `mysql`, on by default).
    Mysql,
    /// Redis at `store.url` (`redis://` or `rediss://`).
    Redis,
}

impl StoreKind {
    /// Every kind, as `store.type` spells it.
    pub const NAMES: &'static [&'static str] = &["sqlite", "postgres", "mysql", "redis"];

    /// The kind a `store.type` value names.
    pub fn parse(name: &str) -> Option<StoreKind> {
        match name.trim().to_ascii_lowercase().as_str() {
            "sqlite" => Some(StoreKind::Sqlite),
            "postgres" | "postgresql" => Some(StoreKind::Postgres),
            "mysql" | "mariadb" => Some(StoreKind::Mysql),
            "redis" => Some(StoreKind::Redis),
            _ => None,
        }
    }

    /// Its `store.type` name.
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
            StoreKind::Mysql => "mysql",
            StoreKind::Redis => "redis",
        }
    }

    /// Whether it is a server reached at `store.url` (rather than files in `store.path`).
    pub fn needs_url(self) -> bool {
        self != StoreKind::Sqlite
    }
}

/// `[store]`, whatever the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Which backend (`store.type`).
    pub kind: StoreKind,
    /// Where a server backend is (`store.url`); empty for SQLite.
    pub url: String,
    /// The data directory (`store.path`): SQLite's database, and where an older version
    /// kept the generated alias secret (`alias.key`, imported once).
    pub path: PathBuf,
    /// Most messages in one group commit (`store.max_batch`).
    pub max_batch: usize,
    /// How long to linger for more messages before a commit (`store.commit_delay`).
    pub commit_delay: Duration,
    /// What is indexed for full-text search (`store.search`).
    pub search: SearchMode,
    /// SQLite's own options.
    pub sqlite: SqliteOptions,
    /// Redis's own options.
    pub redis: RedisOptions,
    /// MariaDB/MySQL's options.
    pub mysql: MysqlOptions,
    /// The server stores' connection pool (PostgreSQL, MariaDB/MySQL).
    pub pool: PoolOptions,
}

impl StoreSettings {
    /// SQLite in `path`, with the defaults.
    pub fn sqlite(path: impl Into<PathBuf>) -> Self {
        StoreSettings {
            kind: StoreKind::Sqlite,
            url: String::new(),
            path: path.into(),
            max_batch: 256,
            commit_delay: Duration::from_millis(1),
            search: SearchMode::Full,
            sqlite: SqliteOptions::default(),
            redis: RedisOptions::default(),
            mysql: MysqlOptions::default(),
            pool: PoolOptions::default(),
        }
    }

    /// For messages: `sqlite in ./intake-data`, `postgres at postgres://intake:***@db/intake`.
    pub fn describe(&self) -> String {
        match self.kind {
            StoreKind::Sqlite => format!("sqlite in {}", self.path.display()),
            k => format!("{} at {}", k.name(), redact(&self.url)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_describe_without_passwords() {
        for name in StoreKind::NAMES {
            assert_eq!(StoreKind::parse(name).unwrap().name(), *name);
        }
        assert_eq!(StoreKind::parse("MariaDB"), Some(StoreKind::Mysql));
        assert_eq!(StoreKind::parse("oracle"), None);
        let mut s = StoreSettings::sqlite("/var/lib/intake");
        assert_eq!(s.describe(), "sqlite in /var/lib/intake");
        s.kind = StoreKind::Postgres;
        s.url = "postgres://intake:s3cret@db.internal:5432/intake".into();
        assert_eq!(
            s.describe(),
            "postgres at postgres://intake:***@db.internal:5432/intake"
        );
        s.url = "redis://cache:6379/0".into();
        assert_eq!(s.describe(), "postgres at redis://cache:6379/0");
    }
}
