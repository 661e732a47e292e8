//! A DNS server for tests (feature `test-dns`): hickory-server in-process on a free
//! 127.0.0.1 port (UDP and TCP), authoritative for the root, serving fixture records.
//! Nothing leaves the machine.
#![allow(missing_docs)]

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::rdata::{A, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record};
use hickory_server::Server;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};

use crate::dns::DnsConfig;

/// Fixture records, built up and then served.
#[derive(Default)]
pub struct Zone {
    records: Vec<Record>,
}

impl Zone {
    pub fn a(mut self, name: &str, ip: &str) -> Zone {
        let ip: Ipv4Addr = ip.parse().unwrap();
        self.records
            .push(Record::from_rdata(fqdn(name), 60, RData::A(A(ip))));
        self
    }

    /// A TXT record; long text is split into 255-octet strings, as zone files do.
    pub fn txt(mut self, name: &str, text: &str) -> Zone {
        let parts: Vec<String> = text
            .as_bytes()
            .chunks(255)
            .map(|c| String::from_utf8(c.to_vec()).unwrap())
            .collect();
        self.records.push(Record::from_rdata(
            fqdn(name),
            60,
            RData::TXT(TXT::new(parts)),
        ));
        self
    }

    /// Serves the records on a free loopback port until the runtime ends.
    pub async fn serve(self) -> SocketAddr {
        let mut zone =
            InMemoryZoneHandler::<hickory_server::net::runtime::TokioRuntimeProvider>::empty(
                Name::root(),
                ZoneType::Primary,
                AxfrPolicy::Deny,
            );
        let soa = SOA::new(
            fqdn("ns.test"),
            fqdn("hostmaster.test"),
            1,
            3600,
            600,
            86_400,
            60,
        );
        assert!(zone.upsert_mut(Record::from_rdata(Name::root(), 60, RData::SOA(soa)), 1));
        for r in self.records {
            assert!(zone.upsert_mut(r, 1));
        }
        let mut catalog = Catalog::new();
        catalog.upsert(Name::root().into(), vec![Arc::new(zone)]);
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let mut server = Server::new(catalog);
        server.register_socket(udp);
        if let Ok(tcp) = tokio::net::TcpListener::bind(addr).await {
            server.register_listener(tcp, Duration::from_secs(5), 65_535);
        }
        tokio::spawn(async move {
            let _ = server.block_until_done().await;
        });
        addr
    }
}

fn fqdn(name: &str) -> Name {
    let n = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    Name::from_str(&n).unwrap()
}

/// Resolver settings pointing at `server`, with short timeouts.
pub fn dns_config(server: SocketAddr) -> DnsConfig {
    DnsConfig {
        servers: vec![server],
        timeout: Duration::from_millis(500),
        attempts: 1,
        cache_size: 128,
    }
}

/// A UDP port that never answers: "DNS down".
pub async fn silent_server() -> (SocketAddr, tokio::net::UdpSocket) {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    (s.local_addr().unwrap(), s)
}
