//! Configuration: a TOML file, overlaid by `INTAKE_<SECTION>__<KEY>` environment variables,
//! resolved into typed [`Settings`].
//!
//! Two stages (as ripgrep's low/high args): [`load_table`] (crate `intake-config`) merges
//! the file and the environment into one `toml::Table` remembering where each value came
//! from; [`Settings::from_table`] reads every section by its key paths, collecting *every*
//! error with its key path (and the env var when it came from one) instead of stopping at
//! the first. Settings are plain data: the server's wiring builds the live objects.

mod listeners;
mod settings;

pub use intake_config::{ConfigError, ENV_PREFIX, Origin, Sources, load_table};
pub use listeners::{
    AuthConfig, AuthMode, LISTENER_KEYS, ListenerSettings, PolicyProfile, ROUTE_KEYS, TlsPolicy,
};
pub use settings::{
    DeliverySettings, HttpSettings, LogFormat, RetentionSettings, Settings, StoreSettings,
    TargetName, known_keys,
};
