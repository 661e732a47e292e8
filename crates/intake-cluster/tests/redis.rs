//! Two nodes sharing one Redis (the real one on 127.0.0.1:6379), each test under a key
//! prefix of its own that it deletes at the end. Nodes are `Cluster` instances with their
//! own `ClientLimits` and greylist check, as two `intake serve` processes would have.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use intake_cluster::{Cluster, ClusterConfig};
use intake_core::{Check, CheckCtx, Clock, OnError, Reason, Stage, Verdict};
use intake_policy::{Greylist, GreylistConfig};
use intake_smtp::limits::{ClientLimits, LimitSettings, Refusal};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const REDIS: &str = "redis://127.0.0.1:6379/";

/// A key prefix no other test or user shares.
fn prefix() -> String {
    format!("intake-test:{}:", uuid::Uuid::new_v4().simple())
}

fn node(url: &str, prefix: &str) -> Arc<Cluster> {
    Cluster::new(ClusterConfig {
        redis_url: url.into(),
        key_prefix: prefix.into(),
        sync_interval: Duration::from_millis(100),
        timeout: Duration::from_millis(500),
    })
    .unwrap()
}

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(REDIS)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis on 127.0.0.1:6379")
}

/// Deletes every key under `prefix`.
async fn cleanup(prefix: &str) {
    intake_store::redis::test_server::delete_keys(REDIS, prefix).await;
}

/// Keys under `prefix`.
async fn keys(prefix: &str) -> Vec<String> {
    let mut conn = redis().await;
    redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// Each node publishes its counts, then each reads the others' (what two sync ticks do).
async fn sync(nodes: &[&Arc<Cluster>]) {
    for _ in 0..2 {
        for n in nodes {
            n.sync().await.expect("sync");
        }
    }
}

/// A clock the test moves, shared by both nodes.
#[derive(Debug, Default)]
struct ManualClock(AtomicI64);

impl ManualClock {
    fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::from_millisecond(1_770_000_000_000 + self.0.load(Ordering::SeqCst))
            .unwrap()
    }
}

fn greylist_cfg() -> GreylistConfig {
    GreylistConfig {
        enabled: true,
        delay: Duration::from_secs(300),
        // Short, so that keys a failed test leaves behind go soon.
        retry_window: Duration::from_secs(600),
        lifetime: Duration::from_secs(3600),
        ..GreylistConfig::default()
    }
}

/// The verdict on one RCPT, as the session maps it.
async fn attempt(check: &Greylist, client: &str, from: &str, to: &str) -> &'static str {
    let ip: IpAddr = client.parse().unwrap();
    let mut cx = CheckCtx::new(Stage::RcptTo, SocketAddr::new(ip, 40000));
    cx.mail_from = Some(from.into());
    cx.rcpt_to = Some(to.into());
    match check.check(&cx).await {
        Ok(Verdict::Pass) => "pass",
        // Let in without a decision: the message is marked (X-Intake-Unchecked).
        Ok(Verdict::Tag { findings, .. }) if !findings.undecided.is_empty() => "pass unchecked",
        Ok(Verdict::Defer {
            reason: Reason::Greylisted,
        }) => "greylisted",
        Ok(Verdict::Defer {
            reason: Reason::CheckFailed,
        }) => "check failed",
        Ok(other) => panic!("unexpected {other:?}"),
        Err(e) => panic!("the check errs: {e}"),
    }
}

