//! The POP3 session state machine (RFC 1939 §3): synchronous, no I/O.
//!
//! AUTHORIZATION (USER, PASS, STLS, CAPA, QUIT) → TRANSACTION (STAT, LIST, UIDL, RETR, TOP,
//! DELE, RSET, NOOP, CAPA, QUIT) → UPDATE (only through QUIT: the deletions are applied).
//! When a command needs the authenticator or the maildrop, [`Session::on_command`] returns a
//! [`Step`] asking the driver for it, and the driver hands the result back to the matching
//! method (`logged_in`, `opened`, `fetched`, `committed`), which answers with the next step.

use bytes::Bytes;

use crate::maildrop::{AuthError, Entry, Grant, MaildropError};
use crate::proto::{Body, Command, ProtoError, Reply};

/// What the driver does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this reply and read on.
    Reply(Reply),
    /// Send this reply and close, without UPDATE unless it came from `committed`.
    Close(Reply),
    /// Check the login, then call [`Session::logged_in`].
    Login {
        /// The USER name.
        user: String,
        /// The PASS secret.
        password: String,
    },
    /// A failed login: wait the failure delay, send the reply, and close if `close`.
    Refused {
        /// `-ERR [AUTH] …`
        reply: Reply,
        /// The per-connection cap is reached.
        close: bool,
    },
    /// List the grant's mail, then call [`Session::opened`].
    Open(Grant),
    /// Fetch this message, then call [`Session::fetched`].
    Fetch {
        /// Its UIDL.
        uid: String,
        /// Its message number.
        msg: usize,
        /// TOP's line count; `None` for RETR.
        top: Option<usize>,
    },
    /// Send `+OK`, then do the TLS handshake and start again (RFC 2595 §4).
    StartTls(Reply),
    /// Delete these messages (UPDATE), then call [`Session::committed`].
    Commit(Vec<String>),
}

/// Per-session settings the state machine needs.
#[derive(Debug, Clone)]
pub struct SessionRules {
    /// STLS is offered (a certificate is configured).
    pub tls_available: bool,
    /// USER/PASS before STLS is allowed (when TLS is available).
    pub plaintext_login: bool,
    /// Failed logins before the connection is closed.
    pub max_login_failures: u32,
}

/// One message in the snapshot.
#[derive(Debug)]
struct Item {
    entry: Entry,
    deleted: bool,
}

#[derive(Debug)]
enum State {
    /// Before login. `user` is the USER name awaiting PASS.
    Authorization { user: Option<String> },
    /// A login is being checked or the maildrop opened.
    Pending,
    /// Logged in, with the snapshot taken at login.
    Transaction { grant: Grant, items: Vec<Item> },
    /// QUIT in TRANSACTION: deletions being applied.
    Update,
}

/// One POP3 session.
#[derive(Debug)]
pub struct Session {
    rules: SessionRules,
    state: State,
    tls: bool,
    failures: u32,
}

const NO_SUCH: &str = "no such message";

impl Session {
    /// A new session in AUTHORIZATION.
    pub fn new(rules: SessionRules) -> Session {
        Session {
            rules,
            state: State::Authorization { user: None },
            tls: false,
            failures: 0,
        }
    }

    /// The greeting (RFC 1939 §4).
    pub fn greeting(&self) -> Reply {
        Reply::ok("Intake POP3 server ready")
    }

