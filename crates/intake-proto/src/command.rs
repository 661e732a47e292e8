//! Command framing and parsing (RFC 5321 §4.1).
//!
//! [`CommandDecoder`] cuts the input into lines and checks them before anything is parsed:
//! the length limit, CRLF discipline (a bare CR or LF is refused, or a bare LF accepted as
//! a line end when configured, see [`LineEndings`]) and control characters. A checked line
//! is handed to smtp-proto's parser for the grammar of each verb, then turned into our own
//! owned [`Command`]. A bad line is one error; the decoder is already past it and decoding
//! continues with the next line, so pipelined input stays in step.

use bytes::{Buf, BytesMut};
use smtp_proto::{Error as SmtpError, Request};

use crate::data::LineEndings;
use crate::replies;
use crate::reply::Reply;

/// `BODY=` parameter of MAIL FROM (RFC 6152).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Body {
    /// No BODY parameter, or BODY=7BIT.
    #[default]
    SevenBit,
    /// BODY=8BITMIME.
    EightBitMime,
    /// BODY=BINARYMIME (only valid with BDAT; not advertised).
    BinaryMime,
}

/// MAIL FROM and the parameters Intake acts upon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailFrom {
    /// The reverse-path; empty for the null sender `<>`.
    pub address: String,
    /// `SIZE=` (RFC 1870), if given and non-zero.
    pub size: Option<u64>,
    /// `BODY=`.
    pub body: Body,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
}

/// RCPT TO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptTo {
    /// The forward-path; `postmaster` (no domain) for `<Postmaster>`, empty for `<>`.
    pub address: String,
}

/// A SASL mechanism named in AUTH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// PLAIN (RFC 4616).
    Plain,
    /// LOGIN (draft-murchison-sasl-login).
    Login,
    /// Any other mechanism (not offered).
    Other,
}

/// One SMTP command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `EHLO name`; the name is empty when the client sent none.
    Ehlo(String),
    /// `HELO name`; the name is empty when the client sent none.
    Helo(String),
    /// `MAIL FROM:<...> [params]`.
    Mail(MailFrom),
    /// `RCPT TO:<...> [params]`.
    Rcpt(RcptTo),
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (RFC 3030).
    Bdat {
        /// Chunk size in octets, as announced.
        size: u64,
        /// `LAST` was given.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY`.
    Vrfy,
    /// `HELP`.
    Help,
    /// `STARTTLS`.
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954).
    Auth {
        /// The SASL mechanism.
        mechanism: Mechanism,
        /// The initial response (base64) if given; `Some("")` for `=` (an empty one).
        initial: Option<String>,
    },
    /// A known verb that Intake does not implement (EXPN, ETRN, ...).
    NotImplemented(&'static str),
}

impl Command {
    /// The verb, for logs.
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Ehlo(_) => "EHLO",
            Command::Helo(_) => "HELO",
            Command::Mail(_) => "MAIL",
            Command::Rcpt(_) => "RCPT",
            Command::Data => "DATA",
            Command::Bdat { .. } => "BDAT",
            Command::Rset => "RSET",
            Command::Noop => "NOOP",
            Command::Quit => "QUIT",
            Command::Vrfy => "VRFY",
            Command::Help => "HELP",
            Command::StartTls => "STARTTLS",
            Command::Auth { .. } => "AUTH",
            Command::NotImplemented(v) => v,
        }
    }
}