#[tokio::test]
async fn a_triplet_deferred_on_one_node_passes_on_another_after_the_delay() {
    let p = prefix();
    let (a, b) = (node(REDIS, &p), node(REDIS, &p));
    let clock = Arc::new(ManualClock::default());
    let on_a = Greylist::with_state(greylist_cfg(), a.grey_state(), clock.clone());
    let on_b = Greylist::with_state(greylist_cfg(), b.grey_state(), clock.clone());

    assert_eq!(
        attempt(&on_a, "192.0.2.10", "a@x.test", "b@y.test").await,
        "greylisted"
    );
    clock.advance(Duration::from_secs(60));
    assert_eq!(
        attempt(&on_b, "192.0.2.11", "a@x.test", "b@y.test").await,
        "greylisted",
        "too early on the other node too"
    );
    clock.advance(Duration::from_secs(241));
    assert_eq!(
        attempt(&on_b, "192.0.2.12", "A@x.test", "b@Y.test").await,
        "pass",
        "the retry through node B"
    );
    assert_eq!(
        attempt(&on_a, "192.0.2.10", "a@x.test", "b@y.test").await,
        "pass",
        "known on node A now"
    );
    assert_eq!(
        attempt(&on_a, "192.0.2.10", "other@x.test", "b@y.test").await,
        "greylisted"
    );

    // Redis expires the records: the passed triplet lives for its lifetime, the pending one
    // until its retry window closes.
    let mut conn = redis().await;
    let ttl = |key: String| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("PTTL")
                .arg(key)
                .query_async::<i64>(&mut conn)
                .await
                .unwrap()
        }
    };
    let passed = ttl(format!("{p}grey:t 192.0.2.0/24 a@x.test b@y.test")).await;
    assert!(passed > 3_000_000 && passed <= 3_600_000, "{passed}");
    let pending = ttl(format!("{p}grey:t 192.0.2.0/24 other@x.test b@y.test")).await;
    assert!(pending > 800_000 && pending <= 900_000, "{pending}");
    let _: () = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    cleanup(&p).await;
}

#[tokio::test]
async fn a_connection_cap_holds_across_nodes_after_a_sync() {
    let p = prefix();
    let (a, b) = (node(REDIS, &p), node(REDIS, &p));
    let settings = LimitSettings {
        connections_per_ip: 3,
        connections_per_network: 5,
        ..Default::default()
    };
    let (la, lb) = (
        ClientLimits::new(settings, Vec::new()),
        ClientLimits::new(settings, Vec::new()),
    );
    a.share_limits(la.clone());
    b.share_limits(lb.clone());
    let ip: IpAddr = "192.0.2.1".parse().unwrap();
    let held_a = [la.admit(ip).unwrap(), la.admit(ip).unwrap()];
    let _held_b = lb.admit(ip).unwrap();
    sync(&[&a, &b]).await;
    assert_eq!(la.admit(ip).err(), Some(Refusal::PerIp), "2 on A + 1 on B");
    assert_eq!(lb.admit(ip).err(), Some(Refusal::PerIp));
    let _other = lb
        .admit("192.0.2.2".parse().unwrap())
        .expect("another IP of the network");
    let _other2 = la.admit("192.0.2.3".parse().unwrap()).unwrap();
    sync(&[&a, &b]).await;
    assert_eq!(
        lb.admit("192.0.2.4".parse().unwrap()).err(),
        Some(Refusal::PerNetwork),
        "5 open in the /24 across both nodes"
    );

    // Connections closing on A free slots on B after the next sync.
    drop(held_a);
    sync(&[&a, &b]).await;
    let _b2 = lb.admit(ip).unwrap();
    let _b3 = lb.admit(ip).unwrap();
    assert_eq!(lb.admit(ip).err(), Some(Refusal::PerIp), "3 on B now");

    // A node that stops takes its counts with it.
    let _a_again = la.admit("192.0.2.9".parse().unwrap()).unwrap();
    a.sync().await.unwrap();
    b.sync().await.unwrap();
    assert_eq!(
        lb.admit("192.0.2.10".parse().unwrap()).err(),
        Some(Refusal::PerNetwork)
    );
    a.leave().await;
    b.sync().await.unwrap();
    assert!(lb.admit("192.0.2.10".parse().unwrap()).is_ok());

    b.leave().await;
    assert!(keys(&p).await.is_empty(), "{:?}", keys(&p).await);
    cleanup(&p).await;
}

#[tokio::test]
async fn message_and_recipient_rates_are_shared() {
    let p = prefix();
    let (a, b) = (node(REDIS, &p), node(REDIS, &p));
    let settings = LimitSettings {
        message_rate: 4,
        recipient_rate: 10,
        ..Default::default()
    };
    let (la, lb) = (
        ClientLimits::new(settings, Vec::new()),
        ClientLimits::new(settings, Vec::new()),
    );
    a.share_limits(la.clone());
    b.share_limits(lb.clone());
    let ip: IpAddr = "2001:db8::1".parse().unwrap();
    sync(&[&a, &b]).await;
    for _ in 0..3 {
        assert!(la.allow_message(ip));
    }
    for _ in 0..8 {
        assert!(lb.allow_recipient(ip));
    }
    sync(&[&a, &b]).await;
    assert!(lb.allow_message(ip), "the 4th of the cluster's minute");
    assert!(!lb.allow_message(ip), "a 5th: over the rate on either node");
    assert!(la.allow_recipient(ip) && la.allow_recipient(ip));
    assert!(!la.allow_recipient(ip));
    sync(&[&a, &b]).await;
    assert!(!la.allow_message(ip));
    assert!(
        la.allow_message("2001:db8::2".parse().unwrap()),
        "per IP, not per network"
    );
    a.leave().await;
    b.leave().await;
    cleanup(&p).await;
}

