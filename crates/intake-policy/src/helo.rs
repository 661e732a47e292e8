//! HELO checks: optionally refuse EHLO/HELO names that are not a fully-qualified domain
//! name (`localhost`, `mypc`) or that are a bare IP address (`192.0.2.7`, `[192.0.2.7]`).
//! Real mail servers introduce themselves by name (RFC 5321 §4.1.1.1); spamware often does
//! not. Refused with `550 5.7.1 Helo command rejected: ...`; the client may try again
//! with another name. Meant for MX listeners (clients that send from a laptop do not have
//! a name).

use async_trait::async_trait;
use intake_core::{Check, CheckCtx, CheckError, Reason, Stage, Verdict};

/// Settings of the HELO checks.
#[derive(Debug, Clone, Default)]
pub struct HeloConfig {
    /// Refuse names that are not fully-qualified.
    pub reject_non_fqdn: bool,
    /// Refuse bare IP addresses and address literals.
    pub reject_bare_ip: bool,
}

impl HeloConfig {
    /// Whether any HELO check is on.
    pub fn enabled(&self) -> bool {
        self.reject_non_fqdn || self.reject_bare_ip
    }
}

/// The HELO check.
pub struct HeloCheck {
    cfg: HeloConfig,
}

impl HeloCheck {
    /// The check with these settings.
    pub fn new(cfg: HeloConfig) -> HeloCheck {
        HeloCheck { cfg }
    }
}

/// `192.0.2.7`, `[192.0.2.7]`, `[IPv6:2001:db8::1]`.
pub fn is_bare_ip(name: &str) -> bool {
    let inner = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    let inner = inner
        .strip_prefix("IPv6:")
        .or_else(|| inner.strip_prefix("ipv6:"))
        .unwrap_or(inner);
    inner.parse::<std::net::IpAddr>().is_ok()
}

/// A fully-qualified domain name: two labels at least, letters, digits and hyphens, no
/// label longer than 63, a top-level label that is not all digits.
pub fn is_fqdn(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.len() > 253 || is_bare_ip(name) {
        return false;
    }
    let labels: Vec<&str> = name.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        && !labels
            .last()
            .is_some_and(|t| t.chars().all(|c| c.is_ascii_digit()))
}

#[async_trait]
impl Check for HeloCheck {
    fn name(&self) -> &'static str {
        "helo"
    }

    fn stage(&self) -> Stage {
        Stage::Helo
    }

    async fn check(&self, cx: &CheckCtx) -> Result<Verdict, CheckError> {
        let name = cx.helo.as_deref().unwrap_or("");
        let refuse = |why: &str| {
            Ok(Verdict::Reject {
                reason: Reason::Policy(format!("Helo command rejected: {why}")),
            })
        };
        if self.cfg.reject_bare_ip && is_bare_ip(name) {
            return refuse("use your host name, not an IP address");
        }
        if self.cfg.reject_non_fqdn && !is_bare_ip(name) && !is_fqdn(name) {
            return refuse("need fully-qualified hostname");
        }
        Ok(Verdict::Pass)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_helo(name: &str) -> CheckCtx {
        let mut cx = CheckCtx::new(Stage::Helo, "192.0.2.1:25".parse().unwrap());
        cx.helo = Some(name.into());
        cx
    }

    #[test]
    fn names() {
        for ok in ["mail.example.com", "MX1.Example.ORG.", "a-b.c_d.example"] {
            assert!(is_fqdn(ok), "{ok}");
        }
        for bad in [
            "localhost",
            "mypc",
            "",
            "a..b",
            "-x.example",
            "1.2.3.4",
            "host.123",
        ] {
            assert!(!is_fqdn(bad), "{bad}");
        }
        for ip in [
            "192.0.2.7",
            "[192.0.2.7]",
            "[IPv6:2001:db8::1]",
            "2001:db8::1",
        ] {
            assert!(is_bare_ip(ip), "{ip}");
        }
        assert!(!is_bare_ip("mail.example.com"));
    }

    #[tokio::test]
    async fn refuses_only_what_is_configured() {
        let both = HeloCheck::new(HeloConfig {
            reject_non_fqdn: true,
            reject_bare_ip: true,
        });
        let reason = |v: Verdict| match v {
            Verdict::Reject {
                reason: Reason::Policy(t),
            } => t,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            reason(both.check(&at_helo("[192.0.2.7]")).await.unwrap()),
            "Helo command rejected: use your host name, not an IP address"
        );
        assert_eq!(
            reason(both.check(&at_helo("localhost")).await.unwrap()),
            "Helo command rejected: need fully-qualified hostname"
        );
        assert_eq!(
            both.check(&at_helo("mx.example.com")).await.unwrap(),
            Verdict::Pass
        );
        let fqdn_only = HeloCheck::new(HeloConfig {
            reject_non_fqdn: true,
            reject_bare_ip: false,
        });
        assert_eq!(
            fqdn_only.check(&at_helo("192.0.2.7")).await.unwrap(),
            Verdict::Pass
        );
        let ip_only = HeloCheck::new(HeloConfig {
            reject_non_fqdn: false,
            reject_bare_ip: true,
        });
        assert_eq!(
            ip_only.check(&at_helo("localhost")).await.unwrap(),
            Verdict::Pass
        );
    }
}
