//! Wiring: open the store, build the live objects once, bind the listeners, run until shut
//! down. Each concern has its room: `store` (the store, the event feed, the cluster, the
//! alias secret), `policy` (the checks and the authenticator), `targets` (delivery targets),
//! `listeners` (one builder for every SMTP listener), `http` (the API and Mailpit
//! listeners), `reload` (SIGHUP), `changes` (what a reload applies, what needs a restart),
//! `running` (waiting and stopping).

mod changes;
mod http;
mod listeners;
mod mailpit;
mod policy;
mod pop3;
mod reload;
mod running;
mod store;
mod targets;

use std::sync::Arc;

use anyhow::Context;
use intake_core::MailStore;
use intake_policy::chaos::ChaosAuthenticator;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::fdlimit;

pub use reload::{Reloader, on_sighup};
pub use running::Running;

/// Raises the open-file limit and refuses to start when the connection caps do not fit.
fn check_descriptors(settings: &Settings) -> anyhow::Result<()> {
    let limit = fdlimit::raise().context("reading the open-file limit")?;
    let smtp_listeners = 1 + u64::from(settings.smtps_listen.is_some());
    let budget = fdlimit::Budget {
        smtp: settings.smtp.max_connections as u64 * smtp_listeners,
        http: settings.http.config.max_connections as u64
            * (u64::from(settings.http.listen.is_some())
                + u64::from(settings.http.mailpit_listen.is_some()))
            + settings
                .pop3
                .listen
                .map_or(0, |_| settings.pop3.max_connections as u64),
        limit,
    };
    budget.check().map_err(anyhow::Error::msg)?;
    tracing::info!(
        open_file_limit = budget.limit,
        smtp_connections = budget.smtp,
        http_connections = budget.http,
        reserved = fdlimit::RESERVED,
        "descriptor budget"
    );
    Ok(())
}
/// Runs `fut` once `go` is cancelled (the start gate).
async fn gated<F: std::future::Future>(go: CancellationToken, fut: F) -> F::Output {
    go.cancelled().await;
    fut.await
}