/// An address where nothing listens.
fn closed_port() -> String {
    format!("redis://127.0.0.1:{}/", intake_core::testing::free_port())
}

/// What a node does without its Redis: local limits, greylisting by `on_error`.
async fn carries_on_alone(url: &str) {
    let p = prefix();
    let n = node(url, &p);
    let limits = ClientLimits::new(
        LimitSettings {
            connections_per_ip: 2,
            message_rate: 2,
            ..Default::default()
        },
        Vec::new(),
    );
    n.share_limits(limits.clone());
    let clock = Arc::new(ManualClock::default());
    let open = Greylist::with_state(greylist_cfg(), n.grey_state(), clock.clone());
    let cfg = GreylistConfig {
        on_error: OnError::Defer,
        ..greylist_cfg()
    };
    let defer = Greylist::with_state(cfg, n.grey_state(), clock);

    assert_eq!(
        attempt(&open, "192.0.2.1", "a@x.test", "b@y.test").await,
        "pass unchecked",
        "fails open by default"
    );
    assert!(n.sync().await.is_err());
    assert!(!n.is_up());
    assert_eq!(
        attempt(&open, "192.0.2.1", "a@x.test", "c@y.test").await,
        "pass unchecked"
    );
    assert_eq!(
        attempt(&defer, "192.0.2.1", "a@x.test", "b@y.test").await,
        "check failed",
        "on_error = defer"
    );
    let ip: IpAddr = "192.0.2.1".parse().unwrap();
    let _held = [limits.admit(ip).unwrap(), limits.admit(ip).unwrap()];
    assert_eq!(
        limits.admit(ip).err(),
        Some(Refusal::PerIp),
        "the local cap"
    );
    assert!(limits.allow_message(ip) && limits.allow_message(ip));
    assert!(!limits.allow_message(ip), "the local rate");
    n.leave().await;
}

// The bounds below only catch a hang; the calls themselves are bounded by `timeout`.

#[tokio::test]
async fn redis_unreachable_the_node_carries_on_alone() {
    tokio::time::timeout(Duration::from_secs(30), carries_on_alone(&closed_port()))
        .await
        .expect("no hang");
}

#[tokio::test]
async fn redis_not_answering_the_node_carries_on_alone() {
    // Accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}/", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            conns.push(s);
        }
    });
    tokio::time::timeout(Duration::from_secs(30), carries_on_alone(&url))
        .await
        .expect("no hang");
    held.abort();
}

/// A TCP relay to the real Redis that a test can cut and restore.
struct Relay {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Relay {
    async fn start(addr: &str) -> Relay {
        let l = TcpListener::bind(addr).await.unwrap();
        let addr = l.local_addr().unwrap();
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                let (mut client, _) = tokio::select! {
                    r = l.accept() => r.unwrap(),
                    _ = token.cancelled() => return,
                };
                let token = token.clone();
                tokio::spawn(async move {
                    let mut upstream = tokio::net::TcpStream::connect("127.0.0.1:6379")
                        .await
                        .unwrap();
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                        _ = token.cancelled() => {}
                    }
                });
            }
        });
        Relay { addr, stop }
    }

    fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// Closes the port and every relayed connection.
    fn cut(&self) {
        self.stop.cancel();
    }
}

