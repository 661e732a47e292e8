//! Valid recipients: `550 5.1.1` at RCPT for addresses no source lists.
//!
//! Three sources, any of which may list an address: the config (`recipients.addresses`),
//! a file (`recipients.file`, re-read when it changes) and, with `recipients.store = true`,
//! the store's table (`intake recipient add`, seen by the running server within a second).
//! An entry is an address or `@domain`, which accepts every address of that domain.
//! Matching ignores case.
//!
//! With no source listing anything, every address is accepted (the domain check in the
//! session still applies): that is Intake without a recipient list. Without
//! `recipients.store` the check never calls the store, so a store that is away costs RCPT
//! nothing. `postmaster@` any of our domains is always accepted (RFC 5321 §4.5.1).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use async_trait::async_trait;
use intake_core::{Check, CheckCtx, CheckError, OnError, Reason, RecipientTable, Stage, Verdict};

/// Settings of the recipient check.
#[derive(Debug, Clone)]
pub struct RecipientsConfig {
    /// Addresses and `@domain` catch-alls from the config.
    pub addresses: Vec<String>,
    /// A file of addresses, one per line (`#` comments), re-read when it changes.
    pub file: Option<PathBuf>,
    /// How long the check may take (the store lookup).
    pub timeout: Duration,
    /// When the file or the store cannot be read: defer (default) or accept.
    pub on_error: OnError,
    /// Also ask the `[directory]` (LDAP or SQL): an address it does not know is refused.
    pub directory: bool,
    /// Read the store's table (`intake recipient add`): a source once it lists someone.
    /// Off: the check never calls the store.
    pub store: bool,
}

impl Default for RecipientsConfig {
    fn default() -> Self {
        RecipientsConfig {
            addresses: Vec::new(),
            file: None,
            timeout: Duration::from_secs(5),
            on_error: OnError::Defer,
            directory: false,
            store: false,
        }
    }
}

/// A set of addresses and catch-all domains, lower-cased.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RecipientList {
    exact: HashSet<String>,
    domains: HashSet<String>,
}

impl RecipientList {
    /// From entries: `user@domain` or `@domain`. Returns the entries that are neither.
    pub fn parse<I, S>(entries: I) -> (RecipientList, Vec<String>)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = RecipientList::default();
        let mut bad = Vec::new();
        for e in entries {
            let e = e.as_ref().trim().trim_end_matches('.').to_lowercase();
            match e.rsplit_once('@') {
                Some(("", d)) if valid_domain(d) => {
                    list.domains.insert(d.to_string());
                }
                Some((l, d)) if !l.is_empty() && valid_domain(d) && !l.contains(' ') => {
                    list.exact.insert(e);
                }
                _ => bad.push(e),
            }
        }
        (list, bad)
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.domains.is_empty()
    }

    /// Whether `address` (lower-cased) is listed, itself or by its domain.
    pub fn contains(&self, address: &str) -> bool {
        self.exact.contains(address)
            || address
                .rsplit_once('@')
                .is_some_and(|(_, d)| self.domains.contains(d))
    }
}

fn valid_domain(d: &str) -> bool {
    !d.is_empty() && !d.contains(['@', ' ', '/'])
}

/// The file source: parsed again whenever its modification time or size changes.
#[derive(Debug)]
struct FileSource {
    path: PathBuf,
    loaded: Mutex<Option<(SystemTime, u64, Arc<RecipientList>)>>,
}

impl FileSource {
    fn current(&self) -> Result<Arc<RecipientList>, CheckError> {
        let fail = |e: std::io::Error| {
            CheckError::Backend(format!("recipients.file {}: {e}", self.path.display()))
        };
        let meta = std::fs::metadata(&self.path).map_err(fail)?;
        let stamp = (meta.modified().map_err(fail)?, meta.len());
        let mut loaded = self.loaded.lock().expect("recipient file");
        if let Some((m, l, list)) = loaded.as_ref()
            && (*m, *l) == stamp
        {
            return Ok(list.clone());
        }
        let text = std::fs::read_to_string(&self.path).map_err(fail)?;
        let lines = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty());
        let (list, bad) = RecipientList::parse(lines);
        for b in bad {
            tracing::warn!(file = %self.path.display(), entry = %b, "recipients.file: not an address or @domain; ignored");
        }
        tracing::info!(file = %self.path.display(), entries = list.exact.len() + list.domains.len(), "recipients.file loaded");
        let list = Arc::new(list);
        *loaded = Some((stamp.0, stamp.1, list.clone()));
        Ok(list)
    }
}

