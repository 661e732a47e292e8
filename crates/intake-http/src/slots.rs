//! Counted slots per client IP: open connections, open event streams. A slot is given back
//! when its guard is dropped, so a stream that ends for any reason frees its place.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::extract::ConnectInfo;
use axum::http::Extensions;

/// The client's address, as the connection loop recorded it.
pub(crate) fn client_ip(ext: &Extensions) -> IpAddr {
    ext.get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// At most `max` holders per client IP (`0`: no limit).
#[derive(Clone, Debug, Default)]
pub(crate) struct PerIp {
    max: usize,
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One held slot; dropping it gives the slot back.
#[derive(Debug)]
pub(crate) struct Slot {
    ip: IpAddr,
    held: Option<Arc<Mutex<HashMap<IpAddr, usize>>>>,
}

impl PerIp {
    pub(crate) fn new(max: usize) -> Self {
        PerIp {
            max,
            held: Arc::default(),
        }
    }

    /// A slot for `ip`, or None when it already holds `max`.
    pub(crate) fn try_acquire(&self, ip: IpAddr) -> Option<Slot> {
        if self.max == 0 {
            return Some(Slot { ip, held: None });
        }
        let mut held = self.held.lock().expect("slots lock");
        let n = held.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            ip,
            held: Some(self.held.clone()),
        })
    }

    #[cfg(test)]
    pub(crate) fn clients(&self) -> usize {
        self.held.lock().expect("slots lock").len()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(held) = self.held.take() else { return };
        let mut held = held.lock().expect("slots lock");
        if let Some(n) = held.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_each_ip_and_gives_slots_back() {
        let slots = PerIp::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = slots.try_acquire(a).unwrap();
        let _s2 = slots.try_acquire(a).unwrap();
        assert!(slots.try_acquire(a).is_none(), "a third slot for one IP");
        let _s3 = slots.try_acquire(b).expect("another IP has its own slots");
        drop(s1);
        assert!(
            slots.try_acquire(a).is_some(),
            "a dropped slot is given back"
        );
    }

    #[test]
    fn forgets_clients_that_hold_nothing() {
        let slots = PerIp::new(5);
        let held: Vec<_> = (0..100u8)
            .map(|i| slots.try_acquire(IpAddr::from([10, 0, 0, i])).unwrap())
            .collect();
        assert_eq!(slots.clients(), 100);
        drop(held);
        assert_eq!(slots.clients(), 0);
    }

    #[test]
    fn zero_means_no_limit() {
        let slots = PerIp::new(0);
        let ip: IpAddr = "::1".parse().unwrap();
        let held: Vec<_> = (0..1000).map(|_| slots.try_acquire(ip).unwrap()).collect();
        assert_eq!(held.len(), 1000);
    }
}
