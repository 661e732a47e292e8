//! At start: what the server guarantees (durability, packet size, full-text tokens), and
//! the schema (`migrations/mysql/`, applied with `sqlx::migrate!`).
//!
//! Several nodes may start at once against one database. sqlx's MySQL migrator takes
//! `GET_LOCK(<lock id of the database>, -1)`, an advisory lock held by the session, and
//! applies each migration in a transaction (DDL commits implicitly, so a migration that
//! fails half-way is marked dirty and blocks later starts until repaired). The wait
//! for that lock is unbounded, so we first take a lock of our own
//! (`intake_migrate:<database>`) with a bounded wait: nodes starting together queue on it,
//! the first applies the migrations, the others find them applied. A node that dies while
//! holding it releases it with its session.

use std::time::Duration;

use intake_core::StoreError;
use sqlx::MySqlConnection;
use sqlx::migrate::{MigrateError, Migrator};

use super::{MysqlConfig, ServerLimits, unavailable};
use crate::Mode;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/mysql");

/// How long a starting node waits for another one that is upgrading the schema.
const MIGRATION_LOCK_WAIT: Duration = Duration::from_secs(120);

/// Body parts are at most this long (and no longer than a quarter of max_allowed_packet).
const MAX_CHUNK: usize = 1 << 20;

/// Below this, the server cannot take a useful part of a message per statement.
const MIN_PACKET: i64 = 256 << 10;

#[derive(sqlx::FromRow)]
struct ServerVars {
    version: String,
    flush_log: i64,
    log_bin: i64,
    sync_binlog: i64,
    max_allowed_packet: i64,
    ft_min_token: i64,
}

/// What is weaker than a flush at every commit, in words for the operator.
pub(crate) fn durability_problems(flush_log: i64, log_bin: bool, sync_binlog: i64) -> Vec<String> {
    let mut out = Vec::new();
    // 1: write and flush the redo log at each commit. MariaDB's 3 does the same (and
    // emulates the old group commit); 0 and 2 flush about once a second.
    if flush_log != 1 && flush_log != 3 {
        out.push(format!(
            "innodb_flush_log_at_trx_commit = {flush_log} (mail acknowledged in the last second \
             before a crash of the database server can be lost; set it to 1)"
        ));
    }
    if log_bin && sync_binlog != 1 {
        out.push(format!(
            "sync_binlog = {sync_binlog} with the binary log on (a crash can lose committed \
             transactions from the binary log, and replicas with them; set it to 1)"
        ));
    }
    out
}

/// The parts and statement sizes that fit in `max_allowed_packet`.
pub(crate) fn limits_for(max_allowed_packet: i64, ft_min_token: i64) -> ServerLimits {
    let budget = (max_allowed_packet.max(MIN_PACKET) as usize) / 2;
    ServerLimits {
        chunk: MAX_CHUNK.min(budget / 2),
        statement_budget: budget,
        ft_min_token: ft_min_token.clamp(1, 84) as usize,
    }
}

