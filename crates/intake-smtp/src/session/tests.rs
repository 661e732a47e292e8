//! Session tests: no tokio, no sockets; commands in, steps out.

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

#[test]
fn full_transaction() {
    let mut s = session(|_| {});
    assert_eq!(code(s.on_connect(false)), "220");
    assert_eq!(code(s.on_command(Command::Ehlo("c.example".into()))), "250");
    assert_eq!(code(s.on_command(mail("a@b.example"))), "250 2.1.0");
    assert_eq!(code(s.on_command(rcpt("x@example.com"))), "250 2.1.5");
    assert_eq!(code(s.on_command(rcpt("y@sub.example.org"))), "250 2.1.5");
    assert_eq!(code(s.on_command(Command::Data)), "354 2.0.0");
    let d = delivery(s.data_done(DataOutcome::Complete));
    assert_eq!(
        d.envelope.rcpt_to,
        vec!["x@example.com", "y@sub.example.org"]
    );
    assert!(d.headers[0].starts_with(
        "Received: from c.example ([192.0.2.7] port 40000)\r\n\tby mx.test (Intake) with ESMTP"
    ));
    assert!(d.headers[0].ends_with("\r\n"));
    assert!(
        !d.headers[0].contains("for <"),
        "no recipient named when there are several"
    );
    let r = reply(s.resume(stored(1)));
    assert_eq!(r.code, 250);
    assert!(r.text.contains(&d.id.to_string()));
    assert!(!s.in_transaction());
}

#[test]
fn sequencing_errors() {
    let mut s = session(|c| c.max_errors = 100);
    assert_eq!(code(s.on_command(mail("a@b"))), "503 5.5.1");
    s.on_command(Command::Helo("c".into()));
    assert_eq!(code(s.on_command(rcpt("x@example.com"))), "503 5.5.1");
    assert_eq!(code(s.on_command(Command::Data)), "503 5.5.1");
    s.on_command(mail("a@b"));
    assert_eq!(code(s.on_command(mail("a@b"))), "503 5.5.1");
    assert_eq!(
        code(s.on_command(Command::Data)),
        "503 5.5.1",
        "no recipients yet"
    );
}

#[test]
fn recipient_domains_and_limit() {
    let mut s = session(|_| {});
    s.on_command(Command::Ehlo("c".into()));
    s.on_command(mail(""));
    assert_eq!(code(s.on_command(rcpt("x@elsewhere.test"))), "550 5.7.1");
    assert_eq!(
        code(s.on_command(rcpt("x@example.org"))),
        "550 5.7.1",
        "wildcard is subdomains only"
    );
    assert_eq!(code(s.on_command(rcpt(""))), "550 5.1.1");
    for i in 0..3 {
        assert_eq!(
            code(s.on_command(rcpt(&format!("u{i}@example.com")))),
            "250 2.1.5"
        );
    }
    assert_eq!(code(s.on_command(rcpt("u9@example.com"))), "452 4.5.3");
    assert_eq!(code(s.on_command(rcpt("postmaster"))), "452 4.5.3");
}

#[test]
fn postmaster_without_domain_is_accepted() {
    let mut s = session(|_| {});
    s.on_command(Command::Ehlo("c".into()));
    s.on_command(mail(""));
    assert_eq!(code(s.on_command(rcpt("postmaster"))), "250 2.1.5");
    s.on_command(Command::Data);
    let d = delivery(s.data_done(DataOutcome::Complete));
    assert_eq!(d.envelope.rcpt_to, vec!["postmaster@example.com"]);
    assert!(d.headers[0].contains("for <postmaster@example.com>"));
}

#[test]
fn catch_all_accepts_any_domain() {
    let mut s = session(|c| c.domains = DomainPolicy::default());
    s.on_command(Command::Ehlo("c".into()));
    s.on_command(mail("a@b"));
    assert_eq!(
        code(s.on_command(rcpt("anyone@anywhere.test"))),
        "250 2.1.5"
    );
}

