//! The POP3 wire format (RFC 1939 §3, RFC 2449 §4): commands in, replies out. No I/O.
//!
//! A command is one line of at most [`MAX_COMMAND_LINE`] octets, CRLF included (RFC 2449
//! §4). A longer line is skipped up to its line end and answered once with an error, so the
//! stream stays aligned. A reply is `+OK` or `-ERR`, optionally with a response code in
//! brackets (RFC 2449 §8) and, for multi-line replies, lines that are dot-stuffed and end
//! with `.` alone (RFC 1939 §3).

use bytes::{BufMut, Bytes, BytesMut};

/// Longest command line, CRLF included (RFC 2449 §4: 255 octets).
pub const MAX_COMMAND_LINE: usize = 255;

/// A command, parsed (RFC 1939 §4-§7, RFC 2449 §5, RFC 2595 §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `USER name`
    User(String),
    /// `PASS secret`: the rest of the line, spaces included.
    Pass(String),
    /// `STAT`
    Stat,
    /// `LIST [msg]`
    List(Option<usize>),
    /// `UIDL [msg]`
    Uidl(Option<usize>),
    /// `RETR msg`
    Retr(usize),
    /// `TOP msg n`
    Top(usize, usize),
    /// `DELE msg`
    Dele(usize),
    /// `RSET`
    Rset,
    /// `NOOP`
    Noop,
    /// `QUIT`
    Quit,
    /// `CAPA`
    Capa,
    /// `STLS`
    Stls,
}

/// Why a line is not a command. Each maps to one `-ERR` reply ([`ProtoError::reply`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The line was longer than [`MAX_COMMAND_LINE`]; it has been skipped.
    #[error("line too long")]
    LineTooLong,
    /// A keyword we do not implement (APOP and AUTH included).
    #[error("unknown command")]
    Unknown,
    /// A known keyword with missing or malformed arguments; the expected syntax.
    #[error("syntax error, expected: {0}")]
    Syntax(&'static str),
}

impl ProtoError {
    /// The reply a client gets for this error.
    pub fn reply(&self) -> Reply {
        Reply::err(self.to_string())
    }
}

/// Frames command lines out of a byte buffer. "Not a whole line yet" is `Ok(None)`.
#[derive(Debug, Default)]
pub struct CommandDecoder {
    /// True while skipping the rest of an over-long line.
    discarding: bool,
}

impl CommandDecoder {
    /// A decoder with no state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one command from the front of `buf`. `Ok(None)`: no whole line yet (and the
    /// buffer holds at most [`MAX_COMMAND_LINE`] octets of it). `Err`: one bad line,
    /// already consumed; decoding can continue.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Command>, ProtoError> {
        loop {
            let Some(end) = memchr::memchr(b'\n', buf) else {
                if buf.len() >= MAX_COMMAND_LINE {
                    // Keep nothing of an over-long line: the buffer stays bounded.
                    buf.clear();
                    self.discarding = true;
                }
                return Ok(None);
            };
            let line = buf.split_to(end + 1);
            if self.discarding {
                self.discarding = false;
                return Err(ProtoError::LineTooLong);
            }
            if line.len() > MAX_COMMAND_LINE {
                return Err(ProtoError::LineTooLong);
            }
            let text = trim_line_end(&line);
            if text.is_empty() {
                // A blank line is not a command; some clients send one on connect.
                continue;
            }
            return parse(text).map(Some);
        }
    }
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let mut l = line;
    while let [rest @ .., b'\r' | b'\n'] = l {
        l = rest;
    }
    l
}

