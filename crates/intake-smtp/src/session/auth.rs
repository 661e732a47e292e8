//! AUTH (RFC 4954) with PLAIN (RFC 4616) and LOGIN, and what a login changes: MAIL may be
//! required to follow a login, restricted to the user's addresses, and a logged-in user
//! may send to other domains where the listener allows it (never without a login).
//!
//! The password check is an [`Effect::Authenticate`]: the driver runs the listener's
//! [`intake_core::Authenticator`] (which does the slow hash work off the runtime) and
//! resumes with [`Outcome::Authenticated`].

use base64::Engine;
use intake_core::{AuthResult, Credentials};
use intake_proto::{Mechanism, Reply, replies};

use super::{Effect, Pending, Phase, Session, Step};
use crate::failure::Failure;

/// Where a SASL exchange is.
#[derive(Debug)]
pub(super) enum Sasl {
    /// PLAIN: waiting for the response after an empty 334.
    Plain,
    /// LOGIN: waiting for the user name.
    LoginUser,
    /// LOGIN: have the user name, waiting for the password.
    LoginPassword(String),
}

/// `334 ` with base64 text (the challenge).
fn challenge(text: &str) -> Reply {
    Reply::plain(334, base64::engine::general_purpose::STANDARD.encode(text))
}

fn decode(line: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .ok()
}

impl Session {
    /// Whether EHLO lists AUTH: configured, not logged in, and encrypted unless the
    /// listener allows plaintext.
    pub(super) fn offers_auth(&self) -> bool {
        let a = &self.cfg.auth;
        a.authenticator.is_some()
            && self.user.is_none()
            && (self.tls.is_some() || a.allow_plaintext)
    }

    /// The logged-in user's address, if any.
    pub fn authenticated(&self) -> Option<&str> {
        self.user.as_ref().map(|u| u.address.as_str())
    }

    pub(super) fn handle_auth(&mut self, mechanism: Mechanism, initial: Option<String>) -> Step {
        let a = &self.cfg.auth;
        if a.authenticator.is_none() {
            return self.client_error(replies::NOT_IMPLEMENTED);
        }
        if self.helo.is_none() || !self.esmtp {
            return self.client_error(replies::HELO_FIRST);
        }
        if self.user.is_some() || self.in_transaction() {
            return self.client_error(replies::AUTH_ALREADY);
        }
        if self.tls.is_none() && !a.allow_plaintext {
            return self.client_error(replies::AUTH_NEEDS_TLS);
        }
        match (mechanism, initial) {
            (Mechanism::Plain, Some(resp)) => self.plain(&resp),
            (Mechanism::Plain, None) => {
                self.phase = Phase::Auth(Sasl::Plain);
                Step::ReadLine(Reply::plain(334, ""))
            }
            (Mechanism::Login, Some(resp)) => self.sasl_line(&resp, Sasl::LoginUser),
            (Mechanism::Login, None) => {
                self.phase = Phase::Auth(Sasl::LoginUser);
                Step::ReadLine(challenge("Username:"))
            }
            (Mechanism::Other, _) => self.client_error(replies::AUTH_MECHANISM),
        }
    }

    /// One line of the SASL exchange, after a [`Step::ReadLine`].
    pub fn on_line(&mut self, line: &str) -> Step {
        let state = match self.take_phase() {
            Phase::Auth(state) => state,
            other => {
                self.phase = other;
                return self.client_error(replies::BAD_SEQUENCE);
            }
        };
        self.sasl_line(line, state)
    }

    fn sasl_line(&mut self, line: &str, state: Sasl) -> Step {
        let line = line.trim_end_matches(['\r', '\n']);
        if line == "*" {
            return self.client_error(replies::AUTH_CANCELLED);
        }
        match state {
            Sasl::Plain => self.plain(line),
            Sasl::LoginUser => match decode(line).and_then(|b| String::from_utf8(b).ok()) {
                Some(user) => {
                    self.phase = Phase::Auth(Sasl::LoginPassword(user));
                    Step::ReadLine(challenge("Password:"))
                }
                None => self.client_error(replies::AUTH_CANCELLED),
            },
            Sasl::LoginPassword(user) => match decode(line).and_then(|b| String::from_utf8(b).ok())
            {
                Some(password) => self.check(user, password),
                None => self.client_error(replies::AUTH_CANCELLED),
            },
        }
    }

    /// PLAIN: `[authzid] NUL authcid NUL password`. An authorization identity other than
    /// the login is refused (no proxy logins).
    fn plain(&mut self, response: &str) -> Step {
        let Some(bytes) = decode(response) else {
            return self.client_error(replies::AUTH_CANCELLED);
        };
        let mut parts = bytes.split(|&b| b == 0);
        let (Some(authz), Some(user), Some(pass), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return self.client_error(replies::AUTH_CANCELLED);
        };
        let (Ok(authz), Ok(user), Ok(pass)) = (
            std::str::from_utf8(authz),
            std::str::from_utf8(user),
            std::str::from_utf8(pass),
        ) else {
            return self.client_error(replies::AUTH_CANCELLED);
        };
        if !authz.is_empty() && !authz.eq_ignore_ascii_case(user) {
            return self.client_error(replies::AUTH_INVALID);
        }
        self.check(user.to_string(), pass.to_string())
    }

    fn check(&mut self, username: String, password: String) -> Step {
        let credentials = Credentials {
            username,
            password,
            client: self.client.ip(),
        };
        self.wait(Pending::Auth, Effect::Authenticate(credentials))
    }

    /// A SASL response line grew past the longest line allowed without ending (RFC 4954
    /// §4 allows long lines, not endless ones): the exchange is cancelled and the
    /// session closed.
    pub fn on_endless_line(&mut self) -> Step {
        self.end_transaction();
        Step::Close(replies::AUTH_CANCELLED)
    }

    /// The authenticator answered.
    pub(super) fn authenticated_as(&mut self, result: AuthResult) -> Step {
        match result {
            AuthResult::Ok(user) => {
                tracing::info!(client = %self.client, user = %user.address, "AUTH succeeded");
                self.user = Some(Box::new(user));
                Step::Reply(replies::AUTH_OK)
            }
            AuthResult::Invalid => self.client_error(replies::AUTH_INVALID),
            // Refused by the failed-login limiter: the client keeps guessing, so the
            // 454 counts toward smtp.max_errors like a 535 (a guesser is closed out
            // instead of trying forever on one connection).
            AuthResult::RateLimited => self.client_error(replies::AUTH_TEMPORARY),
            AuthResult::Unavailable => Step::Reply(Failure::Authenticator.reply()),
            AuthResult::Chaos(code) => Step::Reply(replies::chaos(
                code,
                intake_core::Hook::Authentication.word(),
            )),
        }
    }

    /// MAIL FROM as the listener's AUTH settings allow: `None` to go on, or the refusal.
    pub(super) fn mail_allowed(&self, mail_from: &str) -> Option<Reply> {
        let a = &self.cfg.auth;
        match &self.user {
            None if a.required => Some(replies::AUTH_REQUIRED),
            Some(u) if a.restrict_senders && !u.may_send_as(mail_from) => {
                Some(replies::SENDER_NOT_OWNED)
            }
            _ => None,
        }
    }

    /// Whether a recipient outside `smtp.domains` is allowed: only after a login, on a
    /// listener that lets logged-in users relay.
    pub(super) fn may_relay(&self) -> bool {
        self.user.is_some() && self.cfg.auth.relay
    }
}
