//! rspamd and spamd, the real ones: each test starts its own daemon on free loopback ports
//! with a temporary configuration (never the packaged service), and stops it by its PID.
//! A scanner that is not installed fails its test with a message saying how to install
//! it, as for the other servers the tests need (`.ci/run` installs both:
//! `apt-get install rspamd spamd spamassassin`): a test that passes without running is
//! not a test.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use intake_core::{Check, CheckCtx, Findings, Reason, Stage, Verdict};
use intake_policy::{Rspamd, RspamdConfig, Spamd, SpamdConfig};

use intake_policy::testsupport::{free_port, log_of, stop, wait_listening};

const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

fn gtube_message() -> String {
    format!("From: a@sender.test\r\nTo: b@intake.test\r\nSubject: test\r\n\r\n{GTUBE}\r\n")
}

/// A message nobody would call spam.
const CLEAN: &str = "From: Alice <alice@sender.test>\r\nTo: Bob <bob@intake.test>\r\n\
    Subject: lunch\r\nDate: Tue, 1 Dec 2026 10:00:00 +0000\r\n\
    Message-ID: <lunch-20261201@sender.test>\r\n\r\nShall we have lunch at noon?\r\n";

fn installed(program: &str) -> Option<String> {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"] {
        let p = Path::new(dir).join(program);
        if p.exists() {
            return Some(p.to_string_lossy().into_owned());
        }
    }
    None
}

