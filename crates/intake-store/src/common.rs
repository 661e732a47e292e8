//! What more than one engine reads: how a process uses the store ([`Mode`]), the server
//! engines' connection pool ([`PoolOptions`]), and URLs without their passwords.

use std::time::Duration;

use intake_core::net::Repeated;

/// A store that is down fails every batch alike: the writers log a failure once, then once
/// per ten seconds with the number of batches (`repeats`); the commit metrics count each.
pub(crate) static WRITE_FAILURES: Repeated = Repeated::new(Duration::from_secs(10));

/// How a process uses the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The server: reads and writes everything; creates or upgrades the schema.
    ReadWrite,
    /// The CLI's listings, while a server may be writing: reads only, changes nothing, and
    /// fails if there is no data yet. Writes answer an error.
    ReadOnly,
    /// The CLI's changes to recipients and users, while a server may be running: creates or
    /// upgrades the schema and writes policy state and users, but takes no mail (deliveries
    /// answer [`intake_core::StoreError::Closed`]).
    Admin,
}

/// The connection pool of the server stores (PostgreSQL, MariaDB/MySQL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolOptions {
    /// Connections for reads and short writes (`store.pool_size`); the group-commit writer
    /// has one of its own on top (and PostgreSQL's event listener one more).
    pub pool_size: u32,
    /// How long to wait for a connection, new or from the pool (`store.connect_timeout`):
    /// past it the operation fails (a delivery answers `451 4.3.0`) instead of hanging.
    pub connect_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            pool_size: 10,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// A URL without its password.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => url.to_string(),
    }
}
