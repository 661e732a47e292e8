//! Test servers and a raw SMTP client that sends exact bytes.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use intake_server::config::{Settings, Sources};
use intake_server::server::{self, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An in-process server with its own data directory.
pub struct TestServer {
    pub running: Running,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

/// Settings from TOML text; `smtp.listen` defaults to port 0 and `store.path` to `data`.
pub fn settings(toml_text: &str, data: &Path) -> Settings {
    let mut table: toml::Table = toml_text.parse().expect("test config is TOML");
    let mut default = |section: &str, key: &str, value: toml::Value| {
        table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .unwrap()
            .entry(key)
            .or_insert(value);
    };
    default("smtp", "listen", "127.0.0.1:0".into());
    default("smtp", "hostname", "mx.test".into());
    default("http", "listen", "127.0.0.1:0".into());
    default("store", "path", data.to_string_lossy().into_owned().into());
    Settings::from_table(&table, &Sources::default()).expect("test config is valid")
}

impl TestServer {
    pub async fn start(toml_text: &str) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(toml_text, &dir.path().join("data"));
        let running = server::start(&s).await.expect("server starts");
        TestServer {
            addr: running.smtp_addr,
            running,
            dir,
        }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// The subjects stored in a mailbox, newest first.
    pub async fn subjects(&self, mailbox: &str) -> Vec<String> {
        let page = intake_core::Page {
            offset: 0,
            limit: 100_000,
        };
        self.running
            .store
            .list_mailbox(mailbox, page)
            .await
            .unwrap()
            .messages
            .into_iter()
            .map(|m| m.subject.unwrap_or_default())
            .collect()
    }

    pub async fn stop(self) -> tempfile::TempDir {
        self.running.stop().await.unwrap();
        self.dir
    }
}

/// A raw SMTP client: exact bytes out, whole replies in.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// One reply: the code and all its lines.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// `code` plus the enhanced status of the last line, e.g. "250 2.1.0".
    pub fn head(&self) -> String {
        let last = self.lines.last().map(String::as_str).unwrap_or("");
        last.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
            .replacen('-', " ", 1)
    }

    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Client::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects and checks the 220 greeting.
    pub async fn greeted(addr: SocketAddr) -> Client {
        let mut c = Client::connect(addr).await;
        let g = c.reply().await;
        assert_eq!(g.code, 220, "{g:?}");
        c
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads one whole reply (all continuation lines). Code 0: connection closed.
    pub async fn reply(&mut self) -> Reply {
        let mut lines = Vec::new();
        loop {
            while let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..pos]).into_owned();
                self.buf.drain(..pos + 2);
                let done = line.as_bytes().get(3) != Some(&b'-');
                lines.push(line);
                if done {
                    let code = lines
                        .last()
                        .unwrap()
                        .get(..3)
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0);
                    return Reply { code, lines };
                }
            }
            self.buf.reserve(65536);
            let read =
                tokio::time::timeout(Duration::from_secs(20), self.stream.read_buf(&mut self.buf))
                    .await;
            let n = match read {
                Ok(r) => r.unwrap_or(0),
                Err(_) => panic!("no reply within 20 s; so far {lines:?}"),
            };
            if n == 0 {
                return Reply { code: 0, lines };
            }
        }
    }

    /// Sends one command line (CRLF added) and reads its reply.
    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// Runs a transcript: `C: ` lines are sent (consecutive ones in one write, as a
    /// pipelining client does), each `S: ` line reads one reply whose start must match.
    pub async fn transcript(&mut self, script: &str) -> Vec<Reply> {
        let mut pending = Vec::new();
        let mut replies = Vec::new();
        for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(c) = line.strip_prefix("C: ") {
                pending.extend_from_slice(c.as_bytes());
                pending.extend_from_slice(b"\r\n");
            } else if let Some(expect) = line.strip_prefix("S:") {
                if !pending.is_empty() {
                    self.send(&pending).await;
                    pending.clear();
                }
                let r = self.reply().await;
                let expect = expect.trim();
                assert!(
                    r.lines.last().is_some_and(|l| l.starts_with(expect))
                        || (expect == "closed" && r.code == 0),
                    "expected {expect:?}, got {:?}\nin transcript:\n{script}",
                    r.lines
                );
                replies.push(r);
            } else {
                panic!("bad transcript line {line:?}");
            }
        }
        if !pending.is_empty() {
            self.send(&pending).await;
        }
        replies
    }

    /// Whether the server has closed the connection (reads to EOF within 5 s).
    pub async fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut b)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