/// Parses one line, its line end removed.
pub fn parse(line: &[u8]) -> Result<Command, ProtoError> {
    let text = String::from_utf8_lossy(line);
    let (keyword, rest) = match text.split_once(' ') {
        Some((k, r)) => (k, Some(r)),
        None => (text.as_ref(), None),
    };
    let args: Vec<&str> = rest.map(|r| r.split(' ').collect()).unwrap_or_default();
    let kw = keyword.to_ascii_uppercase();
    let none = |c: Command, syntax| {
        if rest.is_none() {
            Ok(c)
        } else {
            Err(ProtoError::Syntax(syntax))
        }
    };
    let one_num = |syntax| match args.as_slice() {
        [n] => msg_number(n).ok_or(ProtoError::Syntax(syntax)),
        _ => Err(ProtoError::Syntax(syntax)),
    };
    let opt_num = |syntax| match args.as_slice() {
        [] => Ok(None),
        [n] => msg_number(n).map(Some).ok_or(ProtoError::Syntax(syntax)),
        _ => Err(ProtoError::Syntax(syntax)),
    };
    match kw.as_str() {
        "USER" => match rest {
            Some(name) if !name.is_empty() && !name.contains(' ') => {
                Ok(Command::User(name.to_string()))
            }
            _ => Err(ProtoError::Syntax("USER name")),
        },
        "PASS" => match rest {
            Some(secret) if !secret.is_empty() => Ok(Command::Pass(secret.to_string())),
            _ => Err(ProtoError::Syntax("PASS secret")),
        },
        "STAT" => none(Command::Stat, "STAT"),
        "LIST" => opt_num("LIST [msg]").map(Command::List),
        "UIDL" => opt_num("UIDL [msg]").map(Command::Uidl),
        "RETR" => one_num("RETR msg").map(Command::Retr),
        "DELE" => one_num("DELE msg").map(Command::Dele),
        "TOP" => match args.as_slice() {
            [m, n] => match (msg_number(m), count(n)) {
                (Some(m), Some(n)) => Ok(Command::Top(m, n)),
                _ => Err(ProtoError::Syntax("TOP msg n")),
            },
            _ => Err(ProtoError::Syntax("TOP msg n")),
        },
        "RSET" => none(Command::Rset, "RSET"),
        "NOOP" => none(Command::Noop, "NOOP"),
        "QUIT" => none(Command::Quit, "QUIT"),
        "CAPA" => none(Command::Capa, "CAPA"),
        "STLS" => none(Command::Stls, "STLS"),
        _ => Err(ProtoError::Unknown),
    }
}

/// A line count: decimal digits, 0 allowed.
fn count(s: &str) -> Option<usize> {
    if is_digits(s) { s.parse().ok() } else { None }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// A message number: decimal digits, at least 1 (RFC 1939 §3).
fn msg_number(s: &str) -> Option<usize> {
    if !is_digits(s) {
        return None;
    }
    s.parse::<usize>().ok().filter(|n| *n >= 1)
}

/// A multi-line reply's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Lines we wrote (LIST, UIDL, CAPA): no line starts with a dot.
    Lines(Vec<String>),
    /// A message, or its header and first `top` body lines: dot-stuffed, CRLF line ends.
    Message {
        /// The message as stored.
        raw: Bytes,
        /// TOP: the header, the blank line and this many body lines.
        top: Option<usize>,
    },
}

/// One reply: status, text, and a body for multi-line replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// `+OK` or `-ERR`.
    pub ok: bool,
    /// The text after the status (a response code in brackets first, if any).
    pub text: String,
    /// The lines of a multi-line reply.
    pub body: Option<Body>,
}

impl Reply {
    /// `+OK text`
    pub fn ok(text: impl Into<String>) -> Reply {
        Reply {
            ok: true,
            text: text.into(),
            body: None,
        }
    }

    /// `-ERR text`
    pub fn err(text: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            text: text.into(),
            body: None,
        }
    }

    /// `+OK text` followed by `body` and the terminating dot.
    pub fn multi(text: impl Into<String>, body: Body) -> Reply {
        Reply {
            ok: true,
            text: text.into(),
            body: Some(body),
        }
    }

    /// Appends the reply as it goes on the wire.
    pub fn write_to(&self, out: &mut BytesMut) {
        out.put_slice(if self.ok { b"+OK" } else { b"-ERR" });
        if !self.text.is_empty() {
            out.put_u8(b' ');
            // Our texts never hold a line end; make sure of it anyway.
            for b in self.text.bytes() {
                out.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
            }
        }
        out.put_slice(b"\r\n");
        match &self.body {
            None => return,
            Some(Body::Lines(lines)) => {
                for l in lines {
                    write_line(out, l.as_bytes());
                }
            }
            Some(Body::Message { raw, top }) => write_message(out, raw, *top),
        }
        out.put_slice(b".\r\n");
    }

    /// The reply as bytes (tests, logs).
    pub fn to_wire(&self) -> Vec<u8> {
        let mut b = BytesMut::new();
        self.write_to(&mut b);
        b.to_vec()
    }
}

