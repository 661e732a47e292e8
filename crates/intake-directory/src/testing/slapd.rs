//! A slapd of the test's own on a free port, with the example tree.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_port};
use crate::{DirectoryKind, DirectorySettings};

const SLAPD: &str = "/usr/sbin/slapd";
/// The service bind (slapd's rootdn).
pub const ADMIN: &str = "cn=admin,dc=example,dc=test";
/// Its password.
pub const ADMIN_PW: &str = "admin-secret";
/// Where the people are.
pub const BASE: &str = "ou=people,dc=example,dc=test";

/// qmail-ldap's `mailAlternateAddress` (its OID), which the stock schemas lack.
const QMAIL_ATTRIBUTE: &str = "attributetype ( 1.3.6.1.4.1.7914.1.2.1.11 NAME 'mailAlternateAddress' \
     EQUALITY caseIgnoreIA5Match SUBSTR caseIgnoreIA5SubstringsMatch \
     SYNTAX 1.3.6.1.4.1.1466.115.121.1.26{256} )";

/// A slapd of the test's own; killed on drop.
///
/// The tree under [`BASE`]: `alice` (`alice@example.test`, also `alice.alt@example.test` as
/// `mailAlternateAddress`, password `alice-pw`) and `carol` (`carol@example.test`,
/// `carol-pw`).
pub struct Slapd {
    child: Child,
    pub port: u16,
    /// With TLS: the ldaps:// port and the CA file to trust.
    pub tls: Option<(u16, PathBuf)>,
    /// The tree's suffix ([`Slapd::start`]: `dc=example,dc=test`).
    pub suffix: String,
    _dir: tempfile::TempDir,
}

/// A CA and a certificate for 127.0.0.1 it signed, as PEM files in `dir`: (ca, cert, key).
pub fn certificates(dir: &Path) -> [PathBuf; 3] {
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
    /// On `ldap://` only.
    pub fn start() -> Slapd {
        Slapd::start_with(false)
    }

    /// With `tls`, also on `ldaps://` (and StartTLS), its certificate from a private CA.
    pub fn start_with(tls: bool) -> Slapd {
        let slapd = Slapd::serving("dc=example,dc=test", tls);
        let alice = person("alice", "alice@example.test", "alice-pw").replace(
            "objectClass: inetOrgPerson\n",
            "objectClass: inetOrgPerson\nobjectClass: extensibleObject\n\
             mailAlternateAddress: alice.alt@example.test\n",
        );
        slapd.add(&format!(
            "dn: {BASE}\nobjectClass: organizationalUnit\nou: people\n\n{alice}\n{}",
            person("carol", "carol@example.test", "carol-pw"),
        ));
        slapd
    }

    /// A slapd serving `suffix` (an mdb database, rootdn `cn=admin,<suffix>`, password
    /// [`ADMIN_PW`]) holding only the suffix entry (`dcObject`, `organization`), for a
    /// test that builds its own tree. With `tls` as in [`Slapd::start_with`].
    pub fn serving(suffix: &str, tls: bool) -> Slapd {
        assert!(
            Path::new(SLAPD).exists(),
            "{SLAPD} missing: apt-get install slapd ldap-utils"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("db")).unwrap();
        std::fs::write(d.join("qmail.schema"), format!("{QMAIL_ATTRIBUTE}\n")).unwrap();
        let mut conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include /etc/ldap/schema/nis.schema\n\
             include {d}/qmail.schema\n\
             pidfile {d}/slapd.pid\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             database mdb\n\
             suffix \"{suffix}\"\n\
             rootdn \"cn=admin,{suffix}\"\n\
             rootpw {ADMIN_PW}\n\
             directory {d}/db\n",
            d = d.display()
        );
        let port = free_port();
        let mut urls = format!("ldap://127.0.0.1:{port}/");
        let tls = tls.then(|| {
            let [ca, cert, key] = certificates(d);
            conf = format!(
                "TLSCertificateFile {}\nTLSCertificateKeyFile {}\n{conf}",
                cert.display(),
                key.display()
            );
            let tls_port = free_port();
            urls.push_str(&format!(" ldaps://127.0.0.1:{tls_port}/"));
            (tls_port, ca)
        });
        std::fs::write(d.join("slapd.conf"), conf).unwrap();
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
            suffix: suffix.to_string(),
            _dir: dir,
        };
        wait_port(port, Duration::from_secs(10), "slapd");
        let dc = suffix
            .split(',')
            .next()
            .and_then(|rdn| rdn.strip_prefix("dc="))
            .expect("a suffix starting with dc=");
        slapd.add(&format!(
            "dn: {suffix}\nobjectClass: dcObject\nobjectClass: organization\no: {dc}\ndc: {dc}\n"
        ));
        slapd
    }

    /// The admin's DN (slapd's rootdn).
    pub fn admin(&self) -> String {
        format!("cn=admin,{}", self.suffix)
    }

    /// Adds the entries of `ldif`, as the admin.
    pub fn add(&self, ldif: &str) {
        self.ldap("ldapadd", ldif);
    }

    /// `ldap://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// Runs `ldapadd` / `ldapmodify` / `ldapdelete` as the admin with `input` on stdin.
    pub fn ldap(&self, tool: &str, input: &str) {
        let mut c = Command::new(tool)
            .args(["-x", "-H", &self.url(), "-D", &self.admin(), "-w", ADMIN_PW])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{tool}: {e} (apt-get install ldap-utils)"));
        c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        assert!(c.wait().unwrap().success(), "{tool} failed on:\n{input}");
    }

    /// Stops slapd (the directory goes away).
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// The directory's settings for this slapd (service bind as the admin).
    pub fn settings(&self) -> DirectorySettings {
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
        self.stop();
    }
}

/// An inetOrgPerson entry under [`BASE`] whose password is hashed by `slappasswd` ({SSHA}).
pub fn person(uid: &str, mail: &str, password: &str) -> String {
    person_in(BASE, uid, mail, password)
}

/// An inetOrgPerson entry `uid=<uid>,<parent>`, its password hashed by `slappasswd`.
pub fn person_in(parent: &str, uid: &str, mail: &str, password: &str) -> String {
    format!(
        "dn: uid={uid},{parent}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\nmail: {mail}\nuserPassword: {}\n",
        slappasswd(password)
    )
}

/// `password` hashed by `slappasswd` ({SSHA}).
pub fn slappasswd(password: &str) -> String {
    let out = Command::new("/usr/sbin/slappasswd")
        .args(["-s", password])
        .output()
        .expect("slappasswd (apt-get install slapd)");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
