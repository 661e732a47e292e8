//! The LDAP directory against a real OpenLDAP slapd started by each test (Debian's `slapd`
//! and `ldap-utils` packages: `apt-get install slapd ldap-utils`). No slapd: the tests
//! fail and say so.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ManualClock, free_port, login, silent_server, wait_port};
use intake_directory::{
    Directory, DirectoryError, DirectoryKind, DirectorySettings, Guarded, LoginResult,
};

const SLAPD: &str = "/usr/sbin/slapd";
const ADMIN: &str = "cn=admin,dc=example,dc=test";
const ADMIN_PW: &str = "admin-secret";
const BASE: &str = "ou=people,dc=example,dc=test";

/// A slapd of the test's own on a free port, with the example tree; killed on drop.
struct Slapd {
    child: Child,
    port: u16,
    /// With TLS: the ldaps:// port and the CA file to trust.
    tls: Option<(u16, std::path::PathBuf)>,
    _dir: tempfile::TempDir,
}

/// A CA and a certificate for 127.0.0.1 it signed, as PEM files in `dir`: (ca, cert, key).
fn certificates(dir: &std::path::Path) -> [std::path::PathBuf; 3] {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let paths = [
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    ];
    std::fs::write(&paths[0], ca.pem()).unwrap();
    std::fs::write(&paths[1], cert.pem()).unwrap();
    std::fs::write(&paths[2], key.serialize_pem()).unwrap();
    paths
}

impl Slapd {
    fn start() -> Slapd {
        Slapd::start_with(false)
    }

    fn start_with(tls: bool) -> Slapd {
        assert!(
            std::path::Path::new(SLAPD).exists(),
            "{SLAPD} missing: apt-get install slapd ldap-utils"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("db")).unwrap();
        std::fs::write(
            d.join("slapd.conf"),
            format!(
                "include /etc/ldap/schema/core.schema\n\
                 include /etc/ldap/schema/cosine.schema\n\
                 include /etc/ldap/schema/inetorgperson.schema\n\
                 include /etc/ldap/schema/nis.schema\n\
                 pidfile {d}/slapd.pid\n\
                 modulepath /usr/lib/ldap\n\
                 moduleload back_mdb\n\
                 database mdb\n\
                 suffix \"dc=example,dc=test\"\n\
                 rootdn \"{ADMIN}\"\n\
                 rootpw {ADMIN_PW}\n\
                 directory {d}/db\n",
                d = d.display()
            ),
        )
        .unwrap();
        let port = free_port();
        let mut urls = format!("ldap://127.0.0.1:{port}/");
        let tls = tls.then(|| {
            let [ca, cert, key] = certificates(d);
            let mut conf = std::fs::read_to_string(d.join("slapd.conf")).unwrap();
            conf = format!(
                "TLSCertificateFile {}\nTLSCertificateKeyFile {}\n{conf}",
                cert.display(),
                key.display()
            );
            std::fs::write(d.join("slapd.conf"), conf).unwrap();
            let tls_port = free_port();
            urls.push_str(&format!(" ldaps://127.0.0.1:{tls_port}/"));
            (tls_port, ca)
        });
        let log = std::fs::File::create(d.join("slapd.log")).unwrap();
        let child = Command::new(SLAPD)
            .arg("-h")
            .arg(&urls)
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .args(["-d", "0"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting slapd");
        let slapd = Slapd {
            child,
            port,
            tls,
            _dir: dir,
        };
        wait_port(port, Duration::from_secs(10), "slapd");
        slapd.ldap(
            "ldapadd",
            &format!(
                "dn: dc=example,dc=test\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n\
                 dn: {BASE}\nobjectClass: organizationalUnit\nou: people\n\n\
                 {}\n{}",
                person("alice", "alice@example.test", "alice-pw"),
                person("carol", "carol@example.test", "carol-pw"),
            ),
        );
        slapd
    }

    fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// Runs `ldapadd` / `ldapmodify` / `ldapdelete` as the admin with `input` on stdin.
    fn ldap(&self, tool: &str, input: &str) {
        let mut c = Command::new(tool)
            .args(["-x", "-H", &self.url(), "-D", ADMIN, "-w", ADMIN_PW])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{tool}: {e} (apt-get install ldap-utils)"));
        c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        assert!(c.wait().unwrap().success(), "{tool} failed on:\n{input}");
    }

    /// The directory's settings for this slapd (service bind as the admin).
    fn settings(&self) -> DirectorySettings {
        let mut s = DirectorySettings::new(DirectoryKind::Ldap, self.url());
        s.bind_dn = Some(ADMIN.into());
        s.bind_password = Some(ADMIN_PW.into());
        s.base = Some(BASE.into());
        s.recipient_filter = Some("(|(mail=%s)(mailAlternateAddress=%s))".into());
        s.login_filter = Some("(uid=%s)".into());
        s.timeout = Duration::from_secs(2);
        s
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An inetOrgPerson entry whose password is hashed by `slappasswd` ({SSHA}).
fn person(uid: &str, mail: &str, password: &str) -> String {
    format!(
        "dn: uid={uid},{BASE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\nmail: {mail}\nuserPassword: {}\n",
        slappasswd(password)
    )
}

fn slappasswd(password: &str) -> String {
    let out = Command::new("/usr/sbin/slappasswd")
        .args(["-s", password])
        .output()
        .expect("slappasswd");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

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
    slapd.child.kill().unwrap();
    slapd.child.wait().unwrap();
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