/// Why one command line was refused. The decoder has already skipped the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The line was longer than the limit.
    #[error("line too long")]
    LineTooLong,
    /// The line contained a bare CR or ended with a bare LF.
    #[error("bare CR or LF in command")]
    BareLineEnding,
    /// NUL or another control character.
    #[error("invalid characters in command")]
    InvalidCharacters,
    /// Not an SMTP verb.
    #[error("unknown command")]
    UnknownCommand,
    /// Bad argument syntax; carries the expected grammar.
    #[error("syntax error, expected {0}")]
    Syntax(&'static str),
    /// Malformed reverse-path.
    #[error("invalid sender address")]
    InvalidSender,
    /// Malformed forward-path.
    #[error("invalid recipient address")]
    InvalidRecipient,
    /// A parameter with an invalid value.
    #[error("invalid parameter {0}")]
    InvalidParameter(&'static str),
    /// A parameter we do not know.
    #[error("unsupported parameter {0}")]
    UnsupportedParameter(String),
}

impl From<&ProtoError> for Reply {
    fn from(e: &ProtoError) -> Reply {
        match e {
            ProtoError::LineTooLong => replies::LINE_TOO_LONG,
            ProtoError::BareLineEnding => replies::BARE_LINE_ENDING_COMMAND,
            ProtoError::InvalidCharacters => replies::INVALID_CHARACTERS,
            ProtoError::UnknownCommand => replies::UNKNOWN_COMMAND,
            ProtoError::Syntax(s) => {
                replies::SYNTAX.with_text(format!("Syntax error, expected: {s}"))
            }
            ProtoError::InvalidSender => replies::BAD_SENDER,
            ProtoError::InvalidRecipient => replies::BAD_RECIPIENT,
            ProtoError::InvalidParameter(p) => {
                replies::INVALID_PARAMETER.with_text(format!("Invalid value for parameter {p}"))
            }
            ProtoError::UnsupportedParameter(p) => {
                let p: String = p.chars().filter(|c| !c.is_control()).take(64).collect();
                replies::UNSUPPORTED_PARAMETER.with_text(format!("Unsupported parameter {p}"))
            }
        }
    }
}

/// Incremental command decoder. Never reads a socket.
#[derive(Debug)]
pub struct CommandDecoder {
    max_line: usize,
    line_endings: LineEndings,
    /// Inside an over-long line: drop bytes up to the next LF, then report it.
    discarding: bool,
}

impl CommandDecoder {
    /// A decoder refusing lines longer than `max_line` octets (CRLF included).
    pub fn new(max_line: usize, line_endings: LineEndings) -> Self {
        CommandDecoder {
            max_line: max_line.max(64),
            line_endings,
            discarding: false,
        }
    }

    /// Decodes the next command from `buf`, consuming its bytes.
    ///
    /// `Ok(None)`: no complete line yet (read more). `Err`: one bad line, already skipped;
    /// call again for the next.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Command>, ProtoError> {
        let Some(lf) = memchr::memchr(b'\n', buf) else {
            if buf.len() > self.max_line {
                // Keep nothing of an over-long line: memory stays bounded.
                self.discarding = true;
                buf.clear();
            }
            return Ok(None);
        };
        if self.discarding {
            buf.advance(lf + 1);
            self.discarding = false;
            return Err(ProtoError::LineTooLong);
        }
        let line = buf.split_to(lf + 1);
        if line.len() > self.max_line {
            return Err(ProtoError::LineTooLong);
        }
        parse_line(&line, self.line_endings)
    }

    /// Whether the decoder is in the middle of skipping an over-long line.
    pub fn is_discarding(&self) -> bool {
        self.discarding
    }
}

/// Checks and parses one line that ends with LF.
fn parse_line(line: &[u8], line_endings: LineEndings) -> Result<Option<Command>, ProtoError> {
    let body = &line[..line.len() - 1];
    let body = match body.strip_suffix(b"\r") {
        Some(b) => b,
        None if line_endings == LineEndings::Normalize => body,
        None => return Err(ProtoError::BareLineEnding),
    };
    if body.contains(&b'\r') {
        return Err(ProtoError::BareLineEnding);
    }
    if body.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return Err(ProtoError::InvalidCharacters);
    }
    // A HELO/EHLO without its argument: the session decides whether that is acceptable.
    let trimmed = body.trim_ascii();
    if trimmed.eq_ignore_ascii_case(b"EHLO") {
        return Ok(Some(Command::Ehlo(String::new())));
    }
    if trimmed.eq_ignore_ascii_case(b"HELO") {
        return Ok(Some(Command::Helo(String::new())));
    }
    // smtp-proto expects the line to end with LF, and it must see CRLF as given.
    let mut normalized;
    let full: &[u8] = if line.ends_with(b"\r\n") {
        line
    } else {
        normalized = body.to_vec();
        normalized.extend_from_slice(b"\r\n");
        &normalized
    };
    let request = Request::parse(&mut full.iter()).map_err(map_error)?;
    Ok(Some(convert(request.into_owned(), body)))
}

fn map_error(e: SmtpError) -> ProtoError {
    match e {
        SmtpError::UnknownCommand => ProtoError::UnknownCommand,
        SmtpError::InvalidSenderAddress => ProtoError::InvalidSender,
        SmtpError::InvalidRecipientAddress => ProtoError::InvalidRecipient,
        SmtpError::SyntaxError { syntax } => ProtoError::Syntax(syntax),
        SmtpError::InvalidParameter { param } => ProtoError::InvalidParameter(param),
        SmtpError::UnsupportedParameter { param } => ProtoError::UnsupportedParameter(param),
        SmtpError::NeedsMoreData { .. }
        | SmtpError::ResponseTooLong
        | SmtpError::InvalidResponse { .. } => ProtoError::Syntax("a complete command line"),
    }
}