#[test]
fn lenient_and_strict_helo() {
    let mut s = session(|_| {});
    assert_eq!(code(s.on_command(Command::Ehlo(String::new()))), "250");
    assert_eq!(s.info().helo, "");
    let mut s = session(|c| c.lenient_helo = false);
    assert_eq!(
        code(s.on_command(Command::Helo(String::new()))),
        "501 5.5.4"
    );
    assert_eq!(code(s.on_command(mail("a@b"))), "503 5.5.1");
}

#[test]
fn declared_size_and_utf8_rules() {
    let mut s = session(|_| {});
    s.on_command(Command::Ehlo("c".into()));
    let big = Command::Mail(MailFrom {
        address: "a@b".into(),
        size: Some(5000),
        body: Body::SevenBit,
        smtputf8: false,
    });
    assert_eq!(code(s.on_command(big)), "552 5.3.4");
    assert_eq!(code(s.on_command(mail("jörg@b.example"))), "553 5.6.7");
    let utf = Command::Mail(MailFrom {
        address: "jörg@b.example".into(),
        size: None,
        body: Body::EightBitMime,
        smtputf8: true,
    });
    assert_eq!(code(s.on_command(utf)), "250 2.1.0");
    assert_eq!(code(s.on_command(rcpt("müller@example.com"))), "250 2.1.5");
    s.on_command(Command::Data);
    let d = delivery(s.data_done(DataOutcome::Complete));
    assert!(d.headers[0].contains("with UTF8SMTP"));
}

#[test]
fn too_large_and_bare_line_endings_end_the_transaction() {
    let mut s = session(|_| {});
    s.on_command(Command::Ehlo("c".into()));
    s.on_command(mail("a@b"));
    s.on_command(rcpt("x@example.com"));
    s.on_command(Command::Data);
    assert_eq!(code(s.data_done(DataOutcome::TooLarge)), "552 5.3.4");
    assert!(!s.in_transaction());
    s.on_command(mail("a@b"));
    s.on_command(rcpt("x@example.com"));
    s.on_command(Command::Data);
    assert_eq!(code(s.data_done(DataOutcome::BareLineEnding)), "550 5.6.0");
    assert!(!s.in_transaction());
}

#[test]
fn store_failure_is_451_never_250() {
    let mut s = session(|_| {});
    s.on_command(Command::Ehlo("c".into()));
    s.on_command(mail("a@b"));
    s.on_command(rcpt("x@example.com"));
    s.on_command(Command::Data);
    delivery(s.data_done(DataOutcome::Complete));
    let r = reply(s.resume(Outcome::Delivered(DeliveryReport::all(
        1,
        RcptOutcome::TEMP,
        true,
    ))));
    assert_eq!(
        (r.code, r.status.unwrap().to_string()),
        (451, "4.3.0".into())
    );
    assert!(
        !r.text.contains("disk full"),
        "internal details stay in the log"
    );
}

#[test]
fn bdat_chunks() {
    let mut s = session(|_| {});
    s.on_command(Command::Ehlo("c".into()));
    assert_eq!(
        code(s.on_command(Command::Bdat {
            size: 3,
            last: false
        })),
        "chunk keep=false"
    );
    assert_eq!(code(s.bdat_done()), "503 5.5.1");
    s.on_command(mail("a@b"));
    s.on_command(rcpt("x@example.com"));
    assert_eq!(
        code(s.on_command(Command::Bdat {
            size: 600,
            last: false
        })),
        "chunk keep=true"
    );
    assert_eq!(code(s.bdat_done()), "250 2.0.0");
    assert_eq!(
        code(s.on_command(Command::Data)),
        "503 5.5.1",
        "no DATA after BDAT"
    );
    assert_eq!(
        code(s.on_command(Command::Bdat {
            size: 0,
            last: true
        })),
        "chunk keep=true"
    );
    delivery(s.bdat_done());
    s.resume(stored(1));
    // Over the size limit across chunks: later chunks dropped, 552 until LAST.
    s.on_command(mail("a@b"));
    s.on_command(rcpt("x@example.com"));
    s.on_command(Command::Bdat {
        size: 600,
        last: false,
    });
    s.bdat_done();
    assert_eq!(
        code(s.on_command(Command::Bdat {
            size: 600,
            last: false
        })),
        "chunk keep=false"
    );
    assert_eq!(code(s.bdat_done()), "552 5.3.4");
    s.on_command(Command::Bdat {
        size: 1,
        last: true,
    });
    assert_eq!(code(s.bdat_done()), "552 5.3.4");
    assert!(!s.in_transaction());
}

