//! Tags on messages (`message_tags`, migration 0002), on the pool; a message's delete
//! removes its tags in the same transaction.

use intake_core::{MessageId, StoreError};
use sqlx::MySqlPool;

use super::unavailable;

async fn exists(
    conn: &mut sqlx::MySqlConnection,
    id: MessageId,
    lock: bool,
) -> Result<bool, sqlx::Error> {
    let sql = if lock {
        "SELECT 1 FROM messages WHERE id = ? FOR UPDATE"
    } else {
        "SELECT 1 FROM messages WHERE id = ?"
    };
    let found: Option<i32> = sqlx::query_scalar(sql)
        .bind(&id.as_bytes()[..])
        .fetch_optional(conn)
        .await?;
    Ok(found.is_some())
}

pub(super) async fn get(
    pool: &MySqlPool,
    id: MessageId,
) -> Result<Option<Vec<String>>, StoreError> {
    let mut conn = pool.acquire().await.map_err(unavailable)?;
    if !exists(&mut conn, id, false).await.map_err(unavailable)? {
        return Ok(None);
    }
    sqlx::query_scalar("SELECT tag FROM message_tags WHERE id = ? ORDER BY tag")
        .bind(&id.as_bytes()[..])
        .fetch_all(&mut *conn)
        .await
        .map(Some)
        .map_err(unavailable)
}

pub(super) async fn put(
    pool: &MySqlPool,
    id: MessageId,
    tags: &[String],
) -> Result<bool, StoreError> {
    let run = async {
        let mut tx = pool.begin().await?;
        if !exists(&mut tx, id, true).await? {
            return Ok(false);
        }
        sqlx::query("DELETE FROM message_tags WHERE id = ?")
            .bind(&id.as_bytes()[..])
            .execute(&mut *tx)
            .await?;
        for t in tags {
            sqlx::query("INSERT IGNORE INTO message_tags (id, tag) VALUES (?, ?)")
                .bind(&id.as_bytes()[..])
                .bind(t)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok::<_, sqlx::Error>(true)
    };
    run.await.map_err(unavailable)
}

pub(super) async fn all(pool: &MySqlPool) -> Result<Vec<String>, StoreError> {
    sqlx::query_scalar("SELECT DISTINCT tag FROM message_tags ORDER BY tag")
        .fetch_all(pool)
        .await
        .map_err(unavailable)
}

pub(super) async fn rename(pool: &MySqlPool, from: &str, to: &str) -> Result<u64, StoreError> {
    let run = async {
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT IGNORE INTO message_tags (id, tag) SELECT id, ? FROM message_tags WHERE tag = ?",
        )
        .bind(to)
        .bind(from)
        .execute(&mut *tx)
        .await?;
        let n = sqlx::query("DELETE FROM message_tags WHERE tag = ?")
            .bind(from)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok::<_, sqlx::Error>(n)
    };
    run.await.map_err(unavailable)
}

pub(super) async fn remove(pool: &MySqlPool, tag: &str) -> Result<u64, StoreError> {
    sqlx::query("DELETE FROM message_tags WHERE tag = ?")
        .bind(tag)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
        .map_err(unavailable)
}
