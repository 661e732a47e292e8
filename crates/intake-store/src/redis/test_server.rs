//! A `redis-server` of a test's own (feature `testing`): on a free loopback port, with its
//! data in a temporary directory, durable (`appendonly yes`, `appendfsync always`) unless
//! asked otherwise. Killed when dropped. Tests that kill, pause or reconfigure Redis use
//! one of these, never a shared Redis.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use intake_core::testing::free_port;

/// A running `redis-server`, stopped (by its pid) when dropped.
pub struct TestRedis {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    durable: bool,
    extra: Vec<String>,
}

/// Deletes every key under `prefix` on the Redis at `url` (a shared one: tests keep to a
/// prefix of their own).
pub async fn delete_keys(url: &str, prefix: &str) {
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis at {url}: {e}"));
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            redis::cmd("DEL")
                .arg(&keys)
                .query_async::<()>(&mut conn)
                .await
                .unwrap();
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
}

impl TestRedis {
    /// A durable Redis: `appendonly yes`, `appendfsync always`.
    pub fn start() -> TestRedis {
        TestRedis::with(true)
    }

    /// A Redis as installed by default: `appendonly no`.
    pub fn start_volatile() -> TestRedis {
        TestRedis::with(false)
    }

    /// A durable Redis started with more arguments (`--rename-command CONFIG ""`, say).
    pub fn start_with(args: &[&str]) -> TestRedis {
        TestRedis::make(true, args)
    }

    fn with(durable: bool) -> TestRedis {
        TestRedis::make(durable, &[])
    }

    fn make(durable: bool, extra: &[&str]) -> TestRedis {
        let mut r = TestRedis {
            child: None,
            dir: tempfile::tempdir().expect("temporary directory"),
            port: free_port(),
            durable,
            extra: extra.iter().map(|a| a.to_string()).collect(),
        };
        r.spawn();
        r
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self) {
        let dir: PathBuf = self.dir.path().into();
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&dir)
            .arg("--save")
            .arg("")
            .arg("--daemonize")
            .arg("no")
            .arg("--logfile")
            .arg(dir.join("redis.log"));
        if self.durable {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        cmd.args(&self.extra);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (the Debian package redis-server) on PATH");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                if s.write_all(b"PING\r\n").is_ok() {
                    let mut buf = [0u8; 16];
                    if let Ok(n) = s.read(&mut buf)
                        && buf[..n].starts_with(b"+PONG")
                    {
                        return;
                    }
                }
            }
            assert!(Instant::now() < until, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown, no final save; only what reached the append-only file stays.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port and directory (loading the append-only file).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
