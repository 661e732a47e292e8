//! Mail policy: the [`Check`] trait, its [`Verdict`]s and the [`Pipeline`] that runs checks
//! with a deadline each.
//!
//! No protocol types here: a verdict says *what* was decided and *why* ([`Reason`]); the
//! SMTP session turns it into a reply from its catalogue. The checks themselves (recipient
//! lists, greylisting, ...) live in `intake-policy`; the session only ever sees verdicts.
//!
//! A check that cannot decide (its backend is down, it took too long) is not a verdict but
//! an error; the pipeline applies the check's [`OnError`] and logs it. Our own failures
//! therefore become a pass or a deferral, never a rejection.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

/// Where in the SMTP dialogue a check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The client connected, before the greeting.
    Connect,
    /// EHLO or HELO.
    Helo,
    /// MAIL FROM.
    MailFrom,
    /// One RCPT TO (once per recipient).
    RcptTo,
    /// The message content has been received, before it is stored.
    Data,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Connect => "connect",
            Stage::Helo => "helo",
            Stage::MailFrom => "mail",
            Stage::RcptTo => "rcpt",
            Stage::Data => "data",
        })
    }
}

/// Why a check deferred or rejected. The session picks the reply for each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// No such recipient here (`550 5.1.1`).
    UnknownRecipient,
    /// First time this client, sender and recipient are seen: try again later (`451 4.7.1`).
    Greylisted,
    /// The check could not decide and is configured to defer (`451 4.4.3`). Never a 5xx.
    CheckFailed,
    /// The sender's SPF record refuses the client (`550 5.7.23`), or could not be read
    /// now (`451 4.7.24`, RFC 7372); the text is shown to the client.
    Spf(String),
    /// Anything else; the text is shown to the client (`550 5.7.1` / `451 4.7.1`).
    Policy(String),
    /// A virus scanner found this signature in the content (`554 5.7.1` naming it).
    Virus(String),
    /// Mailpit's chaos trigger fired: this exact code, `Chaos sender error` or
    /// `Chaos recipient error` ([`crate::chaos`]).
    Chaos(u16),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::UnknownRecipient => f.write_str("unknown recipient"),
            Reason::Greylisted => f.write_str("greylisted"),
            Reason::CheckFailed => f.write_str("check failed"),
            Reason::Spf(t) | Reason::Policy(t) => f.write_str(t),
            Reason::Virus(name) => write!(f, "virus found: {name}"),
            Reason::Chaos(code) => write!(f, "chaos trigger ({code})"),
        }
    }
}

/// What one check decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Nothing to say: go on.
    Pass,
    /// Go on, and mark the message: `header` (one complete header field, CRLF-terminated)
    /// is prepended to it; `score` adds to the message's score.
    Tag {
        /// Spam-style score contribution.
        score: f32,
        /// The header field to prepend, e.g. `"X-Spam-Score: 3.1\r\n"` (empty: none).
        header: String,
        /// What the check found, stored with the message.
        findings: Findings,
    },
    /// Not now: the client should try again later (4xx).
    Defer {
        /// Why.
        reason: Reason,
    },
    /// No: the client must not try again (5xx).
    Reject {
        /// Why.
        reason: Reason,
    },
}

impl Verdict {
    /// True for [`Verdict::Defer`] and [`Verdict::Reject`]: later checks need not run.
    pub fn is_final(&self) -> bool {
        matches!(self, Verdict::Defer { .. } | Verdict::Reject { .. })
    }
}

/// What checks found about a message, stored with it and shown by the API: symbols
/// (`DNSBL_LISTED`, `HELO_BARE_IP`, a scanner's rule names), the DNS lists that matched, the
/// SPF/DKIM/DMARC/ARC results, and the total score (filled in at delivery).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Findings {
    /// Sum of the scores of every check.
    #[serde(default)]
    pub score: f32,
    /// Rule names, e.g. `DNSBL_LISTED`, `RSPAMD:GTUBE`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub symbols: Vec<String>,
    /// DNS lists (zones) that listed the client, with their weights: `zone=weight`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lists: Vec<String>,
    /// SPF result (`pass`, `fail`, `softfail`, `neutral`, `none`, `temperror`, `permerror`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spf: Option<String>,
    /// DKIM result (the best signature's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dkim: Option<String>,
    /// DMARC result, with the domain's policy: `fail (p=reject)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dmarc: Option<String>,
    /// ARC chain validation result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arc: Option<String>,
    /// A content scanner's action and score, e.g. `rspamd: add header (7.2/15)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanner: Option<String>,
    /// Checks that could not decide and let the message in (their `on_error` is to fail
    /// open): the message was not checked by them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undecided: Vec<Undecided>,
}

