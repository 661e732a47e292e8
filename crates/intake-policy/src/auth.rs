//! SPF, DKIM, DMARC and ARC (mail-auth), at the end of data, when the whole message is
//! known: SPF of the MAIL FROM domain (of the HELO name for the null sender), every DKIM
//! signature, the ARC chain, and DMARC over the SPF and DKIM results. The results become an
//! `Authentication-Results:` header (RFC 8601) with our host name as authserv-id, and are
//! stored with the message.
//!
//! With `dmarc_enforce` on, a message whose From domain publishes `p=reject` and that fails
//! DMARC is refused with `550 5.7.1`. A DMARC lookup that fails (DNS down) is then "could
//! not decide" and `on_error` applies; without enforcement it is recorded as `temperror`.
//! `p=quarantine` is recorded (symbol `DMARC_POLICY_QUARANTINE`), never refused.

use std::sync::Arc;
use std::time::Duration;

use crate::dns::Caches;
use async_trait::async_trait;
use intake_core::{Check, CheckCtx, CheckError, Findings, OnError, Reason, Stage, Verdict};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimResult, DmarcResult, MessageAuthenticator,
};

/// Settings of the sender authentication check.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Off by default.
    pub enabled: bool,
    /// The authserv-id of our `Authentication-Results:` header: `smtp.hostname`.
    pub hostname: String,
    /// Refuse messages that fail DMARC when the domain's policy is `reject`.
    pub dmarc_enforce: bool,
    /// How long the lookups may take.
    pub timeout: Duration,
    /// When DMARC cannot be evaluated while enforcing: accept (default) or defer.
    pub on_error: OnError,
    /// SPF decided at MAIL FROM too (`sender_auth.spf_at_mail`).
    pub spf_at_mail: crate::spf::SpfAtMail,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: false,
            hostname: "localhost".into(),
            dmarc_enforce: false,
            timeout: Duration::from_secs(10),
            on_error: OnError::FailOpen,
            spf_at_mail: crate::spf::SpfAtMail::Off,
        }
    }
}

/// The SPF/DKIM/DMARC/ARC check (at end of data).
pub struct SenderAuth {
    cfg: AuthConfig,
    dns: Arc<MessageAuthenticator>,
    caches: Arc<Caches>,
    /// SPF results found at MAIL FROM, reused here.
    spf_results: Option<Arc<crate::spf::SpfResults>>,
}

impl SenderAuth {
    /// The check, querying through the shared resolver and keeping parsed records in
    /// `caches`.
    pub fn new(cfg: AuthConfig, dns: Arc<MessageAuthenticator>, caches: Arc<Caches>) -> SenderAuth {
        SenderAuth {
            cfg,
            dns,
            caches,
            spf_results: None,
        }
    }

    /// Reuses the SPF results the MAIL FROM check keeps in `results`.
    pub fn with_spf_results(mut self, results: Arc<crate::spf::SpfResults>) -> SenderAuth {
        self.spf_results = Some(results);
        self
    }
}

fn dkim_name(r: &DkimResult) -> &'static str {
    match r {
        DkimResult::Pass => "pass",
        DkimResult::Neutral(_) => "neutral",
        DkimResult::Fail(_) => "fail",
        DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
}

fn dmarc_name(r: &DmarcResult) -> &'static str {
    match r {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail(_) => "fail",
        DmarcResult::TempError(_) => "temperror",
        DmarcResult::PermError(_) => "permerror",
        DmarcResult::None => "none",
    }
}

fn policy_name(p: Policy) -> &'static str {
    match p {
        Policy::None => "none",
        Policy::Quarantine => "quarantine",
        Policy::Reject => "reject",
        Policy::Unspecified => "unspecified",
    }
}

