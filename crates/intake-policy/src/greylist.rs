//! Greylisting (RFC 6647): the first attempt of a (client network, sender, recipient)
//! triplet is deferred at RCPT with `451 4.7.1`; a retry after `delay` (and within the
//! retry window) passes, and so does every later message of that triplet for `lifetime`.
//! A client network whose triplets passed `auto_allow_after` times is not greylisted any
//! more. The defaults are Postgrey's: 5 minutes, 2 days, 35 days, 5 passes; client networks
//! are /24 (IPv4) and /64 (IPv6), since big senders retry from another address nearby.
//!
//! State is kept behind [`GreyState`]: in the store (`greylist` table) on a single node, so
//! it survives restarts, or in Redis (`intake-cluster`) when several nodes share it. A
//! failure of that state is "could not decide": by default the check then fails open (mail
//! is not held up because greylisting state is unavailable). While the shared state is
//! known to be down the check falls back at once, by its `on_error`, logging once a minute.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use intake_core::net::LogEvery;
use intake_core::{
    Check, CheckCtx, CheckError, Clock, GreyRecord, GreyState, OnError, PolicyState, Reason,
    SharedError, Stage, Verdict,
};
use ipnet::IpNet;

/// Settings of greylisting.
#[derive(Debug, Clone)]
pub struct GreylistConfig {
    /// Off by default.
    pub enabled: bool,
    /// How long a new triplet is deferred.
    pub delay: Duration,
    /// How long after the delay a retry is still accepted; later, the triplet starts over.
    pub retry_window: Duration,
    /// How long a triplet that passed (and a client's passes) are remembered since last seen.
    pub lifetime: Duration,
    /// Passed triplets after which a client network is not greylisted (0: never).
    pub auto_allow_after: u32,
    /// Networks never greylisted.
    pub allow_networks: Vec<IpNet>,
    /// How long the check may take.
    pub timeout: Duration,
    /// When its state (the store, or Redis) fails: accept (default) or defer.
    pub on_error: OnError,
}

impl Default for GreylistConfig {
    fn default() -> Self {
        GreylistConfig {
            enabled: false,
            delay: Duration::from_secs(300),
            retry_window: Duration::from_secs(2 * 86_400),
            lifetime: Duration::from_secs(35 * 86_400),
            auto_allow_after: 5,
            allow_networks: Vec::new(),
            timeout: Duration::from_secs(5),
            on_error: OnError::FailOpen,
        }
    }
}

/// Expired records are deleted at most this often (milliseconds).
const EXPIRE_EVERY_MS: i64 = 3_600_000;
/// A passed triplet's or an auto-allowed client's record is refreshed (its last-seen time
/// written) at most this often (ms): the lifetime is weeks, and a write per RCPT would cost
/// more than the rest of the check.
const REFRESH_EVERY_MS: i64 = 3_600_000;

/// The greylisting check (at RCPT).
pub struct Greylist {
    cfg: GreylistConfig,
    state: Arc<dyn GreyState>,
    clock: Arc<dyn Clock>,
    /// When expired records were last deleted (Unix ms).
    last_expire: AtomicI64,
    /// Fallbacks while the shared state is down: one log line a minute.
    unavailable: Mutex<LogEvery>,
}

