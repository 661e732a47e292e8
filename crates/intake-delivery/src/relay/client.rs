//! A small SMTP/LMTP client for the relay target, on smtp-proto's reply parser.
//!
//! It speaks just what relaying before replying needs: greeting, EHLO (or LHLO),
//! STARTTLS, AUTH PLAIN, MAIL/RCPT/DATA with dot-stuffing, RSET, and, for LMTP, one reply
//! per accepted recipient after the final dot (RFC 2033 §4.2). Every read has a deadline.

use std::time::Duration;

use base64::Engine;
use bytes::{Buf, BytesMut};
use intake_core::{BodyType, DownstreamReply, Handoff, RcptOutcome};
use smtp_proto::response::parser::ResponseReceiver;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{RelayConfig, RelayTls};

/// A byte stream to the downstream: plain TCP, or TLS after STARTTLS.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One reply from the downstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub code: u16,
    /// The enhanced status (if any) and the text of the last line.
    pub text: String,
    /// Every line's text (for EHLO capabilities).
    pub lines: Vec<String>,
}

impl Response {
    fn downstream(&self) -> DownstreamReply {
        DownstreamReply {
            code: self.code,
            text: self.text.clone(),
        }
    }

    fn outcome(&self) -> RcptOutcome {
        RcptOutcome::from_reply(self.code, self.text.clone())
    }
}

/// Why the client could not go on with this connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("unparsable reply: {0}")]
    Protocol(String),
    /// A reply that ends the session (greeting, EHLO, STARTTLS, AUTH).
    #[error("downstream said {} {}", .0.code, .0.text)]
    Refused(Response),
    #[error("{0}")]
    Unsupported(&'static str),
}

impl ClientError {
    /// The outcome for every recipient: always temporary (no connection, a timeout or
    /// a refused session are not a verdict on the message), with the downstream's reply
    /// when there is one.
    pub fn outcome(&self) -> RcptOutcome {
        match self {
            ClientError::Refused(r) => RcptOutcome::TempFail(Some(r.downstream())),
            _ => RcptOutcome::TEMP,
        }
    }
}

/// What the downstream offered in its EHLO/LHLO reply.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Caps {
    starttls: bool,
    eight_bit: bool,
    smtputf8: bool,
    auth_plain: bool,
}

impl Caps {
    fn parse(lines: &[String]) -> Caps {
        let mut c = Caps::default();
        // The first line is the server's name.
        for l in lines.iter().skip(1) {
            let up = l.to_ascii_uppercase();
            let mut words = up.split_whitespace();
            match words.next() {
                Some("STARTTLS") => c.starttls = true,
                Some("8BITMIME") => c.eight_bit = true,
                Some("SMTPUTF8") => c.smtputf8 = true,
                Some("AUTH") => c.auth_plain |= words.any(|w| w == "PLAIN"),
                _ => {}
            }
        }
        c
    }
}

/// One open session with the downstream, ready for a transaction.
pub(crate) struct Client {
    io: Box<dyn Stream>,
    buf: BytesMut,
    rx: ResponseReceiver,
    caps: Caps,
    command_timeout: Duration,
}

