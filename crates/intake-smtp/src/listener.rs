//! The accept loop: connection limit, one task per connection, graceful shutdown.

use std::sync::Arc;

use intake_core::MailStore;
use intake_proto::replies;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::SessionConfig;
use crate::conn::Connection;

/// Serves SMTP on `listener` until `shutdown` is cancelled, then waits (up to
/// `cfg.shutdown_timeout`) for sessions in a transaction to finish.
///
/// The caller binds the listener (port 0 in tests) and picks the shutdown signal.
pub async fn serve(
    listener: TcpListener,
    cfg: Arc<SessionConfig>,
    store: Arc<dyn MailStore>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limit = Arc::new(Semaphore::new(cfg.max_connections));
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        let (mut sock, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and similar: back off briefly, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracker.spawn(async move {
                tracing::info!(client = %peer, "connection limit reached");
                let _ = sock
                    .write_all(replies::TOO_MANY_CONNECTIONS.to_wire().as_bytes())
                    .await;
                let _ = sock.shutdown().await;
            });
            continue;
        };
        let conn = Connection::new(sock, peer, cfg.clone(), store.clone());
        let token = shutdown.clone();
        tracker.spawn(async move {
            tracing::debug!(client = %peer, "connected");
            if let Err(e) = conn.run(token).await {
                tracing::debug!(client = %peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(cfg.shutdown_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = tracker.len(),
            "shutdown deadline passed with sessions still open"
        );
    }
    Ok(())
}
