//! The POP3 server over real sockets, driven by real clients: Python's `poplib` (plain and
//! STLS) and Debian's `fetchmail` (STLS, delivering to an MDA), against a store in memory.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use intake_core::MailStore;
use intake_pop3::{
    AccessAuthenticator, AccessMode, AuthError, Checked, Credentials, Pop3Settings, Rights,
    StoreMaildrop, TlsSource,
};
use intake_store::conformance::{all, incoming_with};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// One htpasswd-like user, `reader` / `pop-secret-1`, who may read and delete.
struct Reader;

#[async_trait]
impl Credentials for Reader {
    async fn check(&self, user: &str, password: &str, _: IpAddr) -> Result<Checked, AuthError> {
        Ok(match (user, password) {
            ("reader", "pop-secret-1") => Checked::Valid(Rights {
                read: true,
                delete: true,
            }),
            ("reader", _) => Checked::Wrong,
            _ => Checked::Unknown,
        })
    }
}

struct Server {
    addr: SocketAddr,
    store: Arc<dyn MailStore>,
    stop: CancellationToken,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// A POP3 server on a free loopback port, private access, with `n` messages stored.
async fn start(n: usize, tls: Option<TlsSource>, plaintext_login: bool) -> Server {
    let store: Arc<dyn MailStore> = intake_store::memory::store();
    for i in 0..n {
        let content = format!("Subject: pop test {i}\r\n\r\nbody {i}\r\n.leading dot\r\n");
        store
            .deliver(incoming_with(&[&format!("box{i}@example.test")], &content))
            .await
            .unwrap();
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let settings = Pop3Settings {
        login_failure_delay: Duration::from_millis(50),
        plaintext_login,
        ..Pop3Settings::default()
    };
    let auth = Arc::new(AccessAuthenticator::new(
        AccessMode::Private,
        false,
        Arc::new(Reader),
    ));
    let maildrop = Arc::new(StoreMaildrop::new(store.clone(), settings.max_messages));
    let stop = CancellationToken::new();
    let done = tokio::spawn(intake_pop3::serve(
        listener,
        settings,
        auth,
        maildrop,
        tls,
        stop.clone(),
    ));
    Server {
        addr,
        store,
        stop,
        done,
    }
}

impl Server {
    async fn stored(&self) -> u64 {
        self.store.list_all(all()).await.unwrap().total
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.done)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
            .unwrap();
    }
}

/// A self-signed certificate for localhost and 127.0.0.1: the TLS source, and the PEM file.
fn tls_identity(dir: &Path) -> (TlsSource, std::path::PathBuf) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let pem = dir.join("ca.pem");
    std::fs::write(&pem, ck.cert.pem()).unwrap();
    (Arc::new(move || acceptor.clone()), pem)
}

/// Runs a Python script (args: port, then `extra`); its stdout, asserting it succeeded.
async fn python(script: &str, port: u16, extra: &[&str]) -> String {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg("-c")
        .arg(script)
        .arg(port.to_string())
        .args(extra)
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("python finishes")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "python failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

const PLAIN: &str = r#"
import sys, poplib
port = int(sys.argv[1])
def session():
    p = poplib.POP3("127.0.0.1", port, timeout=10); p.user("reader"); p.pass_("pop-secret-1"); return p
try:
    q = poplib.POP3("127.0.0.1", port, timeout=10); q.user("reader"); q.pass_("wrong"); print("wrong password accepted")
except poplib.error_proto as e:
    print("refused:", e)
p = session()
n, size = p.stat()
lines = p.retr(1)[1]
uidl = p.uidl()[1]
top = p.top(2, 0)[1]
print("stat", n, size)
print("retr", [l.decode() for l in lines])
print("uidl", len(uidl))
print("top", [l.decode() for l in top])
p.dele(1)
# Dropped without QUIT: nothing is deleted.
p.sock.close()
p = session(); print("after drop", p.stat()[0]); p.dele(1); print("quit", p.quit())
p = session(); print("after quit", p.stat()[0]); p.quit()
"#;

#[tokio::test]
async fn poplib_reads_and_deletes_at_quit_over_plain_tcp() {
    let s = start(2, None, true).await;
    let out = python(PLAIN, s.addr.port(), &[]).await;
    assert!(
        out.contains("refused: b'-ERR [AUTH] invalid login or password'"),
        "{out}"
    );
    assert!(out.contains("stat 2 "), "{out}");
    // Dot-stuffing is undone by the client: the line reads as sent.
    assert!(
        out.contains("retr ['Subject: pop test 0', '', 'body 0', '.leading dot']"),
        "{out}"
    );
    assert!(out.contains("uidl 2"), "{out}");
    assert!(out.contains("top ['Subject: pop test 1', '']"), "{out}");
    assert!(out.contains("after drop 2"), "{out}");
    assert!(out.contains("quit b'+OK"), "{out}");
    assert!(out.contains("after quit 1"), "{out}");
    assert_eq!(s.stored().await, 1, "the store lost the deleted message");
    s.stop().await;
}

const STLS: &str = r#"
import sys, poplib, ssl
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
p = poplib.POP3("127.0.0.1", port, timeout=10)
caps = p.capa()
print("caps before", sorted(caps))
try:
    p.user("reader"); print("plaintext login allowed")
except poplib.error_proto as e:
    print("plaintext:", e)
p.stls(context=ctx)
print("cipher", p.sock.version())
print("caps after", sorted(p.capa()))
p.user("reader"); p.pass_("pop-secret-1")
print("stat", p.stat()[0])
print("retr", b"\n".join(p.retr(1)[1]).decode())
p.quit()
"#;

#[tokio::test]
async fn poplib_logs_in_after_stls_and_not_before_when_plaintext_login_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, ca) = tls_identity(dir.path());
    let s = start(2, Some(tls), false).await;
    let out = python(STLS, s.addr.port(), &[ca.to_str().unwrap()]).await;
    assert!(out.contains("'STLS'"), "{out}");
    assert!(
        out.contains("plaintext: b'-ERR [AUTH] use STLS first'"),
        "{out}"
    );
    assert!(out.contains("cipher TLSv1.3"), "{out}");
    let after = out.lines().find(|l| l.starts_with("caps after")).unwrap();
    assert!(
        after.contains("'USER'") && !after.contains("'STLS'"),
        "{out}"
    );
    assert!(out.contains("stat 2"), "{out}");
    assert!(out.contains("Subject: pop test 0"), "{out}");
    s.stop().await;
}

