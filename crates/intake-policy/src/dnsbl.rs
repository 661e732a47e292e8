//! DNS blocklists and allowlists, scored the way Postfix's postscreen does it.
//!
//! Each zone is `zone[=filter][*weight]`: the client's address, reversed, is looked up under
//! the zone (`7.2.0.192.zen.example`); when it has an A record that the filter accepts, the
//! zone's weight (default 1) is added to the client's score. A filter is a dotted quad
//! whose octets may be a number, a range `[2..11]` or a list `[2;4;10..11]`; no filter:
//! any answer counts. Negative weights are allowlists. When the score reaches `threshold`
//! the client is refused at connect (`554 5.7.1 Service unavailable; client [ip] blocked
//! using zone`) or, with `action = "tag"`, its messages are marked. A score below zero is
//! "allowlisted" (recorded, nothing refused). The lists that matched are stored with every
//! message of the connection.
//!
//! A zone that cannot be asked (DNS down, timeout) is logged; if the zones that did answer
//! do not already decide, the check cannot decide and its `on_error` applies.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use intake_core::{Check, CheckCtx, CheckError, Findings, OnError, Reason, Stage, Verdict};
use mail_auth::MessageAuthenticator;
use mail_auth::hickory_resolver::proto::rr::{RData, RecordType};

/// One octet of a filter: the values it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Octet(Vec<(u8, u8)>);

impl Octet {
    fn parse(s: &str) -> Option<Octet> {
        let inner = match s.strip_prefix('[') {
            Some(rest) => rest.strip_suffix(']')?,
            None => s,
        };
        let mut ranges = Vec::new();
        for part in inner.split(';') {
            let (lo, hi) = match part.split_once("..") {
                Some((lo, hi)) => (lo.trim().parse().ok()?, hi.trim().parse().ok()?),
                None => {
                    let v = part.trim().parse().ok()?;
                    (v, v)
                }
            };
            if lo > hi {
                return None;
            }
            ranges.push((lo, hi));
        }
        Some(Octet(ranges))
    }

    fn accepts(&self, v: u8) -> bool {
        self.0.iter().any(|&(lo, hi)| lo <= v && v <= hi)
    }
}

/// One DNS list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// The zone queried, without a trailing dot.
    pub zone: String,
    filter: Option<[Octet; 4]>,
    /// Added to the score on a match; negative for allowlists.
    pub weight: i32,
}

impl Zone {
    /// Parses `zone[=filter][*weight]`, e.g. `zen.example=127.0.0.[2..11]*3` or
    /// `list.dnswl.example=127.0.[0..255].[1..3]*-2`.
    pub fn parse(spec: &str) -> Result<Zone, String> {
        let bad = || format!("bad DNS list {spec:?}: use zone[=filter][*weight]");
        let (rest, weight) = match spec.rsplit_once('*') {
            Some((rest, w)) => (rest, w.trim().parse::<i32>().map_err(|_| bad())?),
            None => (spec, 1),
        };
        let (zone, filter) = match rest.split_once('=') {
            Some((zone, f)) => {
                let octets: Vec<Octet> = split_octets(f)
                    .iter()
                    .map(|o| Octet::parse(o))
                    .collect::<Option<_>>()
                    .ok_or_else(bad)?;
                (
                    zone,
                    Some(<[Octet; 4]>::try_from(octets).map_err(|_| bad())?),
                )
            }
            None => (rest, None),
        };
        let zone = zone.trim().trim_end_matches('.').to_ascii_lowercase();
        if zone.is_empty() || zone.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(bad());
        }
        Ok(Zone {
            zone,
            filter,
            weight,
        })
    }

    fn accepts(&self, answer: std::net::Ipv4Addr) -> bool {
        match &self.filter {
            None => true,
            Some(f) => f.iter().zip(answer.octets()).all(|(o, v)| o.accepts(v)),
        }
    }
}

/// Splits a filter at the dots that are not inside `[..]`.
fn split_octets(f: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut depth = 0;
    for c in f.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            '.' if depth == 0 => {
                out.push(String::new());
                continue;
            }
            _ => {}
        }
        out.last_mut().expect("never empty").push(c);
    }
    out
}

