//! The seam: the injected clock and ids, and every verdict at every stage.

use super::*;

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

#[test]
fn content_checks_are_given_the_header_fields_the_message_will_be_stored_with() {
    let mut s = checked_session(&[Stage::RcptTo, Stage::Data]);
    s.on_connect(false);
    s.on_command(Command::Ehlo("client.example".into()));
    s.on_command(mail("a@b.example"));
    check_ctx(s.on_command(rcpt("x@example.com")));
    let tag = Verdict::Tag {
        score: 1.0,
        header: "X-Rcpt-Checked: yes\r\n".into(),
        findings: intake_core::Findings::default(),
    };
    assert_eq!(code(s.resume(Outcome::Checked(vec![tag]))), "250 2.1.5");
    s.on_command(Command::Data);
    let header = match s.data_done(DataOutcome::Complete) {
        Step::Await(Effect::Check { cx, header }) => {
            assert_eq!(cx.stage, Stage::Data);
            header
        }
        other => panic!("expected the content checks, got {other:?}"),
    };
    assert_eq!(
        header,
        "Received: from client.example ([192.0.2.7] port 40000)\r\n\tby mx.test (Intake) with ESMTP\r\n\tid 01900000-0000-7000-8000-000000000001\r\n\tfor <x@example.com>;\r\n\tWed, 4 Mar 2026 05:06:07 +0000\r\nX-Rcpt-Checked: yes\r\n"
    );
    let d = delivery(s.resume(Outcome::Checked(vec![Verdict::Pass])));
    assert_eq!(
        d.headers.concat(),
        header,
        "the same id and header are stored"
    );
}

#[test]
fn recipient_checks_see_their_recipient_and_content_checks_see_them_all() {
    let mut s = checked_session(&[Stage::RcptTo, Stage::Data]);
    s.on_connect(false);
    s.on_command(Command::Ehlo("client.example".into()));
    s.on_command(mail("a@b.example"));
    let all: Vec<String> = (0..3).map(|i| format!("r{i}@example.com")).collect();
    for r in &all {
        let cx = check_ctx(s.on_command(rcpt(r)));
        assert_eq!(cx.rcpt_to.as_deref(), Some(r.as_str()));
        // Not the ones accepted before: a list copied at every RCPT grows with the square
        // of the recipients.
        assert!(cx.recipients.is_empty(), "{:?}", cx.recipients);
        assert_eq!(
            code(s.resume(Outcome::Checked(vec![Verdict::Pass]))),
            "250 2.1.5"
        );
    }
    s.on_command(Command::Data);
    let cx = check_ctx(s.data_done(DataOutcome::Complete));
    assert_eq!(cx.stage, Stage::Data);
    assert_eq!(cx.recipients, all);
}
