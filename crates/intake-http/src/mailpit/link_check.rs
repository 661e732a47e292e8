//! `GET /api/v1/message/{ID}/link-check?follow=true|false`: Mailpit's link check. The
//! links of a message (`a[href]`, stylesheet `link[href]`, `img[src]` in its HTML, and the
//! `http(s)://` URLs of its text; at most [`MAX_LINKS`] distinct ones) are each asked for
//! with a `HEAD` request, and the answer is `{Errors, Links: [{URL, StatusCode, Status}]}`.
//!
//! It makes outbound requests, so it answers only when the operator allows it
//! (`mailpit.link_check`, off by default), and it never connects to an address that is not
//! public (private, loopback, link-local, shared, documentation, multicast, reserved ...)
//! unless that network is listed in `mailpit.link_check_allow`: every address a name
//! resolves to is checked before connecting (a name with one such address is refused
//! whole, as Mailpit does), the connection goes to the checked address (no second lookup a
//! DNS answer could change), and so is every redirect hop. A refused link reads
//! `451 Blocked private/reserved address`, Mailpit's words. No body is read (`HEAD`), at
//! most [`MAX_REDIRECTS`] redirects are followed, each link has [`TIMEOUT`] for all its hops,
//! and [`PARALLEL`] links are checked at a time.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::LazyLock;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query as QueryParams, State};
use futures_util::StreamExt;
use intake_client::{HttpClient, HttpError, Trust};
use intake_core::{StoredMessage, mime};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::resolve;
use crate::AppState;
use crate::error::ApiError;
use crate::lookup::load;

/// Distinct links checked per message, at most (Mailpit's cap).
pub const MAX_LINKS: usize = 100;
/// Redirects followed per link, at most.
pub const MAX_REDIRECTS: usize = 3;
/// Time for one link, every hop and name lookup included.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Links checked at the same time.
pub const PARALLEL: usize = 8;

/// What the link check may do: `[mailpit]` `link_check` and `link_check_allow`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkCheck {
    /// Whether the check makes requests at all (off: the route answers 400).
    pub enabled: bool,
    /// Networks that are not public but may be reached all the same (a staging network;
    /// `0.0.0.0/0` and `::/0` allow everything).
    pub allow: Vec<IpNet>,
}

/// Mailpit's `LinkCheckResponse`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[schema(as = LinkCheckResponse)]
pub struct Report {
    /// Links whose status is 400 or more, or 0 (no answer).
    #[serde(rename = "Errors")]
    pub errors: usize,
    /// Every link checked, in the order found.
    #[serde(rename = "Links")]
    pub links: Vec<Link>,
}

/// One link's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[schema(as = LinkCheckLink)]
pub struct Link {
    /// The link as written in the message.
    #[serde(rename = "URL")]
    pub url: String,
    /// The HTTP status (of the last hop when following), 451 for a refused address, 0 when
    /// there was no answer.
    #[serde(rename = "StatusCode")]
    pub status_code: u16,
    /// The status's reason phrase, or what went wrong.
    #[serde(rename = "Status")]
    pub status: String,
}

/// Mailpit's status for a link to an address that is not public.
pub const BLOCKED: &str = "Blocked private/reserved address";

/// `?follow=true`: follow redirects.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct Params {
    /// `true` (or `1`): follow up to 3 redirects.
    follow: Option<String>,
}

pub(super) async fn link_check(
    State(state): State<AppState>,
    Path(id): Path<String>,
    QueryParams(p): QueryParams<Params>,
) -> Result<Json<Report>, ApiError> {
    let id = resolve(&state, &id).await?;
    let m = load(&state, &id).await?;
    Ok(Json(report(&state, &m, p.follows()).await?))
}

impl Params {
    /// `follow=true` or `follow=1`.
    pub(crate) fn follows(&self) -> bool {
        matches!(self.follow.as_deref(), Some("true" | "1"))
    }
}