/// The symbol of a client whose DNS list score is below zero (allowlisted): greylisting
/// skips it.
pub const ALLOWLISTED: &str = "DNSWL_ALLOWLISTED";

/// What a listed client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsblAction {
    /// Refused at connect (554).
    #[default]
    Reject,
    /// Accepted; its messages get an `X-Intake-DNSBL:` header and the score.
    Tag,
}

/// Settings of the DNS lists.
#[derive(Debug, Clone)]
pub struct DnsblConfig {
    /// Off by default.
    pub enabled: bool,
    /// The lists and their weights.
    pub zones: Vec<Zone>,
    /// Score at which a client counts as listed.
    pub threshold: i32,
    /// What to do with a listed client.
    pub action: DnsblAction,
    /// How long the lookups may take (all zones are asked at once).
    pub timeout: Duration,
    /// When the lookups fail: accept (default) or defer.
    pub on_error: OnError,
}

impl Default for DnsblConfig {
    fn default() -> Self {
        DnsblConfig {
            enabled: false,
            zones: Vec::new(),
            threshold: 1,
            action: DnsblAction::Reject,
            timeout: Duration::from_secs(5),
            on_error: OnError::FailOpen,
        }
    }
}

/// The DNS list check (at connect).
pub struct Dnsbl {
    cfg: DnsblConfig,
    dns: Arc<MessageAuthenticator>,
}

impl Dnsbl {
    /// The check, querying through the shared resolver.
    pub fn new(cfg: DnsblConfig, dns: Arc<MessageAuthenticator>) -> Dnsbl {
        Dnsbl { cfg, dns }
    }
}

/// The name to look up for `ip` under `zone`: reversed octets (IPv4) or nibbles (IPv6).
pub fn query_name(ip: IpAddr, zone: &str) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.{zone}.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut name = String::with_capacity(64 + zone.len() + 1);
            for b in v6.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            name.push_str(zone);
            name.push('.');
            name
        }
    }
}