/// A check that could not decide, and why; the message went on without its verdict.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Undecided {
    /// The check's name, e.g. `rspamd`.
    pub check: String,
    /// Why it could not decide, e.g. `timed out after 20s`.
    pub reason: String,
}

impl Findings {
    /// Adds what `other` found (later results of the same kind replace earlier ones).
    pub fn merge(&mut self, other: Findings) {
        self.score += other.score;
        self.symbols.extend(other.symbols);
        self.lists.extend(other.lists);
        for u in other.undecided {
            if !self.undecided.contains(&u) {
                self.undecided.push(u);
            }
        }
        for (mine, theirs) in [
            (&mut self.spf, other.spf),
            (&mut self.dkim, other.dkim),
            (&mut self.dmarc, other.dmarc),
            (&mut self.arc, other.arc),
            (&mut self.scanner, other.scanner),
        ] {
            if theirs.is_some() {
                *mine = theirs;
            }
        }
    }

    /// Nothing was found.
    pub fn is_empty(&self) -> bool {
        *self == Findings::default()
    }
}

/// A check could not decide.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Its backend (store, DNS, scanner, file) failed.
    #[error("{0}")]
    Backend(String),
    /// It did not answer within its deadline.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// What to do when a check cannot decide (`on_error = "defer" | "pass"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum OnError {
    /// Carry on as if it had passed (greylisting: losing state must not stop mail).
    #[serde(rename = "pass")]
    FailOpen,
    #[serde(rename = "defer")]
    /// Answer `451 4.4.3` so the client retries (recipients: never accept unknown users).
    Defer,
}

/// What a check may look at. Owned, so the driver can hand it to checks across awaits.
#[derive(Debug, Clone)]
pub struct CheckCtx {
    /// The stage being checked.
    pub stage: Stage,
    /// The client's address (from the PROXY header when there is one).
    pub client: SocketAddr,
    /// The EHLO/HELO name, once given (at [`Stage::Helo`]: the name being checked).
    pub helo: Option<String>,
    /// The session is encrypted.
    pub tls: bool,
    /// The reverse-path (empty for the null sender), from [`Stage::MailFrom`] on.
    pub mail_from: Option<String>,
    /// At [`Stage::RcptTo`]: the recipient being checked.
    pub rcpt_to: Option<String>,
    /// At [`Stage::Data`]: the message's recipients (empty at the earlier stages, where
    /// [`CheckCtx::rcpt_to`] is the one being checked).
    pub recipients: Vec<String>,
    /// At [`Stage::Data`]: the message as it will be stored so far: our `Received:`
    /// header (client address, HELO, TLS) first, then the header fields earlier checks
    /// added, then the content as received (less any `Authentication-Results:` that
    /// claimed our host name).
    pub content: Bytes,
    /// Symbols earlier checks of this session and message found (e.g. `DNSWL_ALLOWLISTED`
    /// from the DNS lists at connect), so a later check can take them into account.
    pub symbols: Vec<String>,
}

impl CheckCtx {
    /// A context for `stage` with nothing known but the client.
    pub fn new(stage: Stage, client: SocketAddr) -> CheckCtx {
        CheckCtx {
            stage,
            client,
            helo: None,
            tls: false,
            mail_from: None,
            rcpt_to: None,
            recipients: Vec::new(),
            content: Bytes::new(),
            symbols: Vec::new(),
        }
    }
}

