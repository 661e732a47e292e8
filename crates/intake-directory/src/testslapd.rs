//! An OpenLDAP slapd for tests (feature `test-slapd`): Debian's `slapd` started on a free
//! loopback port with a tree of the test's own (any suffix), optionally with TLS (ldaps://
//! and StartTLS, a certificate for 127.0.0.1 from a private CA); entries added with
//! `ldapadd` (`ldap-utils`). Killed by its PID when dropped. No slapd: the test fails and
//! says so (`apt-get install slapd ldap-utils`).
#![allow(missing_docs)]

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SLAPD: &str = "/usr/sbin/slapd";

/// The admin's password (its DN is `cn=admin,<suffix>`).
pub const ADMIN_PW: &str = "admin-secret";

/// A slapd of the test's own; killed on drop.
pub struct Slapd {
    child: Child,
    /// The ldap:// port (StartTLS too when started with TLS).
    pub port: u16,
    /// With TLS: the ldaps:// port and the CA file to trust.
    pub tls: Option<(u16, PathBuf)>,
    /// The tree's suffix, e.g. `dc=example,dc=com`.
    pub suffix: String,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
    /// Starts slapd serving `suffix` (an mdb database, rootdn `cn=admin,<suffix>`), with
    /// the suffix entry itself (`dcObject`, `organization`), and waits until it listens.
    pub fn start(suffix: &str, tls: bool) -> Slapd {
        assert!(
            Path::new(SLAPD).exists(),
            "{SLAPD} missing: apt-get install slapd ldap-utils"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("db")).unwrap();
        let mut conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include /etc/ldap/schema/nis.schema\n\
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
            dir,
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "slapd did not listen: {}",
                std::fs::read_to_string(slapd.dir.path().join("slapd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
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

    /// `ldap://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// The admin's DN.
    pub fn admin(&self) -> String {
        format!("cn=admin,{}", self.suffix)
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

    /// Adds the entries of `ldif`.
    pub fn add(&self, ldif: &str) {
        self.ldap("ldapadd", ldif);
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `password` hashed by `slappasswd` (`{SSHA}`), for a `userPassword`.
pub fn slappasswd(password: &str) -> String {
    let out = Command::new("/usr/sbin/slappasswd")
        .args(["-s", password])
        .output()
        .expect("slappasswd");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// An `inetOrgPerson` entry `uid=<uid>,<parent>` with `mail` and a hashed password.
pub fn person(parent: &str, uid: &str, mail: &str, password: &str) -> String {
    format!(
        "dn: uid={uid},{parent}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n\
         mail: {mail}\nuserPassword: {}\n",
        slappasswd(password)
    )
}
