//! Per-client limits shared by every connection of a listener: concurrent connections per IP
//! and per network (/24 for IPv4, /64 for IPv6), and rates of connections, messages and
//! recipients per IP. All checks are synchronous and never wait: over a limit the answer is
//! a 4xx reply, and the client retries later.
//!
//! Rates are counted per IP over a sliding minute (two fixed windows, the older one weighted
//! by how much of it is still in the last minute). The state is built once by the server and
//! kept for the life of the process: a SIGHUP hands new caps and rates to
//! [`ClientLimits::reconfigure`], which apply at once to the connections and events already
//! counted; no counter or window starts again.
//!
//! In a cluster (`intake-cluster`) the limits hold across nodes, approximately: a background
//! task hands this node's counts to the others and theirs back once per sync interval
//! ([`SharedLimits`]), and every check adds what the other nodes counted, as last synced, to
//! what this node holds now. With nothing synced (one node, or Redis down) the limits are this
//! node's alone.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use intake_core::{ClientCounts, SharedLimits};

/// The limits (0: no limit of that kind).
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

impl LimitSettings {
    /// The keys whose values differ between `self` and `other`, by their setting names.
    pub fn changed(&self, other: &LimitSettings) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let pairs: [(&'static str, u64, u64); 5] = [
            (
                "smtp.max_connections_per_ip",
                self.connections_per_ip as u64,
                other.connections_per_ip as u64,
            ),
            (
                "smtp.max_connections_per_network",
                self.connections_per_network as u64,
                other.connections_per_network as u64,
            ),
            (
                "smtp.connection_rate",
                self.connection_rate.into(),
                other.connection_rate.into(),
            ),
            (
                "smtp.message_rate",
                self.message_rate.into(),
                other.message_rate.into(),
            ),
            (
                "smtp.recipient_rate",
                self.recipient_rate.into(),
                other.recipient_rate.into(),
            ),
        ];
        for (key, a, b) in pairs {
            if a != b {
                keys.push(key);
            }
        }
        keys
    }
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

/// What the limits are now: replaced whole by a reload.
#[derive(Debug, Clone, Default)]
struct Rules {
    settings: LimitSettings,
    exempt: Vec<ipnet::IpNet>,
}

/// Shared limit state, built once per process and kept across reloads.
pub struct ClientLimits {
    rules: RwLock<Arc<Rules>>,
    /// Open connections per IP and per network (separate maps: a network address is also
    /// a valid client address).
    open: Mutex<(HashMap<IpAddr, usize>, HashMap<IpAddr, usize>)>,
    /// This node's events per kind and IP (while they count).
    recent: Mutex<[HashMap<IpAddr, Window>; 3]>,
    /// What the other nodes counted, as last synced (empty on a single node).
    others: RwLock<Arc<ClientCounts>>,
    /// The origin of window numbers.
    start: Instant,
}

/// What a rate counts.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Connection = 0,
    Message = 1,
    Recipient = 2,
}

/// The rate windows: rates are per minute.
const WINDOW: Duration = Duration::from_secs(60);

/// One IP's events of one kind in the current and the previous fixed window.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    index: u64,
    current: u32,
    previous: u32,
}

impl Window {
    /// This window as of window `index`.
    fn at(self, index: u64) -> Window {
        if index == self.index {
            self
        } else if index == self.index + 1 {
            Window {
                index,
                current: 0,
                previous: self.current,
            }
        } else {
            Window {
                index,
                ..Window::default()
            }
        }
    }

    /// Events over the last minute: the current window's, and the part of the previous
    /// window's still inside the last minute (`elapsed`: how far into the current window).
    fn estimate(&self, elapsed: f64) -> u32 {
        let carried = (f64::from(self.previous) * (1.0 - elapsed)).ceil();
        // In range: between 0 and `previous`.
        self.current.saturating_add(carried as u32)
    }
}

