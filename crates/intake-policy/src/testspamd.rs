//! A spamd for tests (feature `test-spamd`): SpamAssassin's daemon from Debian's `spamd`
//! package, started on a free loopback port with its own pid and log files, never the
//! packaged service; stopped by the PID we started (SIGTERM, so it stops its own children)
//! when dropped. No spamd: the test fails and says so (`.ci/run` installs it).
#![allow(missing_docs)]

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::testsupport::free_port;

/// A spamd of the test's own; stopped on drop.
pub struct Spamd {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Spamd {
    /// Starts spamd (one child, no user configuration) and waits until it listens.
    pub fn start() -> Spamd {
        let bin = ["/usr/sbin/spamd", "/usr/bin/spamd"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
            .expect("spamd is not installed (apt-get install spamd spamassassin)");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(bin)
            .arg(format!("--listen=127.0.0.1:{port}"))
            .args([
                "--allowed-ips=127.0.0.1",
                "--max-children=1",
                "--min-children=1",
                "--nouser-config",
                "-u",
                "nobody",
            ])
            .arg(format!(
                "--syslog={}",
                dir.path().join("spamd.log").display()
            ))
            .arg(format!(
                "--pidfile={}",
                dir.path().join("spamd.pid").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start spamd");
        let mut spamd = Spamd {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        };
        spamd.wait_listening();
        spamd
    }

    fn wait_listening(&mut self) {
        let log = || std::fs::read_to_string(self.dir.path().join("spamd.log")).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            if TcpStream::connect(self.addr).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("spamd exited ({status}) before listening:\n{}", log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("spamd does not listen on {}:\n{}", self.addr, log());
    }
}

impl Drop for Spamd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SIGTERM, so spamd stops its own children; only the PID we started.
            let _ = Command::new("kill")
                .arg(self.child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
