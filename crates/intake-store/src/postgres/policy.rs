//! Policy state (valid recipients, greylisting) and SMTP AUTH users, on the pool: a change
//! made by one node (or the CLI) is seen by the next lookup on every node.

use intake_core::{GreyRecord, StoreError, User};
use sqlx::FromRow;
use sqlx::postgres::PgPool;

use super::{pg_text, unavailable};

pub(super) async fn recipient_add(pool: &PgPool, address: &str) -> Result<bool, StoreError> {
    let r = sqlx::query("INSERT INTO recipients (address) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(pg_text(address))
        .execute(pool)
        .await
        .map_err(unavailable)?;
    Ok(r.rows_affected() > 0)
}

pub(super) async fn recipient_remove(pool: &PgPool, address: &str) -> Result<bool, StoreError> {
    let r = sqlx::query("DELETE FROM recipients WHERE address = $1")
        .bind(pg_text(address))
        .execute(pool)
        .await
        .map_err(unavailable)?;
    Ok(r.rows_affected() > 0)
}

pub(super) async fn recipient_list(pool: &PgPool) -> Result<Vec<String>, StoreError> {
    // Byte order, whatever the database's collation (`@domain` entries first).
    sqlx::query_scalar("SELECT address FROM recipients ORDER BY address COLLATE \"C\"")
        .fetch_all(pool)
        .await
        .map_err(unavailable)
}

pub(super) async fn recipient_lookup(
    pool: &PgPool,
    address: &str,
) -> Result<Option<bool>, StoreError> {
    let domain = address
        .rsplit_once('@')
        .map(|(_, d)| format!("@{d}"))
        .unwrap_or_default();
    let (found, any): (bool, bool) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM recipients WHERE address IN ($1, $2)),
                EXISTS (SELECT 1 FROM recipients)",
    )
    .bind(pg_text(address))
    .bind(pg_text(&domain))
    .fetch_one(pool)
    .await
    .map_err(unavailable)?;
    Ok(any.then_some(found))
}

#[derive(FromRow)]
struct Grey {
    first_seen: i64,
    last_seen: i64,
    passes: i32,
}

pub(super) async fn greylist_get(
    pool: &PgPool,
    key: &str,
) -> Result<Option<GreyRecord>, StoreError> {
    let row: Option<Grey> =
        sqlx::query_as("SELECT first_seen, last_seen, passes FROM greylist WHERE key = $1")
            .bind(pg_text(key))
            .fetch_optional(pool)
            .await
            .map_err(unavailable)?;
    Ok(row.map(|g| GreyRecord {
        first_seen: g.first_seen,
        last_seen: g.last_seen,
        passes: g.passes.max(0) as u32,
    }))
}

pub(super) async fn greylist_put(
    pool: &PgPool,
    key: &str,
    g: GreyRecord,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO greylist (key, first_seen, last_seen, passes) VALUES ($1, $2, $3, $4)
         ON CONFLICT (key) DO UPDATE SET first_seen = excluded.first_seen,
             last_seen = excluded.last_seen, passes = excluded.passes",
    )
    .bind(pg_text(key))
    .bind(g.first_seen)
    .bind(g.last_seen)
    .bind(i32::try_from(g.passes).unwrap_or(i32::MAX))
    .execute(pool)
    .await
    .map_err(unavailable)?;
    Ok(())
}

pub(super) async fn greylist_expire(pool: &PgPool, before_ms: i64) -> Result<u64, StoreError> {
    let r = sqlx::query("DELETE FROM greylist WHERE last_seen < $1")
        .bind(before_ms)
        .execute(pool)
        .await
        .map_err(unavailable)?;
    Ok(r.rows_affected())
}

#[derive(FromRow)]
struct UserRow {
    address: String,
    password_hash: String,
    enabled: bool,
    senders: Vec<String>,
}

impl From<UserRow> for User {
    fn from(u: UserRow) -> User {
        User {
            address: u.address,
            password_hash: u.password_hash,
            enabled: u.enabled,
            senders: u.senders,
        }
    }
}

pub(super) async fn user_get(pool: &PgPool, address: &str) -> Result<Option<User>, StoreError> {
    let row: Option<UserRow> = sqlx::query_as(
        "SELECT address, password_hash, enabled, senders FROM users WHERE address = $1",
    )
    .bind(pg_text(address))
    .fetch_optional(pool)
    .await
    .map_err(unavailable)?;
    Ok(row.map(User::from))
}

pub(super) async fn user_add(pool: &PgPool, u: &User) -> Result<bool, StoreError> {
    let senders: Vec<String> = u.senders.iter().map(|s| pg_text(s).into_owned()).collect();
    let r = sqlx::query(
        "INSERT INTO users (address, password_hash, enabled, senders) VALUES ($1, $2, $3, $4)
         ON CONFLICT (address) DO NOTHING",
    )
    .bind(pg_text(&u.address))
    .bind(pg_text(&u.password_hash))
    .bind(u.enabled)
    .bind(senders)
    .execute(pool)
    .await
    .map_err(unavailable)?;
    Ok(r.rows_affected() > 0)
}

pub(super) async fn user_set_password(
    pool: &PgPool,
    address: &str,
    hash: &str,
) -> Result<bool, StoreError> {
    let r = sqlx::query("UPDATE users SET password_hash = $2 WHERE address = $1")
        .bind(pg_text(address))
        .bind(pg_text(hash))
        .execute(pool)
        .await
        .map_err(unavailable)?;
    Ok(r.rows_affected() > 0)
}

pub(super) async fn user_set_enabled(
    pool: &PgPool,
    address: &str,
    enabled: bool,
) -> Result<bool, StoreError> {
    let r = sqlx::query("UPDATE users SET enabled = $2 WHERE address = $1")
        .bind(pg_text(address))
        .bind(enabled)
        .execute(pool)
        .await
        .map_err(unavailable)?;
    Ok(r.rows_affected() > 0)
}

pub(super) async fn user_list(pool: &PgPool) -> Result<Vec<User>, StoreError> {
    let rows: Vec<UserRow> = sqlx::query_as(
        "SELECT address, password_hash, enabled, senders FROM users ORDER BY address COLLATE \"C\"",
    )
    .fetch_all(pool)
    .await
    .map_err(unavailable)?;
    Ok(rows.into_iter().map(User::from).collect())
}
