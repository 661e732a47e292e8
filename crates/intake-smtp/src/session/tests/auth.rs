//! AUTH PLAIN and LOGIN, and what a login allows.

use super::*;

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
    let mut s = session(|c| {
        c.auth.authenticator = Some(Arc::new(NoAuthenticator));
        c.max_errors = 100;
    });
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
fn logins_refused_by_the_limiter_count_toward_max_errors() {
    let mut s = auth_session(|a| a.allow_plaintext = true);
    s.on_command(Command::Ehlo("c".into()));
    let limited = |s: &mut Session| {
        s.on_command(auth(intake_proto::Mechanism::Plain, Some(&b64("\0x\0y"))));
        s.resume(Outcome::Authenticated(intake_core::AuthResult::RateLimited))
    };
    // max_errors is 5 in these tests: four 454s, then the connection is closed.
    for _ in 0..4 {
        assert_eq!(code(limited(&mut s)), "454 4.7.0");
    }
    match limited(&mut s) {
        Step::Close(r) => assert_eq!(r, replies::TOO_MANY_ERRORS),
        other => panic!("expected the session closed, got {other:?}"),
    }
    // Our own failure (the users cannot be read) is not the client's error.
    let mut s = auth_session(|a| a.allow_plaintext = true);
    s.on_command(Command::Ehlo("c".into()));
    for _ in 0..10 {
        s.on_command(auth(intake_proto::Mechanism::Plain, Some(&b64("\0x\0y"))));
        let step = s.resume(Outcome::Authenticated(intake_core::AuthResult::Unavailable));
        assert_eq!(code(step), "454 4.7.0");
    }
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
