//! The delivery seam: where an accepted message goes before the client gets its reply.
//!
//! A [`DeliveryTarget`] takes a complete message ([`Handoff`]) and says, for each envelope
//! recipient, whether it took the message ([`RcptOutcome`]). The store is one target
//! ([`StoreTarget`]); a downstream SMTP/LMTP server, a webhook or a program are others.
//! Several targets can run for one message: [`combine`] folds their answers per recipient,
//! and the session turns the result into the one reply SMTP allows after DATA.
//!
//! A target never returns an error: a failure is an outcome (temporary or permanent),
//! logged by the target with the detail the client must not see.

use std::sync::Arc;

use async_trait::async_trait;

use crate::message::Incoming;
use crate::store::{Arrivals, MailStore};

/// `BODY=` of MAIL FROM (RFC 6152), kept so a relay can pass it on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BodyType {
    /// No BODY parameter, or `BODY=7BIT`.
    #[default]
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
}

/// The MAIL FROM parameters a downstream must see again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `BODY=`.
    pub body: BodyType,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
}

/// A downstream server's own reply (relay, LMTP), passed on to our client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownstreamReply {
    /// The reply code, e.g. 550.
    pub code: u16,
    /// The text of its last line, with the enhanced status code if it gave one
    /// (e.g. `5.1.1 No such user`).
    pub text: String,
}

/// What one target did for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptOutcome {
    /// The target took the message for this recipient (durably, or as its downstream said).
    Accepted,
    /// Not taken, try again later (4xx): our own failure, a timeout, a downstream 4xx.
    TempFail(Option<DownstreamReply>),
    /// Refused for good (5xx), as the downstream said or the target decided.
    PermFail(Option<DownstreamReply>),
}

impl RcptOutcome {
    /// Temporary failure with no downstream reply to show.
    pub const TEMP: RcptOutcome = RcptOutcome::TempFail(None);

    /// A downstream reply as an outcome: 2xx accepted, 5xx permanent, anything else
    /// temporary.
    pub fn from_reply(code: u16, text: impl Into<String>) -> RcptOutcome {
        let r = DownstreamReply {
            code,
            text: text.into(),
        };
        match code {
            200..=299 => RcptOutcome::Accepted,
            500..=599 => RcptOutcome::PermFail(Some(r)),
            _ => RcptOutcome::TempFail(Some(r)),
        }
    }

    /// Whether the recipient got the message.
    pub fn is_accepted(&self) -> bool {
        matches!(self, RcptOutcome::Accepted)
    }

    /// How bad it is, for folding several targets: accepted < temporary < permanent.
    fn severity(&self) -> u8 {
        match self {
            RcptOutcome::Accepted => 0,
            RcptOutcome::TempFail(_) => 1,
            RcptOutcome::PermFail(_) => 2,
        }
    }
}

/// A complete message on its way to the targets.
#[derive(Debug, Clone)]
pub struct Handoff {
    /// The message as a store writes it: envelope, session, parsed fields, and the bytes
    /// (our `Received:` and the check headers first, then the content as received).
    pub message: Incoming,
    /// MAIL FROM parameters to pass on.
    pub params: MailParams,
}

/// The combined answer of every target for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// One outcome per envelope recipient, in envelope order.
    pub rcpts: Vec<RcptOutcome>,
    /// Whether the local store was one of the targets (the reply then says "stored").
    pub stored: bool,
    /// Whether the local store failed (the reply then says so, rather than blaming a
    /// downstream).
    pub store_failed: bool,
}

impl DeliveryReport {
    /// Every recipient with the same outcome.
    pub fn all(n: usize, outcome: RcptOutcome, stored: bool) -> DeliveryReport {
        DeliveryReport {
            store_failed: stored && !outcome.is_accepted(),
            rcpts: vec![outcome; n],
            stored,
        }
    }
}

/// Somewhere an accepted message goes before the client gets its reply.
///
/// Implementations must return one outcome per `msg.message.envelope.rcpt_to`, in order,
/// and only once the message is safe with them: the client's 250 depends on it.
#[async_trait]
pub trait DeliveryTarget: Send + Sync + 'static {
    /// The target's name in logs and in configuration (`store`, `relay`, ...).
    fn name(&self) -> &'static str;

    /// Hands the message over.
    async fn deliver(&self, msg: &Handoff) -> Vec<RcptOutcome>;

    /// Whether this target is the local store.
    fn is_store(&self) -> bool {
        false
    }
}

