//! `store.redis_*`: what only the Redis engine reads.

use std::time::Duration;

/// Options only the Redis store reads (`store.redis_*`).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// Prepended to every key (`store.redis_key_prefix`).
    pub key_prefix: String,
    /// Start even when Redis does not fsync every write (`store.redis_accept_weak_durability`):
    /// a `250` may then be lost in a crash of Redis or its machine.
    pub accept_weak_durability: bool,
    /// The longest any Redis call may take (`store.redis_timeout`).
    pub timeout: Duration,
    /// Keep at most this many messages per mailbox, enforced in the same atomic write as
    /// each delivery (`store.redis_mailbox_cap`). Messages trimmed so are not announced as
    /// deleted events; `retention.per_mailbox` (the retention schedule) announces its own.
    pub mailbox_cap: Option<u64>,
    /// Messages a search looks at, newest first (`store.redis_search_scan`).
    pub search_scan: u64,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            key_prefix: "intake:store:".into(),
            accept_weak_durability: false,
            timeout: Duration::from_secs(2),
            mailbox_cap: None,
            search_scan: 10_000,
        }
    }
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("key_prefix", &self.key_prefix)
            .field("accept_weak_durability", &self.accept_weak_durability)
            .field("timeout", &self.timeout)
            .field("mailbox_cap", &self.mailbox_cap)
            .field("search_scan", &self.search_scan)
            .finish()
    }
}
