//! The policy sections read from the configuration: `[recipients]`, `[greylist]`, `[dns]`,
//! `[dnsbl]`, `[helo]`, `[sender_auth]`, `[rspamd]`, `[spamd]` and `[policy.profiles]`.
//! Plain values: the checks (and their caches) are built from them by [`crate::Profiles`].

use std::net::SocketAddr;
use std::path::PathBuf;

use intake_config::Reader;

use crate::clamav::{ClamavAction, ClamavConfig, ClamdAddress};
use crate::{
    DnsConfig, DnsblAction, DnsblConfig, GreylistConfig, HeloConfig, PolicyConfig,
    RecipientsConfig, RspamdConfig, SpamdConfig,
};

/// Reads every policy section (`[recipients]`, `[greylist]`, `[dns]`, `[dnsbl]`, `[helo]`,
/// `[sender_auth]`, `[rspamd]`, `[spamd]`, `[policy.profiles]`), recording every problem in `r`.
pub fn read(r: &mut Reader<'_>) -> PolicyConfig {
    let rd = RecipientsConfig::default();
    let addresses: Vec<String> = r.get("recipients.addresses", Vec::new());
    let (_, bad) = crate::recipients::RecipientList::parse(&addresses);
    for b in bad {
        r.error(
            "recipients.addresses",
            format!("{b:?} is not an address (user@example.com) or a domain (@example.com)"),
        );
    }
    let file: String = r.get("recipients.file", String::new());
    let recipients = RecipientsConfig {
        addresses,
        file: (!file.is_empty()).then(|| PathBuf::from(file)),
        timeout: r.timeout("recipients.timeout", rd.timeout),
        on_error: r.get("recipients.on_error", rd.on_error),
        directory: r.get("recipients.directory", rd.directory),
        store: r.get("recipients.store", rd.store),
    };
    let gd = GreylistConfig::default();
    let greylist = GreylistConfig {
        enabled: r.get("greylist.enabled", gd.enabled),
        delay: r.duration("greylist.delay", gd.delay),
        retry_window: r.duration("greylist.retry_window", gd.retry_window),
        lifetime: r.timeout("greylist.lifetime", gd.lifetime),
        auto_allow_after: r.get("greylist.auto_allow_after", gd.auto_allow_after),
        allow_networks: r.networks("greylist.allow_networks", &[]),
        timeout: r.timeout("greylist.timeout", gd.timeout),
        on_error: r.get("greylist.on_error", gd.on_error),
    };
    PolicyConfig {
        dns: read_dns(r),
        dnsbl: read_dnsbl(r),
        helo: HeloConfig {
            reject_non_fqdn: r.get("helo.reject_non_fqdn", false),
            reject_bare_ip: r.get("helo.reject_bare_ip", false),
        },
        recipients,
        greylist,
        sender_auth: read_sender_auth(r),
        rspamd: read_rspamd(r),
        spamd: read_spamd(r),
        clamav: read_clamav(r),
        profiles: read_profiles(r),
        // `mailpit.chaos`, read with the Mailpit settings and set by the server.
        chaos: false,
    }
}

fn read_dns(r: &mut Reader<'_>) -> DnsConfig {
    let d = DnsConfig::default();
    let text: Vec<String> = r.get("dns.servers", Vec::new());
    let mut servers = Vec::new();
    for s in &text {
        match s.parse::<SocketAddr>().or_else(|_| {
            s.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        }) {
            Ok(a) => servers.push(a),
            Err(_) => r.error(
                "dns.servers",
                format!("{s:?} is not an address such as 127.0.0.1 or 127.0.0.1:5353"),
            ),
        }
    }
    DnsConfig {
        servers,
        timeout: r.timeout("dns.timeout", d.timeout),
        attempts: r.get("dns.attempts", d.attempts).max(1),
        cache_size: r.get("dns.cache_size", d.cache_size),
    }
}

