//! A DNS server for tests (feature `test-dns`): hickory-server in-process on a free
//! 127.0.0.1 port (UDP and TCP), authoritative for the root, serving fixture records.
//! Nothing leaves the machine. [`Zone::start`] also counts the queries it gets and can be
//! told to answer SERVFAIL or nothing at all ([`Answers`]).
#![allow(missing_docs)]

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
/// Query types, for [`DnsServer::queries`].
pub use hickory_proto::rr::RecordType;
use hickory_proto::rr::rdata::{A, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, MessageResponseBuilder, ZoneType};

use crate::dns::DnsConfig;

/// Fixture records, built up and then served.
pub struct Zone {
    records: Vec<Record>,
    /// The TTL of the records added next.
    ttl: u32,
}

impl Default for Zone {
    fn default() -> Zone {
        Zone {
            records: Vec::new(),
            ttl: 60,
        }
    }
}

/// How a started server answers (switchable while it runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answers {
    /// From the fixture records.
    Records,
    /// `SERVFAIL` to every query (a broken authoritative server).
    ServFail,
    /// Nothing, ever (a server that times out).
    Nothing,
}

/// A running fixture server: where it listens, what it was asked, how it answers.
#[derive(Clone)]
pub struct DnsServer {
    pub addr: SocketAddr,
    state: Arc<ServerState>,
}

struct ServerState {
    /// Every query as (name without the final dot, lower case; type).
    queries: Mutex<Vec<(String, RecordType)>>,
    answers: Mutex<Answers>,
}

impl DnsServer {
    /// From now on, answer as `answers` says.
    pub fn answer(&self, answers: Answers) {
        *self.state.answers.lock().unwrap() = answers;
    }

    /// How many queries for `name` of type `rtype` arrived so far.
    pub fn queries(&self, name: &str, rtype: RecordType) -> usize {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let queries = self.state.queries.lock().unwrap();
        queries
            .iter()
            .filter(|(n, t)| *n == name && *t == rtype)
            .count()
    }
}

/// The catalog behind a counter and a switch.
struct Handler {
    catalog: Catalog,
    state: Arc<ServerState>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        for q in request.queries.queries() {
            let name = q.name().to_string();
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let rtype = q.original().query_type();
            self.state.queries.lock().unwrap().push((name, rtype));
        }
        let answers = *self.state.answers.lock().unwrap();
        match answers {
            Answers::Records => {
                self.catalog
                    .handle_request::<R, T>(request, response_handle)
                    .await
            }
            Answers::ServFail => {
                let response = MessageResponseBuilder::new(&request.queries, None)
                    .error_msg(&request.metadata, ResponseCode::ServFail);
                response_handle
                    .send_response(response)
                    .await
                    .expect("sending SERVFAIL")
            }
            Answers::Nothing => std::future::pending().await,
        }
    }
}

impl Zone {
    /// Records added after this call have this TTL (60 s before it); 0: nobody caches them.
    pub fn ttl(mut self, seconds: u32) -> Zone {
        self.ttl = seconds;
        self
    }

    pub fn a(mut self, name: &str, ip: &str) -> Zone {
        let ip: Ipv4Addr = ip.parse().unwrap();
        self.records
            .push(Record::from_rdata(fqdn(name), self.ttl, RData::A(A(ip))));
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
            self.ttl,
            RData::TXT(TXT::new(parts)),
        ));
        self
    }

    /// Serves the records on a free loopback port until the runtime ends.
    pub async fn serve(self) -> SocketAddr {
        self.start().await.addr
    }

    /// Serves the records on a free loopback port until the runtime ends, counting the
    /// queries; the handle switches how it answers.
    pub async fn start(self) -> DnsServer {
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
        let state = Arc::new(ServerState {
            queries: Mutex::new(Vec::new()),
            answers: Mutex::new(Answers::Records),
        });
        let handler = Handler {
            catalog,
            state: state.clone(),
        };
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let mut server = Server::new(handler);
        server.register_socket(udp);
        if let Ok(tcp) = tokio::net::TcpListener::bind(addr).await {
            server.register_listener(tcp, Duration::from_secs(5), 65_535);
        }
        tokio::spawn(async move {
            let _ = server.block_until_done().await;
        });
        DnsServer { addr, state }
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