/// One policy check.
#[async_trait]
pub trait Check: Send + Sync + 'static {
    /// Appears in logs.
    fn name(&self) -> &'static str;
    /// The stage it runs at.
    fn stage(&self) -> Stage;
    /// Decides. `Err` means "could not evaluate"; the pipeline applies [`OnError`].
    async fn check(&self, cx: &CheckCtx) -> Result<Verdict, CheckError>;
}

#[derive(Clone)]
struct Entry {
    check: Arc<dyn Check>,
    deadline: Duration,
    on_error: OnError,
    /// This check's metrics, registered at its first run (the recorder is installed by
    /// then) instead of being looked up by name and labels for every message.
    metrics: Arc<std::sync::OnceLock<CheckMetrics>>,
}

/// A check's time histogram and one verdict counter per [`RESULT_KINDS`] entry.
struct CheckMetrics {
    seconds: metrics::Histogram,
    verdicts: [metrics::Counter; 4],
}

impl CheckMetrics {
    fn of(check: &str) -> CheckMetrics {
        let name = check.to_string();
        let verdict = |kind: &'static str| metrics::counter!("intake_check_verdicts_total", "check" => name.clone(), "verdict" => kind);
        CheckMetrics {
            seconds: metrics::histogram!("intake_check_seconds", "check" => name.clone()),
            verdicts: RESULT_KINDS.map(verdict),
        }
    }
}

/// The checks of a listener, in the order they run.
#[derive(Default, Clone)]
pub struct Pipeline {
    entries: Vec<Entry>,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.entries
                    .iter()
                    .map(|e| (e.check.stage(), e.check.name())),
            )
            .finish()
    }
}

/// A scanner that is down fails every message alike: its "could not decide" is logged
/// once, then once per ten seconds with the number (`repeats`); the metrics count each.
static UNDECIDED: crate::net::Repeated =
    crate::net::Repeated::new(std::time::Duration::from_secs(10));

/// The deferrals that follow (`on_error = "defer"`, or a check whose own state is out of
/// reach): the same outage, summarized alike per check and stage. Other decisions (a
/// greylisted triplet, an unknown recipient) are logged each time: they are about a client.
static DEFERRED_UNDECIDED: crate::net::Repeated =
    crate::net::Repeated::new(std::time::Duration::from_secs(10));

impl Pipeline {
    /// No checks.
    pub fn new() -> Pipeline {
        Pipeline::default()
    }

    /// Adds a check that must answer within `deadline`, with `on_error` when it cannot.
    pub fn add(&mut self, check: Arc<dyn Check>, deadline: Duration, on_error: OnError) {
        self.entries.push(Entry {
            check,
            deadline,
            on_error,
            metrics: Default::default(),
        });
    }

    /// Whether any check runs at `stage` (the session asks only then).
    pub fn has(&self, stage: Stage) -> bool {
        self.entries.iter().any(|e| e.check.stage() == stage)
    }

    /// Whether there are no checks at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Runs the checks of `cx.stage` in order, each under its deadline, and returns their
    /// verdicts. Stops after the first deferral or rejection. A check that fails or times
    /// out is logged and, as its [`OnError`] says, becomes a deferral with
    /// [`Reason::CheckFailed`] or lets the message in marked as not checked by it: a
    /// [`Verdict::Tag`] with an `X-Intake-Unchecked: <check>; <reason>` header field and
    /// an [`Undecided`] finding (counted as a pass in the metrics).
    pub async fn run(&self, cx: &CheckCtx) -> Vec<Verdict> {
        let mut out = Vec::new();
        for e in self.entries.iter().filter(|e| e.check.stage() == cx.stage) {
            let started = std::time::Instant::now();
            let result = match tokio::time::timeout(e.deadline, e.check.check(cx)).await {
                Ok(r) => r,
                Err(_) => Err(CheckError::Timeout(e.deadline)),
            };
            let m = e.metrics.get_or_init(|| CheckMetrics::of(e.check.name()));
            m.seconds.record(started.elapsed());
            let (verdict, kind) = match result {
                Ok(v) => {
                    let kind = result_index(&v);
                    (v, kind)
                }
                Err(err) => {
                    if let Some(repeats) = UNDECIDED.hit(&format!("{}: {err}", e.check.name())) {
                        tracing::warn!(
                            check = e.check.name(), stage = %cx.stage, client = %cx.client,
                            error = %err, on_error = ?e.on_error, repeats, "check could not decide"
                        );
                    }
                    match e.on_error {
                        OnError::FailOpen => (unchecked(e.check.name(), &err), 0),
                        OnError::Defer => (
                            Verdict::Defer {
                                reason: Reason::CheckFailed,
                            },
                            2,
                        ),
                    }
                }
            };
            if verdict.is_final() {
                log_decision(e.check.name(), cx, &verdict);
            }
            m.verdicts[kind].increment(1);
            let stop = verdict.is_final();
            out.push(verdict);
            if stop {
                break;
            }
        }
        out
    }
}

