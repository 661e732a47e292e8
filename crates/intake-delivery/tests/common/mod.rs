//! What the target tests share: an Intake SMTP listener whose only target is the one
//! under test.

use std::net::SocketAddr;
use std::sync::Arc;

use intake_core::{DeliveryTarget, Targets};
use intake_smtp::{Service, SessionConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Intake on a free loopback port, named `hostname`, with `target` as its only target;
/// cancel the token to stop it.
pub async fn listener(
    hostname: &str,
    target: Arc<dyn DeliveryTarget>,
) -> (SocketAddr, CancellationToken) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let svc = Service {
        cfg: Arc::new(SessionConfig {
            hostname: hostname.into(),
            ..SessionConfig::default()
        }),
        targets: Targets::new(vec![target]),
        arrivals: None,
        tls: None,
        implicit_tls: false,
        proxy: None,
        live: None,
    };
    let token = CancellationToken::new();
    tokio::spawn(intake_smtp::serve_with(l, svc, token.clone()));
    (addr, token)
}