/// Folds the answers of several targets into one outcome per recipient: a recipient is
/// accepted only if every target took it; otherwise the worst failure wins (permanent
/// over temporary), with its downstream reply. A missing answer counts as temporary.
pub fn combine(n: usize, answers: &[Vec<RcptOutcome>]) -> Vec<RcptOutcome> {
    (0..n)
        .map(|i| {
            answers
                .iter()
                .map(|a| a.get(i).cloned().unwrap_or(RcptOutcome::TEMP))
                .max_by_key(RcptOutcome::severity)
                .unwrap_or(RcptOutcome::TEMP)
        })
        .collect()
}

/// The local store as a delivery target: every recipient is accepted once the store says
/// the message is durable, and every one fails temporarily if it does not.
pub struct StoreTarget(pub Arc<dyn MailStore>);

/// Messages the store did not take, by error (see [`crate::net::Repeated`]).
static STORE_FAILURES: crate::net::Repeated =
    crate::net::Repeated::new(std::time::Duration::from_secs(10));

#[async_trait]
impl DeliveryTarget for StoreTarget {
    fn name(&self) -> &'static str {
        "store"
    }

    async fn deliver(&self, msg: &Handoff) -> Vec<RcptOutcome> {
        let n = msg.message.envelope.rcpt_to.len();
        match self.0.deliver(msg.message.clone()).await {
            Ok(()) => vec![RcptOutcome::Accepted; n],
            Err(e) => {
                // A store that is down fails every message alike: logged once, then once per
                // ten seconds with the number (`repeats`).
                if let Some(repeats) = STORE_FAILURES.hit(&e.to_string()) {
                    tracing::error!(id = %msg.message.id, error = %e, repeats,
                        "store did not take the message");
                }
                vec![RcptOutcome::TEMP; n]
            }
        }
    }

    fn is_store(&self) -> bool {
        true
    }
}

/// A recipient domain rule: recipients it matches go to its targets instead of the
/// listener's (`[[route]]`).
#[derive(Clone)]
pub struct Route {
    /// Whether a recipient's domain (lower-cased, without a trailing dot) is routed here.
    pub matches: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    /// Where its recipients' mail goes.
    pub targets: Vec<Arc<dyn DeliveryTarget>>,
}

/// The targets of one listener, in order: every message goes to all of them (at once),
/// and the client gets 250 only when every one took it for every recipient. Recipients
/// whose domain a [`Route`] matches go to that route's targets instead (the first route
/// that matches); the message is then handed to each group with its own recipients.
#[derive(Clone)]
pub struct Targets {
    list: Arc<[Arc<dyn DeliveryTarget>]>,
    routes: Arc<[Route]>,
    /// The store engine's group-commit counter, handed in by the wiring.
    arrivals: Option<Arrivals>,
}

impl Targets {
    /// These targets. At least one is needed for a message to be accepted.
    pub fn new(list: Vec<Arc<dyn DeliveryTarget>>) -> Targets {
        Targets {
            list: list.into(),
            routes: Arc::new([]),
            arrivals: None,
        }
    }

    /// The same targets, with recipient domain routes tried first.
    pub fn with_routes(self, routes: Vec<Route>) -> Targets {
        Targets {
            routes: routes.into(),
            ..self
        }
    }

    /// The local store alone (the default).
    pub fn store(store: Arc<dyn MailStore>) -> Targets {
        Targets::new(vec![Arc::new(StoreTarget(store))])
    }

    fn all(&self) -> impl Iterator<Item = &Arc<dyn DeliveryTarget>> {
        self.list
            .iter()
            .chain(self.routes.iter().flat_map(|r| r.targets.iter()))
    }

    /// The targets' names, for logs.
    pub fn names(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = self.all().map(|t| t.name()).collect();
        v.dedup();
        v
    }

    /// Whether the local store is one of the targets.
    pub fn has_store(&self) -> bool {
        self.all().any(|t| t.is_store())
    }