fn read_dnsbl(r: &mut Reader<'_>) -> DnsblConfig {
    let d = DnsblConfig::default();
    let specs: Vec<String> = r.get("dnsbl.zones", Vec::new());
    let mut zones = Vec::new();
    for s in &specs {
        match crate::dnsbl::Zone::parse(s) {
            Ok(z) => zones.push(z),
            Err(e) => r.error("dnsbl.zones", e),
        }
    }
    let action: DnsblAction = r.get("dnsbl.action", d.action);
    let enabled = r.get("dnsbl.enabled", !zones.is_empty());
    DnsblConfig {
        enabled,
        zones,
        threshold: r.get("dnsbl.threshold", d.threshold),
        action,
        timeout: r.timeout("dnsbl.timeout", d.timeout),
        on_error: r.get("dnsbl.on_error", d.on_error),
    }
}

fn read_sender_auth(r: &mut Reader<'_>) -> crate::AuthConfig {
    let d = crate::AuthConfig::default();
    crate::AuthConfig {
        enabled: r.get("sender_auth.enabled", d.enabled),
        hostname: d.hostname, // smtp.hostname, set by the caller
        dmarc_enforce: r.get("sender_auth.dmarc_enforce", d.dmarc_enforce),
        timeout: r.timeout("sender_auth.timeout", d.timeout),
        on_error: r.get("sender_auth.on_error", d.on_error),
        spf_at_mail: r.get("sender_auth.spf_at_mail", d.spf_at_mail),
    }
}

fn read_rspamd(r: &mut Reader<'_>) -> RspamdConfig {
    let d = RspamdConfig::default();
    RspamdConfig {
        enabled: r.get("rspamd.enabled", d.enabled),
        address: r.address("rspamd.address", d.address, "127.0.0.1:11333"),
        refuse: r.get("rspamd.refuse", d.refuse),
        max_size: r.size("rspamd.max_size", d.max_size as u64) as usize,
        timeout: r.timeout("rspamd.timeout", d.timeout),
        on_error: r.get("rspamd.on_error", d.on_error),
    }
}

fn read_spamd(r: &mut Reader<'_>) -> SpamdConfig {
    let d = SpamdConfig::default();
    // 0: never refuse / tag by spamd's own verdict.
    let score = |r: &mut Reader<'_>, key: &str| {
        let v: f64 = r.get(key, 0.0);
        (v > 0.0).then_some(v as f32)
    };
    SpamdConfig {
        enabled: r.get("spamd.enabled", d.enabled),
        address: r.address("spamd.address", d.address, "127.0.0.1:783"),
        reject_score: score(r, "spamd.reject_score"),
        tag_score: score(r, "spamd.tag_score"),
        max_size: r.size("spamd.max_size", d.max_size as u64) as usize,
        timeout: r.timeout("spamd.timeout", d.timeout),
        on_error: r.get("spamd.on_error", d.on_error),
    }
}

/// `[clamav]`: clamd's address (`host:port`, or a unix socket path) and what a virus gets.
fn read_clamav(r: &mut Reader<'_>) -> ClamavConfig {
    let d = ClamavConfig::default();
    let address: String = r.get("clamav.address", "127.0.0.1:3310".to_string());
    let action: String = r.get("clamav.action", "reject".to_string());
    let action = ClamavAction::parse(&action).unwrap_or_else(|| {
        r.error(
            "clamav.action",
            format!("{action:?}: expected \"reject\" or \"tag\""),
        );
        d.action
    });
    ClamavConfig {
        enabled: r.get("clamav.enabled", d.enabled),
        address: ClamdAddress::parse(&address),
        action,
        max_size: r.size("clamav.max_size", d.max_size as u64) as usize,
        timeout: r.timeout("clamav.timeout", d.timeout),
        on_error: r.get("clamav.on_error", d.on_error),
    }
}

/// `[policy.profiles.<name>] checks = [...]`.
fn read_profiles(r: &mut Reader<'_>) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out = std::collections::BTreeMap::new();
    for name in r.table_keys("policy.profiles") {
        let key = format!("policy.profiles.{name}.checks");
        let checks: Vec<String> = r.get(&key, Vec::new());
        for c in &checks {
            if crate::registry::find(c).is_none() {
                r.error(
                    &key,
                    format!(
                        "{c:?} is not a check (known: {})",
                        crate::registry::known_names()
                    ),
                );
            }
        }
        out.insert(name, checks);
    }
    out
}
