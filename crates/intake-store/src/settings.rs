//! `[store]`: which backend, its settings, and the one factory that opens it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use intake_core::{Backend, StoreError};

use crate::Store;
use crate::sqlite::{SqliteConfig, SqliteStore, database_exists};

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

/// Options only the SQLite backend reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// How long a write waits for a lock held by another process (`store.busy_timeout`).
    pub busy_timeout: Duration,
    /// Index new mail for search at least this often under load (`store.index_max_lag`).
    pub index_max_lag: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            busy_timeout: Duration::from_secs(5),
            index_max_lag: Duration::from_secs(5),
        }
    }
}

/// Options only the Redis store reads (`store.redis_*`).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// Prepended to every key (`store.redis_key_prefix`).
    pub key_prefix: String,
    /// Start even when Redis does not fsync every write (`store.redis_accept_weak_durability`):
    /// a `250` may then be lost in a crash of Redis or its machine.
    pub accept_weak_durability: bool,
    /// The longest any Redis call may take (`store.redis_timeout`).
    pub timeout: Duration,
    /// Keep at most this many messages per mailbox, enforced in the same atomic write as
    /// each delivery (`store.redis_mailbox_cap`). Messages trimmed so are not announced as
    /// deleted events; `retention.per_mailbox` (the retention schedule) announces its own.
    pub mailbox_cap: Option<u64>,
    /// Messages a search looks at, newest first (`store.redis_search_scan`).
    pub search_scan: u64,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            key_prefix: "intake:store:".into(),
            accept_weak_durability: false,
            timeout: Duration::from_secs(2),
            mailbox_cap: None,
            search_scan: 10_000,
        }
    }
}

/// Options only MariaDB/MySQL reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlOptions {
    /// Refuse to start when the server does not flush its log at each commit
    /// (`store.require_durable_commit`); `false` only warns.
    pub require_durable_commit: bool,
}

impl Default for MysqlOptions {
    fn default() -> Self {
        MysqlOptions {
            require_durable_commit: true,
        }
    }
}

/// The connection pool of the server stores (PostgreSQL, MariaDB/MySQL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolOptions {
    /// Connections for reads and short writes (`store.pool_size`); the group-commit writer
    /// has one of its own on top (and PostgreSQL's event listener one more).
    pub pool_size: u32,
    /// How long to wait for a connection, new or from the pool (`store.connect_timeout`):
    /// past it the operation fails (a delivery answers `451 4.3.0`) instead of hanging.
    pub connect_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            pool_size: 10,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("key_prefix", &self.key_prefix)
            .field("accept_weak_durability", &self.accept_weak_durability)
            .field("timeout", &self.timeout)
            .field("mailbox_cap", &self.mailbox_cap)
            .field("search_scan", &self.search_scan)
            .finish()
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

/// A URL without its password.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

/// How a process uses the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The server: reads and writes everything; creates or upgrades the schema.
    ReadWrite,
    /// The CLI's listings, while a server may be writing: reads only, changes nothing, and
    /// fails if there is no data yet. Writes answer an error.
    ReadOnly,
    /// The CLI's changes to recipients and users, while a server may be running: creates or
    /// upgrades the schema and writes policy state and users, but takes no mail (deliveries
    /// answer [`StoreError::Closed`]).
    Admin,
}

/// Opens the store `[store]` describes: its backend under the [`Store`] layer.
pub async fn open(settings: &StoreSettings, mode: Mode) -> Result<Arc<Store>, StoreError> {
    let backend: Arc<dyn Backend> = match settings.kind {
        StoreKind::Sqlite => Arc::new(open_sqlite(settings, mode)?),
        #[cfg(feature = "redis")]
        StoreKind::Redis => Arc::new(crate::redis::RedisStore::connect(settings, mode).await?),
        #[cfg(feature = "mysql")]
        StoreKind::Mysql => Arc::new(crate::mysql::MysqlStore::connect(settings, mode).await?),
        #[cfg(feature = "postgres")]
        StoreKind::Postgres => return crate::postgres::open(settings, mode).await,
        #[cfg(not(all(feature = "redis", feature = "mysql", feature = "postgres")))]
        other => {
            return Err(StoreError::Unavailable(format!(
                "store.type = {:?} is not built into this version of Intake (cargo feature {:?})",
                other.name(),
                other.name()
            )));
        }
    };
    Ok(Arc::new(Store::new(backend)))
}

fn open_sqlite(settings: &StoreSettings, mode: Mode) -> Result<SqliteStore, StoreError> {
    let cfg = SqliteConfig::from_settings(settings);
    let at = |e: StoreError| {
        StoreError::Unavailable(format!("opening {}: {e}", cfg.db_file().display()))
    };
    match mode {
        Mode::ReadWrite => SqliteStore::open(cfg.clone()).map_err(at),
        Mode::Admin => SqliteStore::open_admin(cfg.clone()).map_err(at),
        Mode::ReadOnly => {
            if !database_exists(&cfg.path) {
                return Err(StoreError::Unavailable(format!(
                    "no Intake data in {} (store.path); has `intake serve` run with the same settings?",
                    cfg.path.display()
                )));
            }
            SqliteStore::open_read_only(cfg.clone()).map_err(at)
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

    #[cfg(not(feature = "redis"))]
    #[tokio::test]
    async fn backends_not_built_in_fail_clearly_at_open() {
        let mut s = StoreSettings::sqlite("unused");
        s.kind = StoreKind::Redis;
        s.url = "redis://127.0.0.1/".into();
        let e = open(&s, Mode::ReadWrite).await.err().unwrap().to_string();
        assert!(e.contains("\"redis\" is not built into"), "{e}");
    }

    #[tokio::test]
    async fn read_only_needs_existing_data() {
        let dir = tempfile::tempdir().unwrap();
        let s = StoreSettings::sqlite(dir.path().join("none"));
        let e = open(&s, Mode::ReadOnly).await.err().unwrap().to_string();
        assert!(e.contains("no Intake data in"), "{e}");
        let admin = open(&s, Mode::Admin).await.unwrap();
        admin.close().await;
        let ro = open(&s, Mode::ReadOnly).await.unwrap();
        use intake_core::MailStore;
        assert_eq!(ro.list_all(Default::default()).await.unwrap().total, 0);
    }
}
