//! The LDAP directory against a real OpenLDAP slapd started by each test (Debian's `slapd`
//! and `ldap-utils` packages: `apt-get install slapd ldap-utils`). No slapd: the tests
//! fail and say so.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ManualClock, login, silent_server};
use intake_directory::testing::{BASE, Slapd, free_port, person, slappasswd};
use intake_directory::{
    Directory, DirectoryError, DirectoryKind, DirectorySettings, Guarded, LoginResult,
};

fn open(s: &DirectorySettings, clock: &Arc<ManualClock>) -> Guarded {
    s.open_with_clock(clock.clone()).unwrap()
}

#[tokio::test]
async fn recipients_known_and_unknown() {
    let slapd = Slapd::start();
    let d = open(&slapd.settings(), &ManualClock::new());
    assert!(d.recipient_exists("alice@example.test").await.unwrap());
    assert!(
        d.recipient_exists("ALICE@example.test").await.unwrap(),
        "mail matches without case"
    );
    assert!(!d.recipient_exists("nobody@example.test").await.unwrap());
    assert!(
        !d.recipient_exists("*").await.unwrap(),
        "a wildcard is a literal"
    );
    assert!(!d.recipient_exists("*)(mail=*").await.unwrap());
}

#[tokio::test]
async fn logins_bind_as_the_entry() {
    let slapd = Slapd::start();
    let d = open(&slapd.settings(), &ManualClock::new());
    let login = |u: &'static str, p: &'static str| {
        let d = &d;
        async move { d.verify_login(u, p).await.unwrap() }
    };
    assert_eq!(login("alice", "alice-pw").await, LoginResult::Valid);
    assert_eq!(login("alice", "carol-pw").await, LoginResult::Invalid);
    assert_eq!(login("carol", "carol-pw").await, LoginResult::Valid);
    assert_eq!(
        login("alice", "").await,
        LoginResult::Invalid,
        "no anonymous bind"
    );
    assert_eq!(login("nobody", "alice-pw").await, LoginResult::Invalid);
    // Injection: the filter would match every uid if `%s` were pasted unescaped.
    assert_eq!(login("*)(uid=*", "alice-pw").await, LoginResult::Invalid);
    assert_eq!(login("*", "alice-pw").await, LoginResult::Invalid);
    assert_eq!(
        login("alice)(|(uid=*", "alice-pw").await,
        LoginResult::Invalid
    );
}

#[tokio::test]
async fn a_new_entry_at_once_and_a_changed_one_after_the_ttl() {
    let slapd = Slapd::start();
    let clock = ManualClock::new();
    let mut s = slapd.settings();
    s.cache_ttl = Duration::from_secs(60);
    s.negative_cache_ttl = Duration::from_secs(10);
    let d = open(&s, &clock);
    assert_eq!(login(&d, "alice", "alice-pw").await, LoginResult::Valid);
    assert!(!d.recipient_exists("dave@example.test").await.unwrap());

    // A new entry whose login was never asked for: seen at once.
    slapd.ldap("ldapadd", &person("dave", "dave@example.test", "dave-pw"));
    assert_eq!(login(&d, "dave", "dave-pw").await, LoginResult::Valid);
    // Its address was asked for before: the cached no stands until negative_cache_ttl.
    assert!(!d.recipient_exists("dave@example.test").await.unwrap());
    clock.advance(s.negative_cache_ttl);
    assert!(d.recipient_exists("dave@example.test").await.unwrap());

    // A changed password: the old one works until cache_ttl, then only the new one.
    slapd.ldap(
        "ldapmodify",
        &format!(
            "dn: uid=alice,{BASE}\nchangetype: modify\nreplace: userPassword\nuserPassword: {}\n",
            slappasswd("alice-new")
        ),
    );
    assert_eq!(login(&d, "alice", "alice-pw").await, LoginResult::Valid);
    assert_eq!(login(&d, "alice", "alice-new").await, LoginResult::Valid);
    clock.advance(s.cache_ttl);
    assert_eq!(login(&d, "alice", "alice-pw").await, LoginResult::Invalid);
}

#[tokio::test]
async fn a_wrong_service_bind_is_could_not_decide() {
    let slapd = Slapd::start();
    let mut s = slapd.settings();
    s.bind_password = Some("not-the-admin-password".into());
    let d = open(&s, &ManualClock::new());
    assert!(matches!(
        d.recipient_exists("alice@example.test").await,
        Err(DirectoryError::Ldap(_))
    ));
    // And a login is not "invalid" either: the directory could not be asked.
    assert!(d.verify_login("alice", "alice-pw").await.is_err());
}

#[tokio::test]
async fn slapd_going_away_fails_fast_through_the_breaker() {
    let mut slapd = Slapd::start();
    let clock = ManualClock::new();
    let mut s = slapd.settings();
    s.cache_ttl = Duration::ZERO;
    s.negative_cache_ttl = Duration::ZERO;
    let d = open(&s, &clock);
    assert!(d.recipient_exists("alice@example.test").await.unwrap());
    slapd.stop();
    match d.recipient_exists("alice@example.test").await {
        Err(DirectoryError::Ldap(_)) => {}
        other => panic!("expected an LDAP error, got {other:?}"),
    }
    let started = Instant::now();
    for _ in 0..20 {
        assert!(matches!(
            d.verify_login("alice", "alice-pw").await,
            Err(DirectoryError::CircuitOpen { .. })
        ));
    }
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    assert!(d.is_failing());
}

