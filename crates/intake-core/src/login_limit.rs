//! Failed logins, limited so that a guesser is stopped without locking the real user out.
//! One type for SMTP AUTH ([`crate::StoreAuthenticator`]) and the HTTP side (wrong bearer
//! tokens and basic-auth passwords).
//!
//! Failures are counted in fixed windows under three keys:
//!
//! - **per client address** (any account): past `per_client.max_failures` the address is
//!   refused, unchecked, for the rest of its window;
//! - **per client address and account**: past `per_account.max_failures` that address is
//!   refused for that account;
//! - **per account** (from any address): past `per_account.max_failures` every attempt for
//!   the account, from anywhere, is answered only after a delay that doubles with each
//!   further failure (from [`LoginLimits::first_delay`] up to [`LoginLimits::max_delay`]).
//!   An account attacked from many addresses slows down; it is never locked, so its owner,
//!   from another address, still logs in.
//!
//! In a cluster the counts are shared ([`SharedLogins`]): every node adds the other nodes'
//! failures, as last synced, to its own before deciding.
//!
//! A refused attempt is not checked and does not count. The maps are bounded caches (moka):
//! an entry leaves when its window has passed, or when the cache is full (least recently
//! used first), so a flood of addresses costs bounded memory.
//!
//! A reload hands new limits to [`LoginLimiter::reconfigure`]: the failures already counted
//! stay and are measured against the new maximums and windows at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use moka::Expiry;
use moka::sync::Cache;
use tokio::time::Instant;

use crate::shared::{LoginCounts, SharedLogins};

/// Keys per map a node hands to the others at each sync (a flood of addresses must not
/// make the shared counts unbounded); past it some keys count on this node only.
const SHARED_KEYS: usize = 10_000;

/// Failed logins allowed per key within a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureLimit {
    /// Failures allowed within `window`; the next attempt is refused (or delayed) unchecked.
    pub max_failures: u32,
    /// The window.
    pub window: Duration,
}

/// The limits of a [`LoginLimiter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failures from one client address, whatever the account.
    pub per_client: FailureLimit,
    /// Failures for one account: from one address (refused past it) and from all addresses
    /// together (delayed past it).
    pub per_account: FailureLimit,
    /// The delay of the first attempt past `per_account` from all addresses.
    pub first_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
    /// Keys kept per map (client addresses, accounts, pairs).
    pub capacity: u64,
}

impl LoginLimits {
    /// These failure limits, with the default delays (1 s doubling up to 16 s) and capacity.
    pub fn new(per_client: FailureLimit, per_account: FailureLimit) -> LoginLimits {
        LoginLimits {
            per_client,
            per_account,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(16),
            capacity: 100_000,
        }
    }
}

/// What to do with a login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Check it, after waiting this long (zero: at once).
    Check {
        /// How long to wait before answering.
        delay: Duration,
    },
    /// Refuse it unchecked; the client may try again after this long.
    Refuse {
        /// Until the window of the key that refused ends.
        retry_after: Duration,
    },
}

/// Failures counted in one window, from its first failure.
#[derive(Debug)]
struct Window {
    since: Instant,
    failures: AtomicU32,
}

/// Counts per key in fixed windows.
struct Counter<K> {
    /// The limit in force (a reload may replace it); shared with the map's expiry.
    limit: Arc<RwLock<FailureLimit>>,
    map: Cache<K, Arc<Window>>,
}

/// How long a counter's entry lives: the counter's window as it is now, from the entry's
/// creation (or its re-insertion, when a reload lengthens the window).
struct WindowLife(Arc<RwLock<FailureLimit>>);

impl WindowLife {
    fn window(&self) -> Duration {
        self.0.read().unwrap_or_else(|e| e.into_inner()).window
    }
}

impl<K> Expiry<K, Arc<Window>> for WindowLife {
    fn expire_after_create(
        &self,
        _: &K,
        _: &Arc<Window>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(self.window())
    }

    fn expire_after_update(
        &self,
        _: &K,
        _: &Arc<Window>,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.window())
    }
}

