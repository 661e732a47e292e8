//! SPF at MAIL FROM (`sender_auth.spf_at_mail`): the SPF result of the MAIL FROM domain
//! (of the HELO name for the null sender) decided before any data is read. A `fail` is
//! refused with `550 5.7.23`; with `"defer"`, a `temperror` (DNS failing, or slower than
//! `sender_auth.timeout`) is deferred with `451 4.7.24`. The result is handed to the
//! end-of-data evaluation ([`SpfResults`]), which builds DMARC and `Authentication-Results:`
//! on it instead of asking DNS again.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use intake_core::{Check, CheckCtx, CheckError, Findings, Reason, Stage, Verdict};
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{MessageAuthenticator, SpfOutput, SpfResult};

use crate::dns::Caches;

/// What to do with the SPF result at MAIL FROM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpfAtMail {
    /// Not evaluated at MAIL FROM (the end of data still evaluates it).
    #[default]
    Off,
    /// `fail` refused (`550 5.7.23`); anything else goes on.
    Reject,
    /// As `reject`, and `temperror` deferred (`451 4.7.24`).
    Defer,
}

/// SPF results found at MAIL FROM, by client, HELO name and MAIL FROM, waiting for the end
/// of data of the same transaction, which takes them. Not a cache of answers: MAIL FROM
/// always evaluates (through the resolver and [`Caches`], which keep records for their
/// TTL), so a changed record is seen as soon as its TTL runs out, and a `temperror` is
/// never kept (a sender retrying after a DNS failure is evaluated again). An entry the end
/// of data never takes (the transaction was abandoned) goes after five minutes.
pub struct SpfResults(moka::sync::Cache<Key, SpfOutput>);

type Key = (IpAddr, String, String);

fn key(ip: IpAddr, helo: &str, mail_from: &str) -> Key {
    (
        ip,
        helo.to_ascii_lowercase(),
        mail_from.to_ascii_lowercase(),
    )
}

/// Asks DNS (through `caches`) for the SPF result of `mail_from`, or of `helo` for the null
/// sender.
async fn ask(
    dns: &MessageAuthenticator,
    caches: &Caches,
    ip: IpAddr,
    helo: &str,
    mail_from: &str,
    host: &str,
) -> SpfOutput {
    if mail_from.is_empty() {
        dns.verify_spf(caches.params(SpfParameters::verify_ehlo(ip, helo, host)))
            .await
    } else {
        dns.verify_spf(caches.params(SpfParameters::verify_mail_from(ip, helo, host, mail_from)))
            .await
    }
}

impl SpfResults {
    /// Room for `capacity` results, each kept at most five minutes.
    pub fn new(capacity: u64) -> SpfResults {
        SpfResults(
            moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(Duration::from_secs(300))
                .build(),
        )
    }

    /// At MAIL FROM: the SPF result for this client, HELO name and MAIL FROM (the HELO
    /// name's for the null sender), asked through `dns` and kept for the end of data
    /// unless it is a `temperror`.
    pub async fn evaluate(
        &self,
        dns: &MessageAuthenticator,
        caches: &Caches,
        ip: IpAddr,
        helo: &str,
        mail_from: &str,
        host: &str,
    ) -> SpfOutput {
        let out = ask(dns, caches, ip, helo, mail_from, host).await;
        if out.result() != SpfResult::TempError {
            self.0.insert(key(ip, helo, mail_from), out.clone());
        }
        out
    }

    /// At the end of data: the result MAIL FROM kept for this transaction (taken, so the
    /// next transaction evaluates again), else asked through `dns`.
    pub async fn take_or_evaluate(
        &self,
        dns: &MessageAuthenticator,
        caches: &Caches,
        ip: IpAddr,
        helo: &str,
        mail_from: &str,
        host: &str,
    ) -> SpfOutput {
        match self.0.remove(&key(ip, helo, mail_from)) {
            Some(kept) => kept,
            None => ask(dns, caches, ip, helo, mail_from, host).await,
        }
    }
}

