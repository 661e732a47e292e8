//! Scratch databases for tests (feature `testing`): each test gets a fresh database,
//! `intake_t_<random>`, on the server of `INTAKE_TEST_POSTGRES_URL` (default
//! [`DEFAULT_URL`]), dropped when the [`ScratchDatabase`] is. No server: the test fails and
//! says so (CI has one); it does not skip.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, Connection};

use crate::{StoreKind, StoreSettings};

/// Where the tests find PostgreSQL unless `INTAKE_TEST_POSTGRES_URL` says otherwise.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database of its own for one test, dropped (`WITH (FORCE)`) on drop.
pub struct ScratchDatabase {
    /// Its name.
    pub name: String,
    /// Its URL, for `store.url`.
    pub url: String,
    admin: PgConnectOptions,
}

/// `url` with its database (the path) replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let query = tail.find('?').map(|i| &tail[i..]).unwrap_or("");
    format!("{scheme}://{authority}/{name}{query}")
}

impl ScratchDatabase {
    /// Creates a fresh, empty database. Panics with a clear message when PostgreSQL cannot
    /// be reached.
    pub async fn create() -> ScratchDatabase {
        let base =
            std::env::var("INTAKE_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_string());
        let admin = PgConnectOptions::from_str(&base)
            .unwrap_or_else(|e| panic!("INTAKE_TEST_POSTGRES_URL is not a PostgreSQL URL: {e}"));
        let name = format!("intake_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = connect(&admin).await;
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("creating the test database {name}: {e}"));
        let _ = conn.close().await;
        ScratchDatabase {
            url: with_database(&base, &name),
            name,
            admin,
        }
    }

    /// `[store]` for this database, with the defaults.
    pub fn settings(&self) -> StoreSettings {
        let mut s = StoreSettings::sqlite("./unused-by-postgres");
        s.kind = StoreKind::Postgres;
        s.url = self.url.clone();
        s
    }

    /// The engine's settings for this database, with the defaults.
    pub fn config(&self) -> super::PostgresConfig {
        super::PostgresConfig::new(&self.url, &crate::PoolOptions::default())
            .expect("a scratch database has a PostgreSQL URL")
    }

    /// Runs `sql` on the server's admin database (not this one), for what a test does to
    /// the database from outside: terminating its sessions, refusing connections.
    pub async fn admin(&self, sql: &str) {
        let mut conn = connect(&self.admin).await;
        sqlx::query(AssertSqlSafe(sql.to_string()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = conn.close().await;
    }

    /// Terminates every session on this database (as an operator or a failover would).
    pub async fn terminate_sessions(&self) -> u64 {
        let mut conn = connect(&self.admin).await;
        let n: i64 = sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&self.name)
        .fetch_one(&mut conn)
        .await
        .expect("terminating the test database's sessions");
        let _ = conn.close().await;
        n as u64
    }

    /// Makes the database refuse (or accept again) new connections, and terminates the
    /// current ones when refusing: an outage, for this database only.
    pub async fn set_available(&self, available: bool) {
        self.admin(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS {available}",
            self.name
        ))
        .await;
        if !available {
            self.terminate_sessions().await;
        }
    }
}

async fn connect(opts: &PgConnectOptions) -> PgConnection {
    match tokio::time::timeout(Duration::from_secs(10), PgConnection::connect_with(opts)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => panic!(
            "these tests need PostgreSQL: cannot connect to {}:{} as {} ({e}); start it or set \
             INTAKE_TEST_POSTGRES_URL",
            opts.get_host(),
            opts.get_port(),
            opts.get_username()
        ),
        Err(_) => panic!(
            "these tests need PostgreSQL: no answer from {}:{} within 10 s",
            opts.get_host(),
            opts.get_port()
        ),
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop may run inside a runtime or not: a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(Ok(mut conn)) = tokio::time::timeout(
                    Duration::from_secs(10),
                    PgConnection::connect_with(&admin),
                )
                .await
                {
                    let _ = sqlx::query(AssertSqlSafe(sql)).execute(&mut conn).await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_database_of_a_url_is_replaced() {
        use super::with_database;
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/test?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }
}
