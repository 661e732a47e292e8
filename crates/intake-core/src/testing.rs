//! What the tests of every crate share when they run a server of their own (feature
//! `testing`): a free loopback port, and waiting until a program listens.
#![allow(missing_docs)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, ExitStatus};
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
    if let Err(Stop::TimedOut) = until_listening(([127, 0, 0, 1], port).into(), limit, || None) {
        panic!("{what} did not listen on {port} within {limit:?}");
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
    match until_listening(addr, within, || child.try_wait().ok().flatten()) {
        Ok(()) => {}
        Err(Stop::Exited(status)) => {
            panic!("{name} exited ({status}) before listening:\n{}", logs())
        }
        Err(Stop::TimedOut) => panic!("{name} does not listen on {addr}:\n{}", logs()),
    }
}

/// Why [`until_listening`] stopped waiting.
enum Stop {
    Exited(ExitStatus),
    TimedOut,
}

/// Tries `addr` every 25 ms until it accepts a connection, `exited` reports the program
/// gone, or `within` has passed.
fn until_listening(
    addr: SocketAddr,
    within: Duration,
    mut exited: impl FnMut() -> Option<ExitStatus>,
) -> Result<(), Stop> {
    let deadline = Instant::now() + within;
    loop {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if let Some(status) = exited() {
            return Err(Stop::Exited(status));
        }
        if Instant::now() >= deadline {
            return Err(Stop::TimedOut);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// What a program wrote to the log file at `path` (empty if none).
pub fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
