//! Transcript tests of the session: no sockets, no tokio. Each test is a dialogue; `C:`
//! lines go in, and every `S:` line must match the start of the next reply line.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};

use super::*;
use crate::maildrop::Reach;
use crate::proto::CommandDecoder;

/// A maildrop and authenticator in plain data, resolved synchronously.
struct World {
    /// uid -> raw message, in snapshot order.
    mail: Vec<(String, &'static [u8])>,
    deleted: BTreeMap<String, ()>,
    /// Deletions that fail.
    broken_delete: bool,
    may_delete: bool,
}

impl World {
    fn new() -> World {
        World {
            mail: vec![
                ("uid-a".into(), b"Subject: one\r\n\r\nfirst\r\n".as_slice()),
                (
                    "uid-b".into(),
                    b"Subject: two\r\n\r\n.dotted\r\nline 2\r\nline 3\r\n".as_slice(),
                ),
            ],
            deleted: BTreeMap::new(),
            broken_delete: false,
            may_delete: true,
        }
    }

    /// Carries out steps until a reply; returns what the client would read and whether the
    /// connection closed.
    fn run(&mut self, s: &mut Session, mut step: Step, out: &mut BytesMut) -> bool {
        loop {
            step = match step {
                Step::Reply(r) => {
                    r.write_to(out);
                    return false;
                }
                Step::Close(r) => {
                    r.write_to(out);
                    return true;
                }
                Step::Refused { reply, close } => {
                    reply.write_to(out);
                    return close;
                }
                Step::StartTls(r) => {
                    r.write_to(out);
                    s.tls_started();
                    return false;
                }
                Step::Login { user, password } => {
                    let ok = user == "reader" && password == "pw 1";
                    s.logged_in(Ok(ok.then_some(Grant {
                        reach: Reach::All,
                        may_delete: self.may_delete,
                    })))
                }
                Step::Open(grant) => {
                    let entries = self
                        .mail
                        .iter()
                        .filter(|(u, _)| !self.deleted.contains_key(u))
                        .map(|(u, raw)| Entry {
                            uid: u.clone(),
                            size: crate::proto::wire_size(raw),
                        })
                        .collect();
                    s.opened(grant, Ok(entries))
                }
                Step::Fetch { uid, msg, top } => {
                    let raw = self
                        .mail
                        .iter()
                        .find(|(u, _)| *u == uid && !self.deleted.contains_key(u))
                        .map(|(_, r)| Bytes::from_static(r));
                    s.fetched(msg, top, Ok(raw))
                }
                Step::Commit(uids) => {
                    if self.broken_delete {
                        s.committed(uids.len())
                    } else {
                        for u in uids {
                            self.deleted.insert(u, ());
                        }
                        s.committed(0)
                    }
                }
            }
        }
    }

    /// Plays a transcript against a new session.
    fn play(&mut self, rules: SessionRules, transcript: &str) {
        let mut s = Session::new(rules);
        let mut out = BytesMut::new();
        // The greeting is checked when the transcript starts with it.
        if transcript.trim_start().starts_with("S:") {
            s.greeting().write_to(&mut out);
        }
        let mut decoder = CommandDecoder::new();
        let mut closed = false;
        let mut expected: Vec<&str> = Vec::new();
        let check = |out: &mut BytesMut, expected: &mut Vec<&str>| {
            let text = String::from_utf8(out.split().to_vec()).unwrap();
            let got: Vec<&str> = text.split_terminator("\r\n").collect();
            assert_eq!(
                got.len(),
                expected.len(),
                "reply lines: got {got:?}, want {expected:?}"
            );
            for (g, w) in got.iter().zip(expected.iter()) {
                assert!(g.starts_with(w), "got {g:?}, want {w:?}");
            }
            expected.clear();
        };
        for line in transcript.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(c) = line.strip_prefix("C: ") {
                // Commands in a row are a pipelined batch: their replies follow together.
                if !expected.is_empty() {
                    check(&mut out, &mut expected);
                }
                assert!(!closed, "the session closed before {c:?}");
                let mut buf = BytesMut::from(format!("{c}\r\n").as_bytes());
                let step = match decoder.decode(&mut buf) {
                    Ok(Some(cmd)) => s.on_command(cmd),
                    Err(e) => s.on_error(&e),
                    Ok(None) => panic!("no command in {c:?}"),
                };
                closed = self.run(&mut s, step, &mut out);
            } else if let Some(r) = line.strip_prefix("S: ") {
                expected.push(r);
            } else if line == "S:" {
                expected.push("");
            } else if line == "CLOSED" {
                assert!(closed, "the session should have closed");
            }
        }
        check(&mut out, &mut expected);
    }
}

fn rules() -> SessionRules {
    SessionRules {
        tls_available: false,
        plaintext_login: true,
        max_login_failures: 3,
    }
}

