//! A `COMMIT` whose answer never comes back (issue 19, point 10): the sender's answer must
//! match what is stored. A proxy between the writer and MariaDB breaks the connection at
//! the `COMMIT` of the batch under test, either after the server committed (the answer
//! lost) or before the server saw it (the session killed before it could commit).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use intake_core::{MailStore, StoreError};
use sqlx::mysql::MySqlConnectOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::tests::ScratchDb;
use super::{MysqlBackend, MysqlConfig};
use crate::Store;
use crate::common::Mode;
use crate::conformance::incoming;

/// What the proxy does at the next `COMMIT`.
const PASS: u8 = 0;
/// Forwards it, then drops the server's answer and both connections.
const LOSE_ANSWER: u8 = 1;
/// Drops it and both connections, so the server never commits.
const KILL_BEFORE: u8 = 2;

/// A TCP proxy to the MariaDB server that reads the client's packets (3-byte length,
/// sequence, payload) and acts on the first `COM_QUERY "COMMIT"` after being armed.
struct CommitBreaker {
    port: u16,
    mode: Arc<AtomicU8>,
    task: tokio::task::JoinHandle<()>,
}

impl CommitBreaker {
    async fn start() -> CommitBreaker {
        let o: MySqlConnectOptions = super::tests::server_url().parse().unwrap();
        let target = format!("{}:{}", o.get_host(), o.get_port());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(PASS));
        let armed = mode.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(out) = TcpStream::connect(&target).await else {
                    continue;
                };
                tokio::spawn(relay(inbound, out, armed.clone()));
            }
        });
        CommitBreaker { port, mode, task }
    }

    fn arm(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    /// `url` with this proxy as its server.
    fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap();
        let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let user = authority.rsplit_once('@').map(|(u, _)| format!("{u}@"));
        format!(
            "{scheme}://{}127.0.0.1:{}{tail}",
            user.unwrap_or_default(),
            self.port
        )
    }
}

impl Drop for CommitBreaker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One proxied connection: client packets are forwarded one by one; the server's bytes
/// are copied back until a `COMMIT` trips the breaker.
async fn relay(client: TcpStream, server: TcpStream, mode: Arc<AtomicU8>) {
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let (tripped_tx, mut tripped) = tokio::sync::watch::channel(false);
    let back = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            tokio::select! {
                r = from_server.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if *tripped.borrow() {
                            return; // the answer to COMMIT: dropped, with the connection
                        }
                        if to_client.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                },
                _ = tripped.changed() => return,
            }
        }
    });
    loop {
        let mut head = [0u8; 4];
        if from_client.read_exact(&mut head).await.is_err() {
            break;
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
        let mut payload = vec![0u8; len];
        if from_client.read_exact(&mut payload).await.is_err() {
            break;
        }
        if payload.eq_ignore_ascii_case(b"\x03COMMIT") {
            match mode.swap(PASS, Ordering::SeqCst) {
                LOSE_ANSWER => {
                    let _ = tripped_tx.send(true);
                    let _ = to_server.write_all(&head).await;
                    let _ = to_server.write_all(&payload).await;
                    // Let the server answer (and so commit) before the connection goes.
                    let _ = back.await;
                    return;
                }
                KILL_BEFORE => {
                    let _ = tripped_tx.send(true);
                    return;
                }
                _ => {}
            }
        }
        if to_server.write_all(&head).await.is_err() || to_server.write_all(&payload).await.is_err()
        {
            break;
        }
    }
    let _ = tripped_tx.send(true);
}

async fn open_through(proxy: &CommitBreaker, db: &ScratchDb) -> Store {
    let mut cfg = MysqlConfig::new(proxy.url(&db.url));
    cfg.connect_timeout = Duration::from_secs(2);
    Store::new(Arc::new(
        MysqlBackend::open(cfg, Mode::ReadWrite).await.unwrap(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_is_checked_and_acknowledged_when_stored() {
    let db = ScratchDb::new().await;
    let proxy = CommitBreaker::start().await;
    let store = open_through(&proxy, &db).await;
    store
        .deliver(incoming(&["a@x.test"], "warm up"))
        .await
        .unwrap();

    // The server commits; its answer never reaches the writer.
    proxy.arm(LOSE_ANSWER);
    let m = incoming(&["a@x.test"], "committed");
    let id = m.id;
    let r = tokio::time::timeout(Duration::from_secs(30), store.deliver(m))
        .await
        .expect("answered");
    assert!(r.is_ok(), "stored, so acknowledged: {r:?}");
    assert!(store.fetch(id).await.unwrap().is_some());

    // The session killed before the server saw COMMIT: not stored, so 451.
    proxy.arm(KILL_BEFORE);
    let m = incoming(&["a@x.test"], "rolled back");
    let id = m.id;
    let r = tokio::time::timeout(Duration::from_secs(30), store.deliver(m))
        .await
        .expect("answered");
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    assert!(
        store.fetch(id).await.unwrap().is_none(),
        "not stored, not acknowledged"
    );

    // The writer carries on.
    store
        .deliver(incoming(&["a@x.test"], "next"))
        .await
        .unwrap();
    store.close().await;
}
