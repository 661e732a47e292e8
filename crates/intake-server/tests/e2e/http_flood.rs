//! Hostile HTTP clients: half-sent requests, event streams never read, floods against a low
//! descriptor limit. The HTTP side sheds them by its caps and timers while SMTP and other
//! HTTP clients are served. Attackers connect from other loopback addresses (127.0.0.2 …)
//! so that the per-client caps can tell them from the well-behaved client on 127.0.0.1.

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::http;
use crate::support::{Process, TestServer, send_each, stderr_of_failure, store_message};

/// Connects to `addr` from the loopback address `from`.
async fn connect_from(from: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(from, 0))?;
    s.connect(addr).await
}

fn attacker(n: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, 2 + n])
}

/// What became of a connection: still open, answered 503 / 429 then closed, or just closed.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Fate {
    Open,
    Refused(u16),
    Closed,
}

async fn fate(s: &mut TcpStream, wait: Duration) -> Fate {
    let mut buf = vec![0u8; 1024];
    match tokio::time::timeout(wait, s.read(&mut buf)).await {
        Err(_) => Fate::Open,
        Ok(Ok(0)) | Ok(Err(_)) => Fate::Closed,
        Ok(Ok(n)) => {
            let head = String::from_utf8_lossy(&buf[..n]);
            let code = head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            Fate::Refused(code)
        }
    }
}

/// Opens `n` connections from `from`, each sending half a request header.
async fn half_sent(from: IpAddr, addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let Ok(mut s) = connect_from(from, addr).await else {
            continue;
        };
        let _ = s
            .write_all(b"GET /api/v1/messages HTTP/1.1\r\nHost: x\r\nX-A: ")
            .await;
        out.push(s);
    }
    out
}

/// Fates of all `conns`, read concurrently.
async fn fates(conns: &mut [TcpStream], wait: Duration) -> Vec<Fate> {
    let futs = conns.iter_mut().map(|s| fate(s, wait));
    futures_util::future::join_all(futs).await
}

fn count(f: &[Fate], which: fn(&Fate) -> bool) -> usize {
    f.iter().filter(|x| which(x)).count()
}