/// The network a client is greylisted as: its /24 or /64.
pub fn client_network(ip: IpAddr) -> IpNet {
    let ip = ip.to_canonical();
    let prefix = if ip.is_ipv4() { 24 } else { 64 };
    IpNet::new(ip, prefix).expect("valid prefix").trunc()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Why a check could not decide.
enum Undecided {
    /// The shared state is known to be down: fall back quietly.
    Unavailable(String),
    /// Anything else: the pipeline logs it and applies `on_error`.
    Failed(CheckError),
}

impl From<SharedError> for Undecided {
    fn from(e: SharedError) -> Self {
        match e {
            SharedError::Unavailable(why) => Undecided::Unavailable(why),
            SharedError::Failed(why) => {
                Undecided::Failed(CheckError::Backend(format!("greylist state: {why}")))
            }
        }
    }
}

impl Greylist {
    /// A check keeping its state in the store's policy state, reading the time from `clock`.
    pub fn new(
        cfg: GreylistConfig,
        state: Arc<dyn PolicyState>,
        clock: Arc<dyn Clock>,
    ) -> Greylist {
        Greylist::with_state(cfg, Arc::new(intake_core::StoreGreyState(state)), clock)
    }

    /// A check keeping its state in `state` (the store, or Redis for a cluster).
    pub fn with_state(
        cfg: GreylistConfig,
        state: Arc<dyn GreyState>,
        clock: Arc<dyn Clock>,
    ) -> Greylist {
        Greylist {
            cfg,
            state,
            clock,
            last_expire: AtomicI64::new(0),
            unavailable: Mutex::new(LogEvery::new(Duration::from_secs(60))),
        }
    }

    /// How long `r` is worth keeping from `now`: a triplet still waiting for its retry
    /// until its retry window closes; a passed triplet or a client for its lifetime.
    fn ttl(&self, r: &GreyRecord, now: i64) -> Duration {
        let until = if r.passes == 0 {
            r.first_seen
                .saturating_add(millis(self.cfg.delay))
                .saturating_add(millis(self.cfg.retry_window))
        } else {
            r.last_seen.saturating_add(millis(self.cfg.lifetime))
        };
        Duration::from_millis(u64::try_from(until.saturating_sub(now)).unwrap_or(0))
            .max(Duration::from_secs(1))
    }

    async fn put(&self, key: &str, r: GreyRecord, now: i64) -> Result<(), Undecided> {
        Ok(self.state.put(key, r, self.ttl(&r, now)).await?)
    }

    async fn expire(&self, now: i64) {
        let last = self.last_expire.load(Ordering::Relaxed);
        if now - last < EXPIRE_EVERY_MS
            || self
                .last_expire
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        match self
            .state
            .expire(now.saturating_sub(millis(self.cfg.lifetime)))
            .await
        {
            Ok(n) if n > 0 => tracing::debug!(deleted = n, "greylist: expired records deleted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "greylist: expiring records failed"),
        }
    }

    /// Whether the client network has passed often enough to skip greylisting.
    async fn auto_allowed(&self, client_key: &str, now: i64) -> Result<bool, Undecided> {
        if self.cfg.auto_allow_after == 0 {
            return Ok(false);
        }
        let Some(mut c) = self.state.get(client_key).await? else {
            return Ok(false);
        };
        if c.passes < self.cfg.auto_allow_after || now - c.last_seen > millis(self.cfg.lifetime) {
            return Ok(false);
        }
        if now - c.last_seen > REFRESH_EVERY_MS {
            c.last_seen = now;
            self.put(client_key, c, now).await?;
        }
        Ok(true)
    }

    async fn count_client_pass(&self, client_key: &str, now: i64) -> Result<(), Undecided> {
        let lifetime = millis(self.cfg.lifetime);
        let c = match self.state.get(client_key).await? {
            Some(c) if now - c.last_seen <= lifetime => GreyRecord {
                last_seen: now,
                passes: c.passes.saturating_add(1),
                ..c
            },
            _ => GreyRecord {
                first_seen: now,
                last_seen: now,
                passes: 1,
            },
        };
        self.put(client_key, c, now).await
    }
}

#[async_trait]
impl Check for Greylist {
    fn name(&self) -> &'static str {
        "greylist"
    }

    fn stage(&self) -> Stage {
        Stage::RcptTo
    }

    async fn check(&self, cx: &CheckCtx) -> Result<Verdict, CheckError> {
        match self.decide(cx).await {
            Ok(v) => Ok(v),
            Err(Undecided::Failed(e)) => Err(e),
            Err(Undecided::Unavailable(why)) => {
                if let Some(n) = self.unavailable.lock().expect("log lock").hit() {
                    tracing::warn!(reason = %why, on_error = ?self.cfg.on_error, checks = n,
                        "greylist: shared state unavailable, falling back");
                }
                Ok(match self.cfg.on_error {
                    OnError::FailOpen => Verdict::unchecked("greylist", &why),
                    OnError::Defer => Verdict::Defer {
                        reason: Reason::CheckFailed,
                    },
                })
            }
        }
    }
}

impl Greylist {
    async fn decide(&self, cx: &CheckCtx) -> Result<Verdict, Undecided> {
        let ip = cx.client.ip().to_canonical();
        if self.cfg.allow_networks.iter().any(|n| n.contains(&ip)) {
            return Ok(Verdict::Pass);
        }
        // A client the DNS allowlists vouch for is not greylisted (as postscreen does).
        if cx.symbols.iter().any(|s| s == crate::dnsbl::ALLOWLISTED) {
            return Ok(Verdict::Pass);
        }
        let now = self.clock.now().as_millisecond();
        self.expire(now).await;
        let net = client_network(ip);
        let client_key = format!("c {net}");
        if self.auto_allowed(&client_key, now).await? {
            return Ok(Verdict::Pass);
        }
        let sender = match cx.mail_from.as_deref() {
            None | Some("") => "<>".to_string(),
            Some(s) => s.to_lowercase(),
        };
        let rcpt = cx.rcpt_to.as_deref().unwrap_or("").to_lowercase();
        let key = format!("t {net} {sender} {rcpt}");
        let defer = Verdict::Defer {
            reason: Reason::Greylisted,
        };
        let fresh = GreyRecord {
            first_seen: now,
            last_seen: now,
            passes: 0,
        };
        let record = self.state.get(&key).await?;
        let (record, verdict) = match record {
            Some(r) if now - r.last_seen <= millis(self.cfg.lifetime) && r.passes > 0 => {
                if now - r.last_seen <= REFRESH_EVERY_MS {
                    // Known and seen lately: no write on the busy path.
                    return Ok(Verdict::Pass);
                }
                (
                    GreyRecord {
                        last_seen: now,
                        passes: r.passes.saturating_add(1),
                        ..r
                    },
                    Verdict::Pass,
                )
            }
            Some(r) if r.passes == 0 && now - r.first_seen < millis(self.cfg.delay) => {
                // Too early: keep the first attempt's time.
                (
                    GreyRecord {
                        last_seen: now,
                        ..r
                    },
                    defer,
                )
            }
            Some(r)
                if r.passes == 0
                    && now - r.first_seen
                        <= millis(self.cfg.delay).saturating_add(millis(self.cfg.retry_window)) =>
            {
                self.count_client_pass(&client_key, now).await?;
                tracing::info!(
                    client = %cx.client, sender = %sender, rcpt = %rcpt,
                    delayed_s = (now - r.first_seen) / 1000, "greylist: retry accepted"
                );
                (
                    GreyRecord {
                        last_seen: now,
                        passes: 1,
                        ..r
                    },
                    Verdict::Pass,
                )
            }
            // New, expired, or retried too late: start over.
            _ => (fresh, defer),
        };
        self.put(&key, record, now).await?;
        Ok(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use intake_core::MailStore;
    use intake_store::{Mode, StoreSettings};

    /// A clock the test moves.
    #[derive(Debug, Default)]
    struct ManualClock(AtomicI64);

    impl ManualClock {
        fn advance(&self, d: Duration) {
            self.0.fetch_add(millis(d), Ordering::SeqCst);
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> jiff::Timestamp {
            jiff::Timestamp::from_millisecond(1_770_000_000_000 + self.0.load(Ordering::SeqCst))
                .unwrap()
        }
    }

    const MIN: Duration = Duration::from_secs(60);
    const DAY: Duration = Duration::from_secs(86_400);

    struct Fixture {
        check: Greylist,
        clock: Arc<ManualClock>,
        store: Arc<intake_store::Store>,
    }

    fn fixture(f: impl FnOnce(&mut GreylistConfig)) -> Fixture {
        fixture_on(intake_store::memory::store(), f)
    }

    fn fixture_on(store: Arc<intake_store::Store>, f: impl FnOnce(&mut GreylistConfig)) -> Fixture {
        let clock = Arc::new(ManualClock::default());
        let mut cfg = GreylistConfig {
            enabled: true,
            ..GreylistConfig::default()
        };
        f(&mut cfg);
        Fixture {
            check: Greylist::new(cfg, store.clone(), clock.clone()),
            clock,
            store,
        }
    }

    async fn attempt(check: &Greylist, client: &str, from: &str, to: &str) -> &'static str {
        let ip: IpAddr = client.parse().unwrap();
        let mut cx = CheckCtx::new(Stage::RcptTo, std::net::SocketAddr::new(ip, 40000));
        cx.mail_from = Some(from.into());
        cx.rcpt_to = Some(to.into());
        match check.check(&cx).await {
            Ok(Verdict::Pass) => "pass",
            Ok(Verdict::Defer {
                reason: Reason::Greylisted,
            }) => "defer",
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => "error",
        }
    }

    #[tokio::test]
    async fn first_attempt_deferred_retry_after_the_delay_passes() {
        let f = fixture(|_| {});
        let c = &f.check;
        assert_eq!(
            attempt(c, "192.0.2.10", "a@x.test", "b@y.test").await,
            "defer"
        );
        f.clock.advance(MIN);
        assert_eq!(
            attempt(c, "192.0.2.10", "a@x.test", "b@y.test").await,
            "defer",
            "too early"
        );
        f.clock.advance(4 * MIN + Duration::from_secs(1));
        assert_eq!(
            attempt(c, "192.0.2.10", "A@X.test", "b@Y.test").await,
            "pass"
        );
        f.clock.advance(10 * DAY);
        assert_eq!(
            attempt(c, "192.0.2.10", "a@x.test", "b@y.test").await,
            "pass",
            "known"
        );
        // Another sender, recipient or network is another triplet.
        assert_eq!(
            attempt(c, "192.0.2.10", "other@x.test", "b@y.test").await,
            "defer"
        );
        assert_eq!(
            attempt(c, "192.0.2.10", "a@x.test", "c@y.test").await,
            "defer"
        );
        assert_eq!(
            attempt(c, "198.51.100.10", "a@x.test", "b@y.test").await,
            "defer"
        );
        // The same /24: a retry from another address of the sender's pool.
        assert_eq!(
            attempt(c, "192.0.2.77", "a@x.test", "b@y.test").await,
            "pass"
        );
    }

    #[tokio::test]
    async fn a_retry_too_late_or_a_triplet_unseen_for_its_lifetime_starts_over() {
        let f = fixture(|_| {});
        let c = &f.check;
        assert_eq!(
            attempt(c, "192.0.2.10", "a@x.test", "b@y.test").await,
            "defer"
        );
        f.clock.advance(3 * DAY);
        assert_eq!(
            attempt(c, "192.0.2.10", "a@x.test", "b@y.test").await,
            "defer"
        );
        f.clock.advance(6 * MIN);
        assert_eq!(
            attempt(c, "192.0.2.10", "a@x.test", "b@y.test").await,
            "pass"
        );
        f.clock.advance(36 * DAY);
        assert_eq!(
            attempt(c, "192.0.2.10", "a@x.test", "b@y.test").await,
            "defer"
        );
    }

    #[tokio::test]
    async fn a_client_is_allowed_after_five_passes() {
        let f = fixture(|_| {});
        let c = &f.check;
        for i in 0..5 {
            let to = format!("u{i}@y.test");
            assert_eq!(attempt(c, "2001:db8::1", "a@x.test", &to).await, "defer");
            f.clock.advance(6 * MIN);
            assert_eq!(
                attempt(c, "2001:db8::2", "a@x.test", &to).await,
                "pass",
                "same /64"
            );
        }
        assert_eq!(
            attempt(c, "2001:db8::3", "new@x.test", "new@y.test").await,
            "pass"
        );
        assert_eq!(
            attempt(c, "2001:db8:1::1", "new@x.test", "new@y.test").await,
            "defer",
            "another /64"
        );
    }

    #[tokio::test]
    async fn allowed_networks_and_no_auto_allow() {
        let f = fixture(|c| {
            c.allow_networks = vec!["10.0.0.0/8".parse().unwrap()];
            c.auto_allow_after = 0;
        });
        let c = &f.check;
        assert_eq!(attempt(c, "10.1.2.3", "a@x.test", "b@y.test").await, "pass");
        assert_eq!(
            attempt(c, "::ffff:10.1.2.3", "a@x.test", "b@y.test").await,
            "pass"
        );
        for i in 0..6 {
            let to = format!("u{i}@y.test");
            attempt(c, "192.0.2.1", "a@x.test", &to).await;
            f.clock.advance(6 * MIN);
            assert_eq!(attempt(c, "192.0.2.1", "a@x.test", &to).await, "pass");
        }
        assert_eq!(
            attempt(c, "192.0.2.1", "z@x.test", "z@y.test").await,
            "defer"
        );
    }

    #[tokio::test]
    async fn state_survives_a_restart_and_store_failures_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let settings = StoreSettings::sqlite(dir.path());
        let sqlite = intake_store::open(&settings, Mode::ReadWrite)
            .await
            .unwrap()
            .store;
        let f = fixture_on(sqlite, |_| {});
        assert_eq!(
            attempt(&f.check, "192.0.2.10", "", "b@y.test").await,
            "defer"
        );
        f.store.close().await;
        let store = intake_store::open(&settings, Mode::ReadWrite)
            .await
            .unwrap()
            .store;
        let cfg = GreylistConfig {
            enabled: true,
            ..GreylistConfig::default()
        };
        let check = Greylist::new(cfg.clone(), store.clone(), f.clock.clone());
        f.clock.advance(6 * MIN);
        assert_eq!(attempt(&check, "192.0.2.10", "", "b@y.test").await, "pass");
        store.close().await;
        let ro = intake_store::open(&settings, Mode::ReadOnly)
            .await
            .unwrap()
            .store;
        let check = Greylist::new(cfg, ro, f.clock.clone());
        assert_eq!(
            attempt(&check, "192.0.2.10", "", "b@y.test").await,
            "pass",
            "a known triplet needs no write"
        );
        assert_eq!(
            attempt(&check, "192.0.2.10", "", "new@y.test").await,
            "error",
            "a new one cannot be recorded"
        );
    }

    #[test]
    fn networks() {
        assert_eq!(
            client_network("192.0.2.200".parse().unwrap()).to_string(),
            "192.0.2.0/24"
        );
        assert_eq!(
            client_network("::ffff:192.0.2.200".parse().unwrap()).to_string(),
            "192.0.2.0/24"
        );
        assert_eq!(
            client_network("2001:db8:1:2:3::4".parse().unwrap()).to_string(),
            "2001:db8:1:2::/64"
        );
    }
}
