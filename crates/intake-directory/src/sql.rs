//! The SQL directory: the application's own PostgreSQL or MySQL/MariaDB database (sqlx).
//!
//! - `password_query` gets the login as its one parameter (`$1` for PostgreSQL, `?` for
//!   MySQL; every `?` is bound to the login) and returns the stored password in its first
//!   column. No row, or NULL: no such login. The stored value may be any scheme
//!   [`intake_core::password`] reads, bare or with a Dovecot `{SCHEME}` prefix, including
//!   `{PLAIN}` (which Dovecot accepts too); [`crate::Guarded`] checks it.
//! - `recipient_query` gets the address the same way; a row means the recipient exists,
//!   unless its first column is NULL, 0 or false (so `SELECT count(*) ...` works too).
//! - `senders_query` gets the login the same way and returns the envelope senders it may
//!   use, one a row in the first column. Without it a login that is an address may send as
//!   itself only.
//!
//! Parameters are always bound, never pasted into the query. Connections are opened on
//! first use (a directory that is down at start is "could not decide", not a failed
//! start) and pooled.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Row};

use crate::{Backend, DirectoryError, LoginAnswer};

/// What the SQL directory needs (from [`crate::DirectorySettings`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlConfig {
    /// `postgres://…` or `mysql://…` (`mariadb://` too).
    pub url: String,
    /// Returns the stored password of a login.
    pub password_query: Option<String>,
    /// Returns a row for a known recipient.
    pub recipient_query: Option<String>,
    /// Returns the envelope senders a login may use, one a row.
    pub senders_query: Option<String>,
    /// How long to wait for a connection.
    pub timeout: Duration,
    /// Connections kept at most.
    pub max_connections: u32,
}

/// The database server, by the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlServer {
    /// PostgreSQL (`$1`).
    Postgres,
    /// MySQL or MariaDB (`?`).
    Mysql,
}

impl SqlServer {
    /// The server a URL names, by its scheme.
    pub fn of_url(url: &str) -> Option<SqlServer> {
        let scheme = url.split_once("://")?.0.to_ascii_lowercase();
        match scheme.as_str() {
            "postgres" | "postgresql" => Some(SqlServer::Postgres),
            "mysql" | "mariadb" => Some(SqlServer::Mysql),
            _ => None,
        }
    }

    /// The placeholder its queries use for the parameter.
    pub fn placeholder(self) -> &'static str {
        match self {
            SqlServer::Postgres => "$1",
            SqlServer::Mysql => "?",
        }
    }
}

/// How many `?` placeholders `query` has outside quoted strings and identifiers.
pub fn question_marks(query: &str) -> usize {
    let mut quote = None;
    let mut n = 0;
    for c in query.chars() {
        match (quote, c) {
            (None, '\'' | '"' | '`') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '?') => n += 1,
            _ => {}
        }
    }
    n
}

enum Pool {
    Postgres(PgPool),
    Mysql(MySqlPool),
}

/// The SQL directory.
pub struct SqlDirectory {
    pool: Pool,
    password_query: Option<String>,
    recipient_query: Option<String>,
    senders_query: Option<String>,
}

impl std::fmt::Debug for SqlDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlDirectory")
            .field("password_query", &self.password_query)
            .field("recipient_query", &self.recipient_query)
            .field("senders_query", &self.senders_query)
            .finish_non_exhaustive()
    }
}

/// Runs `query` with `value` bound to each of its placeholders; the first row, if any
/// (`fetch_optional`), or every row (`fetch_all`).
macro_rules! first_row {
    ($pool:expr, $query:expr, $value:expr, $binds:expr) => {
        first_row!($pool, $query, $value, $binds, fetch_optional)
    };
    ($pool:expr, $query:expr, $value:expr, $binds:expr, $fetch:ident) => {{
        let mut q = sqlx::query(AssertSqlSafe($query.to_string()));
        for _ in 0..$binds {
            q = q.bind($value);
        }
        q.$fetch($pool).await
    }};
}

impl SqlDirectory {
    /// The directory `cfg` describes. Connects on first use; must be called within a
    /// Tokio runtime. Fails only on a URL sqlx cannot read.
    pub fn new(cfg: &SqlConfig) -> Result<SqlDirectory, sqlx::Error> {
        let server = SqlServer::of_url(&cfg.url).ok_or_else(|| {
            sqlx::Error::Configuration("directory.url: not postgres:// or mysql://".into())
        })?;
        let pool = match server {
            SqlServer::Postgres => Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(cfg.max_connections)
                    .acquire_timeout(cfg.timeout)
                    .idle_timeout(Duration::from_secs(300))
                    .connect_lazy_with(PgConnectOptions::from_str(&cfg.url)?),
            ),
            SqlServer::Mysql => {
                let url = cfg.url.replacen("mariadb://", "mysql://", 1);
                Pool::Mysql(
                    MySqlPoolOptions::new()
                        .max_connections(cfg.max_connections)
                        .acquire_timeout(cfg.timeout)
                        .idle_timeout(Duration::from_secs(300))
                        .connect_lazy_with(MySqlConnectOptions::from_str(&url)?),
                )
            }
        };
        Ok(SqlDirectory {
            pool,
            password_query: cfg.password_query.clone(),
            recipient_query: cfg.recipient_query.clone(),
            senders_query: cfg.senders_query.clone(),
        })
    }

    /// The stored password of `login`, if it has one.
    async fn stored_password(&self, login: &str) -> Result<Option<String>, DirectoryError> {
        let query = (self.password_query.as_deref())
            .ok_or(DirectoryError::NotConfigured("password_query"))?;
        Ok(match &self.pool {
            Pool::Postgres(pool) => match first_row!(pool, query, login, 1)? {
                Some(row) => text_pg(&row)?,
                None => None,
            },
            Pool::Mysql(pool) => match first_row!(pool, query, login, question_marks(query))? {
                Some(row) => text_mysql(&row)?,
                None => None,
            },
        })
    }
}