#[test]
fn too_many_errors_closes() {
    let mut s = session(|_| {});
    for _ in 0..4 {
        assert!(matches!(
            s.on_proto_error(&intake_proto::ProtoError::UnknownCommand),
            Step::Reply(_)
        ));
    }
    assert_eq!(
        code(s.on_proto_error(&intake_proto::ProtoError::UnknownCommand)),
        "421 4.7.0"
    );
}

#[test]
fn rset_noop_vrfy_help_quit() {
    let mut s = session(|_| {});
    s.on_command(Command::Ehlo("c".into()));
    s.on_command(mail("a@b"));
    assert_eq!(code(s.on_command(Command::Rset)), "250 2.0.0");
    assert!(!s.in_transaction());
    assert_eq!(code(s.on_command(Command::Noop)), "250 2.0.0");
    assert_eq!(code(s.on_command(Command::Vrfy)), "252 2.5.0");
    assert_eq!(code(s.on_command(Command::Help)), "214 2.0.0");
    assert_eq!(
        code(s.on_command(Command::NotImplemented("EXPN"))),
        "502 5.5.1"
    );
    assert!(matches!(s.on_command(Command::Quit), Step::Close(r) if r.code == 221));
}

#[test]
fn starttls_sequencing() {
    use crate::config::TlsMode;
    let mut s = session(|_| {});
    s.on_command(Command::Ehlo("c".into()));
    assert_eq!(
        code(s.on_command(Command::StartTls)),
        "502 5.5.1",
        "not offered without TLS"
    );

    let mut s = session(|c| c.tls = TlsMode::Required);
    let Step::Reply(ehlo) = s.on_command(Command::Ehlo("c".into())) else {
        panic!()
    };
    assert!(ehlo.text.contains("STARTTLS"));
    assert_eq!(
        code(s.on_command(mail("a@b"))),
        "530 5.7.0",
        "required: no mail in plaintext"
    );
    assert!(matches!(s.on_command(Command::StartTls), Step::StartTls(r) if r.code == 220));
    s.tls_started(intake_core::TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS13_AES_128_GCM_SHA256".into(),
    });
    // Everything learnt before TLS is forgotten: EHLO again.
    assert_eq!(code(s.on_command(mail("a@b"))), "503 5.5.1");
    let Step::Reply(ehlo) = s.on_command(Command::Ehlo("c".into())) else {
        panic!()
    };
    assert!(!ehlo.text.contains("STARTTLS"), "not offered twice");
    assert_eq!(code(s.on_command(Command::StartTls)), "503 5.5.1");
    assert_eq!(code(s.on_command(mail("a@b"))), "250 2.1.0");
    s.on_command(rcpt("x@example.com"));
    s.on_command(Command::Data);
    let d = delivery(s.data_done(DataOutcome::Complete));
    assert!(d.headers[0].contains("with ESMTPS"));
    assert!(d.headers[0].contains("(using TLSv1.3 with cipher TLS13_AES_128_GCM_SHA256)"));
    assert_eq!(d.session.tls.unwrap().version, "TLSv1.3");

    let mut s = session(|c| c.tls = TlsMode::Optional);
    s.on_command(Command::Ehlo("c".into()));
    assert_eq!(
        code(s.on_command(mail("a@b"))),
        "250 2.1.0",
        "optional: plaintext mail is fine"
    );
    assert_eq!(
        code(s.on_command(Command::StartTls)),
        "503 5.5.1",
        "not inside a transaction"
    );
}

// ---- The seam: injected clock and ids, and every verdict at every stage ----

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

