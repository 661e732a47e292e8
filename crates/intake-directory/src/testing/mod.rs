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

pub use intake_core::testing::{free_port, wait_port};