#[tokio::test]
async fn a_directory_that_never_answers_costs_one_timeout() {
    let (port, _server) = silent_server();
    let mut s = DirectorySettings::new(DirectoryKind::Ldap, format!("ldap://127.0.0.1:{port}"));
    s.base = Some(BASE.into());
    s.timeout = Duration::from_millis(300);
    let d = open(&s, &ManualClock::new());
    let started = Instant::now();
    assert!(matches!(
        d.recipient_exists("alice@example.test").await,
        Err(DirectoryError::Timeout(_) | DirectoryError::Ldap(_))
    ));
    let first = started.elapsed();
    assert!(
        first >= Duration::from_millis(250) && first < Duration::from_secs(2),
        "{first:?}"
    );
    assert!(matches!(
        d.recipient_exists("bob@example.test").await,
        Err(DirectoryError::CircuitOpen { .. })
    ));
    assert!(started.elapsed() - first < Duration::from_millis(100));
}

#[tokio::test]
async fn nothing_listening_is_could_not_decide() {
    let mut s = DirectorySettings::new(
        DirectoryKind::Ldap,
        format!("ldap://127.0.0.1:{}", free_port()),
    );
    s.base = Some(BASE.into());
    let d = open(&s, &ManualClock::new());
    assert!(matches!(
        d.verify_login("alice", "pw").await,
        Err(DirectoryError::Ldap(_))
    ));
    assert!(matches!(
        d.verify_login("alice", "pw").await,
        Err(DirectoryError::CircuitOpen { .. })
    ));
}

#[tokio::test]
async fn ldaps_and_starttls_with_a_private_ca() {
    let slapd = Slapd::start_with(true);
    let (tls_port, ca) = slapd.tls.clone().unwrap();
    let clock = ManualClock::new();

    let mut ldaps = slapd.settings();
    ldaps.url = format!("ldaps://127.0.0.1:{tls_port}");
    ldaps.tls_ca = Some(ca.clone());
    let d = open(&ldaps, &clock);
    assert_eq!(login(&d, "alice", "alice-pw").await, LoginResult::Valid);
    assert!(d.recipient_exists("alice@example.test").await.unwrap());

    let mut starttls = slapd.settings();
    starttls.starttls = true;
    starttls.tls_ca = Some(ca);
    let d = open(&starttls, &clock);
    assert_eq!(login(&d, "alice", "alice-pw").await, LoginResult::Valid);
    assert_eq!(login(&d, "alice", "wrong").await, LoginResult::Invalid);

    // The system's roots do not know the private CA: could not decide, never a yes.
    let mut untrusted = ldaps.clone();
    untrusted.tls_ca = None;
    assert!(
        open(&untrusted, &clock)
            .verify_login("alice", "alice-pw")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_login_sends_as_the_addresses_of_its_entry() {
    let slapd = Slapd::start();
    let d = open(&slapd.settings(), &ManualClock::new());
    // sender_attributes by default: mail and mailAlternateAddress.
    assert_eq!(
        d.senders("alice").await.unwrap(),
        ["alice.alt@example.test", "alice@example.test"]
    );
    assert_eq!(d.senders("carol").await.unwrap(), ["carol@example.test"]);
    assert_eq!(d.senders("nobody").await.unwrap(), Vec::<String>::new());
    assert_eq!(
        d.senders("*").await.unwrap(),
        Vec::<String>::new(),
        "a wildcard finds no entry"
    );

    let mut s = slapd.settings();
    s.sender_attributes = Some(vec!["mail".into()]);
    let d = open(&s, &ManualClock::new());
    assert_eq!(d.senders("alice").await.unwrap(), ["alice@example.test"]);

    // The password is never read as a sender.
    s.sender_attributes = Some(vec!["mail".into(), "userPassword".into()]);
    assert!(matches!(
        s.validate(),
        Err(intake_directory::SettingsError::PasswordAttribute(_))
    ));
}

#[tokio::test]
async fn a_recipient_found_by_mail_alternate_address() {
    let slapd = Slapd::start();
    let d = open(&slapd.settings(), &ManualClock::new());
    assert!(d.recipient_exists("alice.alt@example.test").await.unwrap());
    assert!(d.recipient_exists("Alice.Alt@example.test").await.unwrap());
    assert!(!d.recipient_exists("carol.alt@example.test").await.unwrap());
    // With the default filter, (mail=%s), an alternate address is not a recipient.
    let mut s = slapd.settings();
    s.recipient_filter = None;
    let d = open(&s, &ManualClock::new());
    assert!(!d.recipient_exists("alice.alt@example.test").await.unwrap());
    assert!(d.recipient_exists("alice@example.test").await.unwrap());
}