    /// The session is now inside TLS: back to a fresh AUTHORIZATION (RFC 2595 §4).
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.state = State::Authorization { user: None };
    }

    /// True once logged in (the driver logs it).
    pub fn logged_in_now(&self) -> bool {
        matches!(self.state, State::Transaction { .. })
    }

    fn login_allowed(&self) -> bool {
        self.tls || !self.rules.tls_available || self.rules.plaintext_login
    }

    /// A line that failed to parse.
    pub fn on_error(&mut self, e: &ProtoError) -> Step {
        Step::Reply(e.reply())
    }

    /// One command.
    pub fn on_command(&mut self, cmd: Command) -> Step {
        match cmd {
            Command::Capa => return Step::Reply(self.capa()),
            Command::Noop if self.logged_in_now() => return Step::Reply(Reply::ok("")),
            _ => {}
        }
        let login_ok = self.login_allowed();
        let (tls, tls_available) = (self.tls, self.rules.tls_available);
        match &mut self.state {
            State::Authorization { user } => match cmd {
                Command::Quit => Step::Close(Reply::ok("Intake POP3 server signing off")),
                Command::Stls if tls => Step::Reply(Reply::err("already in TLS")),
                Command::Stls if !tls_available => Step::Reply(Reply::err("STLS not available")),
                Command::Stls => Step::StartTls(Reply::ok("begin TLS negotiation")),
                Command::User(_) | Command::Pass(_) if !login_ok => {
                    Step::Reply(Reply::err("[AUTH] use STLS first"))
                }
                Command::User(name) => {
                    *user = Some(name);
                    Step::Reply(Reply::ok("send PASS"))
                }
                Command::Pass(password) => match user.take() {
                    Some(user) => {
                        self.state = State::Pending;
                        Step::Login { user, password }
                    }
                    None => Step::Reply(Reply::err("USER first")),
                },
                _ => Step::Reply(Reply::err("not logged in")),
            },
            State::Pending | State::Update => {
                // The driver never passes a command while a step is outstanding.
                Step::Close(Reply::err("[SYS/PERM] out of sequence"))
            }
            State::Transaction { grant, items } => {
                let step = transaction(cmd, grant, items);
                if matches!(step, Step::Commit(_) | Step::Close(_)) {
                    // QUIT: UPDATE, whether or not there is anything to delete.
                    self.state = State::Update;
                }
                step
            }
        }
    }

    /// The answer to [`Step::Login`].
    pub fn logged_in(&mut self, result: Result<Option<Grant>, AuthError>) -> Step {
        match result {
            Ok(Some(grant)) => Step::Open(grant),
            Ok(None) => {
                self.failures += 1;
                self.state = State::Authorization { user: None };
                let close = self.failures >= self.rules.max_login_failures;
                Step::Refused {
                    reply: Reply::err("[AUTH] invalid login or password"),
                    close,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "POP3: login could not be checked");
                self.state = State::Authorization { user: None };
                Step::Reply(Reply::err("[SYS/TEMP] cannot check the login now"))
            }
        }
    }

    /// The answer to [`Step::Open`]: the snapshot for the session.
    pub fn opened(&mut self, grant: Grant, result: Result<Vec<Entry>, MaildropError>) -> Step {
        match result {
            Ok(entries) => {
                let size: u64 = entries.iter().map(|e| e.size).sum();
                let n = entries.len();
                let items = entries
                    .into_iter()
                    .map(|entry| Item {
                        entry,
                        deleted: false,
                    })
                    .collect();
                self.state = State::Transaction { grant, items };
                Step::Reply(Reply::ok(format!(
                    "maildrop has {n} messages ({size} octets)"
                )))
            }
            Err(e) => {
                tracing::warn!(error = %e, "POP3: maildrop could not be listed");
                self.state = State::Authorization { user: None };
                Step::Reply(Reply::err("[SYS/TEMP] cannot open the maildrop now"))
            }
        }
    }

    /// The answer to [`Step::Fetch`].
    pub fn fetched(
        &mut self,
        msg: usize,
        top: Option<usize>,
        result: Result<Option<Bytes>, MaildropError>,
    ) -> Step {
        match result {
            Ok(Some(raw)) => {
                let size = match &self.state {
                    State::Transaction { items, .. } => items.get(msg - 1).map(|i| i.entry.size),
                    _ => None,
                };
                let text = match (top, size) {
                    (None, Some(s)) => format!("{s} octets"),
                    _ => String::new(),
                };
                Step::Reply(Reply::multi(text, Body::Message { raw, top }))
            }
            Ok(None) => Step::Reply(Reply::err(format!("message {msg} has been removed"))),
            Err(e) => {
                tracing::warn!(error = %e, "POP3: message could not be read");
                Step::Reply(Reply::err("[SYS/TEMP] cannot read the message now"))
            }
        }
    }

    /// The answer to [`Step::Commit`]: how many of the deletions failed.
    pub fn committed(&mut self, failed: usize) -> Step {
        if failed == 0 {
            Step::Close(Reply::ok("Intake POP3 server signing off"))
        } else {
            Step::Close(Reply::err(format!(
                "[SYS/TEMP] {failed} messages could not be deleted"
            )))
        }
    }

    /// The capability list (RFC 2449 §6).
    fn capa(&self) -> Reply {
        let mut caps = vec!["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"];
        if matches!(self.state, State::Authorization { .. }) {
            if self.rules.tls_available && !self.tls {
                caps.push("STLS");
            }
            if self.login_allowed() {
                caps.push("USER");
            }
        }
        caps.push("IMPLEMENTATION Intake");
        Reply::multi(
            "capability list follows",
            Body::Lines(caps.into_iter().map(String::from).collect()),
        )
    }
}

