//! SPF at MAIL FROM (`sender_auth.spf_at_mail`): the SPF result of the MAIL FROM domain
//! (of the HELO name for the null sender) decided before any data is read. A `fail` is
//! refused with `550 5.7.23`; with `"defer"`, a `temperror` is deferred with `451 4.7.24`.
//! The result is kept for the end-of-data evaluation ([`SpfResults`]), which builds DMARC
//! and `Authentication-Results:` on it instead of asking DNS again.

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

/// SPF results by client, HELO name and MAIL FROM, kept for a few minutes so that the end
/// of data reuses what MAIL FROM found.
pub struct SpfResults(moka::sync::Cache<(IpAddr, String, String), SpfOutput>);

impl SpfResults {
    /// Room for `capacity` results, each kept five minutes.
    pub fn new(capacity: u64) -> SpfResults {
        SpfResults(
            moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(Duration::from_secs(300))
                .build(),
        )
    }

    /// The SPF result for this client, HELO name and MAIL FROM (the HELO name's for the
    /// null sender): from the cache, else asked through `dns` and kept.
    pub async fn verify(
        &self,
        dns: &MessageAuthenticator,
        caches: &Caches,
        ip: IpAddr,
        helo: &str,
        mail_from: &str,
        host: &str,
    ) -> SpfOutput {
        let key = (
            ip,
            helo.to_ascii_lowercase(),
            mail_from.to_ascii_lowercase(),
        );
        if let Some(found) = self.0.get(&key) {
            return found;
        }
        let out = if mail_from.is_empty() {
            dns.verify_spf(caches.params(SpfParameters::verify_ehlo(ip, helo, host)))
                .await
        } else {
            dns.verify_spf(
                caches.params(SpfParameters::verify_mail_from(ip, helo, host, mail_from)),
            )
            .await
        };
        self.0.insert(key, out.clone());
        out
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
    dns: Arc<MessageAuthenticator>,
    caches: Arc<Caches>,
    results: Arc<SpfResults>,
}

impl SpfAtMailCheck {
    /// The check in `mode`, asking through the shared resolver and caches and keeping its
    /// results in `results` for the end of data.
    pub fn new(
        mode: SpfAtMail,
        hostname: String,
        dns: Arc<MessageAuthenticator>,
        caches: Arc<Caches>,
        results: Arc<SpfResults>,
    ) -> SpfAtMailCheck {
        SpfAtMailCheck {
            mode,
            hostname,
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
        let out = self
            .results
            .verify(&self.dns, &self.caches, ip, helo, mail_from, &self.hostname)
            .await;
        let domain = mail_from.rsplit_once('@').map_or(helo, |(_, d)| d);
        Ok(match (out.result(), self.mode) {
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
    use crate::testdns::{Zone, dns_config, silent_server};

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
    async fn the_end_of_data_reuses_the_result_of_mail_from() {
        let server = Zone::default()
            .txt("example.test", "v=spf1 ip4:192.0.2.0/24 -all")
            .serve()
            .await;
        let dns = crate::dns::resolver(&dns_config(server)).unwrap();
        let caches = Arc::new(Caches::new(100));
        let results = SpfResults::new(100);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let first = results
            .verify(&dns, &caches, ip, "h.test", "a@example.test", "mx")
            .await;
        assert_eq!(first.result(), SpfResult::Pass);
        // DNS away now: the kept result still answers.
        let (silent, _keep) = silent_server().await;
        let away = crate::dns::resolver(&dns_config(silent)).unwrap();
        let again = results
            .verify(
                &away,
                &Caches::new(100),
                ip,
                "H.test",
                "A@example.test",
                "mx",
            )
            .await;
        assert_eq!(again, first);
    }
}
