//! Several `intake serve` nodes behind a real HAProxy (PROXY protocol v2) sharing one
//! PostgreSQL database: mail lands exactly once whichever node takes it, every node's API
//! sees it, live updates reach every node, and a node killed with SIGKILL mid-load loses
//! no acknowledged message.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use intake_store::postgres::scratch::ScratchDatabase;

use crate::http::get;
use crate::support::{Client, Process, haproxy};

/// Round robin over `nodes`, PROXY v2, health-checked so a dead node is taken out within a
/// fraction of a second.
fn balanced(nodes: impl Iterator<Item = SocketAddr>) -> String {
    let mut backend = "  balance roundrobin\n".to_string();
    for (i, a) in nodes.enumerate() {
        backend.push_str(&format!(
            "  server n{i} {a} send-proxy-v2 check inter 200ms fall 1 rise 2\n"
        ));
    }
    backend
}

/// A node on the shared database, taking PROXY v2 from HAProxy on loopback.
fn node(dir: &std::path::Path, name: &str, db: &ScratchDatabase) -> Process {
    let data = dir.join(name);
    std::fs::create_dir_all(&data).unwrap();
    let url = db.url.clone();
    Process::start(
        &data,
        &[
            ("INTAKE_STORE__TYPE", "postgres"),
            ("INTAKE_STORE__URL", &url),
            ("INTAKE_SMTP__PROXY_PROTOCOL", "true"),
            ("INTAKE_HTTP__RATE_LIMIT", "0"),
        ],
    )
}

/// One message through `front` on a connection of its own; the reply code after the dot
/// (0: the connection failed before).
async fn send_one(front: SocketAddr, mailbox: &str, subject: &str) -> u16 {
    let Ok(Ok(stream)) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(front),
    )
    .await
    else {
        return 0;
    };
    let mut c = Client::from_stream(stream);
    if c.reply().await.code != 220 {
        return 0;
    }
    c.send(
        format!("EHLO load.test\r\nMAIL FROM:<s@load.test>\r\nRCPT TO:<{mailbox}>\r\nDATA\r\n")
            .as_bytes(),
    )
    .await;
    for _ in 0..4 {
        if c.reply().await.code == 0 {
            return 0;
        }
    }
    c.send(format!("Subject: {subject}\r\n\r\n{}\r\n.\r\n", "z".repeat(1500)).as_bytes())
        .await;
    let code = c.reply().await.code;
    c.send(b"QUIT\r\n").await;
    code
}

/// Every subject in `mailbox` as one node's API lists it, with how often each appears.
async fn listed(http: SocketAddr, mailbox: &str) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for page in 1.. {
        let r = get(
            http,
            &format!("/api/v1/mailboxes/{mailbox}/messages?per_page=500&page={page}"),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        let msgs = v["messages"].as_array().unwrap();
        if msgs.is_empty() {
            break;
        }
        for m in msgs {
            *seen
                .entry(m["subject"].as_str().unwrap_or("").to_string())
                .or_insert(0) += 1;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_behind_haproxy_share_one_postgres() {
    let db = ScratchDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let nodes: Vec<Process> = ["a", "b", "c"]
        .iter()
        .map(|n| node(dir.path(), n, &db))
        .collect();
    let (_haproxy, front) = haproxy(dir.path(), &balanced(nodes.iter().map(|n| n.addr))).await;

    // Live updates: every node's wait-for-mail sees a message whichever node took it.
    let waits: Vec<_> = nodes
        .iter()
        .map(|n| {
            let http = n.http;
            tokio::spawn(async move {
                get(
                    http,
                    "/api/v1/wait?query=subject%3Alive-across%20to%3Ascale%40q.test&timeout=20",
                )
                .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(send_one(front, "scale@q.test", "live-across").await, 250);
    for (w, name) in waits.into_iter().zip(["a", "b", "c"]) {
        let r = w.await.unwrap();
        assert_eq!(r.status, 200, "node {name}: {}", r.text());
        assert_eq!(r.json()["subject"], "live-across", "node {name}");
    }

    // Load through the balancer, a connection per message so every node takes some.
    let sent = 150;
    let mut tasks = Vec::new();
    for w in 0..6 {
        tasks.push(tokio::spawn(async move {
            let mut codes = Vec::new();
            for n in (w..sent).step_by(6) {
                codes.push(send_one(front, "scale@q.test", &format!("m-{n:04}")).await);
            }
            codes
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().iter().all(|&c| c == 250));
    }

    // Exactly once, and every node's API sees all of it.
    for (n, name) in nodes.iter().zip(["a", "b", "c"]) {
        let seen = listed(n.http, "scale@q.test").await;
        assert_eq!(seen.len(), sent + 1, "node {name} lists every message");
        assert!(
            seen.values().all(|&c| c == 1),
            "node {name}: each message once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_mid_load_loses_no_acknowledged_message() {
    let db = ScratchDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Option<Process>> = ["a", "b", "c"]
        .iter()
        .map(|n| Some(node(dir.path(), n, &db)))
        .collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.as_ref().unwrap().addr).collect();
    let (_haproxy, front) = haproxy(dir.path(), &balanced(addrs.iter().copied())).await;

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop_at = Instant::now() + Duration::from_secs(25);
    let mut tasks = Vec::new();
    for w in 0..8 {
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let mut failures = 0;
            for n in 0..100_000 {
                if Instant::now() > stop_at || acked.lock().unwrap().len() >= 1200 {
                    break;
                }
                let subject = format!("k-{w}-{n:05}");
                match send_one(front, "kill@q.test", &subject).await {
                    250 => acked.lock().unwrap().push(subject),
                    _ => {
                        // The node under us died: the client retries later, as any MTA.
                        failures += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            failures
        }));
    }
    let started = Instant::now();
    while acked.lock().unwrap().len() < 300 && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let at_kill = acked.lock().unwrap().len();
    assert!(
        at_kill >= 300,
        "load did not get going: {at_kill} acknowledged"
    );
    nodes[1].take().unwrap().kill9();
    let mut failures = 0;
    for t in tasks {
        failures += t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > at_kill + 100,
        "the other nodes went on taking mail: {} after the kill",
        acked.len() - at_kill
    );

    // Every acknowledged message is there, once, as the surviving nodes see it.
    let want: HashSet<String> = acked.iter().cloned().collect();
    for n in nodes.iter().flatten() {
        let seen = listed(n.http, "kill@q.test").await;
        let missing: Vec<_> = want.iter().filter(|s| !seen.contains_key(*s)).collect();
        assert!(
            missing.is_empty(),
            "{} of {} acknowledged messages missing (failed attempts: {failures}), e.g. {:?}",
            missing.len(),
            want.len(),
            missing.iter().take(5).collect::<Vec<_>>()
        );
        assert!(seen.values().all(|&c| c == 1), "each message once");
    }
}
