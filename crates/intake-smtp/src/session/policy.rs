//! Waiting for checks and the store: [`Session::resume`], and verdicts to replies.
//!
//! Each stage asks for its checks only when the listener has some for it, so a session
//! without policy never waits. A deferral or rejection gets its reply from the catalogue
//! by [`Reason`]; a check that could not decide is at worst a 4xx (never a 5xx).

use intake_core::{CheckCtx, Reason, Stage, Verdict};
use intake_proto::{Reply, replies};

use super::{Effect, Outcome, Pending, Phase, Session, Step};
use crate::failure::Failure;

/// The sum of what passing checks said: header fields to add and a score.
#[derive(Debug, Default)]
struct Tags {
    headers: Vec<String>,
    score: f32,
    findings: intake_core::Findings,
}

/// A combined verdict: go on (with tags), or stop with this reply.
enum Decision {
    Go(Tags),
    Stop(Reply),
}

impl Session {
    /// Asks the driver to run the checks of `stage`, remembering what to do after; `None`
    /// when no check runs at that stage (carry on at once).
    pub(super) fn ask(
        &mut self,
        pending: Pending,
        stage: Stage,
        rcpt_to: Option<&str>,
    ) -> Option<Step> {
        if !self.cfg.checks.has(stage) {
            return None;
        }
        let mut cx = CheckCtx::new(stage, self.client);
        cx.helo = match &pending {
            Pending::Helo { name, .. } => Some(name.clone()),
            _ => self.helo.as_deref().map(str::to_string),
        };
        cx.tls = self.tls.is_some();
        let tx = self.tx();
        cx.mail_from = match &pending {
            Pending::Mail(from) => Some(from.address.clone()),
            _ => tx.map(|t| t.mail_from.clone()),
        };
        cx.rcpt_to = rcpt_to.map(str::to_string);
        cx.symbols = (self.session_tags.as_ref())
            .map(|t| t.findings.symbols.clone())
            .unwrap_or_default();
        if let Some(tx) = tx {
            cx.symbols.extend(tx.findings.symbols.iter().cloned());
        }
        // Only the data stage gets the recipient list: copied at every RCPT, a message to n
        // recipients would copy n * (n - 1) / 2 addresses before its content came.
        if stage == Stage::Data {
            cx.recipients = tx.map(|t| t.rcpt_to.clone()).unwrap_or_default();
        }
        // Content checks see the message as it will be stored: our `Received:` (client
        // address, HELO, TLS) first, then the fields earlier checks added.
        let header = match &pending {
            Pending::Data(stamp) => self.header_fields(&stamp.received).concat(),
            _ => String::new(),
        };
        Some(self.wait(pending, Effect::Check { cx, header }))
    }

    /// The driver carried out the last [`Step::Await`]: go on from where the session was.
    pub fn resume(&mut self, outcome: Outcome) -> Step {
        let (pending, tx) = match self.take_phase() {
            Phase::Waiting { pending, tx } => (pending, tx),
            other => {
                // A driver bug; answer something safe rather than panic in production.
                tracing::error!(?outcome, phase = ?other, "resume without a pending effect");
                self.phase = other;
                return Step::Reply(replies::BAD_SEQUENCE);
            }
        };
        self.back_to(tx);
        match (pending, outcome) {
            (Pending::Deliver(id), Outcome::Delivered(report)) => {
                Step::Reply(self.delivered(id, &report))
            }
            (Pending::Auth, Outcome::Authenticated(result)) => self.authenticated_as(result),
            (pending, Outcome::Checked(verdicts)) => {
                let decision = decide(verdicts, &pending);
                self.checked(pending, decision)
            }
            (pending, outcome) => {
                tracing::error!(?pending, ?outcome, "resumed with the wrong outcome");
                self.end_transaction();
                Step::Reply(Failure::Check.reply())
            }
        }
    }

    fn checked(&mut self, pending: Pending, decision: Decision) -> Step {
        match (pending, decision) {
            (Pending::Connect, Decision::Go(tags)) => {
                self.add_session_tags(tags);
                Step::Reply(self.greeting())
            }
            (Pending::Connect, Decision::Stop(r)) => Step::Close(r),
            (Pending::Helo { name, esmtp }, Decision::Go(tags)) => {
                self.add_session_tags(tags);
                self.accept_helo(name, esmtp)
            }
            (Pending::Mail(from), Decision::Go(tags)) => {
                self.start_transaction(*from);
                self.tag(tags);
                Step::Reply(replies::SENDER_OK)
            }
            (Pending::Rcpt(address), Decision::Go(tags)) => {
                self.tag(tags);
                self.add_recipient(address)
            }
            (Pending::Data(stamp), Decision::Go(tags)) => {
                self.tag(tags);
                self.deliver(*stamp)
            }
            (Pending::Data(_), Decision::Stop(r)) => {
                self.end_transaction();
                Step::Reply(r)
            }
            (Pending::Helo { .. } | Pending::Mail(_) | Pending::Rcpt(_), Decision::Stop(r)) => {
                if r.code >= 500 {
                    self.client_error(r)
                } else {
                    Step::Reply(r)
                }
            }
            (Pending::Auth, _) => {
                tracing::error!("authentication resumed with verdicts");
                Step::Reply(replies::AUTH_TEMPORARY)
            }
            (Pending::Deliver(id), _) => {
                // Checks answered where the store should have.
                tracing::error!(%id, "delivery resumed with verdicts");
                self.end_transaction();
                Step::Reply(Failure::Check.reply())
            }
        }
    }

