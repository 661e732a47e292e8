//! Session tests: no tokio, no sockets; commands in, steps out. One file per topic;
//! the helpers every topic uses are here.

mod auth;
mod commands;
mod delivery;
mod policy;

use std::sync::Arc;

use intake_core::{DeliveryReport, RcptOutcome};
use intake_proto::{Body, Command, DataOutcome, MailFrom, RcptTo};

use super::*;
use crate::config::{DomainPolicy, SessionConfig};

fn session(f: impl FnOnce(&mut SessionConfig)) -> Session {
    let mut cfg = SessionConfig {
        hostname: "mx.test".into(),
        domains: DomainPolicy::new(["example.com", "*.example.org"]).unwrap(),
        max_recipients: 3,
        max_message_size: 1000,
        max_errors: 5,
        ..SessionConfig::default()
    };
    f(&mut cfg);
    Session::new(Arc::new(cfg), "192.0.2.7:40000".parse().unwrap())
}

/// The store took the message for all `n` recipients.
fn stored(n: usize) -> Outcome {
    Outcome::Delivered(DeliveryReport::all(n, RcptOutcome::Accepted, true))
}

fn mail(addr: &str) -> Command {
    Command::Mail(MailFrom {
        address: addr.into(),
        size: None,
        body: Body::SevenBit,
        smtputf8: false,
    })
}

fn rcpt(addr: &str) -> Command {
    Command::Rcpt(RcptTo {
        address: addr.into(),
    })
}

fn code(step: Step) -> String {
    match step {
        Step::Reply(r)
        | Step::Close(r)
        | Step::ReadData(r)
        | Step::StartTls(r)
        | Step::ReadLine(r) => match r.status {
            Some(s) => format!("{} {}", r.code, s),
            None => r.code.to_string(),
        },
        Step::ReadChunk { keep, .. } => format!("chunk keep={keep}"),
        Step::Await(Effect::Deliver(_)) => "deliver".into(),
        Step::Await(Effect::Check { cx, .. }) => format!("check {}", cx.stage),
        Step::Await(Effect::Authenticate(c)) => format!("authenticate {}", c.username),
    }
}

/// The delivery a step asks for.
fn delivery(step: Step) -> Delivery {
    match step {
        Step::Await(Effect::Deliver(d)) => d,
        other => panic!("expected a delivery, got {other:?}"),
    }
}

/// The reply a step sends.
fn reply(step: Step) -> Reply {
    match step {
        Step::Reply(r) | Step::Close(r) => r,
        other => panic!("expected a reply, got {other:?}"),
    }
}

/// A fixed time and counting ids, so that a delivery is the same on every run.
#[derive(Debug)]
struct FixedEnv {
    next: std::sync::atomic::AtomicU64,
}

impl intake_core::Clock for FixedEnv {
    fn now(&self) -> jiff::Timestamp {
        "2026-03-04T05:06:07Z".parse().unwrap()
    }
}

impl intake_core::IdSource for FixedEnv {
    fn next_id(&self) -> MessageId {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        MessageId(uuid::Uuid::from_u128(
            0x0190_0000_0000_7000_8000_0000_0000_0000 + n as u128,
        ))
    }
}

/// A check the session only ever asks for (the driver would run it): it marks a stage.
struct At(Stage);

#[async_trait::async_trait]
impl intake_core::Check for At {
    fn name(&self) -> &'static str {
        "at"
    }
    fn stage(&self) -> Stage {
        self.0
    }
    async fn check(&self, _: &intake_core::CheckCtx) -> Result<Verdict, intake_core::CheckError> {
        unreachable!("sessions never run checks")
    }
}

/// A session with checks at `stages`, a fixed clock and counting ids.
fn checked_session(stages: &[Stage]) -> Session {
    let mut p = intake_core::Pipeline::new();
    for st in stages {
        p.add(
            Arc::new(At(*st)),
            std::time::Duration::from_secs(1),
            intake_core::OnError::Defer,
        );
    }
    let env = Arc::new(FixedEnv {
        next: std::sync::atomic::AtomicU64::new(1),
    });
    session(|c| {
        c.checks = Arc::new(p);
        c.clock = env.clone();
        c.ids = env;
    })
}

/// The check context a step asks the driver to evaluate.
fn check_ctx(step: Step) -> intake_core::CheckCtx {
    match step {
        Step::Await(Effect::Check { cx, .. }) => cx,
        other => panic!("expected a check, got {other:?}"),
    }
}

fn policy(text: &str) -> intake_core::Reason {
    intake_core::Reason::Policy(text.into())
}

fn tls() -> intake_core::TlsInfo {
    intake_core::TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS13_AES_256_GCM_SHA384".into(),
    }
}