#[tokio::test]
async fn a_node_goes_alone_while_redis_is_away_and_back_when_it_returns() {
    let p = prefix();
    let relay = Relay::start("127.0.0.1:0").await;
    let a = node(&relay.url(), &p);
    let b = node(REDIS, &p);
    let settings = LimitSettings {
        connections_per_ip: 2,
        ..Default::default()
    };
    let (la, lb) = (
        ClientLimits::new(settings, Vec::new()),
        ClientLimits::new(settings, Vec::new()),
    );
    a.share_limits(la.clone());
    b.share_limits(lb.clone());
    let clock = Arc::new(ManualClock::default());
    let on_a = Greylist::with_state(greylist_cfg(), a.grey_state(), clock.clone());
    let on_b = Greylist::with_state(greylist_cfg(), b.grey_state(), clock.clone());
    let ip: IpAddr = "192.0.2.1".parse().unwrap();
    let _b1 = lb.admit(ip).unwrap();
    let _b2 = lb.admit(ip).unwrap();
    sync(&[&a, &b]).await;
    assert_eq!(la.admit(ip).err(), Some(Refusal::PerIp), "B holds the cap");

    relay.cut();
    assert!(a.sync().await.is_err());
    let _a1 = la.admit(ip).expect("alone, A counts only its own");
    assert_eq!(
        attempt(&on_a, "192.0.2.1", "a@x.test", "b@y.test").await,
        "pass unchecked",
        "greylisting fails open"
    );
    assert_eq!(
        attempt(&on_b, "192.0.2.1", "a@x.test", "b@y.test").await,
        "greylisted"
    );

    // Redis is back at the same address: A finds it again by itself.
    let relay = Relay::start(&relay.addr.to_string()).await;
    let mut tries = 0;
    while a.sync().await.is_err() {
        tries += 1;
        assert!(tries < 100, "A never reconnected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.sync().await.unwrap();
    a.sync().await.unwrap();
    assert_eq!(
        lb.admit(ip).err(),
        Some(Refusal::PerIp),
        "B counts A's again"
    );
    clock.advance(Duration::from_secs(301));
    assert_eq!(
        attempt(&on_a, "192.0.2.1", "a@x.test", "b@y.test").await,
        "pass",
        "the retry, through A, of what B deferred"
    );
    assert_eq!(
        attempt(&on_a, "192.0.2.1", "new@x.test", "b@y.test").await,
        "greylisted",
        "A greylists again"
    );
    a.leave().await;
    b.leave().await;
    relay.cut();
    cleanup(&p).await;
}

#[tokio::test]
async fn failed_logins_count_across_nodes_and_per_limiter() {
    use intake_core::{FailureLimit, Gate, LoginLimiter, LoginLimits};
    let p = prefix();
    let (a, b) = (node(REDIS, &p), node(REDIS, &p));
    let limit = FailureLimit {
        max_failures: 4,
        window: Duration::from_secs(60),
    };
    let limiter = || Arc::new(LoginLimiter::new(LoginLimits::new(limit, limit)));
    let (smtp_a, smtp_b, http_b) = (limiter(), limiter(), limiter());
    a.share_logins("smtp", smtp_a.clone());
    b.share_logins("smtp", smtp_b.clone());
    b.share_logins("http", http_b.clone());
    let guesser: IpAddr = "192.0.2.7".parse().unwrap();
    // Three wrong passwords on A, one on B: four for the pair across the cluster.
    for _ in 0..3 {
        smtp_a.failed(guesser, Some("alice@example.test"));
    }
    assert_eq!(
        smtp_b.gate(guesser, Some("alice@example.test")),
        Gate::Check {
            delay: Duration::ZERO
        }
    );
    smtp_b.failed(guesser, Some("alice@example.test"));
    sync(&[&a, &b]).await;
    assert!(
        matches!(
            smtp_b.gate(guesser, Some("Alice@example.test")),
            Gate::Refuse { .. }
        ),
        "refused on B after 3 failures on A and 1 on B"
    );
    assert!(matches!(
        smtp_a.gate(guesser, Some("alice@example.test")),
        Gate::Refuse { .. }
    ));
    // The owner elsewhere is slowed down, not locked out, on either node.
    let owner: IpAddr = "198.51.100.1".parse().unwrap();
    assert!(
        matches!(smtp_a.gate(owner, Some("alice@example.test")), Gate::Check { delay } if delay > Duration::ZERO)
    );
    // Another limiter (HTTP) of the same name space is not counted with SMTP's.
    assert_eq!(
        http_b.gate(guesser, Some("alice@example.test")),
        Gate::Check {
            delay: Duration::ZERO
        }
    );
    // A node that leaves takes its failures with it: B alone has one.
    a.leave().await;
    b.sync().await.unwrap();
    assert_eq!(
        smtp_b.gate(guesser, Some("alice@example.test")),
        Gate::Check {
            delay: Duration::ZERO
        }
    );
    b.leave().await;
    cleanup(&p).await;
}
