//! Directory servers of a test's own (feature `testing`): an OpenLDAP slapd with the example
//! tree ([`Slapd`]) and a scratch database on the machine's PostgreSQL or MariaDB
//! ([`Scratch`]). Used by this crate's tests and by the server's end-to-end tests.
//!
//! They run the real programs (Debian's `slapd` and `ldap-utils`; PostgreSQL on
//! 127.0.0.1:5432 and MariaDB on 127.0.0.1:3306, or `INTAKE_TEST_POSTGRES_URL` /
//! `INTAKE_TEST_MYSQL_URL`); one that is missing fails the test and says so.
#![allow(missing_docs)]

mod scratch;
mod slapd;

pub use scratch::Scratch;
pub use slapd::{ADMIN, ADMIN_PW, BASE, Slapd, certificates, person, person_in, slappasswd};

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `port`, or panics after `limit`.
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
