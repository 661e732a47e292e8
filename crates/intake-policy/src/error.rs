//! Why the policy checks could not be built.

/// Why the checks could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A profile names a check that does not exist.
    #[error("policy.profiles.{profile}: unknown check {check:?} (known: {known})")]
    UnknownCheck {
        /// The profile.
        profile: String,
        /// The name it gave.
        check: String,
        /// The names there are.
        known: String,
    },
    /// The resolver of the DNS checks could not be made.
    #[error("{0}")]
    Dns(String),
    /// `recipients.directory` is on but no `[directory]` is configured.
    #[error("recipients.directory needs a [directory] (directory.type and its keys)")]
    NoDirectory,
}
