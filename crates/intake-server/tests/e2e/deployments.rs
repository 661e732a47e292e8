//! The example configurations of docs/deployments.md, loaded and run: only addresses,
//! certificate, store and downstream are moved to test ones.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use intake_server::config::{Settings, Sources};
use intake_server::server;
use lettre::transport::smtp::authentication::Mechanism;
use lettre::transport::smtp::client::Tls;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::submit::{Submission, any_cert};
use crate::support::{Client, free_port};

pub fn examples() -> Vec<toml::Table> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = std::fs::read_to_string(root.join("docs/deployments.md")).unwrap();
    let blocks: Vec<toml::Table> = doc
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        blocks.len(),
        4,
        "the gateway, the application listener, the LDAP gateway, the sending platform"
    );
    blocks
}

pub fn set(t: &mut toml::Table, section: &str, key: &str, v: impl Into<toml::Value>) {
    let s = t
        .get_mut(section)
        .and_then(toml::Value::as_table_mut)
        .unwrap_or_else(|| panic!("[{section}]"));
    assert!(s.contains_key(key), "{section}.{key} is in the example");
    s.insert(key.into(), v.into());
}

/// Moves what the example binds or opens to test places.
pub fn localize(t: &mut toml::Table, dir: &std::path::Path) {
    set(t, "smtp", "listen", "127.0.0.1:0");
    let (cert, key) = crate::tls::make_cert(dir, "mail.example.test");
    set(t, "tls", "certificate", cert.display().to_string());
    set(t, "tls", "key", key.display().to_string());
    let mut store = toml::Table::new();
    store.insert("path".into(), dir.join("data").display().to_string().into());
    t.insert("store".into(), store.into());
    let mut http = toml::Table::new();
    http.insert("listen".into(), "".into());
    t.insert("http".into(), http.into());
    if let Some(ls) = t.get_mut("listener").and_then(toml::Value::as_array_mut) {
        for l in ls {
            l.as_table_mut()
                .unwrap()
                .insert("address".into(), "127.0.0.1:0".into());
        }
    }
}