/// The first column as text (NULL: none).
fn text_pg(row: &PgRow) -> Result<Option<String>, sqlx::Error> {
    row.try_get::<Option<String>, _>(0)
}

/// The first column as text, also from a binary column (VARBINARY, BLOB).
fn text_mysql(row: &MySqlRow) -> Result<Option<String>, sqlx::Error> {
    match row.try_get::<Option<String>, _>(0) {
        Ok(t) => Ok(t),
        Err(e) => match row.try_get::<Option<Vec<u8>>, _>(0) {
            Ok(b) => Ok(b.and_then(|b| String::from_utf8(b).ok())),
            Err(_) => Err(e),
        },
    }
}

/// Whether a recipient row says yes: its first column is not NULL, 0 or false.
macro_rules! says_yes {
    ($row:expr) => {{
        let row = $row;
        if let Ok(v) = row.try_get::<Option<i64>, _>(0) {
            v.is_some_and(|v| v != 0)
        } else if let Ok(v) = row.try_get::<Option<i32>, _>(0) {
            v.is_some_and(|v| v != 0)
        } else if let Ok(v) = row.try_get::<Option<i16>, _>(0) {
            v.is_some_and(|v| v != 0)
        } else if let Ok(v) = row.try_get::<Option<bool>, _>(0) {
            v.unwrap_or(false)
        } else {
            // Text or anything else: the row itself is the answer.
            true
        }
    }};
}

#[async_trait]
impl Backend for SqlDirectory {
    async fn recipient_exists(&self, address: &str) -> Result<bool, DirectoryError> {
        let query = (self.recipient_query.as_deref())
            .ok_or(DirectoryError::NotConfigured("recipient_query"))?;
        Ok(match &self.pool {
            Pool::Postgres(pool) => {
                first_row!(pool, query, address, 1)?.is_some_and(|r| says_yes!(&r))
            }
            Pool::Mysql(pool) => first_row!(pool, query, address, question_marks(query))?
                .is_some_and(|r| says_yes!(&r)),
        })
    }

    async fn login(&self, login: &str, _password: &str) -> Result<LoginAnswer, DirectoryError> {
        Ok(LoginAnswer::Stored(self.stored_password(login).await?))
    }

    async fn senders(&self, login: &str) -> Result<Vec<String>, DirectoryError> {
        // Without the query, a login that is an address sends as itself only.
        let Some(query) = self.senders_query.as_deref() else {
            return Ok(Vec::new());
        };
        let texts: Vec<Option<String>> = match &self.pool {
            Pool::Postgres(pool) => {
                let rows = first_row!(pool, query, login, 1, fetch_all)?;
                rows.iter().map(text_pg).collect::<Result<_, _>>()?
            }
            Pool::Mysql(pool) => {
                let rows = first_row!(pool, query, login, question_marks(query), fetch_all)?;
                rows.iter().map(text_mysql).collect::<Result<_, _>>()?
            }
        };
        Ok(texts.into_iter().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_outside_quotes_are_counted() {
        assert_eq!(question_marks("SELECT password FROM u WHERE login = ?"), 1);
        assert_eq!(
            question_marks("SELECT 1 FROM m WHERE a = ? OR alias = ?"),
            2
        );
        assert_eq!(
            question_marks("SELECT '?' FROM m WHERE a = ? AND `b?` = 1"),
            1
        );
    }

    #[test]
    fn servers_by_scheme() {
        assert_eq!(
            SqlServer::of_url("postgres://h/db"),
            Some(SqlServer::Postgres)
        );
        assert_eq!(
            SqlServer::of_url("postgresql://h/db"),
            Some(SqlServer::Postgres)
        );
        assert_eq!(SqlServer::of_url("MYSQL://h/db"), Some(SqlServer::Mysql));
        assert_eq!(SqlServer::of_url("mariadb://h/db"), Some(SqlServer::Mysql));
        assert_eq!(SqlServer::of_url("sqlite://x"), None);
        assert_eq!(SqlServer::of_url("nonsense"), None);
    }
}