/// Opens the store, binds SMTP and HTTP and starts serving in the background.
pub async fn start(settings: &Settings) -> anyhow::Result<Running> {
    check_descriptors(settings)?;
    let intake_store::Opened {
        store: opened,
        arrivals,
    } = intake_store::open(&settings.store, intake_store::Mode::ReadWrite)
        .await
        .with_context(|| format!("opening the store ({})", settings.store.describe()))?;
    let shutdown = CancellationToken::new();
    let opened = store::with_event_feed(settings, opened, &shutdown)?;
    let events = opened.events().clone();
    // The alias secret, read (or made) once for the HTTP listeners that need it; before any
    // listener is bound, so that a client finding SMTP up finds HTTP up too.
    let secret = if settings.http.listen.is_some() || settings.http.mailpit_listen.is_some() {
        store::alias_secret(settings, &opened).await?
    } else {
        Vec::new()
    };
    let store: Arc<dyn MailStore> = opened.clone();
    // Opened once every listener is bound and privileges are dropped: no accept before.
    let go = CancellationToken::new();
    let tls = match &settings.tls_files {
        Some((cert, key)) => Some(Arc::new(
            intake_smtp::tls::TlsCerts::load(cert, key)
                .context("loading the TLS certificate (tls.certificate, tls.key)")?,
        )),
        None => None,
    };
    // The live objects, built once: per-client limits (one state for every listener), the
    // cluster link, the targets, the authenticator. A reload keeps them all.
    let limits =
        intake_smtp::limits::ClientLimits::new(settings.limits, settings.limits_exempt.clone());
    let cluster = store::cluster(settings, &limits)?;
    // Mailpit's chaos triggers: one object for the Mailpit API, the checks and AUTH.
    let chaos = Arc::new(intake_core::Chaos::new(settings.http.mailpit_chaos));
    // The targets, before HTTP: the Mailpit API delivers and releases through them too.
    let targets = Arc::new(targets::target_set(settings, &store)?);
    let sources = http::Sources {
        mailpit: mailpit::services(settings, &targets, chaos.clone())?,
        store: opened.clone(),
        events: events.clone(),
        secret,
        tls: tls.clone(),
        cluster: cluster.clone(),
    };
    let (http_state, api, mailpit) = http::start(settings, &sources, &go, &shutdown).await?;
    let pop3 = pop3::start(settings, &http_state, tls.as_ref(), &go, &shutdown).await?;
    // SMTP last: the kernel completes connections on a listening socket before any accept,
    // so a client (or a probe) that finds SMTP up finds HTTP and POP3 bound too.
    let specs = listeners::specs(settings);
    let mut bound = Vec::new();
    for spec in &specs {
        let l = listeners::bind(spec)?;
        bound.push((spec, l.local_addr()?, l));
    }
    let directory = policy::directory(settings)?;
    let mut policy = policy::policy_shared(settings, &opened, cluster.as_ref());
    let mut with = Arc::try_unwrap(policy)
        .map_err(|_| anyhow::anyhow!("policy state shared too early"))?
        .with_chaos(chaos.clone());
    if let Some(d) = &directory {
        with = with.with_directory(d.clone());
    }
    policy = Arc::new(with);
    let profiles = policy::policy_profiles(settings, &policy)?;
    let limiter = policy::login_limiter(settings, cluster.as_ref());
    let shared = listeners::Shared {
        targets,
        // Every login rolls the chaos `authentication` trigger first.
        auth: ChaosAuthenticator::wrap(
            policy::authenticator(opened.clone(), limiter.clone()),
            chaos.clone(),
        ),
        directory_auth: directory.clone().map(|d| {
            ChaosAuthenticator::wrap(
                Arc::new(intake_directory::DirectoryAuthenticator::new(
                    d,
                    limiter.clone(),
                )),
                chaos.clone(),
            )
        }),
        limits,
        tls: tls.clone(),
        arrivals,
    };
    let mut smtp_tasks = Vec::new();
    let mut live = Vec::new();
    let mut addrs = Vec::new();
    for (spec, addr, l) in bound {
        let svc = listeners::service(settings, spec, &shared, &profiles)?;
        live.push((
            listeners::key(spec),
            svc.live.clone().expect("every listener is live"),
        ));
        if spec.name != "default" {
            tracing::info!(listener = %spec.name, address = %addr, tls = ?spec.tls,
                auth = ?spec.auth, targets = ?spec.targets, "extra SMTP listener");
        }
        addrs.push((spec.clone(), addr));
        smtp_tasks.push((
            listeners::label(spec),
            tokio::spawn(gated(
                go.clone(),
                intake_smtp::serve_with(l, svc, shutdown.clone()),
            )),
        ));
    }
    let reloader = Arc::new(Reloader {
        policy,
        shared,
        logins: limiter,
        live,
        started: settings.clone(),
        current: std::sync::Mutex::new(settings.clone()),
    });
    // Every listener is bound: become the configured user before anything is accepted.
    if let Err(e) = crate::privileges::drop_privileges(&settings.run) {
        // The gated tasks start, see the shutdown, and end without accepting.
        shutdown.cancel();
        go.cancel();
        return Err(e);
    }
    go.cancel();
    let cluster = cluster.map(|c| c.spawn(shutdown.clone()));
    intake_store::spawn_retention(
        store.clone(),
        settings.retention.policy,
        settings.retention.interval,
        shutdown.clone(),
    );
    let smtp_addr = addrs[0].1;
    let smtps_addr = settings.smtps_listen.map(|_| addrs[1].1);
    let http_addr = api.as_ref().map(|(_, _, a)| *a);
    let mailpit_addr = mailpit.as_ref().map(|(_, _, a)| *a);
    tracing::info!(
        smtp = %smtp_addr,
        smtps = %smtps_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        tls = ?settings.smtp.tls,
        http = %http_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        http_access = ?settings.http.config.access.mode,
        mailpit = %mailpit_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        https = settings.http.tls,
        hostname = %settings.smtp.hostname,
        "Intake is listening"
    );
    Ok(Running {
        reloader,
        listener_addrs: addrs
            .iter()
            .filter(|(s, _)| s.name != "default")
            .map(|(s, a)| (s.name.clone(), *a))
            .collect(),
        smtp_addr,
        smtps_addr,
        http_addr,
        mailpit_addr,
        tls,
        store,
        events,
        shutdown,
        smtp_tasks,
        pop3_addr: pop3.as_ref().map(|(_, _, a)| *a),
        http_tasks: api
            .into_iter()
            .chain(mailpit)
            .chain(pop3)
            .map(|(name, task, _)| (name, task))
            .collect(),
        cluster,
    })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpStream;
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

    use super::*;
    use crate::config::Sources;

    /// A raw SMTP client: lines out, the last line of each reply in.
    struct Client {
        read: BufReader<OwnedReadHalf>,
        write: OwnedWriteHalf,
    }

    impl Client {
        async fn greeted(addr: SocketAddr) -> Client {
            let (read, write) = TcpStream::connect(addr).await.unwrap().into_split();
            let mut c = Client {
                read: BufReader::new(read),
                write,
            };
            assert!(c.reply().await.starts_with("220 "));
            c
        }

        async fn send(&mut self, bytes: &str) {
            self.write.write_all(bytes.as_bytes()).await.unwrap();
        }

        async fn reply(&mut self) -> String {
            loop {
                let mut line = String::new();
                self.read.read_line(&mut line).await.unwrap();
                if line.as_bytes().get(3) != Some(&b'-') {
                    return line;
                }
            }
        }

        async fn cmd(&mut self, line: &str) -> String {
            self.send(&format!("{line}\r\n")).await;
            self.reply().await
        }

        async fn start_message(&mut self, helo: &str, rcpt: &str) {
            assert!(self.cmd(&format!("EHLO {helo}")).await.starts_with("250 "));
            assert!(self.cmd("MAIL FROM:<a@b.test>").await.starts_with("250 "));
            let r = self.cmd(&format!("RCPT TO:<{rcpt}>")).await;
            assert!(r.starts_with("250 "), "{r}");
            assert!(self.cmd("DATA").await.starts_with("354 "));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_listener_that_ends_stops_the_server_and_the_store_is_closed_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let toml = format!(
            "[smtp]\nlisten = \"127.0.0.1:0\"\nhostname = \"mx.test\"\n\
             [store]\npath = {:?}\n\
             [[listener]]\nname = \"second\"\naddress = \"127.0.0.1:0\"\n",
            data.display().to_string()
        );
        let table: toml::Table = toml.parse().unwrap();
        let settings = Settings::from_table(&table, &Sources::default()).unwrap();
        let running = start(&settings).await.unwrap();
        let addr = running.smtp_addr;

        // One message acknowledged, one in flight.
        let mut done = Client::greeted(addr).await;
        done.start_message("done.test", "done@q.test").await;
        let r = done.cmd("Subject: acknowledged\r\n\r\nhi\r\n.").await;
        assert!(r.starts_with("250 2.0.0"), "{r}");
        let mut busy = Client::greeted(addr).await;
        busy.start_message("busy.test", "busy@q.test").await;
        busy.send("Subject: in flight\r\n\r\nfirst half\r\n").await;

        // The second listener's task ends, as a panic in its accept loop would end it.
        running
            .smtp_tasks
            .iter()
            .find(|(name, _)| name == "listener \"second\"")
            .expect("the second listener runs")
            .1
            .abort();
        let waiting = tokio::spawn(running.wait());

        // The server stops: the transaction in flight finishes and is acknowledged, the
        // session is closed, and `wait` says which listener ended (`intake serve` exits
        // non-zero with it).
        let stopping = async {
            let r = busy.cmd("second half\r\n.").await;
            assert!(r.starts_with("250 2.0.0"), "{r}");
            assert!(busy.reply().await.starts_with("421 4.3.2"));
            waiting.await.unwrap()
        };
        let err = tokio::time::timeout(std::time::Duration::from_secs(60), stopping)
            .await
            .expect("the server stops once a listener has ended")
            .expect_err("a listener that ends is an error");
        let text = format!("{err:#}");
        assert!(text.contains("listener \"second\""), "{text}");
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "no longer accepting"
        );

        // The store was closed: the WAL is folded into the database, both messages are in it
        // and indexed for search.
        let wal = data.join("intake.db-wal");
        assert!(
            !wal.exists() || wal.metadata().unwrap().len() == 0,
            "WAL left behind: {} bytes",
            wal.metadata().unwrap().len()
        );
        let db = rusqlite::Connection::open(data.join("intake.db")).unwrap();
        let stored: i64 = db
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, 2);
        let indexed: i64 = db
            .query_row(
                "SELECT count(*) FROM search_index WHERE search_index MATCH 'acknowledged OR flight'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexed, 2, "every message indexed before the store closed");
    }
}
