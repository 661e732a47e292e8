//! The one DNS resolver every DNS check shares: hickory's caching resolver, owned by
//! mail-auth's [`MessageAuthenticator`] (SPF, DKIM, DMARC and ARC query through it, and the
//! DNS lists use [`MessageAuthenticator::resolver`]). Answers are cached for their TTL
//! (`dns.cache_size` entries), so a client that sends ten messages costs one lookup per name.
//!
//! The name servers are the system's (`/etc/resolv.conf`) unless `dns.servers` names some,
//! e.g. a local caching resolver (`["127.0.0.1:53"]`), or the tests' server on a free port.
//!
//! On top of hickory's cache of answers, [`Caches`] keeps mail-auth's *parsed* records (SPF,
//! DKIM keys, DMARC policies) until their TTL runs out.

use std::borrow::Borrow;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
};
use mail_auth::{MX, MessageAuthenticator, RecordSet, ResolverCache, Txt};

/// Settings of the shared resolver.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// A cache of parsed records for mail-auth (SPF, DKIM keys, DMARC policies, MX and address
/// sets), honouring each answer's expiry, so a record is parsed once per TTL rather than
/// once per message. Bounded (least recently used entries go first).
pub struct TtlCache<K, V>(moka::sync::Cache<K, (V, Instant)>);

impl<K, V> TtlCache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A cache of at most `capacity` entries.
    pub fn new(capacity: u64) -> Self {
        TtlCache(moka::sync::Cache::new(capacity))
    }
}

impl<K, V> ResolverCache<K, V> for TtlCache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (value, valid_until) = self.0.get(name)?;
        if valid_until > Instant::now() {
            Some(value)
        } else {
            self.0.invalidate(name);
            None
        }
    }

    fn remove<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.remove(name).map(|(v, _)| v)
    }

    fn insert(&self, key: K, value: V, valid_until: Instant) {
        self.0.insert(key, (value, valid_until));
    }
}

/// mail-auth's parsed-record caches, one per record type, shared by every check.
pub struct Caches {
    /// TXT records: SPF, DKIM keys, DMARC.
    pub txt: TtlCache<Box<str>, Txt>,
    /// MX (SPF `mx`).
    pub mx: TtlCache<Box<str>, RecordSet<MX>>,
    /// A (SPF `a`, `mx`).
    pub ipv4: TtlCache<Box<str>, RecordSet<Ipv4Addr>>,
    /// AAAA.
    pub ipv6: TtlCache<Box<str>, RecordSet<Ipv6Addr>>,
    /// PTR (SPF `ptr`).
    pub ptr: TtlCache<IpAddr, RecordSet<Box<str>>>,
}

impl Caches {
    /// Caches of `capacity` entries each.
    pub fn new(capacity: u64) -> Caches {
        Caches {
            txt: TtlCache::new(capacity),
            mx: TtlCache::new(capacity),
            ipv4: TtlCache::new(capacity),
            ipv6: TtlCache::new(capacity),
            ptr: TtlCache::new(capacity),
        }
    }
}

/// mail-auth's parameters for `P`, with every cache of [`Caches`].
pub type Cached<'x, P> = mail_auth::Parameters<
    'x,
    P,
    TtlCache<Box<str>, Txt>,
    TtlCache<Box<str>, RecordSet<MX>>,
    TtlCache<Box<str>, RecordSet<Ipv4Addr>>,
    TtlCache<Box<str>, RecordSet<Ipv6Addr>>,
    TtlCache<IpAddr, RecordSet<Box<str>>>,
>;

impl Caches {
    /// Parameters for a mail-auth call that read and fill these caches.
    pub fn params<'x, P>(&'x self, params: P) -> Cached<'x, P> {
        mail_auth::Parameters::new(params)
            .with_txt_cache(&self.txt)
            .with_mx_cache(&self.mx)
            .with_ptr_cache(&self.ptr)
            .with_ipv4_cache(&self.ipv4)
            .with_ipv6_cache(&self.ipv6)
    }
}
