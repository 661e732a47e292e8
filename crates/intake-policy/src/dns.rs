//! The one DNS resolver every DNS check shares: hickory's caching resolver, owned by
//! mail-auth's [`MessageAuthenticator`] (SPF, DKIM, DMARC and ARC query through it, and the
//! DNS lists use [`MessageAuthenticator::resolver`]). Answers are cached for their TTL
//! (`dns.cache_size` entries), so a client that sends ten messages costs one lookup per name.
//!
//! The name servers are the system's (`/etc/resolv.conf`) unless `dns.servers` names some,
//! e.g. a local caching resolver (`["127.0.0.1:53"]`), or the tests' server on a free port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mail_auth::MessageAuthenticator;
use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
};

/// Settings of the shared resolver.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Name servers (address and port); empty: the system's configuration.
    pub servers: Vec<SocketAddr>,
    /// How long one query may take before it is retried or fails.
    pub timeout: Duration,
    /// Tries per query.
    pub attempts: usize,
    /// Answers kept in the cache.
    pub cache_size: u64,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            servers: Vec::new(),
            timeout: Duration::from_secs(3),
            attempts: 2,
            cache_size: 4096,
        }
    }
}

/// Builds the shared resolver. Fails when the system configuration is wanted but unreadable.
pub fn resolver(cfg: &DnsConfig) -> Result<Arc<MessageAuthenticator>, String> {
    let (config, mut opts) = if cfg.servers.is_empty() {
        mail_auth::hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| format!("dns: cannot read the system resolver configuration: {e}"))?
    } else {
        let servers = cfg
            .servers
            .iter()
            .map(|a| {
                let mut udp = ConnectionConfig::udp();
                udp.port = a.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = a.port();
                NameServerConfig::new(a.ip(), true, vec![udp, tcp])
            })
            .collect();
        (
            ResolverConfig::from_name_servers(servers),
            ResolverOpts::default(),
        )
    };
    opts.timeout = cfg.timeout;
    opts.attempts = cfg.attempts;
    opts.cache_size = cfg.cache_size;
    // Names are always absolute: never try the search list.
    opts.ndots = 0;
    MessageAuthenticator::new(config, opts)
        .map(Arc::new)
        .map_err(|e| format!("dns: {e}"))
}