/// What the check last learnt of the store's table.
#[derive(Debug, Clone, Copy)]
enum Table {
    /// Not asked yet (or it failed before it ever answered).
    Unknown,
    /// Empty at this instant: not a source.
    Empty(Instant),
    /// It lists addresses: a source.
    Listing,
}

/// The recipient check (at RCPT).
pub struct RecipientExists {
    fixed: RecipientList,
    file: Option<FileSource>,
    /// The store's table, when it is a source (`recipients.store`); None: never asked.
    store: Option<Arc<dyn RecipientTable>>,
    /// The store's table as last seen: an empty one is not asked again for `empty_for`, so
    /// a server without a recipient list does no lookup per RCPT.
    table: Mutex<Table>,
    /// How long an empty table is believed empty.
    empty_for: Duration,
    /// After the store failed, RCPT does not wait for it again for a while: a table known
    /// empty is then no source (mail is accepted as without a list), any other is "could
    /// not decide" at once (`on_error`).
    breaker: intake_core::breaker::Breaker,
    /// How long one lookup may take: within the check's deadline, so that a store that
    /// does not answer trips the breaker rather than the pipeline's timeout.
    lookup_timeout: Duration,
}

impl RecipientExists {
    /// A check over the configured sources (`store`'s table only with `recipients.store`).
    pub fn new(cfg: &RecipientsConfig, store: Arc<dyn RecipientTable>) -> RecipientExists {
        let (fixed, bad) = RecipientList::parse(&cfg.addresses);
        for b in bad {
            tracing::warn!(entry = %b, "recipients.addresses: not an address or @domain; ignored");
        }
        RecipientExists {
            fixed,
            file: cfg.file.clone().map(|path| FileSource {
                path,
                loaded: Mutex::new(None),
            }),
            store: cfg.store.then_some(store),
            table: Mutex::new(Table::Unknown),
            empty_for: Duration::from_secs(1),
            breaker: intake_core::breaker::Breaker::new("recipient table", Duration::from_secs(10)),
            lookup_timeout: cfg.timeout.mul_f32(0.9),
        }
    }

    /// Believes an empty store table for `d` (tests use zero).
    pub fn with_empty_table_cache(mut self, d: Duration) -> Self {
        self.empty_for = d;
        self
    }

    /// Whether `address` is listed: `None` when no source lists anything.
    async fn listed(&self, address: &str) -> Result<Option<bool>, CheckError> {
        let mut any = !self.fixed.is_empty();
        if self.fixed.contains(address) {
            return Ok(Some(true));
        }
        if let Some(file) = &self.file {
            // A configured file is a source even when empty: a truncated file must not
            // open the gateway to every address.
            any = true;
            if file.current()?.contains(address) {
                return Ok(Some(true));
            }
        }
        let Some(store) = &self.store else {
            return Ok(any.then_some(false));
        };
        let table = *self.table.lock().expect("cache");
        let away = |why: String| match table {
            // Known to list nothing: no source, whatever the store's state now.
            Table::Empty(_) => Ok(()),
            Table::Unknown | Table::Listing => Err(CheckError::Backend(why)),
        };
        if let Table::Empty(at) = table
            && at.elapsed() < self.empty_for
        {
            return Ok(any.then_some(false));
        }
        let permit = match self.breaker.admit() {
            Ok(permit) => permit,
            Err(refused) => {
                away(format!("recipient table: the store {refused}"))?;
                return Ok(any.then_some(false));
            }
        };
        let lookup = tokio::time::timeout(self.lookup_timeout, store.recipient_lookup(address));
        let answer = match lookup.await {
            Ok(answer) => answer,
            Err(_) => Err(intake_core::StoreError::Unavailable(format!(
                "no answer within {:?}",
                self.lookup_timeout
            ))),
        };
        match answer {
            Ok(Some(found)) => {
                permit.succeeded();
                *self.table.lock().expect("cache") = Table::Listing;
                if found {
                    return Ok(Some(true));
                }
                any = true;
            }
            Ok(None) => {
                permit.succeeded();
                *self.table.lock().expect("cache") = Table::Empty(Instant::now());
            }
            Err(e) => {
                permit.failed(&e);
                away(format!("recipient table: {e}"))?;
            }
        }
        Ok(any.then_some(false))
    }
}

