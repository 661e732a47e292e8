//! PROXY protocol v1 and v2 (HAProxy), read before anything else on a connection from a
//! trusted load balancer, so that limits, logs and the store see the real client address.
//! Parsing is the ppp crate's; this module frames it over the socket.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use ppp::{HeaderResult, PartialResult, v1, v2};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// PROXY protocol settings of a listener.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Load balancers allowed to send a header; any other peer is disconnected.
    pub trusted: Vec<ipnet::IpNet>,
    /// How long the header may take to arrive.
    pub timeout: Duration,
}

impl ProxySettings {
    /// Whether `ip` may send a PROXY header.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(&ip))
    }
}

/// Why a connection was dropped before the greeting.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    /// The header did not come within the timeout (or not at all).
    #[error("no PROXY header in time")]
    Timeout,
    /// The peer closed first, after sending part of a header.
    #[error("connection closed before a complete PROXY header")]
    Closed,
    /// The peer closed without sending a byte: a load balancer's health check.
    #[error("connection closed without a byte (a health check)")]
    Probe,
    /// Not a PROXY header.
    #[error("malformed PROXY header")]
    Malformed,
    /// Longer than any header we accept.
    #[error("PROXY header too long")]
    TooLong,
}

const V1_SIGNATURE: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// Longest header accepted (v2 with a few TLVs).
const MAX_HEADER: usize = 4096;

/// Parses a header at the start of `buf`: `Ok(None)` when more bytes are needed, else the
/// client address (None: keep the peer's, as for LOCAL / UNKNOWN) and the header length.
pub fn parse(buf: &[u8]) -> Result<Option<(Option<SocketAddr>, usize)>, ProxyError> {
    // Anything that cannot become a header is refused at once (ppp may wait for more).
    let starts = |sig: &[u8]| buf[..buf.len().min(sig.len())] == sig[..buf.len().min(sig.len())];
    if !starts(V1_SIGNATURE) && !starts(V2_SIGNATURE) {
        return Err(ProxyError::Malformed);
    }
    let result = HeaderResult::parse(buf);
    if starts(V1_SIGNATURE) {
        // A v1 header is one line of at most 107 octets: a complete line that ppp still
        // calls incomplete is garbage, and so is a longer one.
        let line_end = buf.windows(2).position(|w| w == b"\r\n");
        if line_end.is_some_and(|_| result.is_incomplete())
            || (line_end.is_none() && buf.len() > 107)
        {
            return Err(ProxyError::Malformed);
        }
    }
    if result.is_incomplete() {
        return if buf.len() >= MAX_HEADER {
            Err(ProxyError::TooLong)
        } else {
            Ok(None)
        };
    }
    match result {
        HeaderResult::V1(Ok(h)) => {
            let addr = match h.addresses {
                v1::Addresses::Tcp4(a) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                v1::Addresses::Tcp6(a) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                v1::Addresses::Unknown => None,
            };
            Ok(Some((addr, h.header.len())))
        }
        HeaderResult::V2(Ok(h)) => {
            let addr = match (h.command, h.addresses) {
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                _ => None,
            };
            Ok(Some((addr, h.len())))
        }
        HeaderResult::V1(Err(_)) | HeaderResult::V2(Err(_)) => Err(ProxyError::Malformed),
    }
}

/// Reads the header from `io`. Returns the client address and the bytes after the header.
pub async fn read_header<S: AsyncRead + Unpin>(
    io: &mut S,
    peer: SocketAddr,
    timeout: Duration,
) -> Result<(SocketAddr, BytesMut), ProxyError> {
    let mut buf = BytesMut::with_capacity(256);
    let work = async {
        loop {
            if let Some((addr, len)) = parse(&buf)? {
                buf.advance(len);
                return Ok((addr.unwrap_or(peer), buf));
            }
            let n = io
                .read_buf(&mut buf)
                .await
                .map_err(|_| ProxyError::Closed)?;
            if n == 0 {
                return Err(if buf.is_empty() {
                    ProxyError::Probe
                } else {
                    ProxyError::Closed
                });
            }
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ProxyError::Timeout)?
}

/// A stream that first yields bytes already read from it (what followed the PROXY header).
pub struct Prefixed<S> {
    /// Boxed, and only when there are such bytes: every connection's task holds this
    /// stream for as long as the client stays, and most have none.
    prefix: Option<Box<BytesMut>>,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `inner`, with `prefix` read first.
    pub fn new(prefix: BytesMut, inner: S) -> Self {
        let prefix = (!prefix.is_empty()).then(|| Box::new(prefix));
        Prefixed { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(prefix) = self.prefix.as_mut() {
            let n = prefix.len().min(buf.remaining());
            buf.put_slice(&prefix[..n]);
            prefix.advance(n);
            if prefix.is_empty() {
                self.prefix = None;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_health_check_is_told_from_a_cut_header() {
        let peer: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let t = Duration::from_secs(1);
        let mut nothing: &[u8] = b"";
        assert_eq!(
            read_header(&mut nothing, peer, t).await.unwrap_err(),
            ProxyError::Probe
        );
        let mut cut: &[u8] = b"PROXY TCP4 203.0.113.7";
        assert_eq!(
            read_header(&mut cut, peer, t).await.unwrap_err(),
            ProxyError::Closed
        );
    }

    #[test]
    fn v1_v2_local_and_garbage() {
        let v1 = b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 25\r\nEHLO x\r\n";
        let (addr, len) = parse(v1).unwrap().unwrap();
        assert_eq!(addr, Some("203.0.113.7:40000".parse().unwrap()));
        assert_eq!(&v1[len..], b"EHLO x\r\n");
        let v6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 25\r\n";
        assert_eq!(
            parse(v6).unwrap().unwrap().0,
            Some("[2001:db8::7]:40000".parse().unwrap())
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap().0, None);
        let v2 = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (
                "198.51.100.9:5555".parse::<SocketAddr>().unwrap(),
                "192.0.2.1:25".parse::<SocketAddr>().unwrap(),
            ),
        )
        .build()
        .unwrap();
        let (addr, len) = parse(&v2).unwrap().unwrap();
        assert_eq!(
            (addr, len),
            (Some("198.51.100.9:5555".parse().unwrap()), v2.len())
        );
        for cut in 0..v2.len() {
            assert_eq!(parse(&v2[..cut]), Ok(None), "incomplete at {cut}");
        }
        assert_eq!(parse(b"PROX"), Ok(None));
        assert_eq!(
            parse(b"EHLO client.example\r\n"),
            Err(ProxyError::Malformed)
        );
        assert_eq!(
            parse(b"PROXY TCP4 nonsense\r\n"),
            Err(ProxyError::Malformed)
        );
    }
}
