//! What the daemons of the test features share (`test-clamd`, `test-spamd`), and the
//! scanner tests with them: a free port, waiting until a daemon listens, stopping it.
#![allow(missing_docs)]

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits up to `within` until `child` (called `name`) accepts connections on `addr`;
/// panics with what `logs` reads if it exits first or never listens.
pub fn wait_listening(
    name: &str,
    child: &mut Child,
    addr: SocketAddr,
    within: Duration,
    logs: impl Fn() -> String,
) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{name} exited ({status}) before listening:\n{}", logs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{name} does not listen on {addr}:\n{}", logs());
}

/// What a daemon wrote to the log file at `path` (empty if none).
pub fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Stops a daemon the test started: SIGTERM to its PID only (so it stops its own
/// children), up to 10 s to exit, then SIGKILL.
pub fn stop(child: &mut Child) {
    if !matches!(child.try_wait(), Ok(None)) {
        return;
    }
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}
