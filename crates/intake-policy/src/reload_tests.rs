//! A reload builds the checks again from new settings and keeps what [`PolicyShared`]
//! holds: the DNS answers already cached and the greylist records.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use intake_core::{CheckCtx, Clock, Reason, Stage, Verdict};
use tokio::net::UdpSocket;

use crate::dnsbl::{DnsblAction, Zone};
use crate::testdns::{self, dns_config};
use crate::{PolicyConfig, PolicyShared, Profiles};

/// A clock the test moves.
#[derive(Debug, Default)]
struct ManualClock(AtomicI64);

impl Clock for ManualClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::from_millisecond(1_770_000_000_000 + self.0.load(Ordering::SeqCst))
            .unwrap()
    }
}

/// A UDP relay in front of `upstream`, so the test can take DNS away: abort the task and
/// the port is closed.
async fn relay(upstream: SocketAddr) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let front = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = front.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let back = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, client) = front.recv_from(&mut buf).await.unwrap();
            back.send_to(&buf[..n], upstream).await.unwrap();
            let n = back.recv(&mut buf).await.unwrap();
            front.send_to(&buf[..n], client).await.unwrap();
        }
    });
    (addr, task)
}

fn policy(dns: SocketAddr, action: DnsblAction, greylist_delay: Duration) -> PolicyConfig {
    let mut cfg = PolicyConfig {
        dns: dns_config(dns),
        ..PolicyConfig::default()
    };
    cfg.dnsbl.enabled = true;
    cfg.dnsbl.zones = vec![Zone::parse("bl.test").unwrap()];
    cfg.dnsbl.action = action;
    cfg.greylist.enabled = true;
    cfg.greylist.delay = greylist_delay;
    cfg
}

async fn connect(p: &Profiles) -> Vec<Verdict> {
    let cx = CheckCtx::new(Stage::Connect, "192.0.2.7:40000".parse().unwrap());
    p.default_pipeline().run(&cx).await
}

async fn rcpt(p: &Profiles) -> Vec<Verdict> {
    let mut cx = CheckCtx::new(Stage::RcptTo, "198.51.100.7:40000".parse().unwrap());
    cx.mail_from = Some("sender@example.org".into());
    cx.rcpt_to = Some("user@example.test".into());
    p.default_pipeline().run(&cx).await
}

#[tokio::test]
async fn a_rebuild_from_new_settings_keeps_the_dns_cache_and_the_greylist_records() {
    let server = testdns::Zone::default()
        .a("7.2.0.192.bl.test", "127.0.0.2")
        .serve()
        .await;
    let (dns, relay) = relay(server).await;
    let clock = Arc::new(ManualClock::default());
    let shared = PolicyShared::with_store(intake_store::memory::store(), clock.clone());

    let before = Profiles::build(
        &policy(dns, DnsblAction::Reject, Duration::from_secs(300)),
        &shared,
    )
    .unwrap();
    assert!(matches!(
        connect(&before).await[..],
        [Verdict::Reject { .. }]
    ));
    let greylisted = Verdict::Defer {
        reason: Reason::Greylisted,
    };
    assert_eq!(rcpt(&before).await, [Verdict::Pass, greylisted.clone()]);

    // DNS goes away; SIGHUP with other DNSBL and greylisting settings, same [dns].
    relay.abort();
    let _ = relay.await;
    clock.0.fetch_add(120_000, Ordering::SeqCst);
    let after = Profiles::build(
        &policy(dns, DnsblAction::Tag, Duration::from_secs(60)),
        &shared,
    )
    .unwrap();
    // The new action applies, to the answer still in the cache.
    match &connect(&after).await[..] {
        [Verdict::Tag { findings, .. }] => assert_eq!(findings.symbols, ["DNSBL_LISTED"]),
        other => panic!("expected the cached listing, tagged: {other:?}"),
    }
    // The triplet first seen before the reload passes after the new, shorter delay.
    assert_eq!(rcpt(&after).await, [Verdict::Pass, Verdict::Pass]);

    // Changed [dns] settings make a new resolver: nothing cached, and DNS is down.
    let mut changed = policy(dns, DnsblAction::Tag, Duration::from_secs(60));
    changed.dns.timeout = Duration::from_millis(300);
    changed.dnsbl.on_error = intake_core::OnError::Defer;
    let fresh = Profiles::build(&changed, &shared).unwrap();
    assert_eq!(
        connect(&fresh).await,
        [Verdict::Defer {
            reason: Reason::CheckFailed
        }]
    );
}