#[test]
fn the_clock_and_ids_are_injected() {
    let mut s = checked_session(&[]);
    assert_eq!(code(s.on_connect(false)), "220");
    s.on_command(Command::Ehlo("client.example".into()));
    s.on_command(mail("a@b.example"));
    s.on_command(rcpt("x@example.com"));
    s.on_command(Command::Data);
    let d = delivery(s.data_done(DataOutcome::Complete));
    assert_eq!(d.id.to_string(), "01900000-0000-7000-8000-000000000001");
    assert_eq!(d.received_at.to_string(), "2026-03-04T05:06:07Z");
    assert_eq!(
        d.headers,
        [
            "Received: from client.example ([192.0.2.7] port 40000)\r\n\tby mx.test (Intake) with ESMTP\r\n\tid 01900000-0000-7000-8000-000000000001\r\n\tfor <x@example.com>;\r\n\tWed, 4 Mar 2026 05:06:07 +0000\r\n"
        ]
    );
    let r = reply(s.resume(stored(1)));
    assert_eq!(
        r.to_wire(),
        "250 2.0.0 Message stored as 01900000-0000-7000-8000-000000000001\r\n"
    );
}

/// Drives a session with a check at `stage` up to that check, hands it `verdict`, and
/// returns the session and what it did next.
fn verdict_at(stage: Stage, verdict: Verdict) -> (Session, Step) {
    let mut s = checked_session(&[stage]);
    let mut step = s.on_connect(false);
    if stage != Stage::Connect {
        assert_eq!(code(step), "220");
        step = s.on_command(Command::Ehlo("client.example".into()));
    }
    if stage != Stage::Connect && stage != Stage::Helo {
        assert_eq!(code(step), "250");
        step = s.on_command(mail("a@b.example"));
    }
    if stage == Stage::RcptTo || stage == Stage::Data {
        assert_eq!(code(step), "250 2.1.0");
        step = s.on_command(rcpt("x@example.com"));
    }
    if stage == Stage::Data {
        assert_eq!(code(step), "250 2.1.5");
        assert_eq!(code(s.on_command(Command::Data)), "354 2.0.0");
        step = s.data_done(DataOutcome::Complete);
    }
    let cx = check_ctx(step);
    assert_eq!(cx.stage, stage);
    let next = s.resume(Outcome::Checked(vec![Verdict::Pass, verdict]));
    (s, next)
}

#[test]
fn every_verdict_at_every_stage() {
    use intake_core::Reason;
    let tag = || Verdict::Tag {
        score: 2.5,
        header: "X-Checked: yes\r\n".into(),
        findings: intake_core::Findings::default(),
    };
    let defer = |r: Reason| Verdict::Defer { reason: r };
    let reject = |r: Reason| Verdict::Reject { reason: r };
    // (stage, go on, deferred by policy, rejected by policy)
    let table = [
        (Stage::Connect, "220", "421 4.7.0", "554 5.7.1"),
        (Stage::Helo, "250", "451 4.7.1", "550 5.7.1"),
        (Stage::MailFrom, "250 2.1.0", "451 4.7.1", "550 5.7.1"),
        (Stage::RcptTo, "250 2.1.5", "451 4.7.1", "550 5.7.1"),
        (Stage::Data, "deliver", "451 4.7.1", "550 5.7.1"),
    ];
    for (stage, go, deferred, rejected) in table {
        let at = |v| code(verdict_at(stage, v).1);
        assert_eq!(at(Verdict::Pass), go, "{stage} pass");
        assert_eq!(at(tag()), go, "{stage} tag");
        assert_eq!(at(defer(policy("later"))), deferred, "{stage} defer");
        assert_eq!(at(reject(policy("no"))), rejected, "{stage} reject");
        // A check that could not decide is never a 5xx, whatever it returned.
        let failed = if stage == Stage::Connect {
            "421 4.7.0"
        } else {
            "451 4.4.3"
        };
        assert_eq!(at(defer(Reason::CheckFailed)), failed, "{stage} failed");
        assert_eq!(
            at(reject(Reason::CheckFailed)),
            failed,
            "{stage} failed 5xx"
        );
        assert_eq!(
            at(reject(Reason::Greylisted)),
            if stage == Stage::Connect {
                "421 4.7.0"
            } else {
                "451 4.7.1"
            },
            "{stage} greylisted"
        );
        // Refusals at connect close the session; elsewhere it goes on.
        let (_, step) = verdict_at(stage, reject(policy("no")));
        assert_eq!(
            matches!(step, Step::Close(_)),
            stage == Stage::Connect,
            "{stage}"
        );
    }
}