/// The messages not marked deleted, with their numbers.
fn live(items: &[Item]) -> Vec<(usize, &Item)> {
    items
        .iter()
        .enumerate()
        .filter(|(_, i)| !i.deleted)
        .map(|(n, i)| (n + 1, i))
        .collect()
}

/// A command in TRANSACTION.
fn transaction(cmd: Command, grant: &Grant, items: &mut [Item]) -> Step {
    // The message `n`, if it exists and is not marked deleted.
    let get = |items: &[Item], n: usize| -> Result<usize, Reply> {
        match items.get(n.wrapping_sub(1)) {
            None => Err(Reply::err(NO_SUCH)),
            Some(i) if i.deleted => Err(Reply::err(format!("message {n} already deleted"))),
            Some(_) => Ok(n - 1),
        }
    };
    let reply = match cmd {
        Command::Stat => {
            let l = live(items);
            let size: u64 = l.iter().map(|(_, i)| i.entry.size).sum();
            Reply::ok(format!("{} {size}", l.len()))
        }
        Command::List(None) => Reply::multi(
            format!("{} messages", live(items).len()),
            Body::Lines(
                live(items)
                    .iter()
                    .map(|(n, i)| format!("{n} {}", i.entry.size))
                    .collect(),
            ),
        ),
        Command::List(Some(n)) => match get(items, n) {
            Ok(i) => Reply::ok(format!("{n} {}", items[i].entry.size)),
            Err(r) => r,
        },
        Command::Uidl(None) => Reply::multi(
            "",
            Body::Lines(
                live(items)
                    .iter()
                    .map(|(n, i)| format!("{n} {}", i.entry.uid))
                    .collect(),
            ),
        ),
        Command::Uidl(Some(n)) => match get(items, n) {
            Ok(i) => Reply::ok(format!("{n} {}", items[i].entry.uid)),
            Err(r) => r,
        },
        Command::Retr(n) | Command::Top(n, _) => match get(items, n) {
            Ok(i) => {
                let top = match cmd {
                    Command::Top(_, lines) => Some(lines),
                    _ => None,
                };
                return Step::Fetch {
                    uid: items[i].entry.uid.clone(),
                    msg: n,
                    top,
                };
            }
            Err(r) => r,
        },
        Command::Dele(_) if !grant.may_delete => Reply::err("permission denied: read only"),
        Command::Dele(n) => match get(items, n) {
            Ok(i) => {
                items[i].deleted = true;
                Reply::ok(format!("message {n} deleted"))
            }
            Err(r) => r,
        },
        Command::Rset => {
            items.iter_mut().for_each(|i| i.deleted = false);
            Reply::ok(format!("maildrop has {} messages", items.len()))
        }
        // CAPA and NOOP are answered before this function; kept total rather than panicking.
        Command::Noop | Command::Capa => Reply::ok(""),
        Command::Quit => {
            let doomed: Vec<String> = items
                .iter()
                .filter(|i| i.deleted)
                .map(|i| i.entry.uid.clone())
                .collect();
            if doomed.is_empty() {
                return Step::Close(Reply::ok("Intake POP3 server signing off"));
            }
            return Step::Commit(doomed);
        }
        Command::User(_) | Command::Pass(_) => Reply::err("already logged in"),
        Command::Stls => Reply::err("STLS only before login"),
    };
    Step::Reply(reply)
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