/// Logs a final verdict: each one, but a deferral because a check could not decide, which
/// is logged once, then once per ten seconds with the number since (`repeats`).
fn log_decision(check: &str, cx: &CheckCtx, verdict: &Verdict) {
    let rcpt = cx.rcpt_to.as_deref().unwrap_or("");
    if let Verdict::Defer {
        reason: Reason::CheckFailed,
    } = verdict
    {
        if let Some(repeats) = DEFERRED_UNDECIDED.hit(&format!("{check} {}", cx.stage)) {
            tracing::info!(check, stage = %cx.stage, client = %cx.client, rcpt,
                verdict = ?verdict, repeats, "policy decision");
        }
        return;
    }
    tracing::info!(check, stage = %cx.stage, client = %cx.client, rcpt, verdict = ?verdict,
        "policy decision");
}

/// What a check that could not decide and fails open says (see [`Verdict::unchecked`]).
fn unchecked(check: &str, err: &CheckError) -> Verdict {
    Verdict::unchecked(check, &err.to_string())
}

impl Verdict {
    /// Go on without this check's verdict, marked: a header field
    /// `X-Intake-Unchecked: <check>; <reason>` (one line, control characters blanked) and
    /// the same as an [`Undecided`] finding, so that mail a check did not look at does not
    /// look checked. What the pipeline makes of a check that fails open; a check that
    /// falls back by itself (its shared state is unavailable) says the same.
    pub fn unchecked(check: &str, reason: &str) -> Verdict {
        let reason: String = reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(200)
            .collect();
        Verdict::Tag {
            score: 0.0,
            header: format!("X-Intake-Unchecked: {check}; {reason}\r\n"),
            findings: Findings {
                undecided: vec![Undecided {
                    check: check.to_string(),
                    reason,
                }],
                ..Findings::default()
            },
        }
    }
}

/// The `verdict` label values of `intake_check_verdicts_total`, by [`result_index`].
const RESULT_KINDS: [&str; 4] = ["pass", "tag", "defer", "reject"];

/// A verdict's place in [`RESULT_KINDS`].
fn result_index(v: &Verdict) -> usize {
    match v {
        Verdict::Pass => 0,
        Verdict::Tag { .. } => 1,
        Verdict::Defer { .. } => 2,
        Verdict::Reject { .. } => 3,
    }
}

/// The current time. Injected, so that sessions and checks can be tested at fixed times.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Now.
    fn now(&self) -> jiff::Timestamp;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }
}

/// Where message ids come from. Injected, so that tests get predictable ids.
pub trait IdSource: Send + Sync + fmt::Debug + 'static {
    /// A fresh id.
    fn next_id(&self) -> crate::MessageId;
}

/// Time-ordered random ids (UUIDv7).
#[derive(Debug, Default, Clone, Copy)]
pub struct RandomIds;

impl IdSource for RandomIds {
    fn next_id(&self) -> crate::MessageId {
        crate::MessageId::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A check with a fixed answer, optionally slow.
    struct Fixed {
        stage: Stage,
        answer: fn() -> Result<Verdict, CheckError>,
        delay: Duration,
    }

    #[async_trait]
    impl Check for Fixed {
        fn name(&self) -> &'static str {
            "fixed"
        }
        fn stage(&self) -> Stage {
            self.stage
        }
        async fn check(&self, _: &CheckCtx) -> Result<Verdict, CheckError> {
            tokio::time::sleep(self.delay).await;
            (self.answer)()
        }
    }

