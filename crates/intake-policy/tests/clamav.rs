//! The ClamAV check against a real clamd (Debian's `clamav-daemon`), started by the test
//! on a free loopback port and a unix socket with a signature database the test writes
//! itself (no freshclam, no network), never the packaged service; stopped by its PID.
//! No clamd: the test fails and says so (`.ci/run` installs it).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bytes::Bytes;
use intake_core::{Check, CheckCtx, CheckError, Reason, Stage, Verdict};
use intake_policy::clamav::{ClamavError, ScanResult};
use intake_policy::{Clamav, ClamavAction, ClamavConfig, ClamdAddress};

mod common;
use common::free_port;

const CLAMD: &str = "/usr/sbin/clamd";
/// The test pattern our own signature matches (the acceptance check's).
const PATTERN: &str = "INTAKE-AV-TEST-PATTERN-4b1d9e";

/// A clamd of the test's own; killed on drop.
struct Clamd {
    child: Child,
    port: u16,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl Clamd {
    fn start() -> Clamd {
        assert!(
            std::path::Path::new(CLAMD).exists(),
            "{CLAMD} missing: apt-get install clamav-daemon"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("db")).unwrap();
        let hex = hex::encode(PATTERN);
        std::fs::write(
            d.join("db/intake-test.ndb"),
            format!("Intake.Test.Pattern:0:*:{hex}\n"),
        )
        .unwrap();
        let port = free_port();
        let socket = d.join("clamd.sock");
        std::fs::write(
            d.join("clamd.conf"),
            format!(
                "TCPSocket {port}\nTCPAddr 127.0.0.1\nLocalSocket {sock}\n\
                 DatabaseDirectory {db}\nForeground yes\nLogFile {log}\nPidFile {pid}\n\
                 User root\nStreamMaxLength 1M\n",
                sock = socket.display(),
                db = d.join("db").display(),
                log = d.join("clamd.log").display(),
                pid = d.join("clamd.pid").display(),
            ),
        )
        .unwrap();
        let out = std::fs::File::create(d.join("out.log")).unwrap();
        let child = Command::new(CLAMD)
            .arg("-c")
            .arg(d.join("clamd.conf"))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("starting clamd");
        let mut clamd = Clamd {
            child,
            port,
            socket,
            dir,
        };
        // clamd listens once its database is loaded.
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = clamd.child.try_wait() {
                panic!("clamd exited ({status}): {}", clamd.logs());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "clamd did not listen: {}",
                clamd.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        clamd
    }

    fn logs(&self) -> String {
        ["clamd.log", "out.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn config(&self, address: ClamdAddress) -> ClamavConfig {
        ClamavConfig {
            enabled: true,
            address,
            timeout: Duration::from_secs(10),
            ..ClamavConfig::default()
        }
    }

    fn tcp(&self) -> ClamdAddress {
        ClamdAddress::Tcp(format!("127.0.0.1:{}", self.port))
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn at_data(content: &str) -> CheckCtx {
    let mut cx = CheckCtx::new(Stage::Data, "192.0.2.1:25".parse().unwrap());
    cx.content = Bytes::from(content.to_string());
    cx
}

fn infected() -> String {
    format!("From: a@sender.test\r\nSubject: infected\r\n\r\nhere it is: {PATTERN}\r\n")
}

const CLEAN: &str = "From: a@sender.test\r\nSubject: clean\r\n\r\nnothing here\r\n";

#[tokio::test]
async fn a_real_clamd_finds_the_signature_and_passes_clean_mail() {
    let clamd = Clamd::start();
    for address in [clamd.tcp(), ClamdAddress::Unix(clamd.socket.clone())] {
        let check = Clamav::new(clamd.config(address.clone()));
        match check.check(&at_data(&infected())).await.unwrap() {
            Verdict::Reject {
                reason: Reason::Virus(name),
            } => assert!(name.starts_with("Intake.Test.Pattern"), "{address}: {name}"),
            other => panic!("{address}: expected a rejection, got {other:?}"),
        }
        assert_eq!(
            check.check(&at_data(CLEAN)).await.unwrap(),
            Verdict::Pass,
            "{address}"
        );
    }

    // Spread over several INSTREAM chunks, the pattern is still found.
    let big = format!("Subject: big\r\n\r\n{}{PATTERN}\r\n", "x".repeat(200_000));
    let check = Clamav::new(clamd.config(clamd.tcp()));
    assert!(matches!(
        check.scan(big.as_bytes()).await,
        Ok(ScanResult::Infected(_))
    ));

    // action = "tag": accepted, with the signature in a header and the findings.
    let tagging = Clamav::new(ClamavConfig {
        action: ClamavAction::Tag,
        ..clamd.config(clamd.tcp())
    });
    match tagging.check(&at_data(&infected())).await.unwrap() {
        Verdict::Tag {
            header, findings, ..
        } => {
            assert!(
                header.starts_with("X-Virus-Found: Intake.Test.Pattern"),
                "{header}"
            );
            assert!(header.ends_with("\r\n"));
            assert!(findings.symbols[0].starts_with("CLAMAV:Intake.Test.Pattern"));
        }
        other => panic!("expected a tag, got {other:?}"),
    }

    // Over clamav.max_size: not scanned.
    let small = Clamav::new(ClamavConfig {
        max_size: 10,
        ..clamd.config(clamd.tcp())
    });
    assert_eq!(
        small.check(&at_data(&infected())).await.unwrap(),
        Verdict::Pass
    );

    // Over clamd's own StreamMaxLength (1M here): clamd refuses, which is "could not
    // decide", never a pass.
    let huge = vec![b'y'; 2 << 20];
    match check.scan(&huge).await {
        Err(ClamavError::Refused { answer, .. }) => {
            assert!(answer.contains("size limit"), "{answer}")
        }
        Err(ClamavError::Io { .. }) => {}
        other => panic!("expected clamd to refuse, got {other:?}"),
    }
}

#[tokio::test]
async fn clamd_away_or_silent_is_could_not_decide() {
    // Nothing listening.
    let away = Clamav::new(ClamavConfig {
        enabled: true,
        address: ClamdAddress::Tcp(format!("127.0.0.1:{}", free_port())),
        ..ClamavConfig::default()
    });
    assert!(matches!(
        away.check(&at_data(CLEAN)).await,
        Err(CheckError::Backend(_))
    ));
    let missing = Clamav::new(ClamavConfig {
        enabled: true,
        address: ClamdAddress::Unix("/nonexistent/clamd.sock".into()),
        ..ClamavConfig::default()
    });
    assert!(matches!(
        missing.check(&at_data(CLEAN)).await,
        Err(CheckError::Backend(_))
    ));

    // Accepts, reads, never answers: cut off at clamav.timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let (mut s, _) = silent.accept().await.unwrap();
        let mut sink = tokio::io::sink();
        let _ = tokio::io::copy(&mut s, &mut sink).await;
        std::future::pending::<()>().await;
    });
    let slow = Clamav::new(ClamavConfig {
        enabled: true,
        address: ClamdAddress::Tcp(format!("127.0.0.1:{port}")),
        timeout: Duration::from_millis(300),
        ..ClamavConfig::default()
    });
    let started = Instant::now();
    assert!(matches!(
        slow.check(&at_data(CLEAN)).await,
        Err(CheckError::Timeout(d)) if d == Duration::from_millis(300)
    ));
    assert!(started.elapsed() < Duration::from_secs(3));
    hold.abort();
}
