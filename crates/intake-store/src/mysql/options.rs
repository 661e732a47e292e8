//! `store.require_durable_commit`: what only MariaDB/MySQL reads.

/// Options only MariaDB/MySQL reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlOptions {
    /// Refuse to start when the server does not flush its log at each commit
    /// (`store.require_durable_commit`); `false` only warns.
    pub require_durable_commit: bool,
}

impl Default for MysqlOptions {
    fn default() -> Self {
        MysqlOptions {
            require_durable_commit: true,
        }
    }
}