/// smtp-sink as an LMTP server writing what it takes into `dir`; killed when dropped.
pub struct Sink(Child, pub String);

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn lmtp_sink(dir: &std::path::Path) -> Sink {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let bin = ["/usr/sbin/smtp-sink", "/usr/bin/smtp-sink"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("smtp-sink (apt-get install postfix)");
    let root = Command::new("id")
        .arg("-u")
        .output()
        .unwrap()
        .stdout
        .starts_with(b"0\n");
    let mut cmd = Command::new(bin);
    if root {
        cmd.args(["-u", "nobody"]);
    }
    let child = cmd
        .args(["-L", "-d", &format!("{}/%M.", dir.display()), &addr, "10"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    intake_core::testing::wait_port(port, Duration::from_secs(5), "smtp-sink");
    Sink(child, addr)
}

#[tokio::test]
async fn the_gateway_example_relays_over_lmtp_before_replying() {
    let mut t = examples().remove(0);
    let dir = tempfile::tempdir().unwrap();
    localize(&mut t, dir.path());
    let recipients = dir.path().join("recipients.txt");
    std::fs::write(&recipients, "@example.com\n").unwrap();
    set(
        &mut t,
        "recipients",
        "file",
        recipients.display().to_string(),
    );
    let dumps = dir.path().join("lmtp");
    std::fs::create_dir(&dumps).unwrap();
    let sink = lmtp_sink(&dumps);
    set(&mut t, "relay", "server", sink.1.clone());
    let s = Settings::from_table(&t, &Sources::default()).expect("the example loads");
    let running = server::start(&s).await.unwrap();

    let mut c = Client::greeted(running.smtp_addr).await;
    assert!(c.cmd("EHLO sender.test").await.text().contains("STARTTLS"));
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").await.code, 250);
    assert_eq!(
        c.cmd("RCPT TO:<victim@elsewhere.test>").await.head(),
        "550 5.7.1"
    );
    assert_eq!(c.cmd("RCPT TO:<bob@example.com>").await.head(), "250 2.1.5");
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(b"Subject: through the gateway\r\n\r\nhi\r\n.\r\n")
        .await;
    let r = c.reply().await;
    assert_eq!(r.head(), "250 2.0.0", "{}", r.text());
    let got: Vec<String> = std::fs::read_dir(&dumps)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(got.len(), 1);
    assert!(got[0].contains("X-Client-Proto: LMTP"), "{}", got[0]);
    assert!(got[0].contains("Subject: through the gateway"));

    // The mailbox server goes away: 4xx (already at RCPT, since the example verifies
    // recipients), never 250.
    drop(sink);
    let mut c = Client::greeted(running.smtp_addr).await;
    c.cmd("EHLO sender.test").await;
    c.cmd("MAIL FROM:<a@sender.test>").await;
    assert_eq!(c.cmd("RCPT TO:<bob@example.com>").await.head(), "451 4.4.3");
    c.cmd("QUIT").await;
    running.stop().await.unwrap();
}

/// A small HTTP server that answers 200 and keeps each request's head and body.
pub async fn http_server() -> (std::net::SocketAddr, Arc<Mutex<Vec<(String, Vec<u8>)>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (sock, _) = l.accept().await.unwrap();
            let log = log.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(sock);
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).await.unwrap() == 0 {
                        return;
                    }
                    head.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
                let mut body = vec![0; len];
                r.read_exact(&mut body).await.unwrap();
                log.lock().unwrap().push((head, body));
                let _ = r
                    .get_mut()
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn the_application_listener_example_posts_each_message() {
    let mut t = examples().remove(1);
    let dir = tempfile::tempdir().unwrap();
    localize(&mut t, dir.path());
    let (hook, seen) = http_server().await;
    set(
        &mut t,
        "webhook",
        "url",
        format!("http://{hook}/inbound-mail"),
    );
    let s = Settings::from_table(&t, &Sources::default()).expect("the example loads");
    let running = server::start(&s).await.unwrap();
    // A customer, as the page says.
    let mut add = Command::new(env!("CARGO_BIN_EXE_intake"))
        .args(["user", "add", "customer@their-domain.example"])
        .env("INTAKE_STORE__PATH", dir.path().join("data"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    add.stdin
        .take()
        .unwrap()
        .write_all(b"their-password\n")
        .unwrap();
    assert!(add.wait().unwrap().success());

    let tls = || any_cert("mail.example.test");
    let send = |port: u16, tls: Tls, login: bool| {
        let user = (
            "customer@their-domain.example",
            "their-password",
            Mechanism::Plain,
        );
        Submission {
            tls,
            login: login.then_some(user),
            from: "customer@their-domain.example",
            to: "anyone@anywhere.example",
            subject: "to the app",
        }
        .send(([127, 0, 0, 1], port).into())
    };
    send(running.smtp_addr.port(), Tls::Required(tls()), true)
        .await
        .expect("587: STARTTLS, AUTH, then the webhook said 200");
    let implicit = running.listener_addrs[0].1;
    send(implicit.port(), Tls::Wrapper(tls()), true)
        .await
        .expect("465: implicit TLS");
    let e = send(running.smtp_addr.port(), Tls::Required(tls()), false)
        .await
        .unwrap_err();
    assert!(e.contains("530"), "{e}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for (head, body) in &seen {
        assert!(head.starts_with("POST /inbound-mail "), "{head}");
        assert!(head.contains("X-Intake-Signature: t="), "{head}");
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["envelope"]["rcpt_to"][0], "anyone@anywhere.example");
        assert_eq!(v["parsed"]["subject"], "to the app");
    }
    running.stop().await.unwrap();
}

/// The LDAP gateway and the sending platform load as written (with local certificates and
/// store): every section is valid, the directory answers what each asks of it, and the
/// checks are the ones the page describes. (deployments_directory.rs runs them.)
#[test]
fn the_directory_examples_load_as_described() {
    let mut examples = examples();
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = examples.remove(2);
    localize(&mut gateway, dir.path());
    let g = Settings::from_table(&gateway, &Sources::default()).expect("the gateway loads");
    let d = g.directory.as_ref().expect("a directory");
    assert!(d.answers_recipients());
    assert!(g.policy.recipients.directory);
    assert!(g.policy.spamd.enabled && g.policy.clamav.enabled);
    assert_eq!(g.policy.clamav.on_error, intake_core::OnError::Defer);
    // Every message is scanned, as the page says: the largest accepted, with our header
    // fields in front, is still within clamav.max_size.
    assert!(g.smtp.max_message_size as usize + 64 * 1024 <= g.policy.clamav.max_size);
    assert_eq!(
        g.policy.sender_auth.spf_at_mail,
        intake_policy::spf::SpfAtMail::Reject
    );
    assert_eq!(g.delivery.targets, ["relay"]);

    let mut platform = examples.remove(2);
    localize(&mut platform, dir.path());
    let p = Settings::from_table(&platform, &Sources::default()).expect("the platform loads");
    let d = p.directory.as_ref().expect("a directory");
    assert!(d.answers_logins() && d.senders_query.is_some());
    assert!(p.auth.directory && p.auth.required && p.auth.restrict_senders);
    assert_eq!(p.delivery.targets, ["webhook"]);
}