    /// The same targets, counting the sessions that receive content for them on
    /// `arrivals`: the store engine's group-commit counter (`intake_store::Opened`), which
    /// the wiring passes in.
    pub fn with_arrivals(self, arrivals: Option<Arrivals>) -> Targets {
        Targets { arrivals, ..self }
    }

    /// The store's counter of sessions receiving content, if the store is a target and the
    /// wiring gave one.
    pub fn arrivals(&self) -> Option<Arrivals> {
        self.arrivals.clone().filter(|_| self.has_store())
    }

    /// Which target list a recipient goes to: `None` the listener's, `Some(i)` route i's.
    fn route_of(&self, rcpt: &str) -> Option<usize> {
        if self.routes.is_empty() {
            return None;
        }
        let domain = rcpt
            .rsplit_once('@')
            .map(|(_, d)| d.trim_end_matches('.').to_lowercase())?;
        self.routes.iter().position(|r| (r.matches)(&domain))
    }

    /// Hands `msg` to every target at once and folds their answers per recipient.
    pub async fn deliver(&self, msg: &Handoff) -> DeliveryReport {
        let rcpts = &msg.message.envelope.rcpt_to;
        let n = rcpts.len();
        let groups: Vec<Option<usize>> = rcpts.iter().map(|r| self.route_of(r)).collect();
        let mut keys: Vec<Option<usize>> = groups.clone();
        keys.sort();
        keys.dedup();
        if keys == [None] {
            // Every recipient goes to the listener's targets: the whole message, once.
            let (rcpts, stored, store_failed) = deliver_to(&self.list, msg).await;
            return DeliveryReport {
                rcpts,
                stored,
                store_failed,
            };
        }
        let work = keys.iter().map(|key| {
            let members: Vec<usize> = (0..n).filter(|&i| groups[i] == *key).collect();
            let targets: &[Arc<dyn DeliveryTarget>] = match key {
                None => &self.list,
                Some(r) => &self.routes[*r].targets,
            };
            let mut part = msg.clone();
            part.message.envelope.rcpt_to = members.iter().map(|&i| rcpts[i].clone()).collect();
            async move { (members, deliver_to(targets, &part).await) }
        });
        let mut report = DeliveryReport {
            rcpts: vec![RcptOutcome::TEMP; n],
            stored: false,
            store_failed: false,
        };
        for (members, (outcomes, stored, store_failed)) in
            futures_util::future::join_all(work).await
        {
            report.stored |= stored;
            report.store_failed |= store_failed;
            for (i, o) in members.into_iter().zip(outcomes) {
                report.rcpts[i] = o;
            }
        }
        report
    }
}

/// One target list for one (part of a) message: the combined outcomes, whether the store
/// was among the targets and whether it failed.
async fn deliver_to(
    targets: &[Arc<dyn DeliveryTarget>],
    msg: &Handoff,
) -> (Vec<RcptOutcome>, bool, bool) {
    let n = msg.message.envelope.rcpt_to.len();
    let answers = match targets {
        // The common case (only the store, or only a relay) without join_all's bookkeeping.
        [only] => vec![only.deliver(msg).await],
        _ => futures_util::future::join_all(targets.iter().map(|t| t.deliver(msg))).await,
    };
    let store_failed = targets
        .iter()
        .zip(&answers)
        .any(|(t, a)| t.is_store() && !a.iter().all(RcptOutcome::is_accepted));
    (
        combine(n, &answers),
        targets.iter().any(|t| t.is_store()),
        store_failed,
    )
}

impl From<Arc<dyn MailStore>> for Targets {
    fn from(store: Arc<dyn MailStore>) -> Targets {
        Targets::store(store)
    }
}

impl<T: MailStore> From<Arc<T>> for Targets {
    fn from(store: Arc<T>) -> Targets {
        Targets::store(store)
    }
}