#[async_trait]
impl Check for SenderAuth {
    fn name(&self) -> &'static str {
        "sender_auth"
    }

    fn stage(&self) -> Stage {
        Stage::Data
    }

    async fn check(&self, cx: &CheckCtx) -> Result<Verdict, CheckError> {
        let ip = cx.client.ip().to_canonical();
        let helo = cx.helo.as_deref().unwrap_or("");
        let mail_from = cx.mail_from.as_deref().unwrap_or("");
        let host = self.cfg.hostname.as_str();
        let dns = &self.dns;
        let c = &*self.caches;

        let spf = match &self.spf_results {
            Some(results) => {
                results
                    .take_or_evaluate(dns, c, ip, helo, mail_from, host)
                    .await
            }
            None if mail_from.is_empty() => {
                dns.verify_spf(c.params(SpfParameters::verify_ehlo(ip, helo, host)))
                    .await
            }
            None => {
                dns.verify_spf(c.params(SpfParameters::verify_mail_from(ip, helo, host, mail_from)))
                    .await
            }
        };
        let mut ar = AuthenticationResults::new(host);
        let mut findings = Findings {
            spf: Some(crate::spf::spf_name(spf.result()).into()),
            ..Findings::default()
        };
        let Some(msg) = AuthenticatedMessage::parse(&cx.content) else {
            // Not a message mail-auth can read: only SPF can be said.
            ar = if mail_from.is_empty() {
                ar.with_spf_ehlo_result(&spf, ip, helo)
            } else {
                ar.with_spf_mailfrom_result(&spf, ip, mail_from, helo)
            };
            return Ok(Verdict::Tag {
                score: 0.0,
                header: ar.to_header(),
                findings,
            });
        };
        let dkim = dns.verify_dkim(c.params(&msg)).await;
        let arc = dns.verify_arc(c.params(&msg)).await;
        let mail_from_domain = mail_from.rsplit_once('@').map_or(helo, |(_, d)| d);
        let dmarc = dns
            .verify_dmarc(c.params(DmarcParameters::new(&msg, &dkim, mail_from_domain, &spf)))
            .await;

        let best_dkim = dkim
            .iter()
            .map(|d| d.result())
            .min_by_key(|r| match r {
                DkimResult::Pass => 0,
                DkimResult::Fail(_) => 1,
                DkimResult::Neutral(_) => 2,
                DkimResult::TempError(_) => 3,
                DkimResult::PermError(_) => 4,
                DkimResult::None => 5,
            })
            .map_or("none", dkim_name);
        findings.dkim = Some(best_dkim.into());
        findings.arc = Some(dkim_name(arc.result()).into());
        let dmarc_result = dmarc.result();
        findings.dmarc = Some(if dmarc.domain().is_empty() {
            dmarc_name(&dmarc_result).to_string()
        } else {
            format!(
                "{} (p={})",
                dmarc_name(&dmarc_result),
                policy_name(dmarc.policy())
            )
        });

        ar = ar.with_dkim_results(&dkim, msg.from());
        ar = if mail_from.is_empty() {
            ar.with_spf_ehlo_result(&spf, ip, helo)
        } else {
            ar.with_spf_mailfrom_result(&spf, ip, mail_from, helo)
        };
        ar = ar.with_arc_result(&arc, ip).with_dmarc_result(&dmarc);

        let failed = matches!(dmarc_result, DmarcResult::Fail(_));
        if failed && dmarc.policy() == Policy::Quarantine {
            findings.symbols.push("DMARC_POLICY_QUARANTINE".into());
        }
        if failed && dmarc.policy() == Policy::Reject {
            findings.symbols.push("DMARC_POLICY_REJECT".into());
            if self.cfg.dmarc_enforce {
                return Ok(Verdict::Reject {
                    reason: Reason::Policy(format!(
                        "DMARC policy of {} rejects this message",
                        dmarc.domain()
                    )),
                });
            }
        }
        if self.cfg.dmarc_enforce && matches!(dmarc_result, DmarcResult::TempError(_)) {
            return Err(CheckError::Backend(format!(
                "DMARC of {} could not be evaluated (DNS)",
                msg.from()
            )));
        }
        Ok(Verdict::Tag {
            score: 0.0,
            header: ar.to_header(),
            findings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdns::{Zone, dns_config, silent_server};
    use mail_auth::common::crypto::Ed25519Key;
    use mail_auth::dkim::DkimSigner;

    const HOST: &str = "mx.intake.test";
    const MESSAGE: &str = "From: Alice <alice@example.test>\r\nTo: bob@intake.test\r\n\
                           Subject: hello\r\nMessage-ID: <1@example.test>\r\n\r\nHi Bob.\r\n";

    fn base64(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// The fixture zone (SPF, the DKIM key, DMARC p=reject) and a message signed with the
    /// key it publishes.
    async fn fixture() -> (std::net::SocketAddr, String) {
        let pkcs8 = Ed25519Key::generate_pkcs8().unwrap();
        let key = Ed25519Key::from_pkcs8_der(&pkcs8).unwrap();
        let public = base64(&key.public_key());
        let signature = DkimSigner::from_key(key)
            .domain("example.test")
            .selector("sel")
            .headers(["From", "To", "Subject", "Message-ID"])
            .sign(MESSAGE.as_bytes())
            .unwrap();
        let signed = format!("{}{MESSAGE}", signature.to_header());
        let server = Zone::default()
            .txt("example.test", "v=spf1 ip4:192.0.2.0/24 -all")
            .txt(
                "sel._domainkey.example.test",
                &format!("v=DKIM1; k=ed25519; p={public}"),
            )
            .txt("_dmarc.example.test", "v=DMARC1; p=reject")
            .serve()
            .await;
        (server, signed)
    }

    fn cx(client: &str, content: &str) -> CheckCtx {
        let mut cx = CheckCtx::new(Stage::Data, format!("{client}:40000").parse().unwrap());
        cx.helo = Some("mail.example.test".into());
        cx.mail_from = Some("alice@example.test".into());
        cx.recipients = vec!["bob@intake.test".into()];
        cx.content = bytes::Bytes::copy_from_slice(content.as_bytes());
        cx
    }

    fn check(server: std::net::SocketAddr, enforce: bool) -> SenderAuth {
        SenderAuth::new(
            AuthConfig {
                enabled: true,
                hostname: HOST.into(),
                dmarc_enforce: enforce,
                ..AuthConfig::default()
            },
            crate::dns::resolver(&dns_config(server)).unwrap(),
            Arc::new(Caches::new(100)),
        )
    }

    #[tokio::test]
    async fn a_signed_message_from_an_allowed_client_passes_everything() {
        let (server, signed) = fixture().await;
        let v = check(server, true)
            .check(&cx("192.0.2.7", &signed))
            .await
            .unwrap();
        let Verdict::Tag {
            header, findings, ..
        } = v
        else {
            panic!("{v:?}")
        };
        assert_eq!(findings.spf.as_deref(), Some("pass"));
        assert_eq!(findings.dkim.as_deref(), Some("pass"));
        assert_eq!(findings.dmarc.as_deref(), Some("pass (p=reject)"));
        assert_eq!(findings.arc.as_deref(), Some("none"));
        assert!(
            header.starts_with("Authentication-Results: mx.intake.test;"),
            "{header}"
        );
        for part in [
            "dkim=pass",
            "spf=pass",
            "dmarc=pass",
            "header.d=example.test",
        ] {
            assert!(header.contains(part), "{part} missing from {header}");
        }
        assert!(header.ends_with("\r\n"));
    }

    #[tokio::test]
    async fn dmarc_reject_is_enforced_only_when_turned_on() {
        let (server, _) = fixture().await;
        // Unsigned, from a client SPF does not allow: DMARC fails, the domain says reject.
        let forged = cx("203.0.113.5", MESSAGE);
        assert_eq!(
            check(server, true).check(&forged).await.unwrap(),
            Verdict::Reject {
                reason: Reason::Policy("DMARC policy of example.test rejects this message".into())
            }
        );
        let Verdict::Tag {
            header, findings, ..
        } = check(server, false).check(&forged).await.unwrap()
        else {
            panic!()
        };
        assert_eq!(findings.spf.as_deref(), Some("fail"));
        assert_eq!(findings.dkim.as_deref(), Some("none"));
        assert_eq!(findings.dmarc.as_deref(), Some("fail (p=reject)"));
        assert_eq!(findings.symbols, ["DMARC_POLICY_REJECT"]);
        assert!(header.contains("dmarc=fail"), "{header}");
        assert!(header.contains("spf=fail"), "{header}");
        // A tampered signed message fails DKIM.
        let (server, signed) = fixture().await;
        let tampered = signed.replace("Subject: hello", "Subject: send money");
        let Verdict::Tag { findings, .. } = check(server, false)
            .check(&cx("192.0.2.7", &tampered))
            .await
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(findings.dkim.as_deref(), Some("fail"));
        assert_eq!(
            findings.dmarc.as_deref(),
            Some("pass (p=reject)"),
            "SPF aligns"
        );
    }

    #[tokio::test]
    async fn parsed_records_are_cached_until_their_ttl() {
        let (server, signed) = fixture().await;
        let caches = Arc::new(Caches::new(100));
        let cfg = AuthConfig {
            enabled: true,
            hostname: HOST.into(),
            ..AuthConfig::default()
        };
        let findings = |v: Verdict| match v {
            Verdict::Tag { findings, .. } => findings,
            other => panic!("{other:?}"),
        };
        let first = SenderAuth::new(
            cfg.clone(),
            crate::dns::resolver(&dns_config(server)).unwrap(),
            caches.clone(),
        );
        let f = findings(first.check(&cx("192.0.2.7", &signed)).await.unwrap());
        assert_eq!(f.dmarc.as_deref(), Some("pass (p=reject)"));
        // A resolver that gets no answers: the SPF record and the DKIM key come from the
        // parsed-record cache. (DMARC's tree walk also asks the parent names, whose
        // negative answers only hickory's own cache keeps, so it is not compared here.)
        let (silent, _keep) = silent_server().await;
        let second = SenderAuth::new(
            cfg,
            crate::dns::resolver(&dns_config(silent)).unwrap(),
            caches,
        );
        let g = findings(second.check(&cx("192.0.2.7", &signed)).await.unwrap());
        assert_eq!(g.spf.as_deref(), Some("pass"));
        assert_eq!(g.dkim.as_deref(), Some("pass"));
    }

    #[tokio::test]
    async fn an_arc_sealed_forward_is_verified() {
        // A mailing list at forwarder.test received the signed message, verified it and
        // sealed its results with the key its zone publishes.
        let (_, signed) = fixture().await;
        let pkcs8 = Ed25519Key::generate_pkcs8().unwrap();
        let key = Ed25519Key::from_pkcs8_der(&pkcs8).unwrap();
        let public = base64(&key.public_key());
        let message = AuthenticatedMessage::parse(signed.as_bytes()).unwrap();
        let results = AuthenticationResults::new("forwarder.test");
        let arc_in = SenderAuth::new(
            AuthConfig::default(),
            crate::dns::resolver(&dns_config(silent_server().await.0)).unwrap(),
            Arc::new(Caches::new(100)),
        );
        // No ARC set yet: the chain is "none", which may be sealed.
        let none = arc_in.dns.verify_arc(&message).await;
        let set = mail_auth::arc::ArcSealer::from_key(key)
            .domain("forwarder.test")
            .selector("arc")
            .headers(["From", "To", "Subject", "DKIM-Signature"])
            .seal(&message, &results, &none)
            .unwrap();
        let sealed = format!("{}{}{signed}", set.to_header(), results.to_header());
        let server = Zone::default()
            .txt(
                "arc._domainkey.forwarder.test",
                &format!("v=DKIM1; k=ed25519; p={public}"),
            )
            .serve()
            .await;
        let Verdict::Tag {
            header, findings, ..
        } = check(server, false)
            .check(&cx("198.51.100.9", &sealed))
            .await
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(findings.arc.as_deref(), Some("pass"), "{header}");
        assert!(header.contains("arc=pass"), "{header}");
    }

    #[tokio::test]
    async fn dns_down_is_temperror_and_defers_when_enforcing_and_configured_so() {
        let (addr, _keep) = silent_server().await;
        let c = Arc::new(check(addr, true));
        assert!(c.check(&cx("192.0.2.7", MESSAGE)).await.is_err());
        let mut p = intake_core::Pipeline::new();
        p.add(c, Duration::from_secs(10), OnError::Defer);
        assert_eq!(
            p.run(&cx("192.0.2.7", MESSAGE)).await,
            vec![Verdict::Defer {
                reason: Reason::CheckFailed
            }]
        );
        // Not enforcing: recorded as temperror, the message goes on.
        let (addr, _keep) = silent_server().await;
        let Verdict::Tag { findings, .. } = check(addr, false)
            .check(&cx("192.0.2.7", MESSAGE))
            .await
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(findings.spf.as_deref(), Some("temperror"));
    }
}