/// One zone's answer: listed (and how), not listed, or the error.
async fn ask(dns: &MessageAuthenticator, ip: IpAddr, zone: &Zone) -> Result<bool, String> {
    match dns
        .resolver()
        .lookup(query_name(ip, &zone.zone), RecordType::A)
        .await
    {
        Ok(lookup) => Ok(lookup.answers().iter().any(|r| match &r.data {
            RData::A(a) => zone.accepts(a.0),
            _ => false,
        })),
        Err(e) if e.is_nx_domain() || e.is_no_records_found() => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

#[async_trait]
impl Check for Dnsbl {
    fn name(&self) -> &'static str {
        "dnsbl"
    }

    fn stage(&self) -> Stage {
        Stage::Connect
    }

    async fn check(&self, cx: &CheckCtx) -> Result<Verdict, CheckError> {
        let ip = cx.client.ip();
        let answers =
            futures_util::future::join_all(self.cfg.zones.iter().map(|z| ask(&self.dns, ip, z)))
                .await;
        let mut score = 0;
        let mut lists = Vec::new();
        let mut failed = Vec::new();
        for (zone, answer) in self.cfg.zones.iter().zip(answers) {
            match answer {
                Ok(true) => {
                    score += zone.weight;
                    lists.push(format!("{}={}", zone.zone, zone.weight));
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(zone = %zone.zone, client = %ip, error = %e, "DNS list lookup failed");
                    failed.push(zone);
                }
            }
        }
        // Would the zones that failed have changed the outcome? Then we cannot decide.
        let could_rise: i32 = failed.iter().map(|z| z.weight.max(0)).sum();
        let could_fall: i32 = failed.iter().map(|z| z.weight.min(0)).sum();
        let listed = score + could_fall >= self.cfg.threshold;
        if listed != (score + could_rise >= self.cfg.threshold) {
            let zones: Vec<&str> = failed.iter().map(|z| z.zone.as_str()).collect();
            return Err(CheckError::Backend(format!(
                "DNS lists {} did not answer",
                zones.join(", ")
            )));
        }
        if listed {
            let blocking: Vec<&str> = lists
                .iter()
                .filter_map(|l| l.split_once('=').map(|(z, _)| z))
                .collect();
            return Ok(match self.cfg.action {
                DnsblAction::Reject => Verdict::Reject {
                    reason: Reason::Policy(format!(
                        "Service unavailable; client [{ip}] blocked using {}",
                        blocking.join(", ")
                    )),
                },
                DnsblAction::Tag => Verdict::Tag {
                    score: score as f32,
                    header: format!(
                        "X-Intake-DNSBL: client [{ip}] listed by {} (score {score})\r\n",
                        blocking.join(", ")
                    ),
                    findings: Findings {
                        symbols: vec!["DNSBL_LISTED".into()],
                        lists,
                        ..Findings::default()
                    },
                },
            });
        }
        if lists.is_empty() {
            return Ok(Verdict::Pass);
        }
        // Listed somewhere but below the threshold, or allowlisted: record it.
        let symbol = if score < 0 {
            ALLOWLISTED
        } else {
            "DNSBL_BELOW_THRESHOLD"
        };
        Ok(Verdict::Tag {
            score: 0.0,
            header: String::new(),
            findings: Findings {
                symbols: vec![symbol.into()],
                lists,
                ..Findings::default()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_specs_parse_like_postscreen() {
        let z = Zone::parse("zen.example=127.0.0.[2..11]*3").unwrap();
        assert_eq!((z.zone.as_str(), z.weight), ("zen.example", 3));
        assert!(z.accepts("127.0.0.2".parse().unwrap()));
        assert!(z.accepts("127.0.0.11".parse().unwrap()));
        assert!(!z.accepts("127.0.0.12".parse().unwrap()));
        let z = Zone::parse("wl.example=127.0.[0..255].[1;3]*-2").unwrap();
        assert_eq!(z.weight, -2);
        assert!(z.accepts("127.0.9.3".parse().unwrap()));
        assert!(!z.accepts("127.0.9.2".parse().unwrap()));
        let z = Zone::parse("plain.example.").unwrap();
        assert_eq!((z.zone.as_str(), z.weight), ("plain.example", 1));
        assert!(z.accepts("127.0.0.99".parse().unwrap()));
        for bad in ["", "x=1.2.3", "x=1.2.3.[5..2]", "x*many", "a b"] {
            assert!(Zone::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn query_names_are_reversed() {
        assert_eq!(
            query_name("192.0.2.7".parse().unwrap(), "zen.example"),
            "7.2.0.192.zen.example."
        );
        let v6 = query_name("2001:db8::1".parse().unwrap(), "l.example");
        assert!(v6.starts_with("1.0.0.0.0.0.0.0"), "{v6}");
        assert!(v6.ends_with("8.b.d.0.1.0.0.2.l.example."), "{v6}");
    }
}

#[cfg(test)]
mod dns_tests {
    use super::*;
    use crate::testdns::{Zone as Fixture, dns_config, silent_server};

    fn at(ip: &str) -> CheckCtx {
        CheckCtx::new(Stage::Connect, format!("{ip}:40000").parse().unwrap())
    }

    async fn lists() -> Arc<MessageAuthenticator> {
        let server = Fixture::default()
            .a("7.2.0.192.bl.test", "127.0.0.2") // listed
            .a("8.2.0.192.bl.test", "127.0.0.2") // listed, and allowlisted below
            .a("8.2.0.192.wl.test", "127.0.9.1")
            .a("9.2.0.192.bl.test", "127.0.0.99") // an answer the filter ignores
            .a("10.2.0.192.weak.test", "127.0.0.2") // below the threshold alone
            .serve()
            .await;
        crate::dns::resolver(&dns_config(server)).unwrap()
    }

    fn cfg(action: DnsblAction) -> DnsblConfig {
        DnsblConfig {
            enabled: true,
            zones: [
                "bl.test=127.0.0.[2..11]*2",
                "wl.test=127.0.[0..255].[1..3]*-3",
                "weak.test*1",
            ]
            .iter()
            .map(|z| Zone::parse(z).unwrap())
            .collect(),
            threshold: 2,
            action,
            ..DnsblConfig::default()
        }
    }

    #[tokio::test]
    async fn every_verdict() {
        let dns = lists().await;
        let reject = Dnsbl::new(cfg(DnsblAction::Reject), dns.clone());
        assert_eq!(
            reject.check(&at("192.0.2.7")).await.unwrap(),
            Verdict::Reject {
                reason: Reason::Policy(
                    "Service unavailable; client [192.0.2.7] blocked using bl.test".into()
                )
            }
        );
        // Not listed anywhere, or only with an answer outside the filter.
        assert_eq!(reject.check(&at("192.0.2.1")).await.unwrap(), Verdict::Pass);
        assert_eq!(reject.check(&at("192.0.2.9")).await.unwrap(), Verdict::Pass);
        // Listed and allowlisted: recorded, not refused.
        match reject.check(&at("192.0.2.8")).await.unwrap() {
            Verdict::Tag {
                findings, header, ..
            } => {
                assert_eq!(findings.symbols, ["DNSWL_ALLOWLISTED"]);
                assert_eq!(findings.lists, ["bl.test=2", "wl.test=-3"]);
                assert!(header.is_empty());
            }
            other => panic!("{other:?}"),
        }
        // Below the threshold: recorded.
        match reject.check(&at("192.0.2.10")).await.unwrap() {
            Verdict::Tag { findings, .. } => {
                assert_eq!(findings.symbols, ["DNSBL_BELOW_THRESHOLD"]);
                assert_eq!(findings.lists, ["weak.test=1"]);
            }
            other => panic!("{other:?}"),
        }
        // Tag instead of reject.
        let tag = Dnsbl::new(cfg(DnsblAction::Tag), dns);
        match tag.check(&at("192.0.2.7")).await.unwrap() {
            Verdict::Tag {
                score,
                header,
                findings,
            } => {
                assert_eq!(score, 2.0);
                assert_eq!(
                    header,
                    "X-Intake-DNSBL: client [192.0.2.7] listed by bl.test (score 2)\r\n"
                );
                assert_eq!(findings.symbols, ["DNSBL_LISTED"]);
                assert_eq!(findings.lists, ["bl.test=2"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn dns_down_cannot_decide_and_the_pipeline_fails_open_or_defers() {
        let (addr, _keep) = silent_server().await;
        let dns = crate::dns::resolver(&dns_config(addr)).unwrap();
        let check = Arc::new(Dnsbl::new(cfg(DnsblAction::Reject), dns));
        let err = check.check(&at("192.0.2.7")).await.unwrap_err();
        assert!(err.to_string().contains("did not answer"), "{err}");
        let mut p = intake_core::Pipeline::new();
        p.add(check.clone(), Duration::from_secs(3), OnError::Defer);
        assert_eq!(
            p.run(&at("192.0.2.7")).await,
            vec![Verdict::Defer {
                reason: Reason::CheckFailed,
            }]
        );
        // Failing open lets the client in, marked as not checked by the lists.
        let mut p = intake_core::Pipeline::new();
        p.add(check.clone(), Duration::from_secs(3), OnError::FailOpen);
        match &p.run(&at("192.0.2.7")).await[..] {
            [
                Verdict::Tag {
                    header, findings, ..
                },
            ] => {
                assert!(
                    header.starts_with("X-Intake-Unchecked: dnsbl; "),
                    "{header}"
                );
                assert_eq!(findings.undecided[0].check, "dnsbl");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn answers_come_from_the_cache_the_second_time() {
        let dns = lists().await;
        let check = Dnsbl::new(cfg(DnsblAction::Reject), dns);
        check.check(&at("192.0.2.7")).await.unwrap();
        let started = std::time::Instant::now();
        for _ in 0..100 {
            check.check(&at("192.0.2.7")).await.unwrap();
        }
        // 300 lookups from the cache take well under the time of one round trip each.
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
}
