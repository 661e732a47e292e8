//! A spamd for tests (feature `test-spamd`): SpamAssassin's daemon from Debian's `spamd`
//! package, started on a free loopback port with its own pid and log files, never the
//! packaged service; stopped by the PID we started (SIGTERM, so it stops its own children)
//! when dropped. No spamd: the test fails and says so (`.ci/run` installs it).
#![allow(missing_docs)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::testsupport::{free_port, log_of, stop, wait_listening};

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
        let log = spamd.dir.path().join("spamd.log");
        let within = Duration::from_secs(90);
        wait_listening("spamd", &mut spamd.child, spamd.addr, within, || {
            log_of(&log)
        });
        spamd
    }
}

impl Drop for Spamd {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}