impl Client {
    /// Connects, reads the greeting, says EHLO/LHLO, runs STARTTLS and AUTH as configured.
    pub async fn connect(
        cfg: &RelayConfig,
        tls: Option<&tokio_rustls::TlsConnector>,
    ) -> Result<Client, ClientError> {
        let tcp = tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(&cfg.server))
            .await
            .map_err(|_| ClientError::Timeout(cfg.connect_timeout))??;
        let _ = tcp.set_nodelay(true);
        let mut c = Client {
            io: Box::new(tcp),
            buf: BytesMut::with_capacity(1024),
            rx: ResponseReceiver::default(),
            caps: Caps::default(),
            command_timeout: cfg.command_timeout,
        };
        let greeting = c.read(cfg.command_timeout).await?;
        if greeting.code != 220 {
            return Err(ClientError::Refused(greeting));
        }
        c.hello(cfg).await?;
        match (cfg.tls, c.caps.starttls, tls) {
            (RelayTls::Off, _, _) | (RelayTls::Optional, false, _) => {}
            (RelayTls::Required, false, _) => {
                return Err(ClientError::Unsupported(
                    "the downstream offers no STARTTLS",
                ));
            }
            (_, true, None) => return Err(ClientError::Unsupported("no TLS client configured")),
            (_, true, Some(connector)) => {
                let r = c.command("STARTTLS\r\n").await?;
                if r.code != 220 {
                    return Err(ClientError::Refused(r));
                }
                let name = cfg.tls_name.clone();
                let plain = std::mem::replace(&mut c.io, Box::new(tokio::io::duplex(1).0));
                // Anything the server sent before the handshake is not to be trusted.
                c.buf.clear();
                let tls = tokio::time::timeout(cfg.command_timeout, connector.connect(name, plain))
                    .await
                    .map_err(|_| ClientError::Timeout(cfg.command_timeout))??;
                c.io = Box::new(tls);
                c.hello(cfg).await?;
            }
        }
        if let Some((user, password)) = &cfg.auth {
            if !c.caps.auth_plain {
                return Err(ClientError::Unsupported(
                    "the downstream offers no AUTH PLAIN",
                ));
            }
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
            let r = c.command(&format!("AUTH PLAIN {token}\r\n")).await?;
            if r.code != 235 {
                return Err(ClientError::Refused(r));
            }
        }
        Ok(c)
    }

    async fn hello(&mut self, cfg: &RelayConfig) -> Result<(), ClientError> {
        let verb = if cfg.lmtp { "LHLO" } else { "EHLO" };
        let r = self.command(&format!("{verb} {}\r\n", cfg.helo)).await?;
        if r.code != 250 {
            return Err(ClientError::Refused(r));
        }
        self.caps = Caps::parse(&r.lines);
        Ok(())
    }

    /// Checks that a pooled connection still works (RSET).
    pub async fn reset(&mut self) -> Result<(), ClientError> {
        let r = self.command("RSET\r\n").await?;
        if r.code != 250 {
            return Err(ClientError::Refused(r));
        }
        Ok(())
    }

    /// One transaction. Returns the outcome per envelope recipient; `Err` when the
    /// connection failed midway (every recipient without an answer is then a temporary
    /// failure, and the connection is not reused).
    pub async fn send(
        &mut self,
        msg: &Handoff,
        lmtp: bool,
        data_timeout: Duration,
    ) -> Result<Vec<RcptOutcome>, ClientError> {
        let env = &msg.message.envelope;
        let n = env.rcpt_to.len();
        let mut mail = format!("MAIL FROM:<{}>", env.mail_from);
        if msg.params.body == BodyType::EightBitMime && self.caps.eight_bit {
            mail.push_str(" BODY=8BITMIME");
        }
        if msg.params.smtputf8 {
            if !self.caps.smtputf8 {
                // RFC 6531 §3.2: a message that needs SMTPUTF8 cannot go to a server
                // without it.
                let r = DownstreamReply {
                    code: 553,
                    text: "5.6.7 The downstream server does not support SMTPUTF8".into(),
                };
                return Ok(vec![RcptOutcome::PermFail(Some(r)); n]);
            }
            mail.push_str(" SMTPUTF8");
        }
        mail.push_str("\r\n");
        let r = self.command(&mail).await?;
        if r.code != 250 {
            self.reset().await?;
            return Ok(vec![r.outcome(); n]);
        }
        let mut outcomes = Vec::with_capacity(n);
        for rcpt in &env.rcpt_to {
            let r = self.command(&format!("RCPT TO:<{rcpt}>\r\n")).await?;
            outcomes.push(r.outcome());
        }
        let accepted: Vec<usize> = (0..n).filter(|&i| outcomes[i].is_accepted()).collect();
        if accepted.is_empty() {
            self.reset().await?;
            return Ok(outcomes);
        }
        let r = self.command("DATA\r\n").await?;
        if r.code != 354 {
            for &i in &accepted {
                outcomes[i] = r.outcome();
            }
            if r.code >= 400 {
                self.reset().await?;
            }
            return Ok(outcomes);
        }
        let mut body = Vec::with_capacity(msg.message.raw.len() + 64);
        dot_stuff(&msg.message.raw, &mut body);
        tokio::time::timeout(data_timeout, async {
            self.io.write_all(&body).await?;
            self.io.flush().await
        })
        .await
        .map_err(|_| ClientError::Timeout(data_timeout))??;
        if lmtp {
            // RFC 2033 §4.2: one reply per recipient that RCPT accepted, in order.
            for &i in &accepted {
                outcomes[i] = self.read(data_timeout).await?.outcome();
            }
        } else {
            let r = self.read(data_timeout).await?;
            for &i in &accepted {
                outcomes[i] = r.outcome();
            }
        }
        Ok(outcomes)
    }

    /// Asks whether the downstream would take mail from `mail_from` to `rcpt` (MAIL, RCPT,
    /// RSET): its RCPT reply, or the MAIL reply if MAIL was refused.
    pub async fn probe(&mut self, mail_from: &str, rcpt: &str) -> Result<Response, ClientError> {
        let r = self
            .command(&format!("MAIL FROM:<{mail_from}>\r\n"))
            .await?;
        if r.code != 250 {
            self.reset().await?;
            return Ok(r);
        }
        let r = self.command(&format!("RCPT TO:<{rcpt}>\r\n")).await?;
        self.reset().await?;
        Ok(r)
    }

    /// Sends QUIT without waiting long for the answer.
    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            self.io.write_all(b"QUIT\r\n").await?;
            self.io.flush().await?;
            self.read(Duration::from_secs(1)).await.map(|_| ())
        })
        .await;
    }

    async fn command(&mut self, line: &str) -> Result<Response, ClientError> {
        let limit = self.command_timeout;
        tokio::time::timeout(limit, async {
            self.io.write_all(line.as_bytes()).await?;
            self.io.flush().await
        })
        .await
        .map_err(|_| ClientError::Timeout(limit))??;
        self.read(limit).await
    }

    /// Reads one (possibly multi-line) reply within `limit`.
    async fn read(&mut self, limit: Duration) -> Result<Response, ClientError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if !self.buf.is_empty() {
                let mut it = self.buf.iter();
                let result = self.rx.parse(&mut it);
                let consumed = self.buf.len() - it.as_slice().len();
                self.buf.advance(consumed);
                match result {
                    Ok(r) => {
                        self.rx.reset();
                        let lines: Vec<String> =
                            r.message.split('\n').map(str::to_string).collect();
                        let last = lines.last().cloned().unwrap_or_default();
                        let text = if r.esc[0] != 0 {
                            format!("{}.{}.{} {last}", r.esc[0], r.esc[1], r.esc[2])
                        } else {
                            last
                        };
                        return Ok(Response {
                            code: r.code,
                            text,
                            lines,
                        });
                    }
                    Err(smtp_proto::Error::NeedsMoreData { .. }) => {}
                    Err(e) => {
                        self.rx.reset();
                        return Err(ClientError::Protocol(format!("{e:?}")));
                    }
                }
            }
            let n = tokio::time::timeout_at(deadline, self.io.read_buf(&mut self.buf))
                .await
                .map_err(|_| ClientError::Timeout(limit))??;
            if n == 0 {
                return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }
}

