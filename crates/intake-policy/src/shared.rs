//! [`PolicyShared`]: what the checks keep across a reload. The wiring builds it once per
//! process; every build of the checks ([`crate::Profiles::build`], at start and on each
//! SIGHUP) takes its state from here, so new settings never empty a cache or forget a
//! greylisted triplet.

use std::sync::{Arc, Mutex};

use intake_core::{Clock, GreyState, PolicyState, RecipientTable};
use mail_auth::MessageAuthenticator;

use crate::dns::{self, Caches, DnsConfig};
use crate::error::PolicyError;

/// State the checks share and keep across rebuilds.
pub struct PolicyShared {
    /// The store's recipient table.
    pub store: Arc<dyn RecipientTable>,
    /// Greylist records: in the store on one node, in Redis for a cluster.
    pub grey: Arc<dyn GreyState>,
    /// The time every check reads.
    pub clock: Arc<dyn Clock>,
    /// The resolver (and its cache of answers) with the settings it was made for.
    resolver: Mutex<Option<(DnsConfig, Arc<MessageAuthenticator>)>>,
    /// mail-auth's parsed-record caches with their capacity.
    caches: Mutex<Option<(u64, Arc<Caches>)>>,
    /// SPF results found at MAIL FROM, for the end of data.
    pub spf_results: Arc<crate::spf::SpfResults>,
    /// The `[directory]` (LDAP or SQL), when one is configured: built once, its cache and
    /// circuit breaker kept across reloads.
    pub directory: Option<Arc<dyn intake_directory::Directory>>,
    /// Mailpit's chaos triggers (the Mailpit API sets them): off unless `mailpit.chaos`.
    pub chaos: Arc<intake_core::Chaos>,
}

impl std::fmt::Debug for PolicyShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyShared").finish_non_exhaustive()
    }
}

impl PolicyShared {
    /// Shared state with greylist records in `grey`.
    pub fn new(
        store: Arc<dyn RecipientTable>,
        grey: Arc<dyn GreyState>,
        clock: Arc<dyn Clock>,
    ) -> PolicyShared {
        PolicyShared {
            store,
            grey,
            clock,
            resolver: Mutex::new(None),
            caches: Mutex::new(None),
            spf_results: Arc::new(crate::spf::SpfResults::new(10_000)),
            directory: None,
            chaos: Arc::new(intake_core::Chaos::new(false)),
        }
    }

    /// The same, with the process's one chaos object (shared with the Mailpit API).
    pub fn with_chaos(mut self, chaos: Arc<intake_core::Chaos>) -> Self {
        self.chaos = chaos;
        self
    }

    /// The same, with recipients (and logins) also looked up in `directory`.
    pub fn with_directory(mut self, directory: Arc<dyn intake_directory::Directory>) -> Self {
        self.directory = Some(directory);
        self
    }

    /// Shared state with greylist records in `store` (one node).
    pub fn with_store<S: RecipientTable + PolicyState>(
        store: Arc<S>,
        clock: Arc<dyn Clock>,
    ) -> PolicyShared {
        let grey = Arc::new(intake_core::StoreGreyState(store.clone()));
        PolicyShared::new(store, grey, clock)
    }

    /// The resolver for `cfg`: the one made before while `cfg` is unchanged (its cache of
    /// answers kept), a new one when the `[dns]` settings changed.
    pub fn resolver(&self, cfg: &DnsConfig) -> Result<Arc<MessageAuthenticator>, PolicyError> {
        let mut slot = self.resolver.lock().expect("resolver slot");
        if let Some((made_for, r)) = slot.as_ref()
            && made_for == cfg
        {
            return Ok(r.clone());
        }
        let r = dns::resolver(cfg).map_err(PolicyError::Dns)?;
        *slot = Some((cfg.clone(), r.clone()));
        Ok(r)
    }

    /// mail-auth's parsed-record caches of `capacity` entries each: the same ones while the
    /// capacity is unchanged.
    pub fn caches(&self, capacity: u64) -> Arc<Caches> {
        let mut slot = self.caches.lock().expect("caches slot");
        match slot.as_ref() {
            Some((c, caches)) if *c == capacity => caches.clone(),
            _ => {
                let caches = Arc::new(Caches::new(capacity));
                *slot = Some((capacity, caches.clone()));
                caches
            }
        }
    }
}
