//! SIGHUP: a reload applies new settings to new connections and keeps every counter (per-IP
//! connections, connection and message rates, failed logins, greylist state); a broken file
//! is refused and the old configuration stays.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::http;
use crate::support::{Client, Process};

fn hup(pid: u32) {
    std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
}

/// `intake_config_reloads_total{result="…"}` as /metrics shows it.
async fn reloads(http_addr: SocketAddr, result: &str) -> u64 {
    let text = http::get(http_addr, "/metrics").await.text();
    let label = format!("result=\"{result}\"");
    text.lines()
        .filter(|l| l.starts_with("intake_config_reloads_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Sends SIGHUP and waits until the server says it handled it with `result`.
async fn reload(p: &Process, result: &str) {
    let before = reloads(p.http, result).await;
    hup(p.pid());
    let deadline = Instant::now() + Duration::from_secs(10);
    while reloads(p.http, result).await <= before {
        assert!(Instant::now() < deadline, "no reload {result} within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SMTP sessions open now (`intake_smtp_connections_open`).
async fn open_sessions(http_addr: SocketAddr) -> u64 {
    let text = http::get(http_addr, "/metrics").await.text();
    text.lines()
        .find(|l| l.starts_with("intake_smtp_connections_open "))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// Ends a session and waits until the server no longer counts it.
async fn quit(p: &Process, mut c: Client) {
    let before = open_sessions(p.http).await;
    assert_eq!(c.cmd("QUIT").await.code, 221);
    assert!(c.is_closed().await);
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_sessions(p.http).await >= before {
        assert!(Instant::now() < deadline, "the session was not released");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// RCPT to `rcpt` in a fresh session: the reply code.
pub async fn rcpt_code(addr: SocketAddr, rcpt: &str) -> u16 {
    let mut c = Client::greeted(addr).await;
    c.cmd("EHLO client.example").await;
    c.cmd("MAIL FROM:<s@example.net>").await;
    let r = c.cmd(&format!("RCPT TO:<{rcpt}>")).await;
    c.cmd("QUIT").await;
    r.code
}

/// The greeting's code of a new connection (421 when a limit refuses it).
async fn greeting(addr: SocketAddr) -> (u16, Client) {
    let mut c = Client::connect(addr).await;
    let g = c.reply().await;
    (g.code, c)
}

fn start(dir: &Path, config: &str) -> Process {
    let file = dir.join("intake.toml");
    std::fs::write(&file, config).unwrap();
    Process::start(
        &dir.join("data"),
        &[("INTAKE_CONFIG", file.to_str().unwrap())],
    )
}

#[tokio::test]
async fn sighup_reloads_the_configuration_without_dropping_sessions_and_refuses_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("intake.toml");
    let p = start(dir.path(), "[smtp]\ndomains = [\"a.test\"]\n");
    assert_eq!(rcpt_code(p.addr, "x@b.test").await, 550);
    // A session opened before the reload.
    let mut open = Client::greeted(p.addr).await;
    open.cmd("EHLO client.example").await;

    std::fs::write(&file, "[smtp]\ndomains = [\"a.test\", \"b.test\"]\n").unwrap();
    reload(&p, "applied").await;
    assert_eq!(rcpt_code(p.addr, "x@b.test").await, 250);
    // The session opened before keeps its settings and is not dropped.
    assert_eq!(open.cmd("MAIL FROM:<s@example.net>").await.code, 250);
    assert_eq!(open.cmd("RCPT TO:<x@b.test>").await.code, 550);
    assert_eq!(open.cmd("RCPT TO:<y@a.test>").await.code, 250);
    assert_eq!(open.cmd("DATA").await.code, 354);
    open.send(b"Subject: across a reload\r\n\r\nx\r\n.\r\n")
        .await;
    assert_eq!(open.reply().await.code, 250);

    // A broken file is refused (the server says so), and the last good configuration
    // stays in force.
    std::fs::write(&file, "[smtp\ndomains = oops\n").unwrap();
    reload(&p, "refused").await;
    assert_eq!(
        reloads(p.http, "applied").await,
        1,
        "the bad file was not applied"
    );
    assert_eq!(rcpt_code(p.addr, "x@b.test").await, 250);
    assert_eq!(rcpt_code(p.addr, "x@c.test").await, 550);
    assert!(p.terminate().success());
}

const LIMITS: &str = "[smtp]\n\
    max_connections_per_ip = 5\n\
    limits_exempt = []\n\
    connection_rate = 9\n\
    message_rate = 4\n\
    [auth]\n\
    enabled = true\n\
    allow_plaintext = true\n\
    max_failures_per_client = 3\n\
    [greylist]\n\
    enabled = true\n\
    delay = \"1s\"\n";

/// Cap 5 per IP with 5 open, three reloads: the 6th connection is still refused; the
/// connection and message rates, the failed logins and the greylist record all carry on
/// from where they were, as if no reload had happened.
#[tokio::test]
async fn a_reload_under_load_keeps_every_counter() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(dir.path(), LIMITS);
    let mut held = Vec::new();
    for _ in 0..5 {
        let (code, c) = greeting(p.addr).await;
        assert_eq!(code, 220);
        held.push(c);
    }
    assert_eq!(greeting(p.addr).await.0, 421, "the cap is in force");
    // Connections counted against the rate so far: 7 of 9 (the start-up probe that saw
    // the port open, 5 held, 1 refused).

    // A greylisted triplet (message 1 of 4 this minute).
    let first_try = Instant::now();
    let c = &mut held[0];
    c.cmd("EHLO client.example").await;
    assert_eq!(c.cmd("MAIL FROM:<s@example.net>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<grey@example.test>").await.code, 451);
    assert_eq!(c.cmd("RSET").await.code, 250);

    // Three wrong passwords: the client is blocked from AUTH.
    let c = &mut held[1];
    c.cmd("EHLO client.example").await;
    // "\0alice@example.test\0wrong"
    let wrong = "AGFsaWNlQGV4YW1wbGUudGVzdAB3cm9uZw==";
    for _ in 0..3 {
        assert_eq!(c.cmd(&format!("AUTH PLAIN {wrong}")).await.code, 535);
    }
    assert_eq!(c.cmd(&format!("AUTH PLAIN {wrong}")).await.code, 454);

    for _ in 0..3 {
        reload(&p, "applied").await;
    }

    // Per-IP count: the 5 held are alive, a 6th is still refused (8 of 9 on the rate).
    for c in &mut held {
        assert_eq!(c.cmd("NOOP").await.code, 250, "a held session survived");
    }
    assert_eq!(greeting(p.addr).await.0, 421, "the cap still counts the 5");
    // Connection rate: one slot freed, the 9th connection of the minute is taken, the 10th
    // is over the rate although a slot is free.
    quit(&p, held.pop().unwrap()).await;
    let (code, eighth) = greeting(p.addr).await;
    assert_eq!(code, 220, "9 connections a minute");
    held.push(eighth);
    quit(&p, held.remove(4)).await;
    let (code, _) = greeting(p.addr).await;
    assert_eq!(
        code, 421,
        "the connection rate kept its count across the reloads"
    );

    // Failed logins: still blocked.
    assert_eq!(held[1].cmd(&format!("AUTH PLAIN {wrong}")).await.code, 454);

    // Greylisting: the triplet recorded before the reloads passes after its delay.
    let wait = Duration::from_millis(1100).saturating_sub(first_try.elapsed());
    tokio::time::sleep(wait).await;
    let c = &mut held[0];
    assert_eq!(c.cmd("MAIL FROM:<s@example.net>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<grey@example.test>").await.code, 250);
    assert_eq!(c.cmd("RSET").await.code, 250);
    // Message rate: 2 of 4 used; 2 more, then refused.
    assert_eq!(c.cmd("MAIL FROM:<s@example.net>").await.code, 250);
    assert_eq!(c.cmd("RSET").await.code, 250);
    assert_eq!(c.cmd("MAIL FROM:<s@example.net>").await.code, 250);
    assert_eq!(c.cmd("RSET").await.code, 250);
    assert_eq!(
        c.cmd("MAIL FROM:<s@example.net>").await.code,
        450,
        "the message rate kept its count across the reloads"
    );
    assert!(p.terminate().success());
}

/// Waits until the server counts `n` open SMTP sessions.
async fn settle(p: &Process, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_sessions(p.http).await != n {
        assert!(Instant::now() < deadline, "never {n} open sessions");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Four connections held under a per-IP cap of 5, then the cap lowered to 2 by a reload:
/// the four still count, and no new connection is admitted until fewer than 2 are open.
#[tokio::test]
async fn a_lowered_per_ip_cap_applies_to_the_connections_already_counted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("intake.toml");
    let config = |cap: u32| format!("[smtp]\nmax_connections_per_ip = {cap}\nlimits_exempt = []\n");
    let p = start(dir.path(), &config(5));
    let mut held = Vec::new();
    for _ in 0..4 {
        let (code, c) = greeting(p.addr).await;
        assert_eq!(code, 220);
        held.push(c);
    }
    std::fs::write(&file, config(2)).unwrap();
    reload(&p, "applied").await;
    let (code, refused) = greeting(p.addr).await;
    assert_eq!(code, 421, "4 open, over the new cap of 2");
    drop(refused);
    for c in held.drain(..2) {
        quit(&p, c).await;
    }
    settle(&p, 2).await;
    let (code, refused) = greeting(p.addr).await;
    assert_eq!(code, 421, "2 open, at the new cap");
    drop(refused);
    quit(&p, held.pop().unwrap()).await;
    settle(&p, 1).await;
    assert_eq!(greeting(p.addr).await.0, 220, "1 open, under the new cap");
    assert!(p.terminate().success());
}

/// A reload logs what it applied and names each changed setting it does not apply; a lower
/// failed-login limit applies to the failures already counted.
#[tokio::test]
async fn a_reload_logs_what_it_applied_and_what_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("intake.toml");
    let auth = "[auth]\nenabled = true\nallow_plaintext = true\n";
    std::fs::write(&file, format!("[smtp]\ndomains = [\"a.test\"]\n{auth}")).unwrap();
    let log_path = dir.path().join("intake.log");
    let p = Process::start_logging(
        &dir.path().join("data"),
        &[
            ("INTAKE_CONFIG", file.to_str().unwrap()),
            ("INTAKE_LOG__LEVEL", "info"),
        ],
        std::process::Stdio::from(std::fs::File::create(&log_path).unwrap()),
    );
    // Two wrong passwords: under the default limit of 10 per client.
    let mut c = Client::greeted(p.addr).await;
    c.cmd("EHLO client.example").await;
    let wrong = "AGFsaWNlQGV4YW1wbGUudGVzdAB3cm9uZw==";
    for _ in 0..2 {
        assert_eq!(c.cmd(&format!("AUTH PLAIN {wrong}")).await.code, 535);
    }

    std::fs::write(
        &file,
        format!(
            "[smtp]\ndomains = [\"a.test\", \"b.test\"]\nproxy_protocol = true\n\
             {auth}max_failures_per_client = 2\n\
             [[route]]\ndomains = [\"b.test\"]\ntargets = [\"store\"]\n\
             [retention]\nper_mailbox = 10\n\
             [aliases]\nsecret = \"0123456789abcdef0123\"\n\
             [admin]\ntokens = [\"0123456789abcdef0123\"]\n\
             [log]\nformat = \"json\"\n\
             [pop3]\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    reload(&p, "applied").await;
    // The two failures counted before reach the new limit: refused unchecked.
    assert_eq!(c.cmd(&format!("AUTH PLAIN {wrong}")).await.code, 454);
    assert_eq!(rcpt_code(p.addr, "x@b.test").await, 250, "domains applied");
    assert!(p.terminate().success());

    let log = std::fs::read_to_string(&log_path).unwrap();
    let applied: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("SIGHUP: applied to new connections"))
        .collect();
    assert_eq!(applied.len(), 1, "{log}");
    assert!(
        applied[0].contains("changed=smtp, auth"),
        "the applied sections, in order: {}",
        applied[0]
    );
    let restart: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("SIGHUP: changed; needs a restart"))
        .collect();
    for key in [
        "smtp.proxy_protocol",
        "route",
        "retention",
        "aliases",
        "admin.tokens",
        "log.format",
        "pop3",
    ] {
        assert!(
            restart.iter().any(|l| l.contains(&format!("key={key}"))),
            "{key} is not named as needing a restart:\n{}",
            restart.join("\n")
        );
    }
    assert!(!log.contains("nothing changed"), "{log}");
}