#[test]
fn a_checks_text_reaches_the_client_on_one_line() {
    let (_, step) = verdict_at(
        Stage::MailFrom,
        Verdict::Reject {
            reason: policy("listed at bl.example\r\n250 fake"),
        },
    );
    assert_eq!(
        reply(step).to_wire(),
        "550 5.7.1 listed at bl.example  250 fake\r\n"
    );
    let (_, step) = verdict_at(
        Stage::Connect,
        Verdict::Reject {
            reason: policy("client listed"),
        },
    );
    assert_eq!(reply(step).to_wire(), "554 5.7.1 client listed\r\n");
}

#[test]
fn recipient_verdicts() {
    use intake_core::Reason;
    let (mut s, step) = verdict_at(
        Stage::RcptTo,
        Verdict::Reject {
            reason: Reason::UnknownRecipient,
        },
    );
    assert_eq!(
        reply(step).to_wire(),
        "550 5.1.1 Recipient address rejected: user unknown\r\n"
    );
    assert_eq!(code(s.on_command(Command::Data)), "503 5.5.1", "not added");
    // The next recipient is checked with what is known so far.
    let cx = check_ctx(s.on_command(rcpt("y@example.com")));
    assert_eq!(cx.rcpt_to.as_deref(), Some("y@example.com"));
    assert_eq!(cx.mail_from.as_deref(), Some("a@b.example"));
    assert_eq!(cx.helo.as_deref(), Some("client.example"));
    assert_eq!(
        code(s.resume(Outcome::Checked(vec![Verdict::Defer {
            reason: Reason::Greylisted
        }]))),
        "451 4.7.1"
    );
    let cx = check_ctx(s.on_command(rcpt("z@example.com")));
    assert!(cx.recipients.is_empty());
    assert_eq!(code(s.resume(Outcome::Checked(vec![]))), "250 2.1.5");
    // A recipient already accepted is not checked twice.
    assert_eq!(code(s.on_command(rcpt("Z@example.com"))), "250 2.1.5");
    assert_eq!(code(s.on_command(Command::Data)), "354 2.0.0");
    let d = delivery(s.data_done(DataOutcome::Complete));
    assert_eq!(d.envelope.rcpt_to, ["z@example.com"]);
}

#[test]
fn unknown_recipients_count_as_client_errors() {
    use intake_core::Reason;
    let mut s = checked_session(&[Stage::RcptTo]);
    s.on_command(Command::Ehlo("c".into()));
    s.on_command(mail("a@b"));
    let mut last = String::new();
    for i in 0..5 {
        check_ctx(s.on_command(rcpt(&format!("u{i}@example.com"))));
        last = code(s.resume(Outcome::Checked(vec![Verdict::Reject {
            reason: Reason::UnknownRecipient,
        }])));
    }
    assert_eq!(last, "421 4.7.0", "a dictionary attack is cut off");
}

#[test]
fn tags_become_headers_after_received() {
    let tag = |h: &str| Verdict::Tag {
        score: 1.0,
        header: format!("{h}\r\n"),
        findings: intake_core::Findings {
            symbols: vec![h.to_string()],
            ..Default::default()
        },
    };
    let mut s = checked_session(&[Stage::Connect, Stage::RcptTo, Stage::Data]);
    check_ctx(s.on_connect(false));
    assert_eq!(
        code(s.resume(Outcome::Checked(vec![tag("X-Connect: 1")]))),
        "220"
    );
    s.on_command(Command::Ehlo("c".into()));
    s.on_command(mail("a@b"));
    check_ctx(s.on_command(rcpt("x@example.com")));
    s.resume(Outcome::Checked(vec![tag("X-Rcpt: 1")]));
    s.on_command(Command::Data);
    let cx = check_ctx(s.data_done(DataOutcome::Complete));
    assert_eq!(cx.recipients, ["x@example.com"]);
    let d = delivery(s.resume(Outcome::Checked(vec![Verdict::Pass, tag("X-Data: 1")])));
    assert!(d.headers[0].starts_with("Received: "));
    assert_eq!(
        d.headers[1..],
        ["X-Connect: 1\r\n", "X-Rcpt: 1\r\n", "X-Data: 1\r\n"]
    );
    // What the checks found goes with the message, with the total score.
    assert_eq!(
        d.findings.symbols,
        ["X-Connect: 1", "X-Rcpt: 1", "X-Data: 1"]
    );
    assert_eq!(d.findings.score, 3.0);
    s.resume(stored(1));
    // The next message keeps the connection's tags but not the last message's.
    s.on_command(mail("a@b"));
    check_ctx(s.on_command(rcpt("x@example.com")));
    s.resume(Outcome::Checked(vec![]));
    s.on_command(Command::Data);
    check_ctx(s.data_done(DataOutcome::Complete));
    let d = delivery(s.resume(Outcome::Checked(vec![])));
    assert_eq!(d.headers[1..], ["X-Connect: 1\r\n"]);
    assert_eq!(d.findings.symbols, ["X-Connect: 1"]);
}