/// The message as DATA content: a `.` doubled at the start of every line (RFC 5321
/// §4.5.2), CRLF at the end, then the `.` line.
pub(crate) fn dot_stuff(raw: &[u8], out: &mut Vec<u8>) {
    let mut at_line_start = true;
    for &b in raw {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !raw.is_empty() && !raw.ends_with(b"\r\n") {
        if raw.ends_with(b"\r") {
            out.push(b'\n');
        } else {
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b".\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuffed(raw: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        dot_stuff(raw, &mut v);
        v
    }

    #[test]
    fn dots_at_line_starts_are_doubled_and_the_end_is_a_dot_line() {
        assert_eq!(stuffed(b".a\r\nb\r\n..c\r\n"), b"..a\r\nb\r\n...c\r\n.\r\n");
        assert_eq!(stuffed(b"no final newline"), b"no final newline\r\n.\r\n");
        // A bare LF kept from BDAT content still starts a line for the downstream.
        assert_eq!(stuffed(b"x\n.\r\n"), b"x\n..\r\n.\r\n");
        assert_eq!(stuffed(b""), b".\r\n");
    }

    #[test]
    fn capabilities_from_ehlo_lines() {
        let lines: Vec<String> = [
            "mx",
            "PIPELINING",
            "8BITMIME",
            "STARTTLS",
            "AUTH LOGIN PLAIN",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let c = Caps::parse(&lines);
        assert!(c.starttls && c.eight_bit && c.auth_plain && !c.smtputf8);
    }
}