    /// Header fields and findings for every message of the session, each field once (a
    /// HELO check that could not decide for a repeated EHLO marks the messages once).
    fn add_session_tags(&mut self, tags: Tags) {
        let t = self.session_tags.get_or_insert_default();
        for h in tags.headers {
            if !t.headers.contains(&h) {
                t.headers.push(h);
            }
        }
        t.findings.merge(tags.findings);
    }

    fn tag(&mut self, tags: Tags) {
        if let Some(tx) = self.tx_mut() {
            // Once per message: a check that could not decide for each recipient marks
            // the message once.
            for h in tags.headers {
                if !tx.headers.contains(&h) {
                    tx.headers.push(h);
                }
            }
            tx.score += tags.score;
            tx.findings.merge(tags.findings);
        }
    }
}

/// Folds the verdicts of one stage into go-on-with-tags or the reply to stop with.
fn decide(verdicts: Vec<Verdict>, pending: &Pending) -> Decision {
    let mut tags = Tags::default();
    for v in verdicts {
        match v {
            Verdict::Pass => {}
            Verdict::Tag {
                score,
                header,
                findings,
            } => {
                tags.score += score;
                // The score a finding records is the verdict's (set here, not by checks).
                tags.findings
                    .merge(intake_core::Findings { score, ..findings });
                if !header.is_empty() {
                    tags.headers.push(header);
                }
            }
            Verdict::Defer { reason } => return Decision::Stop(deferral(&reason, pending)),
            Verdict::Reject { reason } => return Decision::Stop(rejection(&reason, pending)),
        }
    }
    Decision::Go(tags)
}

/// The 4xx for a deferral. At connect the reply also ends the session (421).
fn deferral(reason: &Reason, pending: &Pending) -> Reply {
    match (reason, pending) {
        (Reason::Chaos(code), _) => chaos(*code, pending),
        (Reason::Policy(text), Pending::Connect) => {
            replies::CONNECTION_DEFERRED.with_text(clean(text))
        }
        (_, Pending::Connect) => replies::CONNECTION_DEFERRED,
        (Reason::Greylisted, _) => replies::GREYLISTED,
        (Reason::Policy(text), _) => replies::POLICY_DEFERRED.with_text(clean(text)),
        (Reason::Spf(text), _) => replies::SPF_TEMP_ERROR.with_text(clean(text)),
        (Reason::Virus(_), _) => replies::POLICY_DEFERRED,
        (Reason::CheckFailed, _) => Failure::Check.reply(),
        (Reason::UnknownRecipient, _) => replies::CHECK_UNAVAILABLE,
    }
}

/// The 5xx for a rejection (a 4xx when the reason is temporary or our own failure). At
/// connect the reply also ends the session (554).
fn rejection(reason: &Reason, pending: &Pending) -> Reply {
    match (reason, pending) {
        (Reason::Chaos(code), _) => chaos(*code, pending),
        (Reason::CheckFailed | Reason::Greylisted, _) => deferral(reason, pending),
        (Reason::Policy(text), Pending::Connect) => {
            replies::CONNECTION_REJECTED.with_text(clean(text))
        }
        (_, Pending::Connect) => replies::CONNECTION_REJECTED,
        (Reason::UnknownRecipient, _) => replies::UNKNOWN_RECIPIENT,
        (Reason::Policy(text), _) => replies::POLICY_REJECTED.with_text(clean(text)),
        (Reason::Spf(text), _) => replies::SPF_FAILED.with_text(clean(text)),
        (Reason::Virus(name), _) => replies::VIRUS_FOUND
            .with_text(clean(&format!("{} ({name})", replies::VIRUS_FOUND.text))),
    }
}

/// Mailpit's chaos reply: its exact code, the stage named as Mailpit names it.
fn chaos(code: u16, pending: &Pending) -> Reply {
    let what = match pending {
        Pending::Rcpt(_) => intake_core::Hook::Recipient,
        _ => intake_core::Hook::Sender,
    };
    replies::chaos(code, what.word())
}

/// A check's text as one safe reply line.
fn clean(text: &str) -> String {
    let t: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    if t.trim().is_empty() {
        "Refused by policy".into()
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_virus_is_refused_with_554_naming_it() {
        let r = rejection(
            &Reason::Virus("Eicar-Test-Signature".into()),
            &Pending::Auth,
        );
        assert_eq!(
            r.to_wire(),
            "554 5.7.1 Message refused: virus found (Eicar-Test-Signature)\r\n"
        );
        let r = rejection(&Reason::Virus("x\r\n250 ok".into()), &Pending::Auth);
        assert_eq!(r.to_wire().matches("\r\n").count(), 1, "one line");
    }

    #[test]
    fn a_chaos_trigger_answers_its_exact_code_as_mailpit() {
        let r = deferral(&Reason::Chaos(421), &Pending::Rcpt("b@x.test".into()));
        assert_eq!(r.to_wire(), "421 Chaos recipient error\r\n");
        let r = rejection(&Reason::Chaos(552), &Pending::Auth);
        assert_eq!(r.to_wire(), "552 Chaos sender error\r\n");
    }
}
