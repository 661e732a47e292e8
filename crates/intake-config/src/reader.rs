//! Reading typed values out of the merged table, collecting errors with key paths.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The config file (or the built-in default).
    File,
    /// An environment variable.
    Env(String),
}

/// Which keys were set from the environment (key path -> variable name).
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `smtp.listen` -> `INTAKE_SMTP__LISTEN`.
    pub env: BTreeMap<String, String>,
    /// The variable's text as given, by key path: a value that reads as a TOML number or
    /// boolean (`123456`) is still this text where the setting is a string.
    pub raw: BTreeMap<String, String>,
}

/// One configuration problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key path, e.g. `smtp.max_recipients`.
    pub key: String,
    /// Where the bad value came from.
    pub origin: Origin,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// A new error.
    pub fn new(key: String, origin: Origin, message: String) -> Self {
        ConfigError {
            key,
            origin,
            message,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.origin, self.key.is_empty()) {
            (_, true) => write!(f, "{}", self.message),
            (Origin::File, false) => write!(f, "{}: {}", self.key, self.message),
            (Origin::Env(v), false) => write!(f, "{} (from {v}): {}", self.key, self.message),
        }
    }
}

/// Reads keys by path; remembers which keys exist and every error.
pub struct Reader<'a> {
    table: &'a toml::Table,
    sources: &'a Sources,
    /// Every key path read (known settings).
    pub known: BTreeSet<String>,
    /// Errors so far.
    pub errors: Vec<ConfigError>,
    /// Problems that do not stop Intake (unknown variables in the environment).
    pub warnings: Vec<ConfigError>,
    /// Top-level keys read as a whole (arrays of tables such as `[[listener]]`): not
    /// unknown, and not in [`Reader::known`] (they have no `section.key` form).
    pub handled: BTreeSet<String>,
}