#[test]
fn a_refused_message_ends_its_transaction() {
    let (mut s, step) = verdict_at(
        Stage::Data,
        Verdict::Reject {
            reason: policy("spam"),
        },
    );
    assert_eq!(code(step), "550 5.7.1");
    assert!(!s.in_transaction());
    assert_eq!(code(s.on_command(mail("a@b"))), "250 2.1.0");
}

#[test]
fn refusals_before_the_transaction_leave_no_state() {
    let (mut s, _) = verdict_at(
        Stage::Helo,
        Verdict::Defer {
            reason: policy("later"),
        },
    );
    assert_eq!(code(s.on_command(mail("a@b"))), "503 5.5.1", "no HELO yet");
    let (mut s, _) = verdict_at(
        Stage::MailFrom,
        Verdict::Reject {
            reason: policy("no"),
        },
    );
    assert!(!s.in_transaction());
    assert_eq!(code(s.on_command(rcpt("x@example.com"))), "503 5.5.1");
}

#[test]
fn connect_decisions() {
    use crate::config::ViolationPolicy;
    let mut s = session(|c| c.early_talkers = ViolationPolicy::Reject);
    assert_eq!(
        reply(s.on_connect(true)).to_wire(),
        "554 5.5.1 Protocol error: talked before the greeting\r\n"
    );
    assert_eq!(code(s.on_connect(false)), "220");
    let mut s = session(|_| {});
    assert_eq!(code(s.on_connect(true)), "220", "noted only");
    let mut s = session(|c| c.unauthorized_pipelining = ViolationPolicy::Reject);
    assert_eq!(code(s.on_unoffered_pipelining(Command::Noop)), "503 5.5.0");
    let mut s = session(|_| {});
    assert_eq!(code(s.on_unoffered_pipelining(Command::Noop)), "250 2.0.0");
}

/// A transaction to three recipients, up to the delivery.
fn three_recipients(s: &mut Session) -> Delivery {
    s.on_command(Command::Ehlo("c".into()));
    s.on_command(Command::Mail(MailFrom {
        address: "a@b".into(),
        size: None,
        body: Body::EightBitMime,
        smtputf8: true,
    }));
    for r in ["x@example.com", "y@example.com", "z@example.com"] {
        assert_eq!(reply(s.on_command(rcpt(r))).code, 250);
    }
    s.on_command(Command::Data);
    delivery(s.data_done(DataOutcome::Complete))
}

#[test]
fn the_delivery_keeps_body_and_smtputf8_for_a_relay() {
    let mut s = session(|_| {});
    let d = three_recipients(&mut s);
    assert_eq!(
        d.params,
        intake_core::MailParams {
            body: intake_core::BodyType::EightBitMime,
            smtputf8: true
        }
    );
    assert_eq!(d.envelope.rcpt_to.len(), 3);
}

