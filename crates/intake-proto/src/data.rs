//! Message content readers: DATA (RFC 5321 §4.1.1.4, §4.5.2) and BDAT (RFC 3030).
//!
//! Why our own DATA decoder rather than smtp-proto's `DataReceiver`: that one misses the
//! terminator on the first line after DATA, and it ends data on a bare-LF `\n.\n`, which is
//! exactly what SMTP smuggling needs. Here the end of data is only `<CRLF>.<CRLF>`, and a
//! bare CR or LF is either refused (the default, as Postfix since 3.9) or stored as CRLF
//! without ever starting a new line for the terminator or dot-stuffing.

use bytes::{Buf, BytesMut};

/// What to do with a bare CR or bare LF (one not part of a CRLF pair).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineEndings {
    /// Refuse: the message is read to its end and rejected; a command line is refused.
    #[default]
    Reject,
    /// Accept: in DATA a bare CR or LF is stored as CRLF but never ends a line for the
    /// purposes of the terminator or dot-unstuffing; in commands a bare LF ends the line.
    Normalize,
}

/// How a DATA body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataOutcome {
    /// Complete and within limits: the bytes are in the output buffer.
    Complete,
    /// Larger than the limit; the bytes past the limit were not kept.
    TooLarge,
    /// Contained a bare CR or LF under [`LineEndings::Reject`].
    BareLineEnding,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line (after CRLF).
    LineStart,
    /// Inside a line.
    Text,
    /// Saw CR inside a line.
    Cr,
    /// Saw `.` at the start of a line.
    Dot,
    /// Saw `.` then CR at the start of a line.
    DotCr,
}

/// Incremental DATA decoder: dot-unstuffing, terminator, size cap, bare CR/LF policy.
#[derive(Debug)]
pub struct DataDecoder {
    state: State,
    max_size: u64,
    line_endings: LineEndings,
    /// Octets of message content seen (after unstuffing), kept or not.
    size: u64,
    bare: bool,
}

impl DataDecoder {
    /// A decoder for one message of at most `max_size` octets.
    pub fn new(max_size: u64, line_endings: LineEndings) -> Self {
        DataDecoder {
            state: State::LineStart,
            max_size,
            line_endings,
            size: 0,
            bare: false,
        }
    }

    /// Octets of content seen so far, including any past the limit.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether more content than the limit has arrived (the rest is being dropped).
    pub fn is_over_limit(&self) -> bool {
        self.size > self.max_size
    }

    /// Appends content, keeping at most the first `max_size` octets whatever the split of
    /// the input (found by the `data` fuzz target).
    fn emit(&mut self, out: &mut BytesMut, bytes: &[u8]) {
        let room = self.max_size.saturating_sub(self.size);
        let keep = (bytes.len() as u64).min(room) as usize;
        out.extend_from_slice(&bytes[..keep]);
        self.size += bytes.len() as u64;
    }

    fn bare_line_ending(&mut self, out: &mut BytesMut) {
        self.bare = true;
        if self.line_endings == LineEndings::Normalize {
            self.emit(out, b"\r\n");
        }
    }

    /// Consumes input up to and including the terminator and appends the content to `out`.
    ///
    /// Returns `None` when more input is needed (all of `input` was consumed), or the
    /// outcome once `<CRLF>.<CRLF>` was seen; bytes after it stay in `input`.
    pub fn decode(&mut self, input: &mut BytesMut, out: &mut BytesMut) -> Option<DataOutcome> {
        let mut i = 0;
        let buf = &input[..];
        let outcome = loop {
            if i >= buf.len() {
                break None;
            }
            match self.state {
                State::Text | State::LineStart if self.state == State::Text || buf[i] != b'.' => {
                    // Copy a run of ordinary bytes in one go.
                    let rest = &buf[i..];
                    let n = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                    if n > 0 {
                        self.emit(out, &rest[..n]);
                        self.state = State::Text;
                        i += n;
                        continue;
                    }
                    if rest[0] == b'\r' {
                        self.state = State::Cr;
                    } else {
                        // Bare LF: never a line start.
                        self.bare_line_ending(out);
                        self.state = State::Text;
                    }
                    i += 1;
                }
                State::LineStart => {
                    // A leading dot: dropped (RFC 5321 §4.5.2), unless it ends the data.
                    self.state = State::Dot;
                    i += 1;
                }
                State::Text => unreachable!("handled above"),
                State::Cr => {
                    if buf[i] == b'\n' {
                        self.emit(out, b"\r\n");
                        self.state = State::LineStart;
                        i += 1;
                    } else {
                        // Bare CR; the byte after it is processed as text.
                        self.bare_line_ending(out);
                        self.state = State::Text;
                    }
                }
                State::Dot => match buf[i] {
                    b'\r' => {
                        self.state = State::DotCr;
                        i += 1;
                    }
                    b'\n' => {
                        // `.` then bare LF: content, never the end.
                        self.emit(out, b".");
                        self.bare_line_ending(out);
                        self.state = State::Text;
                        i += 1;
                    }
                    _ => self.state = State::Text,
                },
                State::DotCr => {
                    if buf[i] == b'\n' {
                        i += 1;
                        self.state = State::LineStart;
                        break Some(if self.bare && self.line_endings == LineEndings::Reject {
                            DataOutcome::BareLineEnding
                        } else if self.size > self.max_size {
                            DataOutcome::TooLarge
                        } else {
                            DataOutcome::Complete
                        });
                    }
                    // `.` CR then something else: a bare CR after a stuffed dot.
                    self.emit(out, b".");
                    self.bare_line_ending(out);
                    self.state = State::Text;
                }
            }
        };
        input.advance(i);
        outcome
    }
}

