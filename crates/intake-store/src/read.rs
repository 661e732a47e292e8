//! `[store]` and `[retention]` read from the configuration (SQLite's own keys are read
//! whatever the type, so that switching back keeps them).

use std::path::PathBuf;
use std::time::Duration;

use intake_config::Reader;
use intake_core::Retention;

use crate::{StoreKind, StoreSettings};

/// Retention settings.
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    /// What to keep (0 / empty in the config: no limit of that kind).
    pub policy: Retention,
    /// How often eviction runs.
    pub interval: Duration,
}

/// Reads `[store]`: the engine and its settings (SQLite's own keys are read whatever the
/// type, so that switching back keeps them).
pub fn read_store(r: &mut Reader<'_>) -> StoreSettings {
    let d = StoreSettings::sqlite("./intake-data");
    let kind: String = r.get("store.type", "sqlite".to_string());
    let url: String = r.get("store.url", String::new());
    let path: String = r.get("store.path", "./intake-data".to_string());
    let search_name: String = r.get("store.search", d.search.name().to_string());
    let search = intake_core::SearchMode::parse(&search_name).unwrap_or_else(|| {
        r.error(
            "store.search",
            format!(
                "{search_name:?}: expected one of {}",
                intake_core::SearchMode::NAMES
                    .iter()
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        d.search
    });
    // The server stores' pool (PostgreSQL, MariaDB/MySQL).
    let mut pool_size: u32 = r.get("store.pool_size", d.pool.pool_size);
    if pool_size == 0 {
        r.error("store.pool_size", "must be at least 1");
        pool_size = 1;
    }
    let mut connect_timeout = r.duration("store.connect_timeout", d.pool.connect_timeout);
    if connect_timeout.is_zero() {
        r.error(
            "store.connect_timeout",
            "must be more than 0 (how long to wait for the database)",
        );
        connect_timeout = d.pool.connect_timeout;
    }
    let mut s = StoreSettings {
        kind: StoreKind::parse(&kind).unwrap_or_else(|| {
            r.error(
                "store.type",
                format!(
                    "{kind:?}: expected one of {}",
                    StoreKind::NAMES
                        .iter()
                        .map(|n| format!("{n:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            StoreKind::Sqlite
        }),
        url,
        path: PathBuf::from(path),
        max_batch: r.get("store.max_batch", d.max_batch),
        commit_delay: r.duration("store.commit_delay", d.commit_delay),
        search,
        sqlite: crate::SqliteOptions {
            busy_timeout: r.duration("store.busy_timeout", d.sqlite.busy_timeout),
            index_max_lag: r.duration("store.index_max_lag", d.sqlite.index_max_lag),
        },
        redis: read_store_redis(r, &d.redis),
        mysql: crate::MysqlOptions {
            require_durable_commit: r.get(
                "store.require_durable_commit",
                d.mysql.require_durable_commit,
            ),
        },
        pool: crate::PoolOptions {
            pool_size,
            connect_timeout,
        },
    };
    if s.max_batch == 0 {
        r.error("store.max_batch", "must be at least 1");
        s.max_batch = 1;
    }
    if s.kind.needs_url() && s.url.is_empty() {
        r.error(
            "store.url",
            format!(
                "store.type = {:?} needs the server's address, such as {}",
                s.kind.name(),
                match s.kind {
                    StoreKind::Postgres => "\"postgres://intake@db.internal/intake\"",
                    StoreKind::Mysql => "\"mysql://intake@db.internal/intake\"",
                    _ => "\"redis://cache.internal:6379/0\"",
                }
            ),
        );
    }
    if !s.kind.needs_url() && !s.url.is_empty() {
        r.error("store.url", "the sqlite store takes store.path, not a URL");
    }
    #[cfg(feature = "redis")]
    if s.kind == StoreKind::Redis
        && !s.url.is_empty()
        && let Err(e) = redis::Client::open(s.url.as_str())
    {
        r.error("store.url", format!("not a Redis URL: {e}"));
    }
    s
}

/// `store.redis_*`: options only the Redis store reads.
fn read_store_redis(r: &mut Reader<'_>, d: &crate::RedisOptions) -> crate::RedisOptions {
    let cap: u64 = r.get("store.redis_mailbox_cap", 0);
    let o = crate::RedisOptions {
        key_prefix: r.get("store.redis_key_prefix", d.key_prefix.clone()),
        accept_weak_durability: r.get(
            "store.redis_accept_weak_durability",
            d.accept_weak_durability,
        ),
        timeout: r.duration("store.redis_timeout", d.timeout),
        mailbox_cap: (cap > 0).then_some(cap),
        search_scan: r.get("store.redis_search_scan", d.search_scan),
    };
    if o.timeout.is_zero() {
        r.error("store.redis_timeout", "must be more than 0");
    }
    o
}

/// Reads `[retention]`: what to keep, and how often eviction runs.
pub fn read_retention(r: &mut Reader<'_>) -> RetentionSettings {
    let per_mailbox: u64 = r.get("retention.per_mailbox", 1000);
    let max_age = r.duration("retention.max_age", Duration::from_secs(7 * 86_400));
    let max_size = r.size("retention.max_store_size", 2 << 30);
    let interval = r.duration("retention.interval", Duration::from_secs(60));
    if interval.is_zero() {
        r.error("retention.interval", "must be at least 1s");
    }
    RetentionSettings {
        policy: Retention {
            per_mailbox: (per_mailbox > 0).then_some(per_mailbox),
            max_age: (!max_age.is_zero()).then_some(max_age),
            max_bytes: (max_size > 0).then_some(max_size),
        },
        interval,
    }
}
