//! MariaDB/MySQL for real: each test gets a fresh database on the server at
//! `INTAKE_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`), dropped afterwards.
//! The conformance suite, then what only this backend does (outages, poison batches,
//! concurrent starts, big messages, search limits).

use super::*;
use crate::Store;
use crate::conformance::{TestBackend, all, incoming, incoming_with};
use intake_core::MailStore;

/// The server the tests use.
fn server_url() -> String {
    std::env::var("INTAKE_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_string())
}

/// A scratch database, dropped when this is dropped.
pub(crate) struct ScratchDb {
    pub url: String,
    pub name: String,
    admin: MySqlConnectOptions,
}

impl ScratchDb {
    pub(crate) async fn new() -> ScratchDb {
        let base = server_url();
        let admin: MySqlConnectOptions = base.parse().expect("INTAKE_TEST_MYSQL_URL is a URL");
        let name = format!("intake_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = tokio::time::timeout(Duration::from_secs(10), admin.connect())
            .await
            .unwrap_or_else(|_| panic!("MariaDB/MySQL at {base} did not answer within 10 s"))
            .unwrap_or_else(|e| {
                panic!("MariaDB/MySQL at {base} is needed by these tests (INTAKE_TEST_MYSQL_URL): {e}")
            });
        conn.execute(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE `{name}` CHARACTER SET utf8mb4"
        )))
        .await
        .unwrap();
        let _ = conn.close().await;
        let url = match base.rsplit_once('/') {
            Some((server, _)) if base.matches('/').count() > 2 => format!("{server}/{name}"),
            _ => format!("{base}/{name}"),
        };
        ScratchDb { url, name, admin }
    }

    /// A connection to the scratch database, as another client (tests that kill or lock).
    pub(crate) async fn admin(&self) -> MySqlConnection {
        self.admin
            .clone()
            .database(&self.name)
            .connect()
            .await
            .unwrap()
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime: drop the database from a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(mut c) = admin.connect().await {
                    let _ = c
                        .execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{name}`")))
                        .await;
                    let _ = c.close().await;
                }
            });
        })
        .join();
    }
}

async fn open_rw(db: &ScratchDb) -> MysqlStore {
    MysqlStore::open(MysqlConfig::new(&db.url), Mode::ReadWrite)
        .await
        .unwrap()
}

async fn make() -> TestBackend {
    let db = ScratchDb::new().await;
    let backend = open_rw(&db).await;
    TestBackend::new(backend).keeping(db)
}

mod conformance {
    crate::conformance_suite!(super::make);
}

fn layer(backend: MysqlStore) -> Store {
    Store::new(Arc::new(backend))
}
