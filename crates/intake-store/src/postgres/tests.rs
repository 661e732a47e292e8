//! The conformance suite on PostgreSQL, then what only this backend does: several nodes on
//! one database (migrations, events), outages (terminated sessions, refused connections),
//! poison messages, read-only handles.

use std::sync::Arc;
use std::time::Duration;

use intake_core::{Event, Incoming, MailStore, Page, Query, StoreError};

use super::scratch::ScratchDatabase;
use super::{PostgresConfig, PostgresStore};
use crate::conformance::{TestBackend, all, incoming, incoming_with};
use crate::{Mode, Store};

async fn make() -> TestBackend {
    let db = ScratchDatabase::create().await;
    let backend = connect(&db, Mode::ReadWrite).await.unwrap();
    TestBackend::new(backend).keeping(db)
}

mod conformance {
    crate::conformance_suite!(super::make);
}

async fn connect(db: &ScratchDatabase, mode: Mode) -> Result<PostgresStore, StoreError> {
    PostgresStore::connect(PostgresConfig::from_settings(&db.settings())?, mode).await
}

/// A node: the store as `intake serve` opens it (with the feed).
async fn node(db: &ScratchDatabase) -> Arc<Store> {
    crate::open(&db.settings(), Mode::ReadWrite).await.unwrap()
}