#[test]
fn per_recipient_outcomes_fold_into_one_reply_after_data() {
    let ok = RcptOutcome::Accepted;
    let no = RcptOutcome::from_reply(550, "5.1.1 <y@example.com> User unknown");
    let later = RcptOutcome::from_reply(452, "4.2.2 Mailbox full");
    let cases = [
        (
            vec![ok.clone(), ok.clone(), ok.clone()],
            "250 2.0.0 Message accepted as ",
        ),
        (
            vec![no.clone(), no.clone(), no.clone()],
            "550 5.1.1 Downstream: <y@example.com> User unknown",
        ),
        (
            vec![ok.clone(), later.clone(), no.clone()],
            "452 4.2.2 Downstream: Mailbox full",
        ),
        // One of three refused for good: never a 250 that hides it, never a 5xx that
        // bounces mail two recipients got.
        (vec![ok.clone(), no.clone(), ok.clone()], "451 4.5.0 "),
    ];
    for (outcomes, want) in cases {
        let mut s = session(|_| {});
        three_recipients(&mut s);
        let report = DeliveryReport {
            rcpts: outcomes.clone(),
            stored: false,
            store_failed: false,
        };
        let r = reply(s.resume(Outcome::Delivered(report))).to_wire();
        assert!(r.starts_with(want), "{outcomes:?}: {r}");
        // Whatever the reply, the transaction is over: the client may start the next one.
        assert!(!s.in_transaction());
        assert_eq!(reply(s.on_command(mail("c@d"))).code, 250);
    }
}

/// Never called: session tests resume with the outcome themselves.
struct NoAuthenticator;

#[async_trait::async_trait]
impl intake_core::Authenticator for NoAuthenticator {
    async fn authenticate(&self, _: &intake_core::Credentials) -> intake_core::AuthResult {
        unreachable!("the driver calls this, not the session")
    }
}

fn auth_session(f: impl FnOnce(&mut crate::config::AuthSettings)) -> Session {
    session(|c| {
        c.auth.authenticator = Some(Arc::new(NoAuthenticator));
        f(&mut c.auth);
    })
}

fn tls() -> intake_core::TlsInfo {
    intake_core::TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS13_AES_256_GCM_SHA384".into(),
    }
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn auth(mechanism: intake_proto::Mechanism, initial: Option<&str>) -> Command {
    Command::Auth {
        mechanism,
        initial: initial.map(str::to_string),
    }
}

fn alice() -> intake_core::User {
    intake_core::User {
        address: "alice@example.com".into(),
        password_hash: String::new(),
        enabled: true,
        senders: vec![],
    }
}

/// The wire form of a SASL challenge step.
fn challenge(step: Step) -> String {
    match step {
        Step::ReadLine(r) => r.to_wire(),
        other => panic!("expected a challenge, got {other:?}"),
    }
}

fn ehlo_text(s: &mut Session) -> String {
    reply(s.on_command(Command::Ehlo("c".into()))).to_wire()
}

#[test]
fn auth_is_offered_only_over_tls_unless_plaintext_is_allowed() {
    use intake_proto::Mechanism::Plain;
    let mut s = auth_session(|_| {});
    assert!(!ehlo_text(&mut s).contains("AUTH"));
    assert_eq!(
        code(s.on_command(auth(Plain, Some(&b64("\0a\0b"))))),
        "538 5.7.11"
    );
    s.set_tls(tls());
    assert!(ehlo_text(&mut s).contains("AUTH PLAIN LOGIN\r\n"));
    let mut s = auth_session(|a| a.allow_plaintext = true);
    assert!(ehlo_text(&mut s).contains("AUTH PLAIN LOGIN"));
    // Without an authenticator AUTH does not exist.
    let mut s = session(|_| {});
    s.set_tls(tls());
    assert!(!ehlo_text(&mut s).contains("AUTH"));
    assert_eq!(code(s.on_command(auth(Plain, Some("=")))), "502 5.5.1");
}

#[test]
fn auth_plain_with_an_initial_response_then_235() {
    let mut s = auth_session(|_| {});
    s.set_tls(tls());
    ehlo_text(&mut s);
    let step = s.on_command(auth(
        intake_proto::Mechanism::Plain,
        Some(&b64("\0alice@example.com\0pa ss")),
    ));
    let Step::Await(Effect::Authenticate(c)) = step else {
        panic!("{step:?}")
    };
    assert_eq!(
        (c.username.as_str(), c.password.as_str()),
        ("alice@example.com", "pa ss")
    );
    assert_eq!(
        code(s.resume(Outcome::Authenticated(intake_core::AuthResult::Ok(alice())))),
        "235 2.7.0"
    );
    assert_eq!(s.authenticated(), Some("alice@example.com"));
    assert!(!ehlo_text(&mut s).contains("AUTH"), "not offered twice");
    assert_eq!(
        code(s.on_command(auth(intake_proto::Mechanism::Plain, Some("=")))),
        "503 5.5.1"
    );
}

