//! What the directory tests share: a clock they move, a login helper, a silent server.
#![allow(dead_code)]

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use intake_core::Clock;
use jiff::Timestamp;

/// A clock the test moves (cache expiry, the breaker's cooldown).
#[derive(Debug)]
pub struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    pub fn new() -> Arc<ManualClock> {
        Arc::new(ManualClock(Mutex::new(
            Timestamp::from_second(1_800_000_000).unwrap(),
        )))
    }

    pub fn advance(&self, d: Duration) {
        let mut t = self.0.lock().unwrap();
        *t += d;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap()
    }
}

/// What `d` says of `user` and `password`; the directory must be able to decide.
pub async fn login(
    d: &impl intake_directory::Directory,
    user: &str,
    password: &str,
) -> intake_directory::LoginResult {
    d.verify_login(user, password)
        .await
        .expect("the directory decides")
}

/// A server that accepts connections and never answers (a hung directory).
pub fn silent_server() -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let mut held = Vec::new();
        // Accept a few connections and hold them open; the test ends the process.
        for s in l.incoming().take(4).flatten() {
            held.push(s);
        }
        std::thread::sleep(Duration::from_secs(3600));
    });
    (port, h)
}