#[async_trait]
impl Check for RecipientExists {
    fn name(&self) -> &'static str {
        "recipients"
    }

    fn stage(&self) -> Stage {
        Stage::RcptTo
    }

    async fn check(&self, cx: &CheckCtx) -> Result<Verdict, CheckError> {
        let Some(rcpt) = cx.rcpt_to.as_deref() else {
            return Ok(Verdict::Pass);
        };
        let address = rcpt.trim_end_matches('.').to_lowercase();
        if address.starts_with("postmaster@") {
            return Ok(Verdict::Pass);
        }
        Ok(match self.listed(&address).await? {
            Some(false) => Verdict::Reject {
                reason: Reason::UnknownRecipient,
            },
            Some(true) | None => Verdict::Pass,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use intake_core::{MailStore, StoreError};
    use intake_store::{Mode, StoreSettings};

    fn cx(rcpt: &str) -> CheckCtx {
        let mut c = CheckCtx::new(Stage::RcptTo, "192.0.2.1:25".parse().unwrap());
        c.rcpt_to = Some(rcpt.into());
        c
    }

    async fn verdicts(check: &RecipientExists, rcpts: &[&str]) -> Vec<&'static str> {
        let mut out = Vec::new();
        for r in rcpts {
            out.push(match check.check(&cx(r)).await {
                Ok(Verdict::Pass) => "pass",
                Ok(Verdict::Reject {
                    reason: Reason::UnknownRecipient,
                }) => "unknown",
                Ok(other) => panic!("unexpected {other:?}"),
                Err(_) => "error",
            });
        }
        out
    }

    fn store() -> Arc<intake_store::Store> {
        intake_store::memory::store()
    }

    /// The store's table as a source (`recipients.store = true`).
    fn with_store() -> RecipientsConfig {
        RecipientsConfig {
            store: true,
            ..RecipientsConfig::default()
        }
    }

    #[test]
    fn entries_are_addresses_or_domains() {
        let (list, bad) = RecipientList::parse([
            "Alice@Example.test",
            "@Catch.test.",
            "bob",
            "@",
            "a b@x.test",
        ]);
        assert!(list.contains("alice@example.test"));
        assert!(list.contains("anyone@catch.test"));
        assert!(!list.contains("anyone@sub.catch.test"));
        assert!(!list.contains("bob@example.test"));
        assert_eq!(bad, ["bob", "@", "a b@x.test"]);
    }

    #[tokio::test]
    async fn config_list_with_catch_all_and_postmaster() {
        let cfg = RecipientsConfig {
            addresses: vec!["alice@example.test".into(), "@catch.test".into()],
            ..RecipientsConfig::default()
        };
        let check = RecipientExists::new(&cfg, store());
        assert_eq!(
            verdicts(
                &check,
                &[
                    "alice@example.test",
                    "ALICE@Example.Test",
                    "bob@example.test",
                    "x@catch.test",
                    "postmaster@example.test"
                ]
            )
            .await,
            ["pass", "pass", "unknown", "pass", "pass"]
        );
    }

    #[tokio::test]
    async fn no_source_accepts_everything() {
        let check = RecipientExists::new(&RecipientsConfig::default(), store());
        assert_eq!(verdicts(&check, &["anyone@anywhere.test"]).await, ["pass"]);
    }

    #[tokio::test]
    async fn the_file_is_read_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("recipients.txt");
        let cfg = RecipientsConfig {
            file: Some(file.clone()),
            ..RecipientsConfig::default()
        };
        let check = RecipientExists::new(&cfg, store());
        assert_eq!(
            verdicts(&check, &["alice@example.test"]).await,
            ["error"],
            "a missing file cannot decide (deferred by default)"
        );
        std::fs::write(
            &file,
            "# valid users\nalice@example.test\n\n@team.test  # all of it\n",
        )
        .unwrap();
        assert_eq!(
            verdicts(
                &check,
                &["alice@example.test", "bob@example.test", "x@team.test"]
            )
            .await,
            ["pass", "unknown", "pass"]
        );
        std::fs::write(&file, "bob@example.test\n").unwrap();
        assert_eq!(
            verdicts(
                &check,
                &["alice@example.test", "bob@example.test", "x@team.test"]
            )
            .await,
            ["unknown", "pass", "unknown"]
        );
        std::fs::write(&file, "").unwrap();
        assert_eq!(
            verdicts(&check, &["bob@example.test"]).await,
            ["unknown"],
            "an empty file still lists nobody"
        );
    }

    #[tokio::test]
    async fn the_store_table_takes_effect_at_once() {
        let s = store();
        let check =
            RecipientExists::new(&with_store(), s.clone()).with_empty_table_cache(Duration::ZERO);
        assert_eq!(verdicts(&check, &["carol@example.test"]).await, ["pass"]);
        s.recipient_add("dave@example.test").await.unwrap();
        assert_eq!(
            verdicts(&check, &["carol@example.test", "dave@example.test"]).await,
            ["unknown", "pass"]
        );
        s.recipient_add("@example.test").await.unwrap();
        assert_eq!(verdicts(&check, &["carol@example.test"]).await, ["pass"]);
        // With the config listing someone, either source may accept.
        let cfg = RecipientsConfig {
            addresses: vec!["erin@other.test".into()],
            ..with_store()
        };
        let check = RecipientExists::new(&cfg, s.clone());
        assert_eq!(
            verdicts(
                &check,
                &["erin@other.test", "x@example.test", "x@other.test"]
            )
            .await,
            ["pass", "pass", "unknown"]
        );
        s.close().await;
    }

    #[tokio::test]
    async fn a_failing_store_cannot_decide() {
        let dir = tempfile::tempdir().unwrap();
        let settings = StoreSettings::sqlite(dir.path());
        let s = intake_store::open(&settings, Mode::ReadWrite)
            .await
            .unwrap()
            .store;
        s.close().await;
        // Read-only and with the database gone: every lookup fails.
        let ro = intake_store::open(&settings, Mode::ReadOnly)
            .await
            .unwrap()
            .store;
        std::fs::remove_file(dir.path().join("intake.db")).unwrap();
        let check = RecipientExists::new(&with_store(), ro);
        assert_eq!(verdicts(&check, &["a@example.test"]).await, ["error"]);
    }

    /// A store that is away: lookups hang (a closed pool waiting for its connect timeout)
    /// until the test lets one answer, or fail at once. Counts the lookups it was asked.
    #[derive(Clone, Copy)]
    enum Answer {
        Hang,
        Empty,
        Fail,
    }

    struct AwayTable {
        answer: std::sync::Mutex<Answer>,
        asked: std::sync::atomic::AtomicUsize,
    }

    #[async_trait]
    impl RecipientTable for AwayTable {
        async fn recipient_add(&self, _: &str) -> Result<bool, StoreError> {
            unreachable!("the check never writes")
        }
        async fn recipient_remove(&self, _: &str) -> Result<bool, StoreError> {
            unreachable!("the check never writes")
        }
        async fn recipient_list(&self) -> Result<Vec<String>, StoreError> {
            unreachable!("the check never lists")
        }
        async fn recipient_lookup(&self, _: &str) -> Result<Option<bool>, StoreError> {
            self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let answer = *self.answer.lock().unwrap();
            match answer {
                Answer::Empty => Ok(None),
                Answer::Fail => Err(StoreError::Unavailable("connection refused".into())),
                Answer::Hang => std::future::pending().await,
            }
        }
    }

    fn away(answer: Answer) -> Arc<AwayTable> {
        Arc::new(AwayTable {
            answer: std::sync::Mutex::new(answer),
            asked: Default::default(),
        })
    }

    /// With the store away, one RCPT pays the lookup's bound; the next ones are answered
    /// at once by the circuit breaker ("could not decide" while the table may list
    /// addresses), without asking the store again.
    #[tokio::test(start_paused = true)]
    async fn a_store_that_does_not_answer_costs_one_timeout_then_fails_fast() {
        let table = away(Answer::Hang);
        let cfg = RecipientsConfig {
            timeout: Duration::from_secs(5),
            ..with_store()
        };
        let check = RecipientExists::new(&cfg, table.clone());
        let started = tokio::time::Instant::now();
        assert_eq!(verdicts(&check, &["a@example.test"]).await, ["error"]);
        assert!(
            started.elapsed() < cfg.timeout,
            "the lookup gives up within the check's deadline"
        );
        let after = tokio::time::Instant::now();
        assert_eq!(
            verdicts(&check, &["b@example.test", "c@example.test"]).await,
            ["error", "error"]
        );
        assert_eq!(
            after.elapsed(),
            Duration::ZERO,
            "no wait while the breaker is open"
        );
        assert_eq!(table.asked.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// A client that hangs up while its RCPT waits for the store tells nothing about the
    /// store: the next RCPT asks it again, and is not refused by a tripped breaker.
    #[tokio::test(start_paused = true)]
    async fn a_client_gone_mid_lookup_does_not_trip_the_breaker() {
        let table = away(Answer::Hang);
        let check = RecipientExists::new(&with_store(), table.clone());
        let ctx = cx("a@example.test");
        for _ in 0..3 {
            let gone = tokio::time::timeout(Duration::from_millis(10), check.check(&ctx));
            assert!(gone.await.is_err(), "still waiting when the client left");
        }
        *table.answer.lock().unwrap() = Answer::Empty;
        assert_eq!(verdicts(&check, &["b@example.test"]).await, ["pass"]);
        assert_eq!(table.asked.load(std::sync::atomic::Ordering::SeqCst), 4);
    }

    /// Without `recipients.store` the store is never asked, whatever its state and
    /// whichever other source is configured: a store that is away costs RCPT nothing.
    #[tokio::test(start_paused = true)]
    async fn without_the_store_as_a_source_the_check_never_calls_it() {
        let table = away(Answer::Hang);
        let check = RecipientExists::new(&RecipientsConfig::default(), table.clone());
        for _ in 0..3 {
            let started = tokio::time::Instant::now();
            assert_eq!(verdicts(&check, &["a@example.test"]).await, ["pass"]);
            assert_eq!(started.elapsed(), Duration::ZERO);
            tokio::time::advance(Duration::from_secs(11)).await;
        }
        let listed = RecipientsConfig {
            addresses: vec!["alice@example.test".into()],
            ..RecipientsConfig::default()
        };
        let check = RecipientExists::new(&listed, table.clone());
        assert_eq!(
            verdicts(&check, &["alice@example.test", "bob@example.test"]).await,
            ["pass", "unknown"]
        );
        assert_eq!(table.asked.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    /// After the cool-down, RCPTs arriving together: one probes the store (and waits for
    /// it), the others are answered at once.
    #[tokio::test(start_paused = true)]
    async fn after_the_cool_down_one_rcpt_probes_and_the_others_fail_fast() {
        let table = away(Answer::Hang);
        let check = Arc::new(RecipientExists::new(&with_store(), table.clone()));
        assert_eq!(verdicts(&check, &["a@example.test"]).await, ["error"]);
        tokio::time::advance(Duration::from_secs(11)).await;
        let started = tokio::time::Instant::now();
        let rcpts: Vec<_> = (0..8)
            .map(|i| {
                let check = check.clone();
                tokio::spawn(async move {
                    let r = check.check(&cx(&format!("r{i}@example.test"))).await;
                    (r.is_err(), started.elapsed())
                })
            })
            .collect();
        let mut waited = 0;
        for r in rcpts {
            let (failed, took) = r.await.unwrap();
            assert!(failed, "the store is still away");
            if !took.is_zero() {
                waited += 1;
            }
        }
        assert_eq!(waited, 1, "only the probe waits for the store");
        assert_eq!(table.asked.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    /// A server without a recipient list (the table known empty) keeps accepting mail
    /// while the store is away, without waiting for it.
    #[tokio::test(start_paused = true)]
    async fn without_a_list_the_store_being_away_costs_nothing() {
        let table = away(Answer::Empty);
        let check = RecipientExists::new(&with_store(), table.clone());
        assert_eq!(verdicts(&check, &["a@example.test"]).await, ["pass"]);
        *table.answer.lock().unwrap() = Answer::Fail;
        // Within the second an empty table is believed: not asked at all.
        assert_eq!(verdicts(&check, &["b@example.test"]).await, ["pass"]);
        tokio::time::advance(Duration::from_secs(2)).await;
        // Asked again, it fails: still no source, still accepted, and then not asked.
        assert_eq!(
            verdicts(&check, &["c@example.test", "d@example.test"]).await,
            ["pass", "pass"]
        );
        assert_eq!(table.asked.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