#[test]
fn a_whole_session_lists_reads_and_deletes_at_quit() {
    let mut w = World::new();
    w.play(
        rules(),
        "S: +OK
         C: USER reader
         S: +OK
         C: PASS pw 1
         S: +OK maildrop has 2 messages (64 octets)
         C: STAT
         S: +OK 2 64
         C: LIST
         S: +OK 2 messages
         S: 1 23
         S: 2 41
         S: .
         C: LIST 2
         S: +OK 2 41
         C: UIDL
         S: +OK
         S: 1 uid-a
         S: 2 uid-b
         S: .
         C: RETR 2
         S: +OK 41 octets
         S: Subject: two
         S:
         S: ..dotted
         S: line 2
         S: line 3
         S: .
         C: TOP 2 1
         S: +OK
         S: Subject: two
         S:
         S: ..dotted
         S: .
         C: DELE 1
         S: +OK message 1 deleted
         C: DELE 1
         S: -ERR message 1 already deleted
         C: RETR 1
         S: -ERR message 1 already deleted
         C: STAT
         S: +OK 1 41
         C: LIST
         S: +OK 1 messages
         S: 2 41
         S: .
         C: QUIT
         S: +OK
         CLOSED",
    );
    assert_eq!(w.deleted.keys().collect::<Vec<_>>(), ["uid-a"]);
}

#[test]
fn rset_undoes_deletions_and_a_dropped_session_deletes_nothing() {
    let mut w = World::new();
    w.play(
        rules(),
        "C: USER reader
         C: PASS pw 1
         C: DELE 1
         C: DELE 2
         C: RSET
         S: +OK
         S: +OK
         S: +OK
         S: +OK
         S: +OK maildrop has 2 messages
         C: STAT
         S: +OK 2 64
         C: DELE 2
         S: +OK",
    );
    assert!(w.deleted.is_empty(), "no QUIT, no UPDATE");
    w.play(
        rules(),
        "C: USER reader
         C: PASS pw 1
         S: +OK
         S: +OK maildrop has 2
         C: DELE 2
         S: +OK
         C: QUIT
         S: +OK
         CLOSED",
    );
    assert_eq!(w.deleted.keys().collect::<Vec<_>>(), ["uid-b"]);
}

#[test]
fn message_numbers_out_of_range_are_errors_not_crashes() {
    World::new().play(
        rules(),
        "C: USER reader
         C: PASS pw 1
         S: +OK
         S: +OK
         C: RETR 3
         S: -ERR no such message
         C: LIST 99999999999999999999
         S: -ERR syntax error, expected: LIST [msg]
         C: TOP 9 0
         S: -ERR no such message
         C: DELE 3
         S: -ERR no such message
         C: UIDL 3
         S: -ERR no such message
         C: USER again
         S: -ERR already logged in
         C: STLS
         S: -ERR
         C: APOP reader 0123
         S: -ERR unknown command",
    );
}

#[test]
fn commands_before_login_are_refused_and_pass_needs_user() {
    World::new().play(
        rules(),
        "S: +OK Intake POP3 server ready
         C: STAT
         S: -ERR not logged in
         C: RETR 1
         S: -ERR not logged in
         C: PASS pw 1
         S: -ERR USER first
         C: NOOP
         S: -ERR not logged in
         C: QUIT
         S: +OK
         CLOSED",
    );
}

#[test]
fn wrong_passwords_are_refused_and_the_third_closes_the_connection() {
    World::new().play(
        rules(),
        "C: USER reader
         S: +OK
         C: PASS wrong
         S: -ERR [AUTH] invalid login or password
         C: USER reader
         C: PASS wrong
         S: +OK
         S: -ERR [AUTH]
         C: USER reader
         C: PASS pw 1
         S: +OK
         S: +OK maildrop has 2",
    );
    World::new().play(
        rules(),
        "C: USER reader
         C: PASS a
         C: USER reader
         C: PASS b
         C: USER reader
         C: PASS c
         S: +OK
         S: -ERR [AUTH]
         S: +OK
         S: -ERR [AUTH]
         S: +OK
         S: -ERR [AUTH]
         CLOSED",
    );
}

#[test]
fn a_read_only_grant_cannot_delete() {
    let mut w = World::new();
    w.may_delete = false;
    w.play(
        rules(),
        "C: USER reader
         C: PASS pw 1
         C: DELE 1
         S: +OK
         S: +OK
         S: -ERR permission denied
         C: QUIT
         S: +OK",
    );
    assert!(w.deleted.is_empty());
}

#[test]
fn failed_deletions_at_quit_are_reported() {
    let mut w = World::new();
    w.broken_delete = true;
    w.play(
        rules(),
        "C: USER reader
         C: PASS pw 1
         C: DELE 1
         C: QUIT
         S: +OK
         S: +OK
         S: +OK
         S: -ERR [SYS/TEMP] 1 messages could not be deleted
         CLOSED",
    );
}

