//! `store.busy_timeout`, `store.index_max_lag`: what only SQLite reads.

use std::time::Duration;

/// Options only the SQLite backend reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// How long a write waits for a lock held by another process (`store.busy_timeout`).
    pub busy_timeout: Duration,
    /// Index new mail for search at least this often under load (`store.index_max_lag`).
    pub index_max_lag: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            busy_timeout: Duration::from_secs(5),
            index_max_lag: Duration::from_secs(5),
        }
    }
}
