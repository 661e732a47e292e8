//! A clamd for tests (feature `test-clamd`): Debian's `clamav-daemon` started on a free
//! loopback port and a unix socket, with a signature database the test writes itself (no
//! freshclam, no network), never the packaged service; killed by its PID when dropped.
//! No clamd: the test fails and says so (`.ci/run` installs it).
#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use crate::testsupport::{free_port, log_of, wait_listening};
use crate::{ClamavConfig, ClamdAddress};

const CLAMD: &str = "/usr/sbin/clamd";

/// The test pattern our own signature matches (`Intake.Test.Pattern`).
pub const PATTERN: &str = "INTAKE-AV-TEST-PATTERN-4b1d9e";

/// The name clamd gives the signature (it may add a suffix, e.g. `.UNOFFICIAL`).
pub const SIGNATURE: &str = "Intake.Test.Pattern";

/// A clamd of the test's own; killed on drop.
pub struct Clamd {
    child: Child,
    pub port: u16,
    pub socket: PathBuf,
    dir: tempfile::TempDir,
}

impl Clamd {
    /// Starts clamd (`StreamMaxLength 1M`) and waits until it listens.
    pub fn start() -> Clamd {
        assert!(
            std::path::Path::new(CLAMD).exists(),
            "{CLAMD} missing: apt-get install clamav-daemon"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("db")).unwrap();
        let hex: String = PATTERN.bytes().map(|b| format!("{b:02x}")).collect();
        std::fs::write(
            d.join("db/intake-test.ndb"),
            format!("{SIGNATURE}:0:*:{hex}\n"),
        )
        .unwrap();
        let port = free_port();
        let socket = d.join("clamd.sock");
        std::fs::write(
            d.join("clamd.conf"),
            format!(
                "TCPSocket {port}\nTCPAddr 127.0.0.1\nLocalSocket {sock}\n\
                 DatabaseDirectory {db}\nForeground yes\nLogFile {log}\nPidFile {pid}\n\
                 User root\nStreamMaxLength 1M\n",
                sock = socket.display(),
                db = d.join("db").display(),
                log = d.join("clamd.log").display(),
                pid = d.join("clamd.pid").display(),
            ),
        )
        .unwrap();
        let out = std::fs::File::create(d.join("out.log")).unwrap();
        let child = Command::new(CLAMD)
            .arg("-c")
            .arg(d.join("clamd.conf"))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("starting clamd");
        let mut clamd = Clamd {
            child,
            port,
            socket,
            dir,
        };
        // clamd listens once its database is loaded.
        let (addr, dir) = (
            ([127, 0, 0, 1], port).into(),
            clamd.dir.path().to_path_buf(),
        );
        let within = Duration::from_secs(60);
        wait_listening("clamd", &mut clamd.child, addr, within, || logs_in(&dir));
        clamd
    }

    /// What clamd logged.
    pub fn logs(&self) -> String {
        logs_in(self.dir.path())
    }

    /// `[clamav]` settings for this clamd at `address` (10 s timeout).
    pub fn config(&self, address: ClamdAddress) -> ClamavConfig {
        ClamavConfig {
            enabled: true,
            address,
            timeout: Duration::from_secs(10),
            ..ClamavConfig::default()
        }
    }

    /// Its TCP address.
    pub fn tcp(&self) -> ClamdAddress {
        ClamdAddress::Tcp(format!("127.0.0.1:{}", self.port))
    }

    /// Stops it (the same as dropping it).
    pub fn stop(self) {}
}

/// What the clamd run in `dir` logged: its log file, then its output.
fn logs_in(dir: &Path) -> String {
    ["clamd.log", "out.log"]
        .iter()
        .map(|f| log_of(&dir.join(f)))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Drop for Clamd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
