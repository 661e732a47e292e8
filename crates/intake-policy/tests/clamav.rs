//! The ClamAV check against a real clamd (Debian's `clamav-daemon`), started by the test
//! (`intake_policy::testclamd`: a free loopback port and a unix socket, a signature database
//! the test writes itself, no freshclam, no network), never the packaged service; stopped
//! by its PID. No clamd: the test fails and says so (`.ci/run` installs it).

use std::time::{Duration, Instant};

use bytes::Bytes;
use intake_core::{Check, CheckCtx, CheckError, Reason, Stage, Verdict};
use intake_policy::clamav::{ClamavError, ScanResult};
use intake_policy::testclamd::{Clamd, PATTERN};
use intake_policy::{Clamav, ClamavAction, ClamavConfig, ClamdAddress};

use intake_policy::testsupport::free_port;

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

    // Over clamav.max_size: not scanned, and marked so.
    let small = Clamav::new(ClamavConfig {
        max_size: 10,
        ..clamd.config(clamd.tcp())
    });
    assert_eq!(
        small.check(&at_data(&infected())).await.unwrap(),
        Verdict::unchecked("clamav", "larger than clamav.max_size (10 octets)")
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