impl<K> Counter<K>
where
    K: std::hash::Hash + Eq + Send + Sync + Clone + 'static,
{
    fn new(limit: FailureLimit, capacity: u64) -> Self {
        let limit = Arc::new(RwLock::new(limit));
        Counter {
            map: Cache::builder()
                .max_capacity(capacity)
                .expire_after(WindowLife(limit.clone()))
                .build(),
            limit,
        }
    }

    fn limit(&self) -> FailureLimit {
        *self.limit.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A new limit over the same counts. A longer window keeps each entry for as long as
    /// the new window asks (re-inserted, same count); a shorter one ends the windows that
    /// are already older than it.
    fn reconfigure(&self, limit: FailureLimit) {
        let old = std::mem::replace(
            &mut *self.limit.write().unwrap_or_else(|e| e.into_inner()),
            limit,
        );
        if limit.window > old.window {
            for (k, w) in self.map.iter() {
                self.map.insert(K::clone(&k), w);
            }
        }
    }

    /// The failures of `key` in its current window, and the time left of it.
    fn count(&self, key: &K) -> (u32, Duration) {
        match self.map.get(key) {
            Some(w) => match self.limit().window.checked_sub(w.since.elapsed()) {
                Some(left) if !left.is_zero() => (w.failures.load(Ordering::Relaxed), left),
                _ => (0, Duration::ZERO),
            },
            None => (0, Duration::ZERO),
        }
    }

    fn failed(&self, key: K) {
        let window = self.limit().window;
        let w = self.map.get_with(key.clone(), || {
            Arc::new(Window {
                since: Instant::now(),
                failures: AtomicU32::new(0),
            })
        });
        let w = if w.since.elapsed() >= window {
            let fresh = Arc::new(Window {
                since: Instant::now(),
                failures: AtomicU32::new(0),
            });
            self.map.insert(key, fresh.clone());
            fresh
        } else {
            w
        };
        w.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Some(time left) when `key` has used up its failures, `others` being the other
    /// nodes' failures of it (refused for a whole window when only theirs count).
    fn blocked(&self, key: &K, others: u32) -> Option<Duration> {
        let limit = self.limit();
        let (n, left) = self.count(key);
        let left = if left.is_zero() { limit.window } else { left };
        (n.saturating_add(others) >= limit.max_failures).then_some(left)
    }

    /// The keys with failures in their current window (at most [`SHARED_KEYS`]).
    fn counts(&self) -> impl Iterator<Item = (Arc<K>, u32)> + '_ {
        let window = self.limit().window;
        self.map
            .iter()
            .filter(move |(_, w)| w.since.elapsed() < window)
            .map(|(k, w)| (k, w.failures.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .take(SHARED_KEYS)
    }
}

/// The other nodes' failures, as last synced, by the keys of the three counters.
#[derive(Debug, Default)]
struct Others {
    clients: HashMap<IpAddr, u32>,
    pairs: HashMap<(IpAddr, String), u32>,
    accounts: HashMap<String, u32>,
}

/// Failed logins per client address, per (address, account) and per account. Build one per
/// protocol at start and keep it across reloads: its counts are the protection.
pub struct LoginLimiter {
    /// The limits in force (a reload may replace them).
    limits: RwLock<LoginLimits>,
    clients: Counter<IpAddr>,
    pairs: Counter<(IpAddr, String)>,
    accounts: Counter<String>,
    /// The other nodes' failures (empty on a single node).
    others: RwLock<Arc<Others>>,
}

impl std::fmt::Debug for LoginLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginLimiter")
            .field("limits", &self.limits())
            .finish_non_exhaustive()
    }
}

/// Accounts are counted case-insensitively and without surrounding space.
fn account_key(account: &str) -> String {
    account.trim().to_lowercase()
}

impl LoginLimiter {
    /// A limiter with these limits.
    pub fn new(limits: LoginLimits) -> LoginLimiter {
        LoginLimiter {
            clients: Counter::new(limits.per_client, limits.capacity),
            pairs: Counter::new(limits.per_account, limits.capacity),
            accounts: Counter::new(limits.per_account, limits.capacity),
            others: RwLock::default(),
            limits: RwLock::new(limits),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> LoginLimits {
        *self.limits.read().unwrap_or_else(|e| e.into_inner())
    }

    /// New limits (a reload) over the same counts: the failures already counted stay and
    /// are measured against the new maximums and windows at once. The capacity stays the
    /// one the limiter was built with. Returns whether anything changed.
    pub fn reconfigure(&self, limits: LoginLimits) -> bool {
        let mut current = self.limits.write().unwrap_or_else(|e| e.into_inner());
        let limits = LoginLimits {
            capacity: current.capacity,
            ..limits
        };
        if *current == limits {
            return false;
        }
        self.clients.reconfigure(limits.per_client);
        self.pairs.reconfigure(limits.per_account);
        self.accounts.reconfigure(limits.per_account);
        *current = limits;
        true
    }

    /// What to do with an attempt from `client` for `account` (None: a credential with no
    /// account, such as a bearer token).
    pub fn gate(&self, client: IpAddr, account: Option<&str>) -> Gate {
        let others = self
            .others
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let theirs = others.clients.get(&client).copied().unwrap_or(0);
        if let Some(retry_after) = self.clients.blocked(&client, theirs) {
            return Gate::Refuse { retry_after };
        }
        let Some(account) = account.map(account_key) else {
            return Gate::Check {
                delay: Duration::ZERO,
            };
        };
        let pair = (client, account);
        let theirs = others.pairs.get(&pair).copied().unwrap_or(0);
        if let Some(retry_after) = self.pairs.blocked(&pair, theirs) {
            return Gate::Refuse { retry_after };
        }
        let account = pair.1;
        let (n, _) = self.accounts.count(&account);
        let n = n.saturating_add(others.accounts.get(&account).copied().unwrap_or(0));
        let limits = self.limits();
        let max = limits.per_account.max_failures;
        let delay = if n < max {
            Duration::ZERO
        } else {
            let doublings = (n - max).min(16);
            limits
                .first_delay
                .saturating_mul(1 << doublings)
                .min(limits.max_delay)
        };
        Gate::Check { delay }
    }

    /// Counts a failed attempt (one that was checked and was wrong).
    pub fn failed(&self, client: IpAddr, account: Option<&str>) {
        self.clients.failed(client);
        if let Some(account) = account.map(account_key) {
            self.pairs.failed((client, account.clone()));
            self.accounts.failed(account);
        }
    }

    /// [`gate`](Self::gate), waiting out the delay: `Err(retry_after)` when refused.
    pub async fn admit(&self, client: IpAddr, account: Option<&str>) -> Result<(), Duration> {
        match self.gate(client, account) {
            Gate::Refuse { retry_after } => Err(retry_after),
            Gate::Check { delay } => {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok(())
            }
        }
    }
}

impl SharedLogins for LoginLimiter {
    fn local_failures(&self) -> LoginCounts {
        LoginCounts {
            clients: self.clients.counts().map(|(k, n)| (*k, n)).collect(),
            pairs: self
                .pairs
                .counts()
                .map(|(k, n)| (format!("{} {}", k.0, k.1), n))
                .collect(),
            accounts: self
                .accounts
                .counts()
                .map(|(k, n)| (k.as_ref().clone(), n))
                .collect(),
        }
    }

    fn set_others(&self, others: LoginCounts) {
        let pairs = others
            .pairs
            .into_iter()
            .filter_map(|(k, n)| {
                let (ip, account) = k.split_once(' ')?;
                Some(((ip.parse().ok()?, account.to_string()), n))
            })
            .collect();
        let others = Others {
            clients: others.clients,
            pairs,
            accounts: others.accounts,
        };
        *self.others.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(others);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_client: u32, per_account: u32) -> LoginLimiter {
        let window = Duration::from_secs(60);
        LoginLimiter::new(LoginLimits::new(
            FailureLimit {
                max_failures: per_client,
                window,
            },
            FailureLimit {
                max_failures: per_account,
                window,
            },
        ))
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    const AT_ONCE: Gate = Gate::Check {
        delay: Duration::ZERO,
    };

    #[tokio::test(start_paused = true)]
    async fn a_guessing_address_is_refused_and_the_owner_elsewhere_is_not() {
        let l = limiter(10, 10);
        let mut refused = 0;
        for _ in 0..15 {
            match l.gate(ip(2), Some("alice@example.test")) {
                Gate::Check { .. } => l.failed(ip(2), Some("alice@example.test")),
                Gate::Refuse { retry_after } => {
                    assert!(retry_after <= Duration::from_secs(60));
                    refused += 1;
                }
            }
        }
        assert_eq!(
            refused, 5,
            "the 11th to 15th attempts are refused unchecked"
        );
        assert!(matches!(
            l.gate(ip(2), Some("bob@example.test")),
            Gate::Refuse { .. }
        ));
        // The owner, elsewhere, is checked: after a short delay, as the account has
        // had its 10 failures.
        assert_eq!(
            l.gate(ip(3), Some("Alice@Example.test")),
            Gate::Check {
                delay: Duration::from_secs(1)
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_account_attacked_from_many_addresses_slows_down_and_never_locks() {
        let l = limiter(10, 3);
        for i in 0..3 {
            assert_eq!(l.gate(ip(10 + i), Some("alice")), AT_ONCE);
            l.failed(ip(10 + i), Some("alice"));
        }
        let delay = |l: &LoginLimiter| match l.gate(ip(99), Some("alice")) {
            Gate::Check { delay } => delay,
            g => panic!("the owner is refused: {g:?}"),
        };
        assert_eq!(delay(&l), Duration::from_secs(1));
        l.failed(ip(20), Some("alice"));
        assert_eq!(delay(&l), Duration::from_secs(2));
        for i in 0..10 {
            l.failed(ip(30 + i), Some("alice"));
        }
        assert_eq!(delay(&l), Duration::from_secs(16), "capped");
        assert_eq!(l.gate(ip(99), Some("bob")), AT_ONCE, "per account");
        // The delay is waited out, then the attempt goes ahead.
        let t = Instant::now();
        assert_eq!(l.admit(ip(99), Some("alice")).await, Ok(()));
        assert_eq!(t.elapsed(), Duration::from_secs(16));
    }

    #[tokio::test(start_paused = true)]
    async fn one_address_and_account_pair_is_refused_before_the_address() {
        let l = limiter(10, 3);
        for _ in 0..3 {
            l.failed(ip(2), Some("alice"));
        }
        assert!(matches!(l.gate(ip(2), Some("alice")), Gate::Refuse { .. }));
        assert_eq!(l.gate(ip(2), Some("bob")), AT_ONCE);
    }

    #[tokio::test(start_paused = true)]
    async fn counts_end_with_their_window() {
        let l = limiter(2, 10);
        l.failed(ip(2), None);
        tokio::time::advance(Duration::from_secs(30)).await;
        l.failed(ip(2), None);
        match l.gate(ip(2), None) {
            Gate::Refuse { retry_after } => assert_eq!(retry_after, Duration::from_secs(30)),
            g => panic!("{g:?}"),
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(l.gate(ip(2), None), AT_ONCE, "the window passed");
        l.failed(ip(2), None);
        assert_eq!(l.gate(ip(2), None), AT_ONCE, "a new window counts from one");
    }

    #[tokio::test(start_paused = true)]
    async fn the_other_nodes_failures_count_as_if_here() {
        let a = limiter(10, 3);
        let b = limiter(10, 3);
        for _ in 0..2 {
            a.failed(ip(2), Some("Alice"));
        }
        let shared = a.local_failures();
        assert_eq!(shared.pairs.get("127.0.0.2 alice"), Some(&2));
        assert_eq!(shared.accounts.get("alice"), Some(&2));
        assert_eq!(shared.clients.get(&ip(2)), Some(&2));
        // Node b has seen one failure of its own: with a's two, the pair is used up.
        b.failed(ip(2), Some("alice"));
        assert_eq!(b.gate(ip(2), Some("alice")), AT_ONCE);
        b.set_others(shared);
        match b.gate(ip(2), Some("alice")) {
            Gate::Refuse { retry_after } => assert_eq!(retry_after, Duration::from_secs(60)),
            g => panic!("{g:?}"),
        }
        // The account, from elsewhere, is slowed down by the three failures together.
        assert_eq!(
            b.gate(ip(9), Some("alice")),
            Gate::Check {
                delay: Duration::from_secs(1)
            }
        );
        // Once a's window has passed it shares nothing, and b counts its own again.
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(a.local_failures().is_empty());
        b.set_others(a.local_failures());
        assert_eq!(b.gate(ip(2), Some("alice")), AT_ONCE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_applies_new_limits_to_the_failures_already_counted() {
        let l = limiter(10, 10);
        for _ in 0..3 {
            l.failed(ip(2), Some("alice"));
        }
        assert_eq!(l.gate(ip(2), None), AT_ONCE);
        let window = Duration::from_secs(60);
        let lower = LoginLimits::new(
            FailureLimit {
                max_failures: 3,
                window,
            },
            FailureLimit {
                max_failures: 10,
                window,
            },
        );
        assert!(l.reconfigure(lower));
        assert!(
            !l.reconfigure(lower),
            "the same limits again change nothing"
        );
        assert_eq!(l.limits(), lower);
        assert!(
            matches!(l.gate(ip(2), None), Gate::Refuse { .. }),
            "the three failures counted before the reload reach the new maximum"
        );
        // A higher maximum: the three still count; two more reach it.
        let higher = LoginLimits::new(
            FailureLimit {
                max_failures: 5,
                window,
            },
            lower.per_account,
        );
        assert!(l.reconfigure(higher));
        assert_eq!(l.gate(ip(2), None), AT_ONCE);
        l.failed(ip(2), None);
        l.failed(ip(2), None);
        assert!(matches!(l.gate(ip(2), None), Gate::Refuse { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_longer_window_keeps_the_failures_of_the_current_one() {
        let l = limiter(1, 10);
        l.failed(ip(2), None);
        tokio::time::advance(Duration::from_secs(50)).await;
        let longer = FailureLimit {
            max_failures: 1,
            window: Duration::from_secs(120),
        };
        assert!(l.reconfigure(LoginLimits::new(longer, longer)));
        tokio::time::advance(Duration::from_secs(20)).await;
        match l.gate(ip(2), None) {
            Gate::Refuse { retry_after } => assert_eq!(retry_after, Duration::from_secs(50)),
            g => panic!("the failure was forgotten at the old window's end: {g:?}"),
        }
        // A shorter window ends the windows already older than it.
        let shorter = FailureLimit {
            max_failures: 1,
            window: Duration::from_secs(30),
        };
        assert!(l.reconfigure(LoginLimits::new(shorter, shorter)));
        assert_eq!(l.gate(ip(2), None), AT_ONCE);
    }
}