#[tokio::test]
async fn half_sent_requests_from_one_client_are_capped_and_timed_out_while_others_are_served() {
    let server = TestServer::start(
        "[http]\nmax_connections = 300\nmax_connections_per_ip = 40\nheader_timeout = \"4s\"\n",
    )
    .await;
    let http_addr = server.running.http_addr.unwrap();
    let started = Instant::now();
    let mut conns = half_sent(attacker(0), http_addr, 2000).await;
    assert!(conns.len() >= 1900, "opened {}", conns.len());

    // Meanwhile: mail is accepted and another client's API request answers.
    store_message(
        server.addr,
        "a@example.net",
        &["flood@example.test"],
        "Subject: during\r\n\r\nx\r\n",
    )
    .await;
    let ok = http::get(http_addr, "/api/v1/mailboxes/flood@example.test/messages").await;
    assert_eq!(ok.status, 200, "{}", ok.text());

    let early = fates(&mut conns, Duration::from_millis(500)).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "checked before the header timeout"
    );
    let open = count(&early, |f| *f == Fate::Open);
    let refused = count(&early, |f| matches!(f, Fate::Refused(503) | Fate::Closed));
    assert_eq!(open, 40, "only the per-client cap is held: {early:?}");
    assert_eq!(open + refused, conns.len());

    // Past the header timeout, the held ones are closed too.
    tokio::time::sleep(Duration::from_millis(4200).saturating_sub(started.elapsed())).await;
    let late = fates(&mut conns, Duration::from_secs(2)).await;
    assert_eq!(count(&late, |f| *f == Fate::Open), 0, "{late:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_flood_past_the_global_cap_is_refused_and_http_recovers() {
    let server = TestServer::start(
        "[http]\nmax_connections = 100\nmax_connections_per_ip = 0\nheader_timeout = \"2s\"\n",
    )
    .await;
    let http_addr = server.running.http_addr.unwrap();
    let mut conns = Vec::new();
    for i in 0..5 {
        conns.extend(half_sent(attacker(i), http_addr, 100).await);
    }
    let f = fates(&mut conns, Duration::from_millis(500)).await;
    assert_eq!(count(&f, |f| *f == Fate::Open), 100, "the global cap holds");
    assert!(
        count(&f, |f| *f == Fate::Refused(503)) > 0,
        "refusals say 503"
    );
    // SMTP is not starved.
    store_message(
        server.addr,
        "a@example.net",
        &["g@example.test"],
        "Subject: x\r\n\r\nx\r\n",
    )
    .await;
    // The held ones time out; then HTTP serves again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = http::try_status(http_addr, "/api/v1/mailboxes/g@example.test/messages").await;
        if r == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "HTTP did not recover: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn event_streams_never_read_are_capped_per_client() {
    let server = TestServer::start("[http]\nmax_streams_per_ip = 4\n").await;
    let http_addr = server.running.http_addr.unwrap();
    let mut streams = Vec::new();
    let mut codes = Vec::new();
    for _ in 0..30 {
        let mut s = connect_from(attacker(0), http_addr).await.unwrap();
        s.write_all(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
            .await
            .unwrap();
        // Read the status line only; the stream itself is never read.
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.unwrap();
        codes.push(String::from_utf8_lossy(&head[9..12]).into_owned());
        streams.push(s);
    }
    assert_eq!(codes.iter().filter(|c| *c == "200").count(), 4, "{codes:?}");
    assert_eq!(
        codes.iter().filter(|c| *c == "429").count(),
        26,
        "{codes:?}"
    );
    // A wait from the same client counts as a stream too.
    let mut w = connect_from(attacker(0), http_addr).await.unwrap();
    w.write_all(b"GET /api/v1/wait?timeout=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        fate(&mut w, Duration::from_secs(5)).await,
        Fate::Refused(429)
    );

    // Others are served, live updates included, and mail flows.
    let mut mine = http::Sse::open(http_addr, "/api/v1/events?mailbox=live@example.test").await;
    store_message(
        server.addr,
        "a@example.net",
        &["live@example.test"],
        "Subject: live\r\n\r\nx\r\n",
    )
    .await;
    let (event, data) = mine.next().await;
    assert_eq!(event, "new", "{data}");

    // Closing the attacker's streams gives their places back.
    drop(streams);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = connect_from(attacker(0), http_addr).await.unwrap();
        s.write_all(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.unwrap();
        if &head[9..12] == b"200" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stream places were not given back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

/// Starts the binary under `ulimit -n limit` (soft and hard).
fn start_with_fd_limit(
    data: &std::path::Path,
    limit: u32,
    env: &[(&str, &str)],
    log: Stdio,
) -> Process {
    // `Process::start` runs the binary directly; a shell in front sets the limit first.
    let shell = std::env::temp_dir().join(format!("intake-ulimit-{}-{limit}", std::process::id()));
    std::fs::write(
        &shell,
        format!(
            "#!/bin/sh\nulimit -n {limit} || exit 99\nexec {} \"$@\"\n",
            env!("CARGO_BIN_EXE_intake")
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&shell)
        .status()
        .unwrap();
    Process::start_with(&shell, data, env, log)
}

#[tokio::test]
async fn a_process_with_few_descriptors_survives_an_http_flood_and_keeps_taking_mail() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("intake.log");
    let http_port = crate::support::free_port();
    let http_addr: SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
    let p = start_with_fd_limit(
        &dir.path().join("data"),
        512,
        &[
            ("INTAKE_HTTP__LISTEN", &http_addr.to_string()),
            ("INTAKE_SMTP__MAX_CONNECTIONS", "100"),
            ("INTAKE_HTTP__MAX_CONNECTIONS", "150"),
            ("INTAKE_HTTP__HEADER_TIMEOUT", "3s"),
            ("INTAKE_LOG__LEVEL", "info"),
        ],
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    // 2,000 half-sent requests from 20 addresses: four times the process's descriptor limit.
    let mut conns = Vec::new();
    for i in 0..20 {
        conns.extend(half_sent(attacker(i), http_addr, 100).await);
    }
    send_each(p.addr, "a@example.net", &["fd@example.test"], 20, |i| {
        format!("Subject: during flood {i}\r\n\r\nx\r\n")
    })
    .await;
    drop(conns);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("descriptor budget"), "{text}");
    assert!(
        !text.contains("Too many open files"),
        "the process ran out of descriptors: {text}"
    );
    let status = p.terminate();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn caps_that_do_not_fit_the_descriptor_limit_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let err = stderr_of_failure(
        std::process::Command::new("sh")
            .arg("-c")
            .arg("ulimit -n 300 && exec \"$0\" serve")
            .arg(env!("CARGO_BIN_EXE_intake"))
            .env("INTAKE_SMTP__LISTEN", "127.0.0.1:0")
            .env("INTAKE_HTTP__LISTEN", "127.0.0.1:0")
            .env("INTAKE_STORE__PATH", dir.path().join("data")),
    );
    assert!(
        err.contains("open-file limit is 300") && err.contains("smtp.max_connections"),
        "{err}"
    );
}