#[test]
fn capa_offers_stls_and_hides_user_until_tls_when_plaintext_login_is_off() {
    let tls = SessionRules {
        tls_available: true,
        plaintext_login: false,
        max_login_failures: 3,
    };
    World::new().play(
        tls,
        "C: CAPA
         S: +OK capability list follows
         S: TOP
         S: UIDL
         S: RESP-CODES
         S: AUTH-RESP-CODE
         S: PIPELINING
         S: STLS
         S: IMPLEMENTATION Intake
         S: .
         C: USER reader
         S: -ERR [AUTH] use STLS first
         C: STLS
         S: +OK begin TLS negotiation
         C: STLS
         S: -ERR already in TLS
         C: CAPA
         S: +OK
         S: TOP
         S: UIDL
         S: RESP-CODES
         S: AUTH-RESP-CODE
         S: PIPELINING
         S: USER
         S: IMPLEMENTATION
         S: .
         C: USER reader
         S: +OK
         C: PASS pw 1
         S: +OK maildrop has 2",
    );
    World::new().play(
        rules(),
        "C: STLS
         S: -ERR STLS not available",
    );
}

#[test]
fn a_message_removed_after_login_is_an_error_for_that_message_only() {
    let mut w = World::new();
    let mut s = Session::new(rules());
    let mut out = BytesMut::new();
    let step = s.on_command(Command::User("reader".into()));
    w.run(&mut s, step, &mut out);
    let step = s.on_command(Command::Pass("pw 1".into()));
    w.run(&mut s, step, &mut out);
    w.deleted.insert("uid-a".into(), ());
    out.clear();
    let step = s.on_command(Command::Retr(1));
    w.run(&mut s, step, &mut out);
    assert_eq!(&out[..], b"-ERR message 1 has been removed\r\n");
    out.clear();
    let step = s.on_command(Command::Stat);
    w.run(&mut s, step, &mut out);
    assert_eq!(&out[..], b"+OK 2 64\r\n", "the snapshot is stable");
}

#[test]
fn backend_failures_are_temporary_errors_without_detail() {
    let mut s = Session::new(rules());
    s.on_command(Command::User("u".into()));
    s.on_command(Command::Pass("p".into()));
    let step = s.logged_in(Err(AuthError("ldap://secret-host down".into())));
    let Step::Reply(r) = step else {
        panic!("{step:?}")
    };
    assert_eq!(
        r.to_wire(),
        b"-ERR [SYS/TEMP] cannot check the login now\r\n"
    );
    s.on_command(Command::User("u".into()));
    let Step::Login { .. } = s.on_command(Command::Pass("p".into())) else {
        panic!("login again")
    };
    let grant = Grant {
        reach: Reach::All,
        may_delete: true,
    };
    let Step::Open(g) = s.logged_in(Ok(Some(grant))) else {
        panic!("open")
    };
    let err = MaildropError::Store(intake_core::StoreError::Unavailable(
        "db at 10.0.0.9".into(),
    ));
    let Step::Reply(r) = s.opened(g, Err(err)) else {
        panic!("reply")
    };
    assert_eq!(
        r.to_wire(),
        b"-ERR [SYS/TEMP] cannot open the maildrop now\r\n"
    );
    assert_eq!(
        s.on_command(Command::Stat),
        Step::Reply(Reply::err("not logged in"))
    );
}

#[test]
fn any_command_sequence_gets_a_well_formed_reply_and_never_panics() {
    let words = [
        "USER reader",
        "PASS pw 1",
        "PASS x",
        "STAT",
        "LIST",
        "LIST 1",
        "LIST 0",
        "UIDL",
        "UIDL 2",
        "RETR 1",
        "RETR 2",
        "RETR 3",
        "TOP 1 0",
        "TOP 2 5",
        "DELE 1",
        "DELE 2",
        "RSET",
        "NOOP",
        "CAPA",
        "STLS",
        "QUIT",
        "APOP a b",
        "",
        "\u{0}\u{1}",
        "LIST 1 2",
    ];
    // A fixed linear congruential sequence: the same "random" sessions every run.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..300 {
        let mut w = World::new();
        let mut s = Session::new(SessionRules {
            tls_available: seed.is_multiple_of(2),
            plaintext_login: !seed.is_multiple_of(3),
            max_login_failures: 2,
        });
        let mut decoder = CommandDecoder::new();
        for _ in 0..40 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let word = words[(seed >> 33) as usize % words.len()];
            let mut buf = BytesMut::from(format!("{word}\r\n").as_bytes());
            let mut out = BytesMut::new();
            let mut closed = false;
            while let Some(r) = decoder.decode(&mut buf).transpose() {
                let step = match r {
                    Ok(cmd) => s.on_command(cmd),
                    Err(e) => s.on_error(&e),
                };
                closed = w.run(&mut s, step, &mut out);
            }
            assert!(
                out.is_empty() || out.starts_with(b"+OK") || out.starts_with(b"-ERR"),
                "{word:?}: {out:?}"
            );
            assert!(out.is_empty() || out.ends_with(b"\r\n"));
            if closed {
                break;
            }
        }
    }
}
