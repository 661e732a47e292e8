//! Wiring: open the store, bind the listeners, run until shut down.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use intake_core::MailStore;
use intake_store::SqliteStore;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Settings, StoreSettings};

/// Opens the configured store.
pub fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn MailStore>> {
    match &settings.store {
        StoreSettings::Sqlite(cfg) => {
            let store = SqliteStore::open(cfg.clone())
                .with_context(|| format!("opening the SQLite store in {}", cfg.path.display()))?;
            Ok(Arc::new(store))
        }
    }
}

/// A running server.
pub struct Running {
    /// Where SMTP listens (the real port when the configured one was 0).
    pub smtp_addr: SocketAddr,
    /// The store the server writes.
    pub store: Arc<dyn MailStore>,
    shutdown: CancellationToken,
    smtp: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops accepting, lets sessions finish (up to the shutdown timeout), then closes the
    /// store after its last commit.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the server has stopped (after [`Running::shutdown_token`] is cancelled).
    pub async fn wait(self) -> anyhow::Result<()> {
        let r = self.smtp.await.context("SMTP task")?;
        self.store.close().await;
        r.context("SMTP listener")
    }

    /// The token that stops the server.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// Opens the store, binds SMTP and starts serving in the background.
pub async fn start(settings: &Settings) -> anyhow::Result<Running> {
    let store = open_store(settings)?;
    let listener = TcpListener::bind(settings.smtp_listen)
        .await
        .with_context(|| format!("binding SMTP to {} (smtp.listen)", settings.smtp_listen))?;
    let smtp_addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let smtp = tokio::spawn(intake_smtp::serve(
        listener,
        Arc::new(settings.smtp.clone()),
        store.clone(),
        shutdown.clone(),
    ));
    tracing::info!(smtp = %smtp_addr, hostname = %settings.smtp.hostname, "Intake is listening");
    Ok(Running {
        smtp_addr,
        store,
        shutdown,
        smtp,
    })
}