#[tokio::test]
async fn fetchmail_fetches_over_stls_into_its_mda_and_deletes() {
    if std::process::Command::new("fetchmail")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("fetchmail is not installed (apt-get install -y fetchmail)");
    }
    let dir = tempfile::tempdir().unwrap();
    let (tls, ca) = tls_identity(dir.path());
    let s = start(2, Some(tls), false).await;
    let out = dir.path().join("delivered.mbox");
    let rc = dir.path().join("fetchmailrc");
    std::fs::write(
        &rc,
        format!(
            "poll 127.0.0.1 protocol pop3 port {port} timeout 20\n\
             \tuser \"reader\" there with password \"pop-secret-1\" is \"me\" here\n\
             \tsslproto tls1.2+ sslcertck sslcertfile \"{ca}\" sslcommonname localhost\n\
             \tnokeep fetchall\n\
             \tmda \"cat >> {out}\"\n",
            port = s.addr.port(),
            ca = ca.display(),
            out = out.display(),
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut child = tokio::process::Command::new("fetchmail")
        .arg("-f")
        .arg(&rc)
        .arg("--nosyslog")
        .arg("--nodetach")
        .arg("--verbose")
        .arg("--idfile")
        .arg(dir.path().join("fetchids"))
        .arg("--pidfile")
        .arg(dir.path().join("fetchmail.pid"))
        .env("HOME", dir.path())
        .env("FETCHMAILHOME", dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("fetchmail starts");
    let pid = child.id().expect("fetchmail pid");
    let waited = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
    let status = match waited {
        Ok(s) => s.unwrap(),
        Err(_) => {
            // Stopped by its own PID, never by name.
            child.kill().await.unwrap();
            panic!("fetchmail (pid {pid}) did not finish");
        }
    };
    let log = {
        use tokio::io::AsyncReadExt;
        let mut text = String::new();
        if let Some(mut e) = child.stderr.take() {
            e.read_to_string(&mut text).await.unwrap();
        }
        if let Some(mut o) = child.stdout.take() {
            o.read_to_string(&mut text).await.unwrap();
        }
        text
    };
    assert!(status.success(), "fetchmail failed ({status}): {log}");
    assert!(
        log.contains("upgrade to TLS succeeded"),
        "fetchmail used STLS: {log}"
    );
    let mbox = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        mbox.contains("Subject: pop test 0") && mbox.contains("Subject: pop test 1"),
        "delivered: {mbox}\n{log}"
    );
    assert!(mbox.contains(".leading dot"), "unstuffed: {mbox}");
    assert_eq!(s.stored().await, 0, "fetchmail deleted what it fetched");
    s.stop().await;
}

#[tokio::test]
async fn shutdown_tells_an_idle_session_and_deletes_nothing() {
    let s = start(1, None, true).await;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let sock = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let mut r = BufReader::new(sock);
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("+OK"), "{line}");
    r.get_mut()
        .write_all(b"USER reader\r\nPASS pop-secret-1\r\nDELE 1\r\n")
        .await
        .unwrap();
    for want in [
        "+OK send PASS",
        "+OK maildrop has 1",
        "+OK message 1 deleted",
    ] {
        line.clear();
        r.read_line(&mut line).await.unwrap();
        assert!(line.starts_with(want), "{line:?}, want {want:?}");
    }
    let store = s.store.clone();
    s.stop.cancel();
    line.clear();
    r.read_line(&mut line).await.unwrap();
    assert_eq!(line, "-ERR [SYS/TEMP] server shutting down\r\n");
    tokio::time::timeout(Duration::from_secs(10), s.done)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(store.list_all(all()).await.unwrap().total, 1);
}
