//! Intake's domain types and the storage traits (by capability), with no backend code.
//!
//! - [`message`]: what a session hands to a store ([`Incoming`]) and what a store gives back
//!   ([`Summary`], [`StoredMessage`]), with the time-ordered [`MessageId`].
//! - [`mime`]: every call into mail-parser lives here, so that its upgrade stays local.
//! - [`store`]: storage by capability: mail ([`MailBackend`] for engines, [`MailStore`] for
//!   callers), the directory of users and recipients ([`DirectoryBackend`];
//!   [`UserDirectory`], [`RecipientTable`]) and policy state ([`PolicyBackend`];
//!   [`PolicyState`]), implemented for callers by `intake_store::Store`, and [`StoreError`].
//! - [`check`]: the policy seam: [`Check`], [`Verdict`], [`Pipeline`] (deadlines, fail
//!   open or defer), and the injected [`Clock`] and [`IdSource`].
//! - [`shared`]: state the nodes of a cluster share ([`GreyState`], [`SharedLimits`]).
#![warn(missing_docs)]

pub mod alias;
pub mod auth;
pub mod breaker;
pub mod chaos;
pub mod check;
pub mod delivery;
pub mod events;
pub mod login_limit;
pub mod message;
pub mod mime;
pub mod net;
pub mod password;
pub mod redact;
pub mod search;
pub mod shared;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use auth::{AuthResult, Authenticator, Credentials, StoreAuthenticator};
pub use chaos::{Chaos, ChaosError, Hook, Trigger, Triggers};
pub use check::{
    Check, CheckCtx, CheckError, Clock, Findings, IdSource, OnError, Pipeline, RandomIds, Reason,
    Stage, SystemClock, Undecided, Verdict,
};
pub use delivery::{
    BodyType, DeliveryReport, DeliveryTarget, DownstreamReply, Handoff, MailParams, RcptOutcome,
    Route, StoreTarget, Targets,
};
pub use events::{Event, EventBus, EventFeed, WireChange, WireError, WireEvent};
pub use login_limit::{FailureLimit, Gate, LoginLimiter, LoginLimits};
pub use message::{
    Attachment, Envelope, Incoming, MessageId, ParsedMeta, SessionInfo, StoredMessage, Summary,
    TlsInfo, mailbox_key,
};
pub use search::{Query, QueryError, SearchMode};
pub use shared::{
    ClientCounts, GreyState, LoginCounts, SharedError, SharedLimits, SharedLogins, StoreGreyState,
};
pub use store::{
    ArrivalGuard, Arrivals, DirectoryBackend, Evicted, Eviction, GreyRecord, Listing, MAX_TAG_LEN,
    MailBackend, MailStore, MailTags, Page, PolicyBackend, PolicyState, RecipientTable, Removal,
    Retention, StoreError, TagBackend, User, UserDirectory, clean_tag, clean_tags,
};