fn convert(req: Request<String>, raw: &[u8]) -> Command {
    match req {
        Request::Ehlo { host } => Command::Ehlo(host),
        Request::Helo { host } => Command::Helo(host),
        Request::Mail { from } => Command::Mail(MailFrom {
            address: from.address,
            size: (from.size > 0).then_some(from.size as u64),
            body: if from.flags & smtp_proto::MAIL_BODY_8BITMIME != 0 {
                Body::EightBitMime
            } else if from.flags & smtp_proto::MAIL_BODY_BINARYMIME != 0 {
                Body::BinaryMime
            } else {
                Body::SevenBit
            },
            smtputf8: from.flags & smtp_proto::MAIL_SMTPUTF8 != 0,
        }),
        Request::Rcpt { to } => {
            // smtp-proto reports both `<>` and `<Postmaster>` as an empty address.
            let address = if to.address.is_empty() && !contains_null_path(raw) {
                "postmaster".to_string()
            } else {
                to.address
            };
            Command::Rcpt(RcptTo { address })
        }
        Request::Data => Command::Data,
        Request::Bdat {
            chunk_size,
            is_last,
        } => Command::Bdat {
            size: chunk_size as u64,
            last: is_last,
        },
        Request::Rset => Command::Rset,
        Request::Noop { .. } => Command::Noop,
        Request::Quit => Command::Quit,
        Request::Vrfy { .. } => Command::Vrfy,
        Request::Help { .. } => Command::Help,
        Request::StartTls => Command::StartTls,
        Request::Auth {
            mechanism,
            initial_response,
        } => Command::Auth {
            mechanism: match mechanism {
                smtp_proto::AUTH_PLAIN => Mechanism::Plain,
                smtp_proto::AUTH_LOGIN => Mechanism::Login,
                _ => Mechanism::Other,
            },
            initial: (!initial_response.is_empty()).then(|| {
                if initial_response == "=" {
                    String::new()
                } else {
                    initial_response
                }
            }),
        },
        other => Command::NotImplemented(other.name()),
    }
}