/// SPF's result as `Authentication-Results:` and the API spell it.
pub fn spf_name(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

/// The check at MAIL FROM.
pub struct SpfAtMailCheck {
    mode: SpfAtMail,
    hostname: String,
    /// How long the lookups may take; longer is a `temperror`.
    timeout: Duration,
    dns: Arc<MessageAuthenticator>,
    caches: Arc<Caches>,
    results: Arc<SpfResults>,
}

impl SpfAtMailCheck {
    /// The check in `mode`, asking through the shared resolver and caches for at most
    /// `timeout`, and keeping its results in `results` for the end of data.
    pub fn new(
        mode: SpfAtMail,
        hostname: String,
        timeout: Duration,
        dns: Arc<MessageAuthenticator>,
        caches: Arc<Caches>,
        results: Arc<SpfResults>,
    ) -> SpfAtMailCheck {
        SpfAtMailCheck {
            mode,
            hostname,
            timeout,
            dns,
            caches,
            results,
        }
    }
}

#[async_trait]
impl Check for SpfAtMailCheck {
    fn name(&self) -> &'static str {
        "spf_at_mail"
    }

    fn stage(&self) -> Stage {
        Stage::MailFrom
    }

    async fn check(&self, cx: &CheckCtx) -> Result<Verdict, CheckError> {
        if self.mode == SpfAtMail::Off {
            return Ok(Verdict::Pass);
        }
        let ip = cx.client.ip().to_canonical();
        let helo = cx.helo.as_deref().unwrap_or("");
        let mail_from = cx.mail_from.as_deref().unwrap_or("");
        let evaluated =
            self.results
                .evaluate(&self.dns, &self.caches, ip, helo, mail_from, &self.hostname);
        // DNS slower than the timeout is DNS failing: a temperror, which `mode` decides
        // (not the pipeline's deadline, which would let the sender through unjudged).
        let result = match tokio::time::timeout(self.timeout, evaluated).await {
            Ok(out) => out.result(),
            Err(_) => {
                tracing::debug!(%ip, mail_from, "spf_at_mail: no answer within {:?}", self.timeout);
                SpfResult::TempError
            }
        };
        let domain = mail_from.rsplit_once('@').map_or(helo, |(_, d)| d);
        Ok(match (result, self.mode) {
            (SpfResult::Fail, _) => Verdict::Reject {
                reason: Reason::Spf(format!(
                    "SPF of {domain} does not allow {ip} to send its mail"
                )),
            },
            (SpfResult::TempError, SpfAtMail::Defer) => Verdict::Defer {
                reason: Reason::Spf(format!(
                    "SPF of {domain} could not be checked now, try again later"
                )),
            },
            (result, _) => Verdict::Tag {
                score: 0.0,
                header: String::new(),
                findings: Findings {
                    spf: Some(spf_name(result).into()),
                    ..Findings::default()
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdns::{Answers, Zone, dns_config, silent_server};

    fn cx(client: &str, mail_from: &str) -> CheckCtx {
        let mut cx = CheckCtx::new(Stage::MailFrom, format!("{client}:40000").parse().unwrap());
        cx.helo = Some("mail.example.test".into());
        cx.mail_from = Some(mail_from.into());
        cx
    }

    fn check(server: std::net::SocketAddr, mode: SpfAtMail) -> SpfAtMailCheck {
        SpfAtMailCheck::new(
            mode,
            "mx.intake.test".into(),
            Duration::from_secs(10),
            crate::dns::resolver(&dns_config(server)).unwrap(),
            Arc::new(Caches::new(100)),
            Arc::new(SpfResults::new(100)),
        )
    }

    fn verdict_code(v: &Verdict) -> &'static str {
        match v {
            Verdict::Reject {
                reason: Reason::Spf(_),
            } => "reject",
            Verdict::Defer {
                reason: Reason::Spf(_),
            } => "defer",
            Verdict::Tag { .. } | Verdict::Pass => "go on",
            _ => "other",
        }
    }

    #[tokio::test]
    async fn a_fail_is_refused_at_mail_and_a_pass_goes_on() {
        let server = Zone::default()
            .txt("example.test", "v=spf1 ip4:192.0.2.0/24 -all")
            .serve()
            .await;
        let c = check(server, SpfAtMail::Reject);
        let allowed = c
            .check(&cx("192.0.2.7", "alice@example.test"))
            .await
            .unwrap();
        assert_eq!(verdict_code(&allowed), "go on");
        let forged = c
            .check(&cx("198.51.100.9", "alice@example.test"))
            .await
            .unwrap();
        assert_eq!(verdict_code(&forged), "reject");
        let off = check(server, SpfAtMail::Off)
            .check(&cx("198.51.100.9", "alice@example.test"))
            .await
            .unwrap();
        assert_eq!(verdict_code(&off), "go on");
    }

    #[tokio::test]
    async fn a_temperror_is_deferred_only_when_asked() {
        let (silent, _keep) = silent_server().await;
        let defer = check(silent, SpfAtMail::Defer)
            .check(&cx("192.0.2.7", "alice@example.test"))
            .await
            .unwrap();
        assert_eq!(verdict_code(&defer), "defer");
        let reject = check(silent, SpfAtMail::Reject)
            .check(&cx("192.0.2.7", "alice@example.test"))
            .await
            .unwrap();
        assert_eq!(verdict_code(&reject), "go on");
    }

    #[tokio::test]
    async fn a_temperror_is_not_kept_so_a_retry_is_evaluated_again() {
        let server = Zone::default()
            .txt("example.test", "v=spf1 ip4:192.0.2.0/24 -all")
            .start()
            .await;
        server.answer(Answers::ServFail);
        let c = check(server.addr, SpfAtMail::Defer);
        let first = c
            .check(&cx("192.0.2.7", "alice@example.test"))
            .await
            .unwrap();
        assert_eq!(verdict_code(&first), "defer");
        // DNS answers again: the sender's retry a minute later is judged on the record,
        // not deferred again from a kept temperror.
        server.answer(Answers::Records);
        let retry = c
            .check(&cx("192.0.2.7", "alice@example.test"))
            .await
            .unwrap();
        assert_eq!(verdict_code(&retry), "go on", "{retry:?}");
    }

    /// MAIL FROM and the end of data of one transaction, as the registry wires them.
    async fn transaction(profiles: &crate::Profiles, client: &str) -> (Vec<Verdict>, Vec<Verdict>) {
        let pipeline = profiles.default_pipeline();
        let mail = pipeline.run(&cx(client, "alice@example.test")).await;
        let mut data = cx(client, "alice@example.test");
        data.stage = Stage::Data;
        data.recipients = vec!["bob@intake.test".into()];
        data.content =
            bytes::Bytes::from_static(b"From: alice@example.test\r\nSubject: hi\r\n\r\nhi\r\n");
        (mail, pipeline.run(&data).await)
    }

    fn wired(dns: crate::DnsConfig, mode: SpfAtMail, timeout: Duration) -> crate::Profiles {
        let mut cfg = crate::PolicyConfig {
            dns,
            ..crate::PolicyConfig::default()
        };
        cfg.sender_auth.enabled = true;
        cfg.sender_auth.spf_at_mail = mode;
        cfg.sender_auth.timeout = timeout;
        let shared = crate::PolicyShared::with_store(
            intake_store::memory::store(),
            Arc::new(intake_core::SystemClock),
        );
        crate::Profiles::build(&cfg, &shared).unwrap()
    }

    #[tokio::test]
    async fn dns_slower_than_the_timeout_is_a_temperror_deferred_in_defer_mode() {
        let (silent, _keep) = silent_server().await;
        // Each query may take 5 s, the check only 300 ms.
        let dns = crate::DnsConfig {
            timeout: Duration::from_secs(5),
            ..dns_config(silent)
        };
        let p = wired(dns.clone(), SpfAtMail::Defer, Duration::from_millis(300));
        let mail = p
            .default_pipeline()
            .run(&cx("192.0.2.7", "alice@example.test"))
            .await;
        assert_eq!(
            mail,
            [Verdict::Defer {
                reason: Reason::Spf(
                    "SPF of example.test could not be checked now, try again later".into()
                )
            }]
        );
        // With "reject" the sender goes on, recorded as temperror.
        let p = wired(dns, SpfAtMail::Reject, Duration::from_millis(300));
        let mail = p
            .default_pipeline()
            .run(&cx("192.0.2.7", "alice@example.test"))
            .await;
        match &mail[..] {
            [Verdict::Tag { findings, .. }] => {
                assert_eq!(findings.spf.as_deref(), Some("temperror"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn the_end_of_data_reuses_the_result_of_mail_from_as_wired() {
        // TTL 0: neither hickory nor the parsed-record caches keep the record, so every
        // evaluation that is not the kept result asks the server.
        let server = Zone::default()
            .ttl(0)
            .txt("example.test", "v=spf1 ip4:192.0.2.0/24 -all")
            .start()
            .await;
        let p = wired(
            dns_config(server.addr),
            SpfAtMail::Reject,
            Duration::from_secs(5),
        );
        let (mail, data) = transaction(&p, "192.0.2.7").await;
        assert_eq!(verdict_code(&mail[0]), "go on");
        match &data[..] {
            [Verdict::Tag { findings, .. }] => assert_eq!(findings.spf.as_deref(), Some("pass")),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            server.queries("example.test", hickory_proto::rr::RecordType::TXT),
            1,
            "one SPF lookup for MAIL FROM and the end of data"
        );
        // The next transaction evaluates again (the record may have changed).
        transaction(&p, "192.0.2.7").await;
        assert_eq!(
            server.queries("example.test", hickory_proto::rr::RecordType::TXT),
            2
        );
    }
}