/// Waits until `check` holds (polled every 20 ms, at most 10 s): for a state the server
/// reaches by itself (a slot released, a file re-read, a listener closed), not a pause.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends one message over a fresh connection; returns the final reply.
pub async fn send_message(addr: SocketAddr, from: &str, to: &[&str], content: &str) -> Reply {
    let mut c = Client::greeted(addr).await;
    assert_eq!(c.cmd("EHLO client.test").await.code, 250);
    assert_eq!(c.cmd(&format!("MAIL FROM:<{from}>")).await.code, 250);
    for r in to {
        assert_eq!(c.cmd(&format!("RCPT TO:<{r}>")).await.code, 250);
    }
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(content.as_bytes()).await;
    c.send(b".\r\n").await;
    let r = c.reply().await;
    c.cmd("QUIT").await;
    r
}

/// As [`send_message`], for a message the test needs stored: the reply must be
/// `250 2.0.0 Message stored as <id>`; returns the id.
pub async fn store_message(addr: SocketAddr, from: &str, to: &[&str], content: &str) -> String {
    let r = send_message(addr, from, to, content).await;
    let text = r.text();
    match text.strip_prefix("250 2.0.0 Message stored as ") {
        Some(id) => id.trim().to_string(),
        None => panic!("not stored: {r:?}"),
    }
}

/// Sends `count` messages, one a connection, with the content `content(i)`
/// for the i-th; each must be accepted.
pub async fn send_each(
    addr: SocketAddr,
    from: &str,
    to: &[&str],
    count: usize,
    content: impl Fn(usize) -> String,
) {
    for i in 0..count {
        let r = send_message(addr, from, to, &content(i)).await;
        assert_eq!(r.code, 250, "{r:?}");
    }
}

/// Runs `cmd`, which must fail; returns what it wrote to stderr.
pub fn stderr_of_failure(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub use intake_core::testing::free_port;

/// The `intake` binary running as a child process; killed when dropped, so a failing test
/// leaves no server behind.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    /// The HTTP listener.
    pub http: SocketAddr,
    pub data: PathBuf,
}

impl Process {
    /// Starts `intake serve` on a free port with `data` as the store and extra env vars.
    pub fn start(data: &Path, env: &[(&str, &str)]) -> Process {
        Process::start_logging(data, env, Stdio::inherit())
    }

    /// As `start`, with the server's stderr (its log) sent to `stderr`.
    pub fn start_logging(data: &Path, env: &[(&str, &str)], stderr: Stdio) -> Process {
        Process::start_with(Path::new(env!("CARGO_BIN_EXE_intake")), data, env, stderr)
    }