/// The check of a stored message (this route and the web inbox's): `400` when the operator
/// has not turned it on.
pub(crate) async fn report(
    state: &AppState,
    m: &StoredMessage,
    follow: bool,
) -> Result<Report, ApiError> {
    let policy = state.config.link_check.clone();
    if !policy.enabled {
        return Err(ApiError::BadRequest(
            "the link check is off (mailpit.link_check = false)".into(),
        ));
    }
    let raw = m.raw.clone();
    let links = tokio::task::spawn_blocking(move || {
        let html = mime::html_body(&raw);
        let text = mime::text_body(&raw).unwrap_or_default();
        links_of(html.as_deref(), &text)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Checker::new(policy).run(links, follow).await)
}

/// The links of a message, distinct, in the order found, at most [`MAX_LINKS`].
pub fn links_of(html: Option<&str>, text: &str) -> Vec<String> {
    static SELECTORS: LazyLock<Vec<(scraper::Selector, &'static str)>> = LazyLock::new(|| {
        [
            ("a[href]", "href"),
            ("link[rel=\"stylesheet\"][href]", "href"),
            ("img[src]", "src"),
        ]
        .into_iter()
        .map(|(s, a)| (scraper::Selector::parse(s).expect("a valid selector"), a))
        .collect()
    });
    static TEXT_URL: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(r#"(?i)\bhttps?://[^\s<>"]+"#).expect("a regex"));
    let mut found: Vec<String> = Vec::new();
    let mut add = |l: &str| {
        if found.len() < MAX_LINKS && !found.iter().any(|f| f == l) {
            found.push(l.to_string());
        }
    };
    if let Some(html) = html {
        let doc = scraper::Html::parse_document(html);
        for (sel, attr) in SELECTORS.iter() {
            for el in doc.select(sel) {
                let v = el.value().attr(attr).unwrap_or("").trim();
                let lower = v.get(..8).unwrap_or(v).to_ascii_lowercase();
                if lower.starts_with("http://") || lower.starts_with("https://") {
                    add(v);
                }
            }
        }
    }
    // Text: a URL ends at white space, `<`, `>` or `"`; punctuation that ends a sentence
    // is not part of it.
    for m in TEXT_URL.find_iter(text).take(MAX_LINKS * 3) {
        add(m
            .as_str()
            .trim_end_matches(['.', ',', ';', ':', '!', '?', ')', '\'']));
    }
    found
}

/// Why a request was not made or got no answer.
enum Fail {
    /// The host has an address that is not public (and not allowed).
    Blocked,
    /// No answer: what went wrong, in a few words.
    Other(String),
}

/// Checks links under one policy.
pub struct Checker {
    policy: LinkCheck,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Checker {
    /// A checker; `https://` links are verified against the system's roots.
    pub fn new(policy: LinkCheck) -> Checker {
        let tls = intake_client::tls::connector(Trust::System).ok();
        Checker { policy, tls }
    }

    /// Checks every link, [`PARALLEL`] at a time, answering in their order.
    pub async fn run(&self, links: Vec<String>, follow: bool) -> Report {
        let links: Vec<Link> = futures_util::stream::iter(links)
            .map(|l| self.check(l, follow))
            .buffered(PARALLEL)
            .collect()
            .await;
        Report {
            errors: links
                .iter()
                .filter(|l| l.status_code == 0 || l.status_code >= 400)
                .count(),
            links,
        }
    }

    async fn check(&self, url: String, follow: bool) -> Link {
        let deadline = Instant::now() + TIMEOUT;
        let mut current = url.clone();
        let mut hops = 0;
        let answer = |status_code: u16, status: String| Link {
            url: url.clone(),
            status_code,
            status,
        };
        loop {
            let head = match tokio::time::timeout_at(deadline, self.head(&current)).await {
                Err(_) => return answer(0, format!("no answer within {}s", TIMEOUT.as_secs())),
                Ok(Err(Fail::Blocked)) => return answer(451, BLOCKED.into()),
                Ok(Err(Fail::Other(why))) => return answer(0, why),
                Ok(Ok(head)) => head,
            };
            let (status, location) = head;
            if follow
                && (300..400).contains(&status)
                && let Some(loc) = location
            {
                if hops == MAX_REDIRECTS {
                    return answer(0, "too many redirects".into());
                }
                let Some(next) = join(&current, &loc) else {
                    return answer(0, format!("blocked redirect to invalid URL: {loc}"));
                };
                current = next;
                hops += 1;
                continue;
            }
            let reason = axum::http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("");
            return answer(status, reason.into());
        }
    }

    /// One `HEAD` request: the status and the `Location` header.
    async fn head(&self, url: &str) -> Result<(u16, Option<String>), Fail> {
        let invalid = || Fail::Other(format!("invalid URL: {url}"));
        if self.tls.is_none()
            && url
                .get(..8)
                .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
        {
            return Err(Fail::Other("no trusted root certificates for https".into()));
        }
        let client = HttpClient::with_connector(url, self.tls.clone()).map_err(|_| invalid())?;
        let u = client.url();
        let port: u16 = u
            .authority
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(invalid)?;
        let host = u.hostname().trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|_| Fail::Other("no such host".into()))?
                .collect(),
        };
        let Some(&first) = addrs.first() else {
            return Err(Fail::Other("no such host".into()));
        };
        if addrs.iter().any(|a| !self.may_reach(a.ip())) {
            tracing::info!(url, "link check: refused a link to a non-public address");
            return Err(Fail::Blocked);
        }
        let resp = client
            .head_at(first, &[], TIMEOUT)
            .await
            .map_err(|e| Fail::Other(summary(&e)))?;
        Ok((resp.status, resp.location.clone()))
    }

    fn may_reach(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.policy.allow.iter().any(|n| n.contains(&ip))
    }
}

