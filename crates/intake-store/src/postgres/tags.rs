//! Tags on messages (`message_tags`, migration 0002), on the pool; a message's tags are
//! deleted with it (`ON DELETE CASCADE`).

use intake_core::{MessageId, StoreError};
use sqlx::postgres::PgPool;

use super::unavailable;

async fn seq_of(
    conn: &mut sqlx::PgConnection,
    id: MessageId,
    lock: bool,
) -> Result<Option<i64>, sqlx::Error> {
    let sql = if lock {
        "SELECT seq FROM messages WHERE id = $1::text::uuid FOR UPDATE"
    } else {
        "SELECT seq FROM messages WHERE id = $1::text::uuid"
    };
    sqlx::query_scalar(sql)
        .bind(id.to_string())
        .fetch_optional(conn)
        .await
}

pub(super) async fn get(pool: &PgPool, id: MessageId) -> Result<Option<Vec<String>>, StoreError> {
    let mut conn = pool.acquire().await.map_err(unavailable)?;
    let Some(seq) = seq_of(&mut conn, id, false).await.map_err(unavailable)? else {
        return Ok(None);
    };
    sqlx::query_scalar("SELECT tag FROM message_tags WHERE seq = $1 ORDER BY tag COLLATE \"C\"")
        .bind(seq)
        .fetch_all(&mut *conn)
        .await
        .map(Some)
        .map_err(unavailable)
}

pub(super) async fn put(pool: &PgPool, id: MessageId, tags: &[String]) -> Result<bool, StoreError> {
    let run = async {
        let mut tx = pool.begin().await?;
        let Some(seq) = seq_of(&mut tx, id, true).await? else {
            return Ok(false);
        };
        sqlx::query("DELETE FROM message_tags WHERE seq = $1")
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO message_tags (seq, tag) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(seq)
        .bind(tags)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(true)
    };
    run.await.map_err(unavailable)
}

pub(super) async fn all(pool: &PgPool) -> Result<Vec<String>, StoreError> {
    sqlx::query_scalar("SELECT DISTINCT tag COLLATE \"C\" AS tag FROM message_tags ORDER BY 1")
        .fetch_all(pool)
        .await
        .map_err(unavailable)
}

pub(super) async fn rename(pool: &PgPool, from: &str, to: &str) -> Result<u64, StoreError> {
    let run = async {
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO message_tags (seq, tag) SELECT seq, $2 FROM message_tags WHERE tag = $1
             ON CONFLICT DO NOTHING",
        )
        .bind(from)
        .bind(to)
        .execute(&mut *tx)
        .await?;
        let n = sqlx::query("DELETE FROM message_tags WHERE tag = $1")
            .bind(from)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok::<_, sqlx::Error>(n)
    };
    run.await.map_err(unavailable)
}

pub(super) async fn remove(pool: &PgPool, tag: &str) -> Result<u64, StoreError> {
    sqlx::query("DELETE FROM message_tags WHERE tag = $1")
        .bind(tag)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
        .map_err(unavailable)
}
