//! The commands in order and out of it: a transaction, sequencing, recipients, sizes,
//! BDAT, errors, STARTTLS.

use super::*;

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
