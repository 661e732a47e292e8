//! Intake's policy checks, each an [`intake_core::Check`] for one stage of the session.
//!
//! - [`recipients`]: only valid recipients (from the config, a file, and the store's
//!   table), `550 5.1.1` for the others, at RCPT.
//! - [`greylist`]: defer the first attempt of a (client network, sender, recipient)
//!   triplet at RCPT (`451 4.7.1`), accept the retry after a delay; state in the store.
//!
//! The server builds a [`intake_core::Pipeline`] from the settings with [`pipeline`] and
//! hands it to the SMTP listener; the session only sees verdicts. To add a check:
//! implement `Check` in a module here, give it a config struct, add it in [`pipeline`] at
//! its place in the order, and read its settings in `intake-server`'s `settings.rs`.
//! A check reads the time through the injected [`intake_core::Clock`] so that its tests
//! need not sleep, and keeps durable state in the store (`MailStore` methods), never in
//! files of its own.
#![warn(missing_docs)]

pub mod greylist;
pub mod recipients;

use std::sync::Arc;

use intake_core::{Clock, MailStore, Pipeline};

pub use greylist::{Greylist, GreylistConfig};
pub use recipients::{RecipientExists, RecipientsConfig};

/// Every policy setting.
#[derive(Debug, Clone, Default)]
pub struct PolicyConfig {
    /// Valid recipients.
    pub recipients: RecipientsConfig,
    /// Greylisting.
    pub greylist: GreylistConfig,
}

/// The checks the settings ask for, in the order they run: at RCPT, the recipient check
/// first (an unknown user is refused outright, not greylisted), then greylisting.
pub fn pipeline(cfg: &PolicyConfig, store: Arc<dyn MailStore>, clock: Arc<dyn Clock>) -> Pipeline {
    let mut p = Pipeline::new();
    p.add(
        Arc::new(RecipientExists::new(&cfg.recipients, store.clone())),
        cfg.recipients.timeout,
        cfg.recipients.on_error,
    );
    if cfg.greylist.enabled {
        p.add(
            Arc::new(Greylist::new(cfg.greylist.clone(), store, clock)),
            cfg.greylist.timeout,
            cfg.greylist.on_error,
        );
    }
    p
}
