//! RCPT with the store away (issue 19, point 5): Intake on PostgreSQL reached through a TCP
//! forwarder of the test's own, which then stops forwarding (a partition: connections
//! already open and new ones alike get no answer). With no recipient source configured the
//! recipients check never asks the store, so RCPT is answered without waiting for the
//! pool's connect timeout (`store.connect_timeout`, 5 s).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use intake_store::postgres::scratch::ScratchDatabase;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::support::{Client, Process};

/// Forwards connections to `upstream` until `cut` is cancelled; from then on every
/// connection, open or new, is held with nothing forwarded either way.
async fn forwarder(upstream: SocketAddr, cut: CancellationToken) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let cut = cut.clone();
            tokio::spawn(async move {
                if cut.is_cancelled() {
                    // Accepted, never answered: held until the test ends.
                    std::future::pending::<()>().await;
                }
                let Ok(mut server) = TcpStream::connect(upstream).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
                    _ = cut.cancelled() => {}
                }
                // Both sockets stay open, silent.
                let _held = (client, server);
                std::future::pending::<()>().await;
            });
        }
    });
    addr
}

/// `url` with its host and port replaced by `addr`.
fn through(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let user = authority.rsplit_once('@').map(|(u, _)| format!("{u}@"));
    format!("{scheme}://{}{addr}{tail}", user.unwrap_or_default())
}

/// How long one RCPT takes to be answered, and its reply code, on an open session.
async fn timed_rcpt(c: &mut Client, rcpt: &str) -> (Duration, u16) {
    let started = Instant::now();
    let r = c.cmd(&format!("RCPT TO:<{rcpt}>")).await;
    (started.elapsed(), r.code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rcpt_does_not_wait_for_a_store_that_went_away() {
    let db = ScratchDatabase::create().await;
    let upstream_authority = db.url.split_once('@').map_or(db.url.as_str(), |(_, h)| h);
    let upstream: SocketAddr = upstream_authority
        .split(['/', '?'])
        .next()
        .unwrap()
        .parse()
        .expect("the test database's URL names 127.0.0.1:port");
    let cut = CancellationToken::new();
    let proxy = forwarder(upstream, cut.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let url = through(&db.url, proxy);
    let p = Process::start(
        dir.path(),
        &[
            ("INTAKE_STORE__TYPE", "postgres"),
            ("INTAKE_STORE__URL", &url),
        ],
    );
    let mut c = Client::greeted(p.addr).await;
    assert_eq!(c.cmd("EHLO client.example").await.code, 250);
    assert_eq!(c.cmd("MAIL FROM:<s@example.net>").await.code, 250);
    let (_, code) = timed_rcpt(&mut c, "before@example.test").await;
    assert_eq!(code, 250, "accepted with the store up");

    cut.cancel();
    // Past the second an empty recipient table would be believed: a check that asked the
    // store would ask it now, and wait.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..3 {
        let (took, code) = timed_rcpt(&mut c, &format!("during{i}@example.test")).await;
        assert_eq!(
            code, 250,
            "no recipient source: every recipient is accepted"
        );
        assert!(
            took < Duration::from_secs(2),
            "RCPT {i} waited {took:?} for a store nothing needs"
        );
    }
    drop(c);
    drop(p);
}
