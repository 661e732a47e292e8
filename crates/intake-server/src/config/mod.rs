//! Configuration: a TOML file, overlaid by `INTAKE_<SECTION>__<KEY>` environment variables,
//! resolved into typed [`Settings`].
//!
//! Two stages (as ripgrep's low/high args): [`load_table`] merges the file and the
//! environment into one `toml::Table` remembering where each value came from;
//! [`Settings::from_table`] reads every key by its path, collecting *every* error with its
//! key path (and the env var when it came from one) instead of stopping at the first.

mod env;
mod reader;
mod settings;

pub use env::{ENV_PREFIX, load_table};
pub use reader::{ConfigError, Origin, Sources};
pub use settings::{
    AuthConfig, AuthMode, DeliverySettings, HttpSettings, ListenerSettings, LogFormat,
    PolicyProfile, RetentionSettings, Settings, StoreSettings, TargetName, TlsPolicy, known_keys,
};
