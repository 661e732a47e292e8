//! The HTTP accept loop: a global cap and a per-client-IP cap on open connections, checked
//! before a connection costs anything; past a cap the client gets a short `503` written
//! without waiting and the socket is closed, so the accept loop never blocks and the HTTP
//! side can never hold the descriptors the SMTP side needs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use intake_core::net::{AcceptBackoff, LogEvery};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::conn::{self, Timeouts};
use crate::slots::PerIp;
use crate::{HttpConfig, TlsSource};

/// How long open connections get to finish their request at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

fn refusal(message: &str) -> Vec<u8> {
    let body = format!(
        "{{\"error\":{{\"status\":503,\"code\":\"unavailable\",\"message\":\"{message}\"}}}}"
    );
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 5\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Writes what fits of `reply` without waiting, then closes.
fn refuse(sock: TcpStream, reply: &[u8]) {
    let _ = sock.try_write(reply);
    drop(sock);
}

/// Serves `app` on `listener` until `shutdown` is cancelled.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    cfg: &HttpConfig,
    tls: Option<TlsSource>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let open = Arc::new(Semaphore::new(cfg.max_connections));
    let per_ip = PerIp::new(cfg.max_connections_per_ip);
    let timeouts = Timeouts {
        header: cfg.header_timeout,
        idle: cfg.idle_timeout,
    };
    let busy = refusal("too many connections; try again shortly");
    let busy_client = refusal("too many connections from your address");
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut tasks = JoinSet::new();
    let mut backoff = AcceptBackoff::new("HTTP");
    let mut at_cap = LogEvery::new(Duration::from_secs(10));
    let mut at_ip_cap = LogEvery::new(Duration::from_secs(10));
    loop {
        let (sock, peer): (TcpStream, SocketAddr) = tokio::select! {
            a = listener.accept() => match a {
                Ok(x) => { backoff.succeeded(); x }
                Err(e) => { backoff.failed(&e).await; continue; }
            },
            Some(_) = tasks.join_next() => continue,
            _ = shutdown.cancelled() => break,
        };
        metrics::counter!("intake_http_connections_total").increment(1);
        let Ok(permit) = open.clone().try_acquire_owned() else {
            metrics::counter!("intake_http_connections_refused_total", "reason" => "limit")
                .increment(1);
            if let Some(n) = at_cap.hit() {
                tracing::warn!(
                    refused = n,
                    limit = cfg.max_connections,
                    "HTTP connection limit reached (http.max_connections): refusing"
                );
            }
            refuse(sock, &busy);
            continue;
        };
        let Some(slot) = per_ip.try_acquire(peer.ip()) else {
            metrics::counter!("intake_http_connections_refused_total", "reason" => "client_limit")
                .increment(1);
            if let Some(n) = at_ip_cap.hit() {
                tracing::warn!(client = %peer.ip(), refused = n, limit = cfg.max_connections_per_ip,
                    "HTTP client over its connection limit (http.max_connections_per_ip): refusing");
            }
            refuse(sock, &busy_client);
            continue;
        };
        let _ = sock.set_nodelay(true);
        let app = app.clone();
        let watcher = graceful.watcher();
        let tls = tls.as_ref().map(|t| t());
        tasks.spawn(async move {
            match tls {
                None => conn::serve(sock, peer, app, timeouts, watcher).await,
                Some(acceptor) => {
                    // The handshake counts against the header deadline.
                    match tokio::time::timeout(timeouts.header, acceptor.accept(sock)).await {
                        Ok(Ok(s)) => conn::serve(s, peer, app, timeouts, watcher).await,
                        Ok(Err(e)) => {
                            tracing::debug!(client = %peer, error = %e, "HTTPS handshake failed")
                        }
                        Err(_) => tracing::debug!(client = %peer, "HTTPS handshake timed out"),
                    }
                }
            }
            drop((permit, slot));
        });
    }
    drop(listener);
    // Ask every connection to finish its current request; event streams never finish, so
    // whatever is still open after the grace period is ended.
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!(open = tasks.len(), "HTTP connections ended at shutdown");
    }
    tasks.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_complete_http_response() {
        let r = String::from_utf8(refusal("too many")).unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["status"], 503);
    }
}
