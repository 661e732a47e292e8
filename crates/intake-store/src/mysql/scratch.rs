//! Scratch databases for tests (feature `testing`): each test gets a fresh database,
//! `intake_t_<random>`, on the server of `INTAKE_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306/test`), dropped when the [`ScratchDb`] is.

use std::time::Duration;

use sqlx::mysql::MySqlConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, MySqlConnection};

/// The server the tests use.
pub fn server_url() -> String {
    std::env::var("INTAKE_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_string())
}

/// A scratch database, dropped when this is dropped.
pub struct ScratchDb {
    /// Its URL, for `store.url`.
    pub url: String,
    /// Its name.
    pub name: String,
    admin: MySqlConnectOptions,
}

impl ScratchDb {
    /// Creates the database; panics, saying why, when the server is not there.
    pub async fn new() -> ScratchDb {
        let base = server_url();
        let admin: MySqlConnectOptions = base.parse().expect("INTAKE_TEST_MYSQL_URL is a URL");
        let name = format!("intake_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = tokio::time::timeout(Duration::from_secs(10), admin.connect())
            .await
            .unwrap_or_else(|_| panic!("MariaDB/MySQL at {base} did not answer within 10 s"))
            .unwrap_or_else(|e| {
                panic!(
                    "MariaDB/MySQL at {base} is needed by these tests (INTAKE_TEST_MYSQL_URL): {e}"
                )
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
    pub async fn admin(&self) -> MySqlConnection {
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
                        .execute(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS `{name}`"
                        )))
                        .await;
                    let _ = c.close().await;
                }
            });
        })
        .join();
    }
}
