//! One HTTP/1.1 client (hyper's connection API) for every request Intake makes: the
//! webhook target's POST, the rspamd check's `/checkv2` and the Mailpit link check's HEADs.
//!
//! - One connection per request (`Connection: close`): each request is one message handed
//!   on or scanned, and no pool outlives a reload.
//! - `http://`, or `https://` verified as [`Trust`] says (the system's roots or a CA file).
//! - The whole exchange (connect, TLS, request, response head, and the body if it is read)
//!   runs under the timeout the caller gives [`HttpClient::post`]; past it the answer is
//!   [`HttpError::TimedOut`].
//! - A response body is read only up to [`HttpClient::with_max_body`] octets: a larger one
//!   (by its `Content-Length`, or as it arrives) is refused with [`HttpError::TooLarge`]
//!   without reading the rest.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{
    CONNECTION, CONTENT_LENGTH, HOST, HeaderName, HeaderValue, LOCATION, USER_AGENT,
};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::tls::{self, Trust};

/// The default bound on a response body: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not `http[s]://host[:port][/path]`.
    #[error("{0:?} is not an http:// or https:// URL")]
    BadUrl(String),
    /// The TLS configuration could not be made (an unreadable CA file, no system roots).
    #[error("TLS setup: {0}")]
    TlsSetup(#[source] std::io::Error),
    /// A request header name or value that HTTP cannot carry.
    #[error("request header {0:?}: not a valid HTTP header")]
    BadHeader(String),
    /// No TCP connection.
    #[error("connecting to {authority}: {source}")]
    Connect {
        /// `host:port`.
        authority: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (an untrusted certificate, say).
    #[error("TLS with {host}: {source}")]
    Tls {
        /// The name the certificate was checked against.
        host: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server broke HTTP or the connection.
    #[error("HTTP: {0}")]
    Protocol(#[from] hyper::Error),
    /// The connection broke while the body was read.
    #[error("reading the response body: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The response body is larger than the bound; the rest was not read.
    #[error("the response body is larger than {limit} bytes")]
    TooLarge {
        /// The bound.
        limit: usize,
    },
    /// No complete answer within the caller's timeout.
    #[error("no complete answer within {0:?}")]
    TimedOut(Duration),
}

/// A parsed `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `https://`.
    pub tls: bool,
    /// `host:port` to connect to.
    pub authority: String,
    /// The `Host:` header value.
    pub host: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl HttpUrl {
    /// Parses `http[s]://host[:port][/path]`; `None` for anything else.
    pub fn parse(url: &str) -> Option<HttpUrl> {
        let (tls, rest) = match url.strip_prefix("https://") {
            Some(rest) => (true, rest),
            None => (false, url.strip_prefix("http://")?),
        };
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if host.is_empty() || host.contains('@') || path.contains(['\r', '\n', ' ']) {
            return None;
        }
        let has_port = match host.rfind(':') {
            Some(i) => !host[i..].contains(']'),
            None => false,
        };
        let authority = if has_port {
            host.to_string()
        } else {
            format!("{host}:{}", if tls { 443 } else { 80 })
        };
        Some(HttpUrl {
            tls,
            authority,
            host: host.to_string(),
            path: path.to_string(),
        })
    }

    /// The host name without the port (what a certificate must name).
    pub fn hostname(&self) -> &str {
        match self.host.rfind(':') {
            Some(i) if !self.host[i..].contains(']') => &self.host[..i],
            _ => &self.host,
        }
    }
}

/// A client for one URL. Cheap to share (`Arc`), built once per configuration.
pub struct HttpClient {
    url: HttpUrl,
    uri: hyper::Uri,
    host: HeaderValue,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    max_body: usize,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("url", &self.url)
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client posting to `url`. For `https://`, certificates are checked as `trust` says
    /// (the CA file or the system's roots are read now); `trust` is unused for `http://`.
    pub fn new(url: &str, trust: Trust<'_>) -> Result<HttpClient, HttpError> {
        let tls = match HttpUrl::parse(url) {
            Some(u) if u.tls => Some(tls::connector(trust).map_err(HttpError::TlsSetup)?),
            _ => None,
        };
        HttpClient::with_connector(url, tls)
    }

    /// A client for `url` whose `https://` connections use `tls` (a connector built once
    /// and shared by many clients); an `https://` URL without one is [`HttpError::BadUrl`].
    pub fn with_connector(
        url: &str,
        tls: Option<tokio_rustls::TlsConnector>,
    ) -> Result<HttpClient, HttpError> {
        let bad = || HttpError::BadUrl(url.to_string());
        let parsed = HttpUrl::parse(url).ok_or_else(bad)?;
        let uri = hyper::Uri::try_from(parsed.path.as_str()).map_err(|_| bad())?;
        let host = HeaderValue::from_str(&parsed.host).map_err(|_| bad())?;
        let tls = match (parsed.tls, tls) {
            (false, _) => None,
            (true, Some(connector)) => {
                let name = tls::server_name(parsed.hostname()).map_err(|_| bad())?;
                Some((connector, name))
            }
            (true, None) => return Err(bad()),
        };
        Ok(HttpClient {
            url: parsed,
            uri,
            host,
            tls,
            max_body: DEFAULT_MAX_BODY,
        })
    }

    /// Reads response bodies up to `limit` octets (default [`DEFAULT_MAX_BODY`]).
    pub fn with_max_body(mut self, limit: usize) -> HttpClient {
        self.max_body = limit;
        self
    }

    /// The URL requests go to.
    pub fn url(&self) -> &HttpUrl {
        &self.url
    }

    /// POSTs `body` with `headers` (besides `Host`, `User-Agent`, `Content-Length` and
    /// `Connection: close`, which are always sent) and waits for the response head. The
    /// whole exchange, including reading the body with [`Response::bytes`], must end
    /// within `timeout`.
    pub async fn post(
        &self,
        headers: &[(&str, &str)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<Response, HttpError> {
        let req = hyper::Request::post(self.uri.clone())
            .body(Full::new(body))
            .expect("a request from a valid URI");
        self.exchange(req, headers, None, timeout).await
    }

    /// HEADs the URL over a connection to `addr`, an address of the URL's host that the
    /// caller resolved (and vetted: no name is looked up here); `Host` and the TLS server
    /// name are still the URL's. The response head must arrive within `timeout`.
    pub async fn head_at(
        &self,
        addr: SocketAddr,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Response, HttpError> {
        let req = hyper::Request::head(self.uri.clone())
            .body(Full::new(Bytes::new()))
            .expect("a request from a valid URI");
        self.exchange(req, headers, Some(addr), timeout).await
    }

    async fn exchange(
        &self,
        mut req: hyper::Request<Full<Bytes>>,
        headers: &[(&str, &str)],
        addr: Option<SocketAddr>,
        timeout: Duration,
    ) -> Result<Response, HttpError> {
        let deadline = Instant::now() + timeout;
        let h = req.headers_mut();
        h.insert(HOST, self.host.clone());
        h.insert(USER_AGENT, HeaderValue::from_static("Intake"));
        h.insert(CONNECTION, HeaderValue::from_static("close"));
        for (name, value) in headers {
            let bad = || HttpError::BadHeader((*name).to_string());
            let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
            let v = HeaderValue::from_bytes(value.as_bytes()).map_err(|_| bad())?;
            h.append(n, v);
        }
        let exchange = async {
            let connected = match addr {
                Some(a) => TcpStream::connect(a).await,
                None => TcpStream::connect(&self.url.authority).await,
            };
            let tcp = connected.map_err(|source| HttpError::Connect {
                authority: self.url.authority.clone(),
                source,
            })?;
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                Some((connector, name)) => {
                    let s = connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|source| HttpError::Tls {
                            host: self.url.hostname().to_string(),
                            source,
                        })?;
                    send(s, req).await
                }
                None => send(tcp, req).await,
            }
        };
        let (head, conn) = tokio::time::timeout_at(deadline, exchange)
            .await
            .map_err(|_| HttpError::TimedOut(timeout))??;
        Ok(Response {
            status: head.status().as_u16(),
            content_length: head
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok()),
            location: head
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            body: head.into_body(),
            limit: self.max_body,
            deadline,
            timeout,
            _conn: conn,
        })
    }
}

/// Runs one request on a new connection: the response head, and the task driving the
/// connection (stopped when the response is dropped).
async fn send<S>(
    stream: S,
    req: hyper::Request<Full<Bytes>>,
) -> Result<(hyper::Response<Incoming>, ConnTask), HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        // Header names as most servers print them (`Content-Length`, `X-Intake-Id`).
        .title_case_headers(true)
        .handshake(TokioIo::new(stream))
        .await?;
    let task = ConnTask(tokio::spawn(async move {
        // Errors surface through the request or the body.
        let _ = conn.await;
    }));
    let head = sender.send_request(req).await?;
    Ok((head, task))
}

/// The task driving a connection; aborted when dropped, so no connection outlives its
/// response.
struct ConnTask(JoinHandle<()>);

impl Drop for ConnTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A response whose head has arrived. Its body is read by [`Response::bytes`] (bounded),
/// or never: dropping the response closes the connection.
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The `Location` header, if any (a redirect's target, as sent).
    pub location: Option<String>,
    content_length: Option<u64>,
    body: Incoming,
    limit: usize,
    deadline: Instant,
    timeout: Duration,
    _conn: ConnTask,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("content_length", &self.content_length)
            .finish_non_exhaustive()
    }
}

impl Response {
    /// The body, at most the client's bound: a larger one is [`HttpError::TooLarge`], found
    /// from its `Content-Length` before reading or as soon as the bound is passed.
    pub async fn bytes(self) -> Result<Bytes, HttpError> {
        let limit = self.limit;
        if self
            .content_length
            .is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX))
        {
            return Err(HttpError::TooLarge { limit });
        }
        let read = Limited::new(self.body, limit).collect();
        match tokio::time::timeout_at(self.deadline, read).await {
            Err(_) => Err(HttpError::TimedOut(self.timeout)),
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) => {
                if e.is::<LengthLimitError>() {
                    return Err(HttpError::TooLarge { limit });
                }
                Err(HttpError::Body(e))
            }
        }
    }
}

#[cfg(test)]
mod tests;
