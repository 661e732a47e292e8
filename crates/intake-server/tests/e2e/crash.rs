//! Kill -9 while clients are sending: every message that got a 250 is in the store.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{Client, Process, cli};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_250_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let p = Process::start(dir.path(), &[]);
    let addr = p.addr;
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop_at = Instant::now() + Duration::from_secs(30);
    let mut tasks = Vec::new();
    for w in 0..12 {
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
    let (ok, out, err) = cli(dir.path(), &["mailbox", "list", "crash@q.test"]);
    assert!(ok, "{err}");
    let missing: Vec<_> = acked.iter().filter(|s| !out.contains(s.as_str())).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages lost: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
}