#[test]
fn auth_login_exchange_and_cancel() {
    let mut s = auth_session(|_| {});
    s.set_tls(tls());
    ehlo_text(&mut s);
    let r = challenge(s.on_command(auth(intake_proto::Mechanism::Login, None)));
    assert_eq!(r, "334 VXNlcm5hbWU6\r\n");
    assert_eq!(
        challenge(s.on_line(&b64("alice@example.com"))),
        "334 UGFzc3dvcmQ6\r\n"
    );
    assert_eq!(
        code(s.on_line(&b64("secret"))),
        "authenticate alice@example.com"
    );
    assert_eq!(
        code(s.resume(Outcome::Authenticated(intake_core::AuthResult::Invalid))),
        "535 5.7.8"
    );
    assert_eq!(
        code(s.resume(Outcome::Authenticated(intake_core::AuthResult::RateLimited))),
        "503 5.5.1"
    );
    // PLAIN without an initial response: an empty challenge; `*` cancels.
    assert_eq!(
        challenge(s.on_command(auth(intake_proto::Mechanism::Plain, None))),
        "334 \r\n"
    );
    assert_eq!(code(s.on_line("*")), "501 5.5.2");
    assert_eq!(
        code(s.on_command(auth(intake_proto::Mechanism::Plain, Some("not base64!")))),
        "501 5.5.2"
    );
    assert_eq!(
        code(s.on_command(auth(intake_proto::Mechanism::Other, None))),
        "504 5.5.4"
    );
    // Rate limited or users unavailable: a temporary failure, the same for everyone.
    s.on_command(auth(intake_proto::Mechanism::Plain, Some(&b64("\0x\0y"))));
    assert_eq!(
        code(s.resume(Outcome::Authenticated(intake_core::AuthResult::RateLimited))),
        "454 4.7.0"
    );
}

#[test]
fn submission_requires_auth_and_owns_the_sender() {
    let mut s = auth_session(|a| {
        a.required = true;
        a.restrict_senders = true;
        a.relay = true;
    });
    s.set_tls(tls());
    ehlo_text(&mut s);
    assert_eq!(code(s.on_command(mail("alice@example.com"))), "530 5.7.0");
    s.on_command(auth(
        intake_proto::Mechanism::Plain,
        Some(&b64("\0alice@example.com\0p")),
    ));
    s.resume(Outcome::Authenticated(intake_core::AuthResult::Ok(alice())));
    assert_eq!(code(s.on_command(mail("bob@example.com"))), "553 5.7.1");
    assert_eq!(code(s.on_command(mail("Alice@example.com"))), "250 2.1.0");
    // Logged in on a listener that relays: any domain.
    assert_eq!(
        code(s.on_command(rcpt("someone@elsewhere.test"))),
        "250 2.1.5"
    );
}

#[test]
fn never_an_open_relay() {
    // Whatever the AUTH settings, a foreign domain without a login is refused.
    for relay in [false, true] {
        let mut s = auth_session(|a| {
            a.relay = relay;
            a.allow_plaintext = true;
        });
        ehlo_text(&mut s);
        s.on_command(mail("x@y.test"));
        assert_eq!(
            code(s.on_command(rcpt("victim@elsewhere.test"))),
            "550 5.7.1"
        );
        assert_eq!(code(s.on_command(rcpt("ok@example.com"))), "250 2.1.5");
    }
    // Logged in, on a listener that does not let users relay: still refused.
    let mut s = auth_session(|a| a.allow_plaintext = true);
    ehlo_text(&mut s);
    s.on_command(auth(
        intake_proto::Mechanism::Plain,
        Some(&b64("\0alice@example.com\0p")),
    ));
    s.resume(Outcome::Authenticated(intake_core::AuthResult::Ok(alice())));
    s.on_command(mail("alice@example.com"));
    assert_eq!(
        code(s.on_command(rcpt("victim@elsewhere.test"))),
        "550 5.7.1"
    );
}