impl std::fmt::Debug for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Targets").field(&self.names()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(code: u16, t: &str) -> RcptOutcome {
        RcptOutcome::from_reply(code, t)
    }

    #[test]
    fn downstream_codes_map_to_outcomes() {
        assert_eq!(
            RcptOutcome::from_reply(250, "2.0.0 ok"),
            RcptOutcome::Accepted
        );
        assert!(matches!(
            RcptOutcome::from_reply(452, "4.2.2 full"),
            RcptOutcome::TempFail(Some(DownstreamReply { code: 452, .. }))
        ));
        assert!(matches!(
            RcptOutcome::from_reply(550, "5.1.1 unknown"),
            RcptOutcome::PermFail(Some(DownstreamReply { code: 550, .. }))
        ));
        // Nonsense from a downstream is never taken as acceptance or a final refusal.
        assert!(matches!(
            RcptOutcome::from_reply(354, "go on"),
            RcptOutcome::TempFail(_)
        ));
    }

    #[test]
    fn a_recipient_is_accepted_only_if_every_target_took_it() {
        let store = vec![
            RcptOutcome::Accepted,
            RcptOutcome::Accepted,
            RcptOutcome::TEMP,
        ];
        let relay = vec![
            RcptOutcome::Accepted,
            perm(550, "5.1.1 no such user"),
            RcptOutcome::Accepted,
        ];
        let all = combine(3, &[store, relay]);
        assert_eq!(
            all,
            vec![
                RcptOutcome::Accepted,
                perm(550, "5.1.1 no such user"),
                RcptOutcome::TEMP
            ]
        );
    }

    #[test]
    fn permanent_wins_over_temporary_and_missing_answers_are_temporary() {
        let a = vec![RcptOutcome::TEMP];
        let b = vec![perm(554, "5.7.1 no")];
        assert_eq!(combine(1, &[a, b]), vec![perm(554, "5.7.1 no")]);
        // A target that answered for too few recipients did not take the others.
        assert_eq!(
            combine(2, &[vec![RcptOutcome::Accepted]]),
            vec![RcptOutcome::Accepted, RcptOutcome::TEMP]
        );
        // No target at all delivers nothing.
        assert_eq!(combine(1, &[]), vec![RcptOutcome::TEMP]);
    }

    /// Records the recipients it was given and answers each with `answer`.
    struct Recording(std::sync::Mutex<Vec<Vec<String>>>, RcptOutcome);

    #[async_trait]
    impl DeliveryTarget for Recording {
        fn name(&self) -> &'static str {
            "recording"
        }
        async fn deliver(&self, msg: &Handoff) -> Vec<RcptOutcome> {
            let r = msg.message.envelope.rcpt_to.clone();
            let n = r.len();
            self.0.lock().unwrap().push(r);
            vec![self.1.clone(); n]
        }
    }

    fn handoff(rcpts: &[&str]) -> Handoff {
        let message = Incoming::new(
            crate::MessageId::new(),
            0,
            crate::Envelope {
                mail_from: "s@x.test".into(),
                rcpt_to: rcpts.iter().map(|s| s.to_string()).collect(),
            },
            crate::SessionInfo {
                helo: "h".into(),
                client: "192.0.2.1:1".parse().unwrap(),
                tls: None,
            },
            "",
            b"Subject: x\r\n\r\nx\r\n",
        );
        Handoff {
            message,
            params: MailParams::default(),
        }
    }

    #[tokio::test]
    async fn routes_split_the_recipients_and_outcomes_come_back_in_order() {
        let a = Arc::new(Recording(Default::default(), RcptOutcome::Accepted));
        let b = Arc::new(Recording(
            Default::default(),
            RcptOutcome::from_reply(550, "5.1.1 no"),
        ));
        let targets = Targets::new(vec![a.clone()]).with_routes(vec![Route {
            matches: Arc::new(|d: &str| d == "b.test"),
            targets: vec![b.clone()],
        }]);
        let report = targets
            .deliver(&handoff(&["one@a.test", "two@B.test.", "three@a.test"]))
            .await;
        assert_eq!(*a.0.lock().unwrap(), [vec!["one@a.test", "three@a.test"]]);
        assert_eq!(*b.0.lock().unwrap(), [vec!["two@B.test."]]);
        assert_eq!(
            report.rcpts,
            [
                RcptOutcome::Accepted,
                RcptOutcome::from_reply(550, "5.1.1 no"),
                RcptOutcome::Accepted
            ]
        );
        // Nothing routed: the whole message goes to the listener's targets once.
        targets.deliver(&handoff(&["x@a.test", "y@a.test"])).await;
        assert_eq!(a.0.lock().unwrap().last().unwrap().len(), 2);
        assert_eq!(b.0.lock().unwrap().len(), 1);
    }
}
