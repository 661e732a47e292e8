//! A database of the test's own on the machine's PostgreSQL or MariaDB, dropped on drop.

use sqlx::{AssertSqlSafe, Connection};

use crate::sql::SqlServer;

/// A scratch database (`intake_dir_<uuid>`), dropped on drop.
pub struct Scratch {
    pub server: SqlServer,
    admin: String,
    name: String,
}

impl Scratch {
    /// Creates it on the server's admin URL (`INTAKE_TEST_POSTGRES_URL`,
    /// `INTAKE_TEST_MYSQL_URL`; default the loopback servers as `postgres` / `root`).
    pub async fn create(server: SqlServer) -> Scratch {
        let admin = match server {
            SqlServer::Postgres => std::env::var("INTAKE_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
            SqlServer::Mysql => std::env::var("INTAKE_TEST_MYSQL_URL")
                .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/mysql".into()),
        };
        let name = format!("intake_dir_{}", uuid::Uuid::new_v4().simple());
        let s = Scratch {
            server,
            admin,
            name,
        };
        run(s.server, &s.admin, &format!("CREATE DATABASE {}", s.name)).await;
        s
    }

    /// The URL of the scratch database.
    pub fn url(&self) -> String {
        let (base, _) = self.admin.rsplit_once('/').unwrap();
        format!("{base}/{}", self.name)
    }

    /// Runs statements on the scratch database.
    pub async fn exec(&self, statements: &[&str]) {
        for sql in statements {
            run(self.server, &self.url(), sql).await;
        }
    }
}

async fn run(server: SqlServer, url: &str, sql: &str) {
    let sql = AssertSqlSafe(sql.to_string());
    let result = match server {
        SqlServer::Postgres => match sqlx::PgConnection::connect(url).await {
            Ok(mut c) => sqlx::query(sql).execute(&mut c).await.map(drop),
            Err(e) => panic!("PostgreSQL at {url} is needed for this test: {e}"),
        },
        SqlServer::Mysql => match sqlx::MySqlConnection::connect(url).await {
            Ok(mut c) => sqlx::query(sql).execute(&mut c).await.map(drop),
            Err(e) => panic!("MariaDB/MySQL at {url} is needed for this test: {e}"),
        },
    };
    result.unwrap_or_else(|e| panic!("{url}: {e}"));
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let (server, admin) = (self.server, self.admin.clone());
        let sql = match server {
            SqlServer::Postgres => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            SqlServer::Mysql => format!("DROP DATABASE IF EXISTS {}", self.name),
        };
        // Drop may run inside a test's runtime: a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(run(server, &admin, &sql))
        })
        .join();
    }
}