/// A few words on a failed request, as Mailpit gives them (`connection refused`).
fn summary(e: &HttpError) -> String {
    match e {
        HttpError::Connect { source, .. } => match source.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
            _ => source.to_string(),
        },
        HttpError::TimedOut(_) => format!("no answer within {}s", TIMEOUT.as_secs()),
        HttpError::Tls { source, .. } => format!("TLS: {source}"),
        other => other.to_string(),
    }
}

/// A redirect's `Location` made absolute against the URL it answered; None for another
/// scheme than `http`/`https`.
fn join(base: &str, location: &str) -> Option<String> {
    let loc = location.trim();
    let lower = loc.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Some(loc.to_string());
    }
    let b = intake_client::HttpUrl::parse(base)?;
    let scheme = if b.tls { "https" } else { "http" };
    if let Some(rest) = loc.strip_prefix("//") {
        return Some(format!("{scheme}://{rest}"));
    }
    if loc.starts_with('/') {
        return Some(format!("{scheme}://{}{loc}", b.host));
    }
    let first = loc.split(['/', '?', '#']).next().unwrap_or("");
    if first.contains(':') {
        return None;
    }
    let path = b.path.split(['?', '#']).next().unwrap_or("/");
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    Some(format!("{scheme}://{}{dir}{loc}", b.host))
}

/// Networks that are not the public Internet (IANA's special-purpose registries).
static NOT_PUBLIC: LazyLock<Vec<IpNet>> = LazyLock::new(|| {
    [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/96",
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "3fff::/20",
        "5f00::/16",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    ]
    .iter()
    .map(|n| n.parse().expect("a valid network"))
    .collect()
});

/// Whether `ip` is a public unicast address. IPv4 inside IPv6 (mapped `::ffff:0:0/96`,
/// NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) is judged by its IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if let Some(v4) = v6.to_ipv4_mapped() {
                IpAddr::V4(v4)
            } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                IpAddr::V4(Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7])))
            } else if s[0] == 0x2002 {
                IpAddr::V4(Ipv4Addr::from((u32::from(s[1]) << 16) | u32::from(s[2])))
            } else {
                ip
            }
        }
        v4 => v4,
    };
    !NOT_PUBLIC.iter().any(|n| n.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_unicast_addresses_are_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:c0a8:101::1",
            "2001:db8::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} is not public");
        }
        for ip in [
            "93.184.215.14",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::101:101",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[test]
    fn links_come_from_html_and_text_once_each() {
        let html = r##"<a href="https://a.test/x">a</a><a href="#top">top</a>
            <a href="mailto:x@y.test">m</a><img src="http://img.test/i.png">
            <link rel="stylesheet" href="https://css.test/s.css"><a href="https://a.test/x">again</a>"##;
        let text = "See https://t.test/page. Or <https://t.test/angle> (http://t.test/p)";
        assert_eq!(
            links_of(Some(html), text),
            [
                "https://a.test/x",
                "https://css.test/s.css",
                "http://img.test/i.png",
                "https://t.test/page",
                "https://t.test/angle",
                "http://t.test/p",
            ]
        );
        let many: String = (0..150).map(|i| format!("http://x.test/{i} ")).collect();
        assert_eq!(links_of(None, &many).len(), MAX_LINKS);
    }

    #[test]
    fn redirect_targets_are_made_absolute() {
        let base = "http://a.test:8080/dir/page?q=1";
        assert_eq!(join(base, "/root").unwrap(), "http://a.test:8080/root");
        assert_eq!(join(base, "next").unwrap(), "http://a.test:8080/dir/next");
        assert_eq!(join(base, "//b.test/x").unwrap(), "http://b.test/x");
        assert_eq!(join(base, "https://c.test/").unwrap(), "https://c.test/");
        assert_eq!(join(base, "ftp://d.test/"), None);
        assert_eq!(join(base, "javascript:alert(1)"), None);
    }
}