/// Reads the octets of one BDAT chunk (RFC 3030 §2): exactly `size` octets, no framing.
#[derive(Debug)]
pub struct BdatDecoder {
    remaining: u64,
    keep: bool,
}

impl BdatDecoder {
    /// A reader for `size` octets; when `keep` is false they are consumed and dropped.
    pub fn new(size: u64, keep: bool) -> Self {
        BdatDecoder {
            remaining: size,
            keep,
        }
    }

    /// Moves up to the rest of the chunk from `input` to `out` (or drops it). Returns true
    /// once the whole chunk has been read.
    pub fn decode(&mut self, input: &mut BytesMut, out: &mut BytesMut) -> bool {
        let n = (input.len() as u64).min(self.remaining) as usize;
        if self.keep {
            out.extend_from_slice(&input[..n]);
        }
        input.advance(n);
        self.remaining -= n as u64;
        self.remaining == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8], max: u64, le: LineEndings) -> (Option<DataOutcome>, Vec<u8>, Vec<u8>) {
        let mut d = DataDecoder::new(max, le);
        let mut inb = BytesMut::from(input);
        let mut out = BytesMut::new();
        let r = d.decode(&mut inb, &mut out);
        (r, out.to_vec(), inb.to_vec())
    }

    /// Same result whatever the split points (each byte fed alone, and every cut in two).
    fn run_split(
        input: &[u8],
        max: u64,
        le: LineEndings,
    ) -> (Option<DataOutcome>, Vec<u8>, Vec<u8>) {
        let whole = run(input, max, le);
        let mut d = DataDecoder::new(max, le);
        let mut out = BytesMut::new();
        let mut r = None;
        let mut pos = 0;
        while pos < input.len() && r.is_none() {
            let mut b = BytesMut::from(&input[pos..pos + 1]);
            r = d.decode(&mut b, &mut out);
            pos += 1;
        }
        assert_eq!(
            (r, out.to_vec(), input[pos..].to_vec()),
            whole,
            "byte by byte"
        );
        for cut in 0..input.len() {
            let mut d = DataDecoder::new(max, le);
            let mut out = BytesMut::new();
            let mut b = BytesMut::from(&input[..cut]);
            let mut r = d.decode(&mut b, &mut out);
            let mut rest = b.to_vec();
            rest.extend_from_slice(&input[cut..]);
            let mut b = BytesMut::from(&rest[..]);
            if r.is_none() {
                r = d.decode(&mut b, &mut out);
            }
            assert_eq!((r, out.to_vec(), b.to_vec()), whole, "cut at {cut}");
        }
        whole
    }

    #[test]
    fn terminator_and_rest() {
        let (r, out, rest) = run_split(
            b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n",
            1000,
            LineEndings::Reject,
        );
        assert_eq!(r, Some(DataOutcome::Complete));
        assert_eq!(out, b"Subject: x\r\n\r\nbody\r\n");
        assert_eq!(rest, b"QUIT\r\n");
    }

    #[test]
    fn empty_message_and_first_line_dots() {
        assert_eq!(
            run_split(b".\r\n", 10, LineEndings::Reject),
            (Some(DataOutcome::Complete), vec![], vec![])
        );
        let (r, out, _) = run_split(b"..x\r\n..\r\n.\r\n", 100, LineEndings::Reject);
        assert_eq!(r, Some(DataOutcome::Complete));
        assert_eq!(out, b".x\r\n.\r\n");
        // A body that is only a dot, stuffed.
        let (_, out, _) = run_split(b"..\r\n.\r\n", 100, LineEndings::Reject);
        assert_eq!(out, b".\r\n");
    }

    #[test]
    fn dots_inside_lines_are_content() {
        let (r, out, _) = run_split(b"a.b\r\n .\r\n.a\r\n.\r\n", 100, LineEndings::Reject);
        assert_eq!(r, Some(DataOutcome::Complete));
        assert_eq!(out, b"a.b\r\n .\r\na\r\n");
    }

    #[test]
    fn smuggling_sequences_never_end_the_message() {
        for seq in [
            &b"\n.\n"[..],
            b"\r.\r",
            b"\n.\r\n",
            b"\r\n.\n",
            b"\r\n.\r",
            b"\r.\r\n",
            b"\n.\r",
            b"\r\n.\rX",
        ] {
            let mut msg = b"Subject: a\r\n\r\nhello".to_vec();
            msg.extend_from_slice(seq);
            msg.extend_from_slice(
                b"MAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nsmuggled\r\n.\r\nNEXT",
            );
            for le in [LineEndings::Reject, LineEndings::Normalize] {
                let (r, out, rest) = run_split(&msg, 10_000, le);
                assert_eq!(
                    rest, b"NEXT",
                    "{seq:?} {le:?}: only the real terminator ends data"
                );
                let want = if le == LineEndings::Reject {
                    DataOutcome::BareLineEnding
                } else {
                    DataOutcome::Complete
                };
                assert_eq!(r, Some(want), "{seq:?} {le:?}");
                if le == LineEndings::Normalize {
                    assert!(
                        !out.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
                        "no bare LF stored"
                    );
                    assert!(out.ends_with(b"smuggled\r\n"));
                }
            }
        }
    }

    #[test]
    fn size_cap_keeps_reading_but_not_storing() {
        let mut msg = Vec::new();
        for _ in 0..1000 {
            msg.extend_from_slice(b"0123456789012345678901234567890123456789\r\n");
        }
        msg.extend_from_slice(b".\r\nQUIT\r\n");
        let mut d = DataDecoder::new(1000, LineEndings::Reject);
        let mut out = BytesMut::new();
        let mut inb = BytesMut::from(&msg[..]);
        assert_eq!(d.decode(&mut inb, &mut out), Some(DataOutcome::TooLarge));
        assert_eq!(
            out.len(),
            1000,
            "the first 1000 octets, however the input was split"
        );
        assert_eq!(d.size(), 42_000);
        assert_eq!(&inb[..], b"QUIT\r\n");
    }

    #[test]
    fn over_the_limit_keeps_the_same_prefix_however_split() {
        // Regression (fuzz target `data`): a run crossing the limit used to be dropped whole
        // or kept in part depending on where the input was split.
        let (r, out, _) = run_split(
            b"0123456789\r\nabcdefghij\r\n.\r\n",
            15,
            LineEndings::Reject,
        );
        assert_eq!(r, Some(DataOutcome::TooLarge));
        assert_eq!(out, b"0123456789\r\nabc");
    }

    #[test]
    fn exactly_at_the_limit_is_accepted() {
        let (r, out, _) = run(b"abc\r\n.\r\n", 5, LineEndings::Reject);
        assert_eq!(r, Some(DataOutcome::Complete));
        assert_eq!(out, b"abc\r\n");
        let (r, _, _) = run(b"abcd\r\n.\r\n", 5, LineEndings::Reject);
        assert_eq!(r, Some(DataOutcome::TooLarge));
    }

    #[test]
    fn bdat_reads_exact_octets() {
        let mut d = BdatDecoder::new(5, true);
        let mut out = BytesMut::new();
        let mut inb = BytesMut::from(&b"ab"[..]);
        assert!(!d.decode(&mut inb, &mut out));
        let mut inb = BytesMut::from(&b"c\r\nQUIT\r\n"[..]);
        assert!(d.decode(&mut inb, &mut out));
        assert_eq!(&out[..], b"abc\r\n");
        assert_eq!(&inb[..], b"QUIT\r\n");
        let mut d = BdatDecoder::new(3, false);
        let mut inb = BytesMut::from(&b"xyzNOOP"[..]);
        let mut out = BytesMut::new();
        assert!(d.decode(&mut inb, &mut out));
        assert!(out.is_empty());
        assert_eq!(&inb[..], b"NOOP");
    }
}