impl std::fmt::Debug for ClientLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rules = self.rules();
        f.debug_struct("ClientLimits")
            .field("settings", &rules.settings)
            .field("exempt", &rules.exempt)
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
            rules: RwLock::new(Arc::new(Rules { settings, exempt })),
            open: Mutex::new((HashMap::new(), HashMap::new())),
            recent: Mutex::default(),
            others: RwLock::new(Arc::default()),
            start: Instant::now(),
        })
    }

    /// New caps, rates and exemptions (a reload). Connections already open and events
    /// already counted stay counted and are measured against the new values at once.
    /// Returns the setting names that changed.
    pub fn reconfigure(
        &self,
        settings: LimitSettings,
        exempt: Vec<ipnet::IpNet>,
    ) -> Vec<&'static str> {
        let mut rules = self.rules.write().expect("limits lock");
        let mut changed = rules.settings.changed(&settings);
        if rules.exempt != exempt {
            changed.push("smtp.limits_exempt");
        }
        *rules = Arc::new(Rules { settings, exempt });
        changed
    }

    /// The limits in force.
    pub fn settings(&self) -> LimitSettings {
        self.rules().settings
    }

    fn rules(&self) -> Arc<Rules> {
        self.rules.read().expect("limits lock").clone()
    }

    /// The current window's number and how far into it we are (0..1).
    fn now(&self) -> (u64, f64) {
        let t = self.start.elapsed();
        let index = t.as_secs() / WINDOW.as_secs();
        let into = (t.as_secs_f64() % WINDOW.as_secs_f64()) / WINDOW.as_secs_f64();
        (index, into)
    }

    /// Whether one more event of `kind` from `ip` is within `per_minute` (0: no limit),
    /// counting this node's last minute and the other nodes' as last synced; counts it if so.
    fn rate_allows(&self, kind: Kind, ip: IpAddr, per_minute: u32) -> bool {
        if per_minute == 0 {
            return true;
        }
        let others = {
            let o = self.others.read().expect("limits lock");
            let map = match kind {
                Kind::Connection => &o.connections,
                Kind::Message => &o.messages,
                Kind::Recipient => &o.recipients,
            };
            map.get(&ip).copied().unwrap_or(0)
        };
        let (index, into) = self.now();
        let mut recent = self.recent.lock().expect("limits lock");
        let w = recent[kind as usize].entry(ip).or_default();
        *w = w.at(index);
        if others.saturating_add(w.estimate(into)) >= per_minute {
            return false;
        }
        w.current = w.current.saturating_add(1);
        true
    }

    /// Whether `ip` is exempt from every limit.
    pub fn is_exempt(&self, ip: IpAddr) -> bool {
        self.rules().exempt.iter().any(|n| n.contains(&ip))
    }

    /// Admits a new connection from `ip`, or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Option<OpenGuard>, Refusal> {
        let rules = self.rules();
        if rules.exempt.iter().any(|n| n.contains(&ip)) {
            return Ok(None);
        }
        let s = rules.settings;
        if !self.rate_allows(Kind::Connection, ip, s.connection_rate) {
            return Err(Refusal::Rate);
        }
        let net = network_of(ip);
        let (other_ip, other_net) = {
            let o = self.others.read().expect("limits lock");
            let n = |m: &HashMap<IpAddr, u32>, k| m.get(&k).map_or(0, |n| *n as usize);
            (n(&o.open_ip, ip), n(&o.open_net, net))
        };
        let mut open = self.open.lock().expect("limits lock");
        let (ips, nets) = &mut *open;
        let per_ip = ips.get(&ip).copied().unwrap_or(0) + other_ip;
        let per_net = nets.get(&net).copied().unwrap_or(0) + other_net;
        if s.connections_per_ip > 0 && per_ip >= s.connections_per_ip {
            return Err(Refusal::PerIp);
        }
        if s.connections_per_network > 0 && per_net >= s.connections_per_network {
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
        let rules = self.rules();
        rules.exempt.iter().any(|n| n.contains(&ip))
            || self.rate_allows(Kind::Message, ip, rules.settings.message_rate)
    }

    /// One more recipient from `ip`: false when over its rate.
    pub fn allow_recipient(&self, ip: IpAddr) -> bool {
        let rules = self.rules();
        rules.exempt.iter().any(|n| n.contains(&ip))
            || self.rate_allows(Kind::Recipient, ip, rules.settings.recipient_rate)
    }

    /// Forgets rate state of clients not seen lately (call now and then).
    pub fn forget_idle(&self) {
        self.estimates();
    }

    /// This node's recent events per kind, forgetting those that no longer count.
    fn estimates(&self) -> [HashMap<IpAddr, u32>; 3] {
        let (index, into) = self.now();
        let mut recent = self.recent.lock().expect("limits lock");
        let mut out: [HashMap<IpAddr, u32>; 3] = Default::default();
        for (map, out) in recent.iter_mut().zip(out.iter_mut()) {
            map.retain(|ip, w| {
                *w = w.at(index);
                let n = w.estimate(into);
                if n > 0 {
                    out.insert(*ip, n);
                }
                w.current > 0 || w.previous > 0
            });
        }
        out
    }
}

