//! The one factory: from `[store]` ([`StoreSettings`]) and a [`Mode`] to a running store,
//! its engine chosen by `store.type`. The server, the CLI and the tests open stores here;
//! none of them names an engine type.

use std::sync::Arc;

use intake_core::{Arrivals, EventBus, EventFeed, StoreError};

use crate::common::Mode;
use crate::settings::{StoreKind, StoreSettings};
use crate::sqlite::{SqliteBackend, SqliteConfig, database_exists};
use crate::{Backends, Store};

/// What [`open`] hands back.
pub struct Opened {
    /// The store (the layer over the engine). It is every capability at once; give each
    /// caller only the one it needs (`Arc<dyn MailStore>`, `Arc<dyn UserDirectory>`, ...).
    pub store: Arc<Store>,
    /// The engine's count of sessions receiving content, which its group commit lingers
    /// for; the SMTP listeners count on it (`Targets::with_arrivals`). `None` for an
    /// engine that takes no mail in this mode.
    pub arrivals: Option<Arrivals>,
}

/// Opens the store `[store]` describes: its engine under the [`Store`] layer (with the
/// PostgreSQL event feed between nodes when a PostgreSQL store takes mail).
pub async fn open(settings: &StoreSettings, mode: Mode) -> Result<Opened, StoreError> {
    let (backends, arrivals): (Backends, Option<Arrivals>) = match settings.kind {
        StoreKind::Sqlite => {
            let engine = Arc::new(open_sqlite(settings, mode)?);
            let arrivals = engine.arrivals();
            (engine.into(), arrivals)
        }
        #[cfg(feature = "redis")]
        StoreKind::Redis => {
            let cfg = crate::redis::RedisConfig {
                url: settings.url.clone(),
                max_batch: settings.max_batch,
                commit_delay: settings.commit_delay,
                options: settings.redis.clone(),
            };
            let engine = Arc::new(crate::redis::RedisBackend::connect(&cfg, mode).await?);
            let arrivals = engine.arrivals();
            (engine.into(), arrivals)
        }
        #[cfg(feature = "mysql")]
        StoreKind::Mysql => {
            let cfg = crate::mysql::MysqlConfig {
                url: settings.url.clone(),
                max_batch: settings.max_batch.max(1),
                commit_delay: settings.commit_delay,
                pool_size: settings.pool.pool_size.max(1),
                connect_timeout: settings.pool.connect_timeout,
                require_durable_commit: settings.mysql.require_durable_commit,
                search: settings.search,
            };
            let at = settings.describe();
            let engine = crate::mysql::MysqlBackend::open(cfg, mode)
                .await
                .map_err(|e| StoreError::Unavailable(format!("opening {at}: {e}")))?;
            let engine = Arc::new(engine);
            let arrivals = engine.arrivals();
            (engine.into(), arrivals)
        }
        #[cfg(feature = "postgres")]
        StoreKind::Postgres => return open_postgres(settings, mode).await,
        #[cfg(not(all(feature = "redis", feature = "mysql", feature = "postgres")))]
        other => {
            return Err(StoreError::Unavailable(format!(
                "store.type = {:?} is not built into this version of Intake (cargo feature {:?})",
                other.name(),
                other.name()
            )));
        }
    };
    Ok(Opened {
        store: Arc::new(Store::new(backends).with_search(settings.search)),
        arrivals,
    })
}

fn open_sqlite(settings: &StoreSettings, mode: Mode) -> Result<SqliteBackend, StoreError> {
    let cfg = SqliteConfig {
        path: settings.path.clone(),
        max_batch: settings.max_batch,
        commit_delay: settings.commit_delay,
        busy_timeout: settings.sqlite.busy_timeout,
        index_max_lag: settings.sqlite.index_max_lag,
        search: settings.search,
    };
    let at = |e: StoreError| {
        StoreError::Unavailable(format!("opening {}: {e}", cfg.db_file().display()))
    };
    match mode {
        Mode::ReadWrite => SqliteBackend::open(cfg.clone()).map_err(at),
        Mode::Admin => SqliteBackend::open_admin(cfg.clone()).map_err(at),
        Mode::ReadOnly => {
            if !database_exists(&cfg.path) {
                return Err(StoreError::Unavailable(format!(
                    "no Intake data in {} (store.path); has `intake serve` run with the same settings?",
                    cfg.path.display()
                )));
            }
            SqliteBackend::open_read_only(cfg.clone()).map_err(at)
        }
    }
}

/// PostgreSQL, with its event feed between nodes when it takes mail (`Mode::ReadWrite`).
#[cfg(feature = "postgres")]
async fn open_postgres(settings: &StoreSettings, mode: Mode) -> Result<Opened, StoreError> {
    use crate::postgres::{PostgresBackend, PostgresConfig};
    let mut cfg = PostgresConfig::new(&settings.url, &settings.pool)?;
    cfg.max_batch = settings.max_batch.max(1);
    cfg.commit_delay = settings.commit_delay;
    cfg.search = settings.search;
    let engine = Arc::new(PostgresBackend::connect(cfg, mode).await?);
    let events = EventBus::default();
    let feed = match mode {
        Mode::ReadWrite => Some(engine.start_feed(events.clone()).await?),
        Mode::ReadOnly | Mode::Admin => None,
    };
    let arrivals = engine.arrivals();
    let mut store = Store::new(engine)
        .with_events(events)
        .with_search(settings.search);
    if let Some(feed) = feed {
        store = store.with_feed(feed as Arc<dyn EventFeed>);
    }
    Ok(Opened {
        store: Arc::new(store),
        arrivals,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use intake_core::MailStore;

    #[cfg(not(feature = "redis"))]
    #[tokio::test]
    async fn engines_not_built_in_fail_clearly_at_open() {
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
        assert!(admin.arrivals.is_none(), "an admin store takes no mail");
        admin.store.close().await;
        let ro = open(&s, Mode::ReadOnly).await.unwrap();
        assert_eq!(
            ro.store.list_all(Default::default()).await.unwrap().total,
            0
        );
        assert!(ro.arrivals.is_none());
    }

    #[tokio::test]
    async fn the_server_gets_the_engines_arrivals_counter() {
        let dir = tempfile::tempdir().unwrap();
        let s = StoreSettings::sqlite(dir.path());
        let opened = open(&s, Mode::ReadWrite).await.unwrap();
        let arrivals = opened.arrivals.expect("SQLite commits in groups");
        let receiving = arrivals.start();
        assert_eq!(arrivals.pending(), 1);
        drop(receiving);
        opened.store.close().await;
    }
}
