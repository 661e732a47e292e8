//! Reading Intake's configuration: one TOML file overlaid by `INTAKE_<SECTION>__<KEY>`
//! environment variables, then typed reads by key path.
//!
//! Two stages, as ripgrep's low/high arguments: [`load_table`] merges the file and the
//! environment into one `toml::Table`, remembering where each value came from
//! ([`Sources`]); then each crate reads its own section from a [`Reader`] (serde types per
//! key, enums by their lower-case names) and resolves it into its settings, collecting
//! *every* error with its key path (and the variable, when it came from one) instead of
//! stopping at the first. Live objects (limiters, caches, pools) are never built here: the
//! server builds them once from the settings and keeps them across reloads.
//!
//! Errors speak the operator's language: `expected a whole number`, `expected a list such
//! as ["a", "b"]`, `"x": expected "reject" or "normalize"`, and an unknown key in the file
//! names the closest known one (`did you mean smtp.max_recipients?`).

mod env;
mod human;
mod reader;

pub use env::{ENV_PREFIX, load_table};
pub use reader::{ConfigError, Origin, Reader, Sources, closest, parse_duration, parse_size};
/// The TOML crate the tables are made of (for sections read as whole tables).
pub use toml;