impl<'a> Reader<'a> {
    /// A reader over a merged table.
    pub fn new(table: &'a toml::Table, sources: &'a Sources) -> Self {
        Reader {
            table,
            sources,
            known: BTreeSet::new(),
            handled: BTreeSet::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Where `key` was set: the variable that set it or a table or array holding it
    /// (`listener[1].address` by `INTAKE_LISTENER__1__ADDRESS` or by `INTAKE_LISTENER`),
    /// else the file.
    fn origin(&self, key: &str) -> Origin {
        let mut k = key.replace('[', ".").replace(']', "");
        loop {
            if let Some(v) = self.sources.env.get(&k) {
                return Origin::Env(v.clone());
            }
            match k.rfind('.') {
                Some(i) => k.truncate(i),
                None => return Origin::File,
            }
        }
    }

    /// Records an error for `key`.
    pub fn error(&mut self, key: &str, message: impl Into<String>) {
        let origin = self.origin(key);
        self.errors
            .push(ConfigError::new(key.to_string(), origin, message.into()));
    }

    /// The tables of a top-level array of tables (`[[name]]`), marked as handled; an error
    /// if `name` is something else.
    pub fn tables(&mut self, name: &str) -> Vec<toml::Table> {
        self.handled.insert(name.to_string());
        match self.table.get(name) {
            None => Vec::new(),
            Some(toml::Value::Array(items)) if items.iter().all(toml::Value::is_table) => {
                items.iter().filter_map(|v| v.as_table().cloned()).collect()
            }
            Some(_) => {
                self.error(name, format!("expected [[{name}]] tables"));
                Vec::new()
            }
        }
    }

    /// Records a warning for `key` (loading goes on).
    pub fn warn(&mut self, key: &str, message: impl Into<String>) {
        let origin = self.origin(key);
        self.warnings
            .push(ConfigError::new(key.to_string(), origin, message.into()));
    }

    fn lookup(&self, key: &str) -> Option<&'a toml::Value> {
        let mut parts = key.split('.').peekable();
        let mut t = self.table;
        while let Some(p) = parts.next() {
            let v = t.get(p)?;
            if parts.peek().is_none() {
                return Some(v);
            }
            t = v.as_table()?;
        }
        None
    }

    /// Reads `key` as `T`, or returns `default` (recording an error if present but bad).
    ///
    /// A variable's value that reads as a number or boolean (`INTAKE_DIRECTORY__BIND_PASSWORD=123456`)
    /// is taken as the text given when `T` wants a string.
    pub fn get<T: DeserializeOwned>(&mut self, key: &str, default: T) -> T {
        self.known.insert(key.to_string());
        match self.lookup(key) {
            None => default,
            Some(v) => match v.clone().try_into::<T>() {
                Ok(x) => x,
                Err(e) => {
                    if let Some(x) = self.as_given(key, v) {
                        return x;
                    }
                    self.error(key, crate::human::explain(&e.to_string()));
                    default
                }
            },
        }
    }

    /// `key`'s value as the text its variable gave, if a variable set it to a scalar that
    /// TOML read as something else, and that text reads as `T`.
    fn as_given<T: DeserializeOwned>(&self, key: &str, v: &toml::Value) -> Option<T> {
        let scalar = matches!(
            v,
            toml::Value::Integer(_)
                | toml::Value::Float(_)
                | toml::Value::Boolean(_)
                | toml::Value::Datetime(_)
        );
        if !scalar {
            return None;
        }
        let path = key.replace('[', ".").replace(']', "");
        let raw = self.sources.raw.get(&path)?;
        toml::Value::String(raw.clone()).try_into::<T>().ok()
    }

    /// A size in octets: an integer, or a string such as `"10MB"`, `"25MiB"`, `"512k"`.
    pub fn size(&mut self, key: &str, default: u64) -> u64 {
        self.known.insert(key.to_string());
        match self.lookup(key) {
            None => default,
            Some(toml::Value::Integer(i)) if *i >= 0 => *i as u64,
            Some(toml::Value::String(s)) => match parse_size(s) {
                Some(n) => n,
                None => {
                    self.error(
                        key,
                        format!("{s:?} is not a size (examples: 10485760, \"10MB\", \"25MiB\")"),
                    );
                    default
                }
            },
            Some(other) => {
                self.error(key, format!("expected a size, found {}", other.type_str()));
                default
            }
        }
    }

    /// A duration: integer seconds, or a string such as `"30s"`, `"5m"`, `"250ms"`, `"1h"`.
    pub fn duration(&mut self, key: &str, default: Duration) -> Duration {
        self.known.insert(key.to_string());
        match self.lookup(key) {
            None => default,
            Some(toml::Value::Integer(i)) if *i >= 0 => Duration::from_secs(*i as u64),
            Some(toml::Value::String(s)) => match parse_duration(s) {
                Some(d) => d,
                None => {
                    self.error(
                        key,
                        format!(
                            "{s:?} is not a duration (examples: 30, \"30s\", \"5m\", \"250ms\")"
                        ),
                    );
                    default
                }
            },
            Some(other) => {
                self.error(
                    key,
                    format!("expected a duration, found {}", other.type_str()),
                );
                default
            }
        }
    }

    /// A duration that must be more than zero (deadlines, intervals).
    pub fn timeout(&mut self, key: &str, default: Duration) -> Duration {
        let d = self.duration(key, default);
        if d.is_zero() {
            self.error(key, "must be more than 0");
            return default;
        }
        d
    }

    /// An `address:port`; `example` shows the form in the error.
    pub fn address(&mut self, key: &str, default: SocketAddr, example: &str) -> SocketAddr {
        let text: String = self.get(key, default.to_string());
        match text.parse() {
            Ok(a) => a,
            Err(_) => {
                self.error(
                    key,
                    format!("{text:?} is not an address:port such as {example}"),
                );
                default
            }
        }
    }

    /// An `address:port` or the empty string (off, the default).
    pub fn optional_address(&mut self, key: &str, example: &str) -> Option<SocketAddr> {
        self.optional_address_or(key, "", example)
    }

    /// An `address:port`, or the empty string for none; `default` when not set.
    pub fn optional_address_or(
        &mut self,
        key: &str,
        default: &str,
        example: &str,
    ) -> Option<SocketAddr> {
        let text: String = self.get(key, default.to_string());
        if text.is_empty() {
            return None;
        }
        match text.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error(
                    key,
                    format!("{text:?} is not an address:port such as {example} (empty: off)"),
                );
                None
            }
        }
    }

    /// A path, or None for the empty string (the default).
    pub fn optional_path(&mut self, key: &str) -> Option<PathBuf> {
        let text: String = self.get(key, String::new());
        (!text.is_empty()).then(|| PathBuf::from(text))
    }

    /// A list of networks (`10.0.0.0/8`) or single addresses.
    pub fn networks(&mut self, key: &str, default: &[&str]) -> Vec<ipnet::IpNet> {
        let text: Vec<String> = self.get(key, default.iter().map(|s| s.to_string()).collect());
        let mut nets = Vec::new();
        for n in &text {
            match n
                .parse::<ipnet::IpNet>()
                .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            {
                Ok(net) => nets.push(net),
                Err(_) => self.error(
                    key,
                    format!("{n:?} is not a network such as 10.0.0.0/8 or an address"),
                ),
            }
        }
        nets
    }

    /// A whole number of at least `min`.
    pub fn at_least<T>(&mut self, key: &str, default: T, min: T) -> T
    where
        T: DeserializeOwned + PartialOrd + fmt::Display + Copy,
    {
        let v: T = self.get(key, default);
        if v < min {
            self.error(key, format!("must be at least {min}"));
            return default;
        }
        v
    }

    /// The names of the sub-tables of `key` (e.g. the profiles under `policy.profiles`).
    pub fn table_keys(&mut self, key: &str) -> Vec<String> {
        match self.lookup(key) {
            None => Vec::new(),
            Some(toml::Value::Table(t)) => t.keys().cloned().collect(),
            Some(other) => {
                self.error(key, format!("expected a table, found {}", other.type_str()));
                Vec::new()
            }
        }
    }

    /// Reports keys in the table that no setting reads (typos, mostly).
    pub fn unknown_keys(&mut self) {
        let mut found = Vec::new();
        walk(self.table, "", &mut found);
        for key in found {
            let is_prefix_of_known = self.known.iter().any(|k| k.starts_with(&format!("{key}.")));
            let handled = self
                .handled
                .iter()
                .any(|h| key == *h || key.starts_with(&format!("{h}.")));
            if self.known.contains(&key) || is_prefix_of_known || handled {
                continue;
            }
            match self.origin(&key) {
                // The environment may hold unrelated INTAKE_* variables: warn only.
                Origin::Env(var) => self.warnings.push(ConfigError::new(
                    key,
                    Origin::Env(var),
                    "not a setting; ignored".into(),
                )),
                Origin::File => {
                    let message = match self.closest(&key) {
                        Some(near) => format!("unknown setting; did you mean {near}?"),
                        None => "unknown setting".to_string(),
                    };
                    self.error(&key, message)
                }
            }
        }
    }
}

