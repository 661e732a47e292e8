//! The open-file budget. Every connection costs a descriptor; when a process runs out, its
//! accept loops fail for everyone, so one flooded listener would stop the others. At start
//! the soft `RLIMIT_NOFILE` is raised to the hard limit, and the configured connection caps
//! must fit in it with room to spare for the store, logs and listeners.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors kept for everything that is not a client connection: listeners, the store's
/// files and connections, the log, DNS and downstream connections.
pub const RESERVED: u64 = 256;

/// What the caps need against what the process may open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// `smtp.max_connections` for each SMTP listener (plain and implicit TLS).
    pub smtp: u64,
    /// `http.max_connections`.
    pub http: u64,
    /// The soft limit in force after raising it.
    pub limit: u64,
}

impl Budget {
    /// Descriptors the caps can use at once, plus the reserve.
    pub fn needed(&self) -> u64 {
        self.smtp + self.http + RESERVED
    }

    /// An error naming the figures and the ways out, when the caps do not fit.
    pub fn check(&self) -> Result<(), String> {
        if self.needed() <= self.limit {
            return Ok(());
        }
        Err(format!(
            "the open-file limit is {} but the connection caps need {} (SMTP {} + HTTP {} + {} reserved): \
             raise the limit (ulimit -n, or LimitNOFILE= in the systemd unit) or lower \
             smtp.max_connections / http.max_connections",
            self.limit,
            self.needed(),
            self.smtp,
            self.http,
            RESERVED
        ))
    }
}

/// Raises the soft open-file limit to the hard one; returns the soft limit now in force.
pub fn raise() -> std::io::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => return Ok(hard),
            Err(e) => tracing::warn!(soft, hard, error = %e, "could not raise the open-file limit"),
        }
    }
    Ok(soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_that_fit_pass_and_others_name_the_figures_and_keys() {
        let ok = Budget {
            smtp: 1000,
            http: 512,
            limit: 20_000,
        };
        assert!(ok.check().is_ok());
        let tight = Budget {
            smtp: 2000,
            http: 512,
            limit: 1024,
        };
        let e = tight.check().unwrap_err();
        assert!(e.contains("1024") && e.contains("2768"), "{e}");
        assert!(e.contains("smtp.max_connections") && e.contains("http.max_connections"));
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        let (before, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let after = raise().unwrap();
        assert!(after >= before);
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap().0, after);
    }
}