fn contains_null_path(raw: &[u8]) -> bool {
    raw.windows(2).any(|w| w == b"<>")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Vec<Result<Command, ProtoError>> {
        let mut d = CommandDecoder::new(512, LineEndings::Reject);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match d.decode(&mut buf) {
                Ok(Some(c)) => out.push(Ok(c)),
                Ok(None) => break,
                Err(e) => out.push(Err(e)),
            }
        }
        out
    }

    /// Feeds `input` split at every offset and checks the same commands come out.
    fn decode_split(input: &[u8]) -> Vec<Result<Command, ProtoError>> {
        let whole = decode_all(input);
        for cut in 0..=input.len() {
            let mut d = CommandDecoder::new(512, LineEndings::Reject);
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for part in [&input[..cut], &input[cut..]] {
                buf.extend_from_slice(part);
                loop {
                    match d.decode(&mut buf) {
                        Ok(Some(c)) => out.push(Ok(c)),
                        Ok(None) => break,
                        Err(e) => out.push(Err(e)),
                    }
                }
            }
            assert_eq!(out, whole, "split at {cut}");
        }
        whole
    }

    #[test]
    fn pipelined_transaction() {
        let cmds = decode_split(
            b"EHLO client.example\r\nMAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME\r\n\
              RCPT TO:<c@d.example>\r\nDATA\r\n",
        );
        assert_eq!(
            cmds,
            vec![
                Ok(Command::Ehlo("client.example".into())),
                Ok(Command::Mail(MailFrom {
                    address: "a@b.example".into(),
                    size: Some(100),
                    body: Body::EightBitMime,
                    smtputf8: false
                })),
                Ok(Command::Rcpt(RcptTo {
                    address: "c@d.example".into()
                })),
                Ok(Command::Data),
            ]
        );
    }

    #[test]
    fn verbs_are_case_insensitive_and_bare_helo_is_reported_empty() {
        let cmds = decode_split(b"ehlo x.example\r\nHELO\r\nEHLO \r\nnoop\r\nrset\r\nquit\r\n");
        assert_eq!(
            cmds,
            vec![
                Ok(Command::Ehlo("x.example".into())),
                Ok(Command::Helo(String::new())),
                Ok(Command::Ehlo(String::new())),
                Ok(Command::Noop),
                Ok(Command::Rset),
                Ok(Command::Quit),
            ]
        );
    }

    #[test]
    fn bdat_forms() {
        let cmds = decode_split(b"BDAT 100\r\nBDAT 0 LAST\r\nBDAT 5 last\r\nBDAT x\r\n");
        assert_eq!(
            cmds,
            vec![
                Ok(Command::Bdat {
                    size: 100,
                    last: false
                }),
                Ok(Command::Bdat {
                    size: 0,
                    last: true
                }),
                Ok(Command::Bdat {
                    size: 5,
                    last: true
                }),
                Err(ProtoError::Syntax("BDAT chunk-size [LAST]")),
            ]
        );
    }

    #[test]
    fn null_sender_postmaster_and_utf8() {
        let cmds = decode_split(
            "MAIL FROM:<> SMTPUTF8\r\nRCPT TO:<Postmaster>\r\nRCPT TO:<>\r\nRCPT TO:<jürgen@bücher.example>\r\n"
                .as_bytes(),
        );
        assert!(matches!(&cmds[0], Ok(Command::Mail(m)) if m.address.is_empty() && m.smtputf8));
        assert_eq!(
            cmds[1],
            Ok(Command::Rcpt(RcptTo {
                address: "postmaster".into()
            }))
        );
        assert_eq!(
            cmds[2],
            Ok(Command::Rcpt(RcptTo {
                address: String::new()
            }))
        );
        assert_eq!(
            cmds[3],
            Ok(Command::Rcpt(RcptTo {
                address: "jürgen@bücher.example".into()
            }))
        );
    }

    #[test]
    fn errors_skip_exactly_one_line() {
        let cmds = decode_split(
            b"FOO bar\r\nMAIL FROM:bad\r\nRCPT TO:<@@>\r\nNOOP\rRSET\r\nQUIT\nNOOP\0\r\nNOOP\r\n",
        );
        assert_eq!(cmds.len(), 7, "{cmds:?}");
        assert_eq!(cmds[0], Err(ProtoError::UnknownCommand));
        assert!(matches!(cmds[1], Err(ProtoError::Syntax(_))));
        assert!(cmds[2].is_err());
        assert_eq!(cmds[3], Err(ProtoError::BareLineEnding));
        assert_eq!(cmds[4], Err(ProtoError::BareLineEnding));
        assert_eq!(cmds[5], Err(ProtoError::InvalidCharacters));
        assert_eq!(cmds[6], Ok(Command::Noop));
    }

    #[test]
    fn normalize_accepts_bare_lf_line_end() {
        let mut d = CommandDecoder::new(512, LineEndings::Normalize);
        let mut buf = BytesMut::from(&b"NOOP\nQUIT\r\n"[..]);
        assert_eq!(d.decode(&mut buf), Ok(Some(Command::Noop)));
        assert_eq!(d.decode(&mut buf), Ok(Some(Command::Quit)));
    }

    #[test]
    fn over_long_line_is_dropped_without_buffering() {
        let mut d = CommandDecoder::new(100, LineEndings::Reject);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(b"NOOP ");
        for _ in 0..100 {
            buf.extend_from_slice(&[b'x'; 1000]);
            assert_eq!(d.decode(&mut buf), Ok(None));
            assert!(buf.len() <= 1000, "buffer kept {} bytes", buf.len());
        }
        buf.extend_from_slice(b"xx\r\nNOOP\r\n");
        assert_eq!(d.decode(&mut buf), Err(ProtoError::LineTooLong));
        assert_eq!(d.decode(&mut buf), Ok(Some(Command::Noop)));
        // Too long but complete in one read.
        let mut buf =
            BytesMut::from(&[b"NOOP ".as_slice(), &[b'y'; 120], b"\r\nQUIT\r\n"].concat()[..]);
        assert_eq!(d.decode(&mut buf), Err(ProtoError::LineTooLong));
        assert_eq!(d.decode(&mut buf), Ok(Some(Command::Quit)));
    }

    #[test]
    fn not_implemented_verbs() {
        let cmds = decode_split(b"EXPN list\r\nETRN example.com\r\n");
        assert_eq!(
            cmds,
            vec![
                Ok(Command::NotImplemented("EXPN")),
                Ok(Command::NotImplemented("ETRN"))
            ]
        );
    }

    #[test]
    fn auth_commands_and_the_auth_parameter_of_mail() {
        let got = decode_all(
            b"AUTH PLAIN AGEAYg==\r\nAUTH LOGIN\r\nAUTH PLAIN =\r\nAUTH CRAM-MD5\r\n\
              MAIL FROM:<a@b.test> AUTH=<>\r\nMAIL FROM:<a@b.test> AUTH=a+40b.test\r\n",
        );
        let auth = |m, i: Option<&str>| {
            Ok(Command::Auth {
                mechanism: m,
                initial: i.map(str::to_string),
            })
        };
        assert_eq!(got[0], auth(Mechanism::Plain, Some("AGEAYg==")));
        assert_eq!(got[1], auth(Mechanism::Login, None));
        assert_eq!(
            got[2],
            auth(Mechanism::Plain, Some("")),
            "= is an empty response"
        );
        assert_eq!(got[3], auth(Mechanism::Other, None));
        // RFC 4954 §5: AUTH= on MAIL is accepted (and not acted on).
        for g in &got[4..] {
            assert!(
                matches!(g, Ok(Command::Mail(m)) if m.address == "a@b.test"),
                "{g:?}"
            );
        }
    }
}