impl Reader<'_> {
    /// The known key most like `key` (a typo's likely meaning), if any is close enough.
    fn closest(&self, key: &str) -> Option<String> {
        closest(self.known.iter().map(String::as_str), key).map(str::to_string)
    }
}

/// The candidate most like `key` (a typo's likely meaning), if any is close enough: what
/// "did you mean" suggests for an unknown setting, also for tables whose keys are checked
/// by hand (`[[listener]]`, `[[route]]`).
pub fn closest<'k>(candidates: impl IntoIterator<Item = &'k str>, key: &str) -> Option<&'k str> {
    candidates
        .into_iter()
        .map(|k| (strsim::jaro_winkler(k, key), k))
        .filter(|(score, _)| *score >= 0.9)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

fn walk(t: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in t {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(inner) => walk(inner, &key, out),
            _ => out.push(key),
        }
    }
}

/// `"10MB"` (10^6), `"10MiB"` (2^20), `"512k"`, `"1G"`, plain digits.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// `"250ms"`, `"30s"`, `"5m"`, `"1h"`, `"7d"`, plain digits (seconds).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    Some(match unit.trim() {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" | "min" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        "d" => Duration::from_secs(n.checked_mul(86_400)?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_key_names_the_closest_known_one() {
        let table: toml::Table = "[smtp]\nmax_recipient = 5\nfrobnicate = 1\n"
            .parse()
            .unwrap();
        let sources = Sources::default();
        let mut r = Reader::new(&table, &sources);
        let _: usize = r.get("smtp.max_recipients", 100);
        let _: usize = r.get("smtp.max_errors", 10);
        r.unknown_keys();
        let texts: Vec<String> = r.errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            vec![
                "smtp.frobnicate: unknown setting".to_string(),
                "smtp.max_recipient: unknown setting; did you mean smtp.max_recipients?"
                    .to_string(),
            ]
        );
    }

    #[test]
    fn a_bad_value_is_explained_with_its_key_and_variable() {
        let table: toml::Table = "[smtp]\nmax_recipients = \"ten\"\n".parse().unwrap();
        let mut sources = Sources::default();
        sources.env.insert(
            "smtp.max_recipients".into(),
            "INTAKE_SMTP__MAX_RECIPIENTS".into(),
        );
        let mut r = Reader::new(&table, &sources);
        assert_eq!(r.get("smtp.max_recipients", 100usize), 100);
        assert_eq!(
            r.errors[0].to_string(),
            "smtp.max_recipients (from INTAKE_SMTP__MAX_RECIPIENTS): expected a whole number of 0 or more, found string \"ten\""
        );
    }

    #[test]
    fn a_number_from_the_environment_is_text_where_a_string_is_wanted() {
        let vars = [
            ("INTAKE_DIRECTORY__BIND_PASSWORD", "123456"),
            ("INTAKE_DIRECTORY__BASE", "1_000"),
            ("INTAKE_SMTP__HOSTNAME", "true"),
            ("INTAKE_SMTP__MAX_RECIPIENTS", "50"),
            ("INTAKE_SMTP__PIPELINING", "false"),
            ("INTAKE_SMTP__MAX_ERRORS", "ten"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let (table, sources) = crate::env::load_table(None, vars).unwrap();
        let mut r = Reader::new(&table, &sources);
        let password: String = r.get("directory.bind_password", String::new());
        let base: String = r.get("directory.base", String::new());
        let hostname: Option<String> = r.get("smtp.hostname", None);
        assert_eq!(password, "123456");
        assert_eq!(
            base, "1_000",
            "the text as given, not the number TOML reads"
        );
        assert_eq!(hostname.as_deref(), Some("true"));
        // Numbers and booleans where they are wanted, and errors where they are wrong.
        assert_eq!(r.get("smtp.max_recipients", 100usize), 50);
        assert!(!r.get("smtp.pipelining", true));
        assert_eq!(r.get("smtp.max_errors", 10usize), 10);
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        // A file's number is still not a string.
        let table: toml::Table = "[directory]\nbind_password = 123456\n".parse().unwrap();
        let sources = Sources::default();
        let mut r = Reader::new(&table, &sources);
        let _: String = r.get("directory.bind_password", String::new());
        assert_eq!(r.errors.len(), 1);
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("10MB"), Some(10_000_000));
        assert_eq!(parse_size("25MiB"), Some(25 << 20));
        assert_eq!(parse_size("512 k"), Some(512_000));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("10XB"), None);
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("soon"), None);
    }
}