/// Reads the server's settings; in ReadWrite mode refuses (or warns about, when
/// `store.require_durable_commit = false`) commits that are not flushed.
pub(super) async fn check_server(
    conn: &mut MySqlConnection,
    cfg: &MysqlConfig,
    mode: Mode,
) -> Result<ServerLimits, StoreError> {
    let v: ServerVars = sqlx::query_as(
        "SELECT @@version AS version,
                CAST(@@innodb_flush_log_at_trx_commit AS SIGNED) AS flush_log,
                CAST(@@log_bin AS SIGNED) AS log_bin,
                CAST(@@sync_binlog AS SIGNED) AS sync_binlog,
                CAST(@@max_allowed_packet AS SIGNED) AS max_allowed_packet,
                CAST(@@innodb_ft_min_token_size AS SIGNED) AS ft_min_token",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(unavailable)?;
    if v.max_allowed_packet < MIN_PACKET {
        return Err(StoreError::Unavailable(format!(
            "the server's max_allowed_packet is {} bytes; Intake needs at least {MIN_PACKET}",
            v.max_allowed_packet
        )));
    }
    let limits = limits_for(v.max_allowed_packet, v.ft_min_token);
    if mode == Mode::ReadWrite {
        let problems = durability_problems(v.flush_log, v.log_bin != 0, v.sync_binlog);
        if !problems.is_empty() {
            let text = problems.join("; ");
            if cfg.require_durable_commit {
                return Err(StoreError::Unavailable(format!(
                    "the database server does not make commits durable: {text}. Intake answers \
                     250 only for durable mail; fix the server, or set \
                     store.require_durable_commit = false to run anyway"
                )));
            }
            tracing::error!(problems = %text,
                "the database server does not make commits durable: acknowledged mail can be \
                 lost in a crash (store.require_durable_commit = false)");
        }
        tracing::info!(
            server = %v.version,
            max_allowed_packet = v.max_allowed_packet,
            body_part = limits.chunk,
            ft_min_token = limits.ft_min_token,
            "store: MariaDB/MySQL"
        );
    }
    Ok(limits)
}

/// Creates or upgrades the schema, one node at a time.
pub(super) async fn migrate(
    conn: &mut MySqlConnection,
    connect_timeout: Duration,
) -> Result<(), StoreError> {
    let wait = MIGRATION_LOCK_WAIT.as_secs() as i64;
    let got: Option<i64> =
        sqlx::query_scalar("SELECT GET_LOCK(CONCAT('intake_migrate:', DATABASE()), ?)")
            .bind(wait)
            .fetch_one(&mut *conn)
            .await
            .map_err(unavailable)?;
    if got != Some(1) {
        return Err(StoreError::Unavailable(format!(
            "another node has been upgrading the schema for over {wait} s (lock intake_migrate)"
        )));
    }
    // sqlx's own lock waits without limit; bound the whole upgrade instead.
    let limit = MIGRATION_LOCK_WAIT + connect_timeout;
    // (`run_direct`, not `run`: `run`'s future is not `Send` for every lifetime, which a
    // spawned task needs; this is what `run` calls.)
    let result =
        match tokio::time::timeout(limit, MIGRATOR.run_direct(None, &mut *conn, false)).await {
            Ok(r) => r.map_err(migrate_error),
            Err(_) => Err(StoreError::Unavailable(format!(
                "the schema upgrade did not finish within {limit:?}"
            ))),
        };
    let _ = sqlx::query("DO RELEASE_LOCK(CONCAT('intake_migrate:', DATABASE()))")
        .execute(&mut *conn)
        .await;
    result
}

fn migrate_error(e: MigrateError) -> StoreError {
    match e {
        MigrateError::Dirty(v) => StoreError::Unavailable(format!(
            "schema migration {v} was interrupted (see _sqlx_migrations, success = 0); its \
             statements are idempotent: delete that row and start again"
        )),
        MigrateError::VersionMissing(v) => StoreError::Unavailable(format!(
            "the database has schema migration {v}, which this version of Intake does not know: \
             it was written by a newer version"
        )),
        e => unavailable(e),
    }
}

/// For read-only handles: the schema must be there, and as new as this version's.
pub(super) async fn require_schema(conn: &mut MySqlConnection) -> Result<(), StoreError> {
    let tables: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables
         WHERE table_schema = DATABASE() AND table_name IN ('messages', '_sqlx_migrations')",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(unavailable)?;
    if tables < 2 {
        return Err(StoreError::Unavailable(
            "no Intake data in this database; has `intake serve` run with the same settings?"
                .into(),
        ));
    }
    let applied: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success = TRUE",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(unavailable)?;
    let ours = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    if applied < ours {
        return Err(StoreError::Unavailable(format!(
            "the schema is older than this version of Intake (migration {applied}, needs \
             {ours}); start `intake serve` to upgrade it"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn only_a_flush_at_every_commit_is_durable() {
        assert!(durability_problems(1, false, 0).is_empty());
        assert!(durability_problems(3, true, 1).is_empty());
        assert_eq!(durability_problems(2, false, 0).len(), 1);
        assert_eq!(durability_problems(0, true, 0).len(), 2);
        assert!(durability_problems(1, true, 0)[0].contains("sync_binlog = 0"));
    }

    #[test]
    fn parts_and_statements_fit_in_a_packet() {
        let l = limits_for(16 << 20, 3);
        assert_eq!((l.chunk, l.statement_budget), (1 << 20, 8 << 20));
        let small = limits_for(1 << 20, 3);
        assert_eq!(
            (small.chunk, small.statement_budget),
            (256 << 10, 512 << 10)
        );
    }
}
