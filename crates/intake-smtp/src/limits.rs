//! Per-client limits shared by every connection of a listener: concurrent connections per IP
//! and per network (/24 for IPv4, /64 for IPv6), and rates of connections, messages and
//! recipients per IP (GCRA, governor). All checks are synchronous and never wait: over a
//! limit the answer is a 4xx reply, and the client retries later.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The limits (0 or None: no limit of that kind).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitSettings {
    /// Open connections per client IP.
    pub connections_per_ip: usize,
    /// Open connections per /24 (IPv4) or /64 (IPv6) network.
    pub connections_per_network: usize,
    /// New connections per minute per IP.
    pub connection_rate: u32,
    /// Messages per minute per IP.
    pub message_rate: u32,
    /// Recipients per minute per IP.
    pub recipient_rate: u32,
}

fn limiter(per_minute: u32) -> Option<DefaultKeyedRateLimiter<IpAddr>> {
    let n = NonZeroU32::new(per_minute)?;
    Some(RateLimiter::keyed(Quota::per_minute(n)))
}

/// The network a client counts against: its /24 or /64.
pub fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            IpAddr::from([o[0], o[1], o[2], 0])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
        }
    }
}

/// Shared limit state.
pub struct ClientLimits {
    settings: LimitSettings,
    exempt: Vec<ipnet::IpNet>,
    /// Open connections per IP and per network (separate maps: a network address is also
    /// a valid client address).
    open: Mutex<(HashMap<IpAddr, usize>, HashMap<IpAddr, usize>)>,
    connections: Option<DefaultKeyedRateLimiter<IpAddr>>,
    messages: Option<DefaultKeyedRateLimiter<IpAddr>>,
    recipients: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl std::fmt::Debug for ClientLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientLimits")
            .field("settings", &self.settings)
            .field("exempt", &self.exempt)
            .finish_non_exhaustive()
    }
}

/// Why a new connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many open connections from this IP.
    PerIp,
    /// Too many open connections from this network.
    PerNetwork,
    /// Connecting too often.
    Rate,
}

/// Counts one open connection until dropped.
pub struct OpenGuard {
    limits: Arc<ClientLimits>,
    ip: IpAddr,
}

fn release(map: &mut HashMap<IpAddr, usize>, key: IpAddr) {
    if let Some(n) = map.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            map.remove(&key);
        }
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().expect("limits lock");
        let (ips, nets) = &mut *open;
        release(ips, self.ip);
        release(nets, network_of(self.ip));
    }
}

impl ClientLimits {
    /// Limit state for `settings`; clients in `exempt` networks are never limited.
    pub fn new(settings: LimitSettings, exempt: Vec<ipnet::IpNet>) -> Arc<ClientLimits> {
        Arc::new(ClientLimits {
            settings,
            exempt,
            open: Mutex::new((HashMap::new(), HashMap::new())),
            connections: limiter(settings.connection_rate),
            messages: limiter(settings.message_rate),
            recipients: limiter(settings.recipient_rate),
        })
    }

    /// Whether `ip` is exempt from every limit.
    pub fn is_exempt(&self, ip: IpAddr) -> bool {
        self.exempt.iter().any(|n| n.contains(&ip))
    }

    /// Admits a new connection from `ip`, or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Option<OpenGuard>, Refusal> {
        if self.is_exempt(ip) {
            return Ok(None);
        }
        if let Some(l) = &self.connections
            && l.check_key(&ip).is_err()
        {
            return Err(Refusal::Rate);
        }
        let net = network_of(ip);
        let mut open = self.open.lock().expect("limits lock");
        let (ips, nets) = &mut *open;
        let per_ip = ips.get(&ip).copied().unwrap_or(0);
        let per_net = nets.get(&net).copied().unwrap_or(0);
        if self.settings.connections_per_ip > 0 && per_ip >= self.settings.connections_per_ip {
            return Err(Refusal::PerIp);
        }
        if self.settings.connections_per_network > 0
            && per_net >= self.settings.connections_per_network
        {
            return Err(Refusal::PerNetwork);
        }
        *ips.entry(ip).or_default() += 1;
        *nets.entry(net).or_default() += 1;
        Ok(Some(OpenGuard {
            limits: self.clone(),
            ip,
        }))
    }

    /// One more message from `ip`: false when over its rate.
    pub fn allow_message(&self, ip: IpAddr) -> bool {
        self.is_exempt(ip)
            || self
                .messages
                .as_ref()
                .is_none_or(|l| l.check_key(&ip).is_ok())
    }

    /// One more recipient from `ip`: false when over its rate.
    pub fn allow_recipient(&self, ip: IpAddr) -> bool {
        self.is_exempt(ip)
            || self
                .recipients
                .as_ref()
                .is_none_or(|l| l.check_key(&ip).is_ok())
    }

    /// Forgets rate state of clients not seen lately (call now and then).
    pub fn forget_idle(&self) {
        for l in [&self.connections, &self.messages, &self.recipients]
            .into_iter()
            .flatten()
        {
            l.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_and_per_network_counts() {
        let l = ClientLimits::new(
            LimitSettings {
                connections_per_ip: 2,
                connections_per_network: 3,
                ..Default::default()
            },
            vec!["127.0.0.0/8".parse().unwrap()],
        );
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.77".parse().unwrap();
        let g1 = l.admit(a).unwrap();
        let _g2 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).err(), Some(Refusal::PerIp));
        let _g3 = l.admit(b).unwrap();
        assert_eq!(l.admit(b).err(), Some(Refusal::PerNetwork), "same /24");
        assert!(
            l.admit("198.51.100.1".parse().unwrap()).is_ok(),
            "another network"
        );
        drop(g1);
        assert!(l.admit(b).is_ok(), "a slot freed");
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let held: Vec<_> = (0..10).map(|_| l.admit(local).unwrap()).collect();
        assert!(
            held.iter().all(Option::is_none),
            "exempt networks are not counted"
        );
        let v6: IpAddr = "2001:db8:1:2::5".parse().unwrap();
        assert_eq!(network_of(v6), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn rates() {
        let l = ClientLimits::new(
            LimitSettings {
                connection_rate: 2,
                message_rate: 3,
                recipient_rate: 1,
                ..Default::default()
            },
            Vec::new(),
        );
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let _a = l.admit(ip).unwrap();
        let _b = l.admit(ip).unwrap();
        assert_eq!(l.admit(ip).err(), Some(Refusal::Rate));
        assert!(l.allow_message(ip) && l.allow_message(ip) && l.allow_message(ip));
        assert!(!l.allow_message(ip));
        assert!(l.allow_recipient(ip));
        assert!(!l.allow_recipient(ip));
        assert!(l.allow_recipient("192.0.2.2".parse().unwrap()), "per IP");
    }
}