/// A daemon we started; stopped (SIGTERM to its PID, then waited for) when dropped.
struct Daemon {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// rspamd with its packaged rules, our ports and directories, and fixed action thresholds.
fn start_rspamd() -> (Daemon, SocketAddr) {
    let bin = installed("rspamd")
        .expect("rspamd is needed by this test and is not installed (apt-get install rspamd)");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for sub in ["local.d", "override.d", "db", "run", "log"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    let normal = free_port();
    let workers = [
        ("worker-normal.inc", normal),
        ("worker-controller.inc", free_port()),
        ("worker-proxy.inc", free_port()),
    ];
    for (file, port) in workers {
        std::fs::write(
            d.join("local.d").join(file),
            format!("bind_socket = \"127.0.0.1:{port}\";\ncount = 1;\n"),
        )
        .unwrap();
    }
    // Fixed thresholds far from what the packaged rules give ordinary test mail (a few
    // points, some from failed DNS lookups), and one rule of ours: a Subject with "lottery"
    // scores 50, so such a message gets a header. GTUBE is always `reject`.
    std::fs::write(
        d.join("local.d/actions.conf"),
        "reject = 150;\nadd_header = 30;\ngreylist = null;\n",
    )
    .unwrap();
    // Two more rules force rspamd's other actions: a Subject with "softly" is a soft
    // reject, one with "later" is greylisted.
    let mut rules = String::new();
    for (name, word, extra) in [
        ("TEST_LOTTERY", "lottery", "score = 50.0;"),
        ("TEST_SOFT", "softly", "action = \"soft reject\";"),
        ("TEST_GREY", "later", "action = \"greylist\";"),
    ] {
        let map = d.join(format!("{word}.map"));
        std::fs::write(&map, format!("/{word}/i\n")).unwrap();
        rules.push_str(&format!(
            "{name} {{ type = \"header\"; header = \"Subject\"; regexp = true; \
             map = \"{}\"; {extra} }}\n",
            map.display()
        ));
    }
    std::fs::write(d.join("local.d/multimap.conf"), rules).unwrap();
    let log = d.join("log/rspamd.log");
    let v = |k: &str, sub: &str| format!("--var={k}={}", d.join(sub).display());
    let child = Command::new(bin)
        .args(["-f", "-i", "-c", "/etc/rspamd/rspamd.conf"])
        .arg(format!("--var=LOCAL_CONFDIR={}", d.display()))
        .arg(v("DBDIR", "db"))
        .arg(v("RUNDIR", "run"))
        .arg(v("LOGDIR", "log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rspamd");
    let mut daemon = Daemon { child, _dir: dir };
    let addr = SocketAddr::from(([127, 0, 0, 1], normal));
    let within = Duration::from_secs(90);
    wait_listening("rspamd", &mut daemon.child, addr, within, || log_of(&log));
    (daemon, addr)
}

fn cx(content: &str) -> CheckCtx {
    let mut cx = CheckCtx::new(Stage::Data, "192.0.2.7:40000".parse().unwrap());
    cx.helo = Some("mail.sender.test".into());
    cx.mail_from = Some("a@sender.test".into());
    cx.recipients = vec!["b@intake.test".into()];
    cx.content = bytes::Bytes::copy_from_slice(content.as_bytes());
    cx
}

/// The first scan after start may come before the workers have loaded their rules.
async fn scan(check: &dyn Check, content: &str) -> Verdict {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match check.check(&cx(content)).await {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not ready yet: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn tagged(v: Verdict) -> (f32, String, Findings) {
    match v {
        Verdict::Tag {
            score,
            header,
            findings,
        } => (score, header, findings),
        other => panic!("expected a tag, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rspamd_rejects_or_tags_gtube_and_passes_clean_mail() {
    let (_rspamd, addr) = start_rspamd();
    let cfg = RspamdConfig {
        enabled: true,
        address: addr,
        ..RspamdConfig::default()
    };
    let check = Rspamd::new(cfg.clone());
    assert_eq!(
        scan(&check, &gtube_message()).await,
        Verdict::Reject {
            reason: Reason::Policy("Spam message rejected".into())
        }
    );
    // Configured to tag rather than refuse.
    let tag_only = Rspamd::new(RspamdConfig {
        refuse: false,
        ..cfg
    });
    let (score, header, findings) = tagged(scan(&tag_only, &gtube_message()).await);
    assert_eq!(score, 150.0);
    assert!(
        header.starts_with("X-Spam: Yes\r\nX-Spam-Action: reject\r\n"),
        "{header}"
    );
    assert!(
        findings.symbols.contains(&"RSPAMD:GTUBE".to_string()),
        "{findings:?}"
    );
    assert!(findings.scanner.unwrap().starts_with("rspamd: reject"));
    // Over add_header: tagged.
    let lottery = CLEAN.replace("Subject: lunch", "Subject: You won the lottery");
    let (score, header, findings) = tagged(scan(&check, &lottery).await);
    assert!(score >= 30.0, "{score} {findings:?}");
    assert!(header.contains("X-Spam-Action: add header"), "{header}");
    assert!(
        findings
            .symbols
            .contains(&"RSPAMD:TEST_LOTTERY".to_string())
    );
    // rspamd's soft reject and greylist are deferrals.
    let soft = CLEAN.replace("Subject: lunch", "Subject: reject me softly");
    assert_eq!(
        scan(&check, &soft).await,
        Verdict::Defer {
            reason: Reason::Policy("Try again later".into())
        }
    );
    let grey = CLEAN.replace("Subject: lunch", "Subject: see you later");
    assert_eq!(
        scan(&check, &grey).await,
        Verdict::Defer {
            reason: Reason::Greylisted
        }
    );
    // Clean: accepted, the score recorded, no header.
    let (score, header, findings) = tagged(scan(&check, CLEAN).await);
    assert!(score < 30.0, "{score} {findings:?}");
    assert_eq!(header, "");
    assert!(findings.scanner.unwrap().starts_with("rspamd: no action"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spamd_scores_gtube_as_spam_and_passes_clean_mail() {
    let spamd = intake_policy::testspamd::Spamd::start();
    let addr = spamd.addr;
    let tag = Spamd::new(SpamdConfig {
        enabled: true,
        address: addr,
        ..SpamdConfig::default()
    });
    let (score, header, findings) = tagged(scan(&tag, &gtube_message()).await);
    assert!(score >= 1000.0, "{score}");
    assert!(
        header.starts_with("X-Spam-Flag: YES\r\nX-Spam-Score: "),
        "{header}"
    );
    assert!(
        findings.symbols.contains(&"SA:GTUBE".to_string()),
        "{findings:?}"
    );
    let reject = Spamd::new(SpamdConfig {
        enabled: true,
        address: addr,
        reject_score: Some(10.0),
        ..SpamdConfig::default()
    });
    assert_eq!(
        scan(&reject, &gtube_message()).await,
        Verdict::Reject {
            reason: Reason::Policy("Spam message rejected".into())
        }
    );
    let (score, header, findings) = tagged(scan(&reject, CLEAN).await);
    assert!(score < 5.0, "{score}");
    assert_eq!(header, "");
    assert!(findings.scanner.unwrap().starts_with("spamd: ham"));
}

#[tokio::test]
async fn a_scanner_that_is_down_cannot_decide() {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    for check in [
        Box::new(Rspamd::new(RspamdConfig {
            address: addr,
            ..RspamdConfig::default()
        })) as Box<dyn Check>,
        Box::new(Spamd::new(SpamdConfig {
            address: addr,
            ..SpamdConfig::default()
        })),
    ] {
        let err = check.check(&cx(CLEAN)).await.unwrap_err();
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