impl SharedLimits for ClientLimits {
    fn local_counts(&self) -> ClientCounts {
        let mut counts = ClientCounts::default();
        {
            let open = self.open.lock().expect("limits lock");
            let narrow = |m: &HashMap<IpAddr, usize>| {
                m.iter()
                    .map(|(k, n)| (*k, u32::try_from(*n).unwrap_or(u32::MAX)))
                    .collect()
            };
            counts.open_ip = narrow(&open.0);
            counts.open_net = narrow(&open.1);
        }
        let [connections, messages, recipients] = self.estimates();
        counts.connections = connections;
        counts.messages = messages;
        counts.recipients = recipients;
        counts
    }

    fn set_others(&self, others: ClientCounts) {
        *self.others.write().expect("limits lock") = Arc::new(others);
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

    /// Two nodes: each hands its counts to the other, as the sync task does.
    fn sync(a: &ClientLimits, b: &ClientLimits) {
        let (ca, cb) = (a.local_counts(), b.local_counts());
        a.set_others(cb);
        b.set_others(ca);
    }

    #[test]
    fn other_nodes_count_once_synced() {
        let settings = LimitSettings {
            connections_per_ip: 3,
            connections_per_network: 4,
            message_rate: 5,
            recipient_rate: 100,
            ..Default::default()
        };
        let a = ClientLimits::new(settings, Vec::new());
        let b = ClientLimits::new(settings, Vec::new());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let held_a: Vec<_> = (0..2).map(|_| a.admit(ip).unwrap()).collect();
        let _held_b = b.admit(ip).unwrap();
        // Not synced yet: each node sees only its own.
        let extra = b.admit(ip).unwrap();
        drop(extra);
        sync(&a, &b);
        assert_eq!(a.admit(ip).err(), Some(Refusal::PerIp), "2 here + 1 there");
        assert_eq!(b.admit(ip).err(), Some(Refusal::PerIp));
        let _held_b9 = b
            .admit("192.0.2.9".parse().unwrap())
            .expect("the network has room for one more");
        sync(&a, &b);
        assert_eq!(
            a.admit("192.0.2.10".parse().unwrap()).err(),
            Some(Refusal::PerNetwork),
            "4 open in the /24 across both nodes"
        );
        drop(held_a);
        sync(&a, &b);
        assert!(b.admit(ip).is_ok(), "freed on the other node");

        // Messages: 3 on A, then B may take 2 more of the 5 a minute.
        for _ in 0..3 {
            assert!(a.allow_message(ip));
        }
        sync(&a, &b);
        assert!(b.allow_message(ip) && b.allow_message(ip));
        assert!(!b.allow_message(ip), "5 across the cluster");
        assert!(b.allow_message("198.51.100.1".parse().unwrap()), "per IP");
        sync(&a, &b);
        assert!(!a.allow_message(ip), "A sees B's two");
        // Without sync data (Redis down: the others are cleared) the local rate rules.
        b.set_others(ClientCounts::default());
        assert!(b.allow_message(ip), "B's own limit only: 2 of its 5 used");
    }

    #[test]
    fn a_reconfigure_keeps_counts_and_applies_new_caps_to_them() {
        let l = ClientLimits::new(
            LimitSettings {
                connections_per_ip: 5,
                message_rate: 3,
                ..Default::default()
            },
            Vec::new(),
        );
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut held: Vec<_> = (0..5).map(|_| l.admit(ip).unwrap()).collect();
        assert_eq!(l.admit(ip).err(), Some(Refusal::PerIp));
        assert!(l.allow_message(ip) && l.allow_message(ip));
        let same = LimitSettings {
            connections_per_ip: 5,
            message_rate: 3,
            ..Default::default()
        };
        for _ in 0..3 {
            assert!(l.reconfigure(same, Vec::new()).is_empty());
        }
        assert_eq!(l.admit(ip).err(), Some(Refusal::PerIp), "counts kept");
        assert!(l.allow_message(ip));
        assert!(!l.allow_message(ip), "the message window kept: 3 a minute");
        let lower = LimitSettings {
            connections_per_ip: 3,
            message_rate: 10,
            ..Default::default()
        };
        assert_eq!(
            l.reconfigure(lower, Vec::new()),
            vec!["smtp.max_connections_per_ip", "smtp.message_rate"]
        );
        held.truncate(3);
        assert_eq!(
            l.admit(ip).err(),
            Some(Refusal::PerIp),
            "3 still open against a cap of 3"
        );
        assert!(
            l.allow_message(ip),
            "the raised rate applies to the 3 counted"
        );
    }
}