/// One line, dot-stuffed, with CRLF.
fn write_line(out: &mut BytesMut, line: &[u8]) {
    if line.first() == Some(&b'.') {
        out.put_u8(b'.');
    }
    out.put_slice(line);
    out.put_slice(b"\r\n");
}

/// A message for RETR or TOP: every line dot-stuffed and ended with CRLF (a bare LF or a
/// missing final line end becomes CRLF), cut after the header and `top` body lines.
fn write_message(out: &mut BytesMut, raw: &[u8], top: Option<usize>) {
    out.reserve(raw.len() + raw.len() / 64 + 8);
    let mut in_body = false;
    let mut body_lines = 0usize;
    let mut rest = raw;
    while !rest.is_empty() {
        if in_body && top.is_some_and(|t| body_lines >= t) {
            break;
        }
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        write_line(out, line);
        if in_body {
            body_lines += 1;
        } else if line.is_empty() {
            in_body = true;
        }
        rest = next;
    }
}

/// The octets a message takes in a RETR reply, not counting dot-stuffing (RFC 1939 §11:
/// the size LIST and STAT give): lines with CRLF ends.
pub fn wire_size(raw: &[u8]) -> u64 {
    let lf = memchr::memchr_iter(b'\n', raw).count() as u64;
    let crlf = memchr::memmem::find_iter(raw, b"\r\n").count() as u64;
    let unterminated = u64::from(!raw.is_empty() && !raw.ends_with(b"\n")) * 2;
    raw.len() as u64 + (lf - crlf) + unterminated
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Vec<Result<Command, ProtoError>> {
        let mut d = CommandDecoder::new();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match d.decode(&mut buf) {
                Ok(None) => return out,
                Ok(Some(c)) => out.push(Ok(c)),
                Err(e) => out.push(Err(e)),
            }
        }
    }

    #[test]
    fn commands_parse_case_insensitively_with_their_arguments() {
        let got = decode_all(
            b"user bob@x.test\r\nPASS two words\r\nStat\r\nLIST\r\nLIST 2\r\nUIDL 1\r\n\
              RETR 3\r\nTOP 1 0\r\nDELE 9\r\nRSET\r\nNOOP\r\nCAPA\r\nSTLS\r\nQUIT\n",
        );
        let want = vec![
            Command::User("bob@x.test".into()),
            Command::Pass("two words".into()),
            Command::Stat,
            Command::List(None),
            Command::List(Some(2)),
            Command::Uidl(Some(1)),
            Command::Retr(3),
            Command::Top(1, 0),
            Command::Dele(9),
            Command::Rset,
            Command::Noop,
            Command::Capa,
            Command::Stls,
            Command::Quit,
        ];
        assert_eq!(got, want.into_iter().map(Ok).collect::<Vec<_>>());
    }

    #[test]
    fn bad_arguments_name_the_expected_syntax() {
        let got = decode_all(b"RETR\r\nRETR 0\r\nRETR -1\r\nTOP 1\r\nTOP 1 x\r\nLIST 1 2\r\nSTAT now\r\nAPOP a b\r\nUSER\r\n");
        assert_eq!(
            got,
            vec![
                Err(ProtoError::Syntax("RETR msg")),
                Err(ProtoError::Syntax("RETR msg")),
                Err(ProtoError::Syntax("RETR msg")),
                Err(ProtoError::Syntax("TOP msg n")),
                Err(ProtoError::Syntax("TOP msg n")),
                Err(ProtoError::Syntax("LIST [msg]")),
                Err(ProtoError::Syntax("STAT")),
                Err(ProtoError::Unknown),
                Err(ProtoError::Syntax("USER name")),
            ]
        );
        assert_eq!(
            ProtoError::Syntax("RETR msg").reply().to_wire(),
            b"-ERR syntax error, expected: RETR msg\r\n"
        );
    }

    #[test]
    fn an_over_long_line_is_skipped_once_and_the_next_command_still_parses() {
        let mut d = CommandDecoder::new();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[b'A'; 300]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert!(buf.is_empty(), "the buffer does not keep an over-long line");
        buf.extend_from_slice(&[b'B'; 300]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        buf.extend_from_slice(b"tail\r\nNOOP\r\n");
        assert_eq!(d.decode(&mut buf), Err(ProtoError::LineTooLong));
        assert_eq!(d.decode(&mut buf), Ok(Some(Command::Noop)));
        // A long line that arrives whole is refused the same way.
        let mut line = vec![b'X'; 260];
        line.extend_from_slice(b"\r\nQUIT\r\n");
        assert_eq!(
            decode_all(&line),
            vec![Err(ProtoError::LineTooLong), Ok(Command::Quit)]
        );
    }

    #[test]
    fn input_split_at_every_offset_decodes_the_same() {
        let input = b"USER a\r\nPASS b c\r\nTOP 2 10\r\nQUIT\r\n";
        let whole = decode_all(input);
        for cut in 1..input.len() {
            let mut d = CommandDecoder::new();
            let mut buf = BytesMut::from(&input[..cut]);
            let mut got = Vec::new();
            while let Some(c) = d.decode(&mut buf).transpose() {
                got.push(c);
            }
            buf.extend_from_slice(&input[cut..]);
            while let Some(c) = d.decode(&mut buf).transpose() {
                got.push(c);
            }
            assert_eq!(got, whole, "cut at {cut}");
        }
    }

    #[test]
    fn messages_are_dot_stuffed_with_crlf_and_top_cuts_after_the_header() {
        let raw =
            Bytes::from_static(b"Subject: hi\nX: y\r\n\r\n.line one\r\nline two\n..three\r\nfour");
        let r = Reply::multi(
            "4 octets",
            Body::Message {
                raw: raw.clone(),
                top: None,
            },
        );
        assert_eq!(
            String::from_utf8(r.to_wire()).unwrap(),
            "+OK 4 octets\r\nSubject: hi\r\nX: y\r\n\r\n..line one\r\nline two\r\n...three\r\nfour\r\n.\r\n"
        );
        let top = |n| {
            let r = Reply::multi(
                "",
                Body::Message {
                    raw: raw.clone(),
                    top: Some(n),
                },
            );
            String::from_utf8(r.to_wire()).unwrap()
        };
        assert_eq!(top(0), "+OK\r\nSubject: hi\r\nX: y\r\n\r\n.\r\n");
        assert_eq!(
            top(1),
            "+OK\r\nSubject: hi\r\nX: y\r\n\r\n..line one\r\n.\r\n"
        );
        assert_eq!(top(99), top(4));
    }

    #[test]
    fn the_wire_size_counts_crlf_line_ends() {
        assert_eq!(wire_size(b"a\r\nb\r\n"), 6);
        assert_eq!(wire_size(b"a\nb\n"), 6);
        assert_eq!(wire_size(b"a\r\nb"), 6);
        assert_eq!(wire_size(b""), 0);
        let raw = b"Subject: x\n\n.dot\nend";
        let mut sent = BytesMut::new();
        write_message(&mut sent, raw, None);
        // What is sent, minus the one stuffed dot.
        assert_eq!(wire_size(raw), sent.len() as u64 - 1);
    }

    #[test]
    fn reply_text_cannot_inject_a_line() {
        assert_eq!(Reply::err("a\r\nb").to_wire(), b"-ERR a  b\r\n");
    }
}
