//! What the tests of every crate share when they run a server of their own (feature
//! `testing`): a free loopback port, and waiting until a program listens.
#![allow(missing_docs)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Waits until something accepts connections on loopback `port`; panics after `limit`,
/// naming `what`.
pub fn wait_port(port: u16, limit: Duration, what: &str) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < limit,
            "{what} did not listen on {port} within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
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

/// What a program wrote to the log file at `path` (empty if none).
pub fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