    /// As `start_logging`, running `program` (a wrapper script that execs intake).
    pub fn start_with(program: &Path, data: &Path, env: &[(&str, &str)], stderr: Stdio) -> Process {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let http: SocketAddr = match env.iter().find(|(k, _)| *k == "INTAKE_HTTP__LISTEN") {
            Some((_, v)) => v.parse().unwrap_or_else(|_| "127.0.0.1:0".parse().unwrap()),
            None => format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        };
        let mut cmd = Command::new(program);
        cmd.arg("serve")
            .env("INTAKE_SMTP__LISTEN", addr.to_string())
            .env("INTAKE_HTTP__LISTEN", http.to_string())
            .env("INTAKE_STORE__PATH", data)
            .env("INTAKE_LOG__LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn intake");
        intake_core::testing::wait_port(port, Duration::from_secs(10), "intake");
        Process {
            child,
            addr,
            http,
            data: data.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A field of /proc/<pid>/status in kB (VmRSS, VmHWM).
    pub fn status_kb(&self, field: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        s.lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn terminate(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }
}

/// Any other child process a test starts (HAProxy, a sink): killed when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Only if it still runs: a reaped child's PID may belong to another process by now.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs the `intake` CLI with the given store and arguments; returns stdout.
pub fn cli(data: &Path, args: &[&str]) -> (bool, String, String) {
    cli_with(Some(data), &[], args)
}

/// Runs the `intake` CLI with `args`, the store path `data` if given and the
/// environment `env`: (success, stdout, stderr).
pub fn cli_with(
    data: Option<&Path>,
    env: &[(&'static str, String)],
    args: &[&str],
) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_intake"));
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    if let Some(data) = data {
        cmd.env("INTAKE_STORE__PATH", data);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `clients` concurrent senders, each a new connection per message to `crash@q.test`
/// (subjects `crash-<client>-<n>`), until at least 300 messages have their 250; then
/// `kill -9` of `p`. Returns the subjects that got a 250 (at least 300).
pub async fn kill9_under_load(p: Process, clients: usize) -> Vec<String> {
    use std::sync::{Arc, Mutex};

    let addr = p.addr;
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop_at = Instant::now() + Duration::from_secs(30);
    let mut tasks = Vec::new();
    for w in 0..clients {
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..100_000 {
                if Instant::now() > stop_at {
                    break;
                }
                let subject = format!("crash-{w:02}-{n:05}");
                let Ok(Ok(stream)) = tokio::time::timeout(
                    Duration::from_secs(2),
                    tokio::net::TcpStream::connect(addr),
                )
                .await
                else {
                    break;
                };
                let mut c = Client::from_stream(stream);
                if c.reply().await.code != 220 {
                    break;
                }
                c.send(b"EHLO w\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<crash@q.test>\r\nDATA\r\n")
                    .await;
                let mut ok = true;
                for _ in 0..4 {
                    ok &= c.reply().await.code != 0;
                }
                if !ok {
                    break;
                }
                c.send(
                    format!("Subject: {subject}\r\n\r\n{}\r\n.\r\n", "y".repeat(2000)).as_bytes(),
                )
                .await;
                let r = c.reply().await;
                if r.code == 250 {
                    acked.lock().unwrap().push(subject);
                } else if r.code == 0 {
                    break;
                }
            }
        }));
    }
    // Let the clients get going, then pull the plug.
    let started = Instant::now();
    while acked.lock().unwrap().len() < 300 && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.kill9();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 300,
        "only {} messages acknowledged before the kill",
        acked.len()
    );
    acked
}

/// Asserts that `listing` mentions every subject in `acked`.
pub fn assert_none_lost(acked: &[String], listing: &str) {
    let missing: Vec<&String> = acked
        .iter()
        .filter(|s| !listing.contains(s.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages lost: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
}

/// Where HAProxy is installed, if it is.
pub fn haproxy_bin() -> Option<PathBuf> {
    [
        "/usr/sbin/haproxy",
        "/usr/bin/haproxy",
        "/usr/local/sbin/haproxy",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// HAProxy (TCP mode) on a free loopback port in front of `backend`, the lines of its
/// `backend intake` section (`balance …`, `server … send-proxy-v2 …`); killed when the guard
/// is dropped. Returns once the front port accepts connections.
pub async fn haproxy(dir: &Path, backend: &str) -> (KillOnDrop, SocketAddr) {
    let bin = haproxy_bin().expect("haproxy (apt-get install haproxy; .ci/run installs it)");
    let front: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 2000\n\
             defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n  retries 3\n  option redispatch\n\
             frontend smtp\n  bind {front}\n  default_backend intake\n\
             backend intake\n{backend}"
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .args(["-f", cfg.to_str().unwrap(), "-db"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(front).await.is_err() {
        assert!(Instant::now() < deadline, "haproxy did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (guard, front)
}