    fn fixed(stage: Stage, answer: fn() -> Result<Verdict, CheckError>) -> Arc<dyn Check> {
        Arc::new(Fixed {
            stage,
            answer,
            delay: Duration::ZERO,
        })
    }

    fn cx(stage: Stage) -> CheckCtx {
        CheckCtx::new(stage, "192.0.2.1:25".parse().unwrap())
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn runs_the_stage_in_order_and_stops_at_the_first_final_verdict() {
        let mut p = Pipeline::new();
        let tag = || {
            Ok(Verdict::Tag {
                score: 1.5,
                header: "X-Test: 1\r\n".into(),
                findings: Findings::default(),
            })
        };
        p.add(fixed(Stage::RcptTo, tag), SECOND, OnError::Defer);
        p.add(
            fixed(Stage::Helo, || Ok(Verdict::Pass)),
            SECOND,
            OnError::Defer,
        );
        p.add(
            fixed(Stage::RcptTo, || {
                Ok(Verdict::Reject {
                    reason: Reason::UnknownRecipient,
                })
            }),
            SECOND,
            OnError::Defer,
        );
        p.add(
            fixed(Stage::RcptTo, || panic!("runs after a rejection")),
            SECOND,
            OnError::Defer,
        );
        assert!(p.has(Stage::RcptTo) && p.has(Stage::Helo) && !p.has(Stage::Data));
        let v = p.run(&cx(Stage::RcptTo)).await;
        assert_eq!(v.len(), 2);
        assert!(matches!(v[0], Verdict::Tag { .. }));
        assert_eq!(
            v[1],
            Verdict::Reject {
                reason: Reason::UnknownRecipient
            }
        );
        assert_eq!(p.run(&cx(Stage::Helo)).await, vec![Verdict::Pass]);
        assert!(p.run(&cx(Stage::Data)).await.is_empty());
    }

    #[tokio::test]
    async fn errors_fail_open_or_defer_never_reject() {
        let fail = || Err(CheckError::Backend("store down".into()));
        let mut p = Pipeline::new();
        p.add(fixed(Stage::MailFrom, fail), SECOND, OnError::FailOpen);
        assert_eq!(
            p.run(&cx(Stage::MailFrom)).await,
            vec![Verdict::Tag {
                score: 0.0,
                header: "X-Intake-Unchecked: fixed; store down\r\n".into(),
                findings: Findings {
                    undecided: vec![Undecided {
                        check: "fixed".into(),
                        reason: "store down".into()
                    }],
                    ..Findings::default()
                }
            }]
        );
        let mut p = Pipeline::new();
        p.add(fixed(Stage::MailFrom, fail), SECOND, OnError::Defer);
        assert_eq!(
            p.run(&cx(Stage::MailFrom)).await,
            vec![Verdict::Defer {
                reason: Reason::CheckFailed
            }]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_check_is_cut_off_at_its_deadline() {
        let slow = Arc::new(Fixed {
            stage: Stage::Data,
            answer: || {
                Ok(Verdict::Reject {
                    reason: Reason::Policy("too late".into()),
                })
            },
            delay: Duration::from_secs(60),
        });
        let mut p = Pipeline::new();
        p.add(slow.clone(), SECOND, OnError::Defer);
        let started = tokio::time::Instant::now();
        assert_eq!(
            p.run(&cx(Stage::Data)).await,
            vec![Verdict::Defer {
                reason: Reason::CheckFailed
            }]
        );
        assert_eq!(started.elapsed(), SECOND);
        let mut p = Pipeline::new();
        p.add(slow, SECOND, OnError::FailOpen);
        let v = p.run(&cx(Stage::Data)).await;
        let Some(Verdict::Tag {
            header, findings, ..
        }) = v.first()
        else {
            panic!("{v:?}")
        };
        assert_eq!(header, "X-Intake-Unchecked: fixed; timed out after 1s\r\n");
        assert_eq!(findings.undecided[0].reason, "timed out after 1s");
    }
}
