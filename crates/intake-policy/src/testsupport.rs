//! What the daemons of the test features share (`test-clamd`, `test-spamd`), and the
//! scanner tests with them: a free port, waiting until a daemon listens, stopping it.
#![allow(missing_docs)]

use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub use intake_core::testing::{free_port, log_of, wait_listening};

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
