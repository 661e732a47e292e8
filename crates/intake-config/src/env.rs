//! Merging the config file and the environment.

use std::collections::BTreeMap;
use std::path::Path;

use crate::reader::{ConfigError, Origin, Sources};

/// Environment variables that configure Intake start with this.
pub const ENV_PREFIX: &str = "INTAKE_";

/// Variables with the prefix that are not settings (`--config` reads `INTAKE_CONFIG`).
const NOT_SETTINGS: &[&str] = &["INTAKE_CONFIG"];

/// Reads `file` (if any) and overlays `vars` (normally `std::env::vars()`).
///
/// `INTAKE_SMTP__MAX_RECIPIENTS=50` sets `smtp.max_recipients`: the part after the prefix
/// is split at `__` into the key path and lower-cased. The value is read as a TOML literal
/// (`50`, `true`, `["a.example", "b.example"]`, `"quoted"`) and otherwise taken as a plain
/// string, so `INTAKE_SMTP__LISTEN=0.0.0.0:25` needs no quotes. Where the setting is a
/// string, a value that reads as a number or boolean is taken as given
/// (`INTAKE_DIRECTORY__BIND_PASSWORD=123456`; the text is kept in [`Sources::raw`]).
///
/// Arrays of tables (`[[listener]]`, `[[route]]`) take an index as a segment:
/// `INTAKE_LISTENER__0__ADDRESS=0.0.0.0:587` sets the first listener's address, in a table
/// from the file or a new one; the next free index adds a table (`INTAKE_LISTENER__1__…`
/// when the file has one). A whole array can also be given as a TOML literal:
/// `INTAKE_ROUTE='[{domains = ["dev.example.com"], targets = ["store"]}]'`, which replaces
/// the file's. Variables are applied in index order, so `…__10__…` comes after `…__9__…`.
pub fn load_table(
    file: Option<&Path>,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(toml::Table, Sources), Vec<ConfigError>> {
    let mut table = toml::Table::new();
    let mut sources = Sources::default();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![ConfigError::new(
                String::new(),
                Origin::File,
                format!("cannot read {}: {e}", path.display()),
            )]
        })?;
        table = text.parse::<toml::Table>().map_err(|e| {
            vec![ConfigError::new(
                String::new(),
                Origin::File,
                format!("{}: {e}", path.display()),
            )]
        })?;
    }
    let mut errors = Vec::new();
    // Ordered by key path, indices as numbers: a whole array before its items, items in order.
    let vars: BTreeMap<(Vec<Segment>, String), String> = vars
        .into_iter()
        .filter_map(|(name, value)| {
            let rest = name.strip_prefix(ENV_PREFIX)?;
            if NOT_SETTINGS.contains(&name.as_str()) || rest.is_empty() {
                return None;
            }
            let order = rest.split("__").map(Segment::of).collect();
            Some(((order, name), value))
        })
        .collect();
    for ((_, name), value) in vars {
        let rest = &name[ENV_PREFIX.len()..];
        let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        if path.iter().any(String::is_empty) {
            errors.push(ConfigError::new(
                path.join("."),
                Origin::Env(name.clone()),
                "empty key segment".into(),
            ));
            continue;
        }
        let key = path.join(".");
        if let Err(msg) = set_path(&mut table, &path, parse_env_value(&value)) {
            errors.push(ConfigError::new(key, Origin::Env(name.clone()), msg));
            continue;
        }
        sources.raw.insert(key.clone(), value);
        sources.env.insert(key, name);
    }
    if errors.is_empty() {
        Ok((table, sources))
    } else {
        Err(errors)
    }
}

/// A TOML literal if it is one, else the plain string.
fn parse_env_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) if t.len() == 1 => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        _ => toml::Value::String(raw.to_string()),
    }
}

/// A key path segment as variables are ordered: names as text, indices as numbers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Segment {
    Index(usize),
    Name(String),
}

impl Segment {
    fn of(s: &str) -> Segment {
        match s.parse() {
            Ok(i) if !s.starts_with('+') => Segment::Index(i),
            _ => Segment::Name(s.to_ascii_lowercase()),
        }
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let mut slot = Slot::Table(table);
    let mut value = Some(value);
    for (i, p) in path.iter().enumerate() {
        let last = i + 1 == path.len();
        slot = match slot {
            Slot::Table(t) => {
                if last {
                    t.insert(p.clone(), value.take().expect("set once"));
                    return Ok(());
                }
                let next_is_index = matches!(Segment::of(&path[i + 1]), Segment::Index(_));
                let entry = t.entry(p.clone()).or_insert_with(|| {
                    if next_is_index {
                        toml::Value::Array(Vec::new())
                    } else {
                        toml::Value::Table(toml::Table::new())
                    }
                });
                match entry {
                    toml::Value::Table(inner) => Slot::Table(inner),
                    toml::Value::Array(items) if next_is_index => Slot::Array(items),
                    _ => return Err(format!("`{p}` is not a section")),
                }
            }
            Slot::Array(items) => {
                let Segment::Index(n) = Segment::of(p) else {
                    return Err(format!("`{p}` is not an index"));
                };
                if n > items.len() {
                    return Err(format!(
                        "index {n} skips entries: there are {} (the next one is {})",
                        items.len(),
                        items.len()
                    ));
                }
                if last {
                    let v = value.take().expect("set once");
                    if n == items.len() {
                        items.push(v);
                    } else {
                        items[n] = v;
                    }
                    return Ok(());
                }
                if n == items.len() {
                    items.push(toml::Value::Table(toml::Table::new()));
                }
                match &mut items[n] {
                    toml::Value::Table(inner) => Slot::Table(inner),
                    _ => return Err(format!("entry {n} is not a table")),
                }
            }
        };
    }
    unreachable!("the last segment returns")
}

/// Where the next segment of a key path goes.
enum Slot<'a> {
    Table(&'a mut toml::Table),
    Array(&'a mut Vec<toml::Value>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn env_overrides_file_and_parses_literals() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("intake.toml");
        std::fs::write(
            &f,
            "[smtp]\nlisten = \"127.0.0.1:25\"\nmax_recipients = 10\n",
        )
        .unwrap();
        let (t, src) = load_table(
            Some(&f),
            vars(&[
                ("INTAKE_SMTP__LISTEN", "0.0.0.0:2525"),
                ("INTAKE_SMTP__DOMAINS", r#"["a.example", "*.b.example"]"#),
                ("INTAKE_SMTP__LENIENT_HELO", "false"),
                ("INTAKE_STORE__PATH", "/var/lib/intake"),
                ("INTAKE_CONFIG", "ignored"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        let smtp = t["smtp"].as_table().unwrap();
        assert_eq!(smtp["listen"].as_str(), Some("0.0.0.0:2525"));
        assert_eq!(smtp["max_recipients"].as_integer(), Some(10));
        assert_eq!(smtp["domains"].as_array().unwrap().len(), 2);
        assert_eq!(smtp["lenient_helo"].as_bool(), Some(false));
        assert_eq!(t["store"]["path"].as_str(), Some("/var/lib/intake"));
        assert_eq!(
            src.env.get("smtp.listen").map(String::as_str),
            Some("INTAKE_SMTP__LISTEN")
        );
        assert!(!t.contains_key("config"));
    }

    #[test]
    fn array_tables_take_indices_and_whole_literals() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("intake.toml");
        std::fs::write(
            &f,
            "[[listener]]\nname = \"mx\"\naddress = \"0.0.0.0:25\"\n",
        )
        .unwrap();
        let (t, src) = load_table(
            Some(&f),
            vars(&[
                ("INTAKE_LISTENER__0__ADDRESS", "0.0.0.0:2525"),
                ("INTAKE_LISTENER__1__NAME", "submission"),
                ("INTAKE_LISTENER__1__ADDRESS", "0.0.0.0:587"),
                ("INTAKE_LISTENER__1__TARGETS", r#"["webhook"]"#),
                (
                    "INTAKE_ROUTE",
                    r#"[{domains = ["dev.example.com"], targets = ["store"]}]"#,
                ),
                ("INTAKE_ROUTE__1__DOMAINS", r#"["example.com"]"#),
                ("INTAKE_ROUTE__1__TARGETS", r#"["relay"]"#),
            ]),
        )
        .unwrap();
        let l = t["listener"].as_array().unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(
            l[0]["name"].as_str(),
            Some("mx"),
            "the file's other keys stay"
        );
        assert_eq!(l[0]["address"].as_str(), Some("0.0.0.0:2525"));
        assert_eq!(l[1]["address"].as_str(), Some("0.0.0.0:587"));
        assert_eq!(l[1]["targets"][0].as_str(), Some("webhook"));
        let r = t["route"].as_array().unwrap();
        assert_eq!(r.len(), 2, "the literal first, then item 1 added to it");
        assert_eq!(r[0]["domains"][0].as_str(), Some("dev.example.com"));
        assert_eq!(r[1]["targets"][0].as_str(), Some("relay"));
        assert_eq!(
            src.env.get("listener.1.address").map(String::as_str),
            Some("INTAKE_LISTENER__1__ADDRESS")
        );

        // Indices in numeric order: 10 after 9 (not after 1).
        let many: Vec<(String, String)> = (0..12)
            .map(|i| {
                (
                    format!("INTAKE_ROUTE__{i}__TARGETS"),
                    r#"["store"]"#.to_string(),
                )
            })
            .collect();
        let (t, _) = load_table(None, many).unwrap();
        assert_eq!(t["route"].as_array().unwrap().len(), 12);

        // A gap is an error naming the variable.
        let e = load_table(
            None,
            vars(&[("INTAKE_LISTENER__2__ADDRESS", "0.0.0.0:587")]),
        )
        .unwrap_err();
        assert!(
            e[0].to_string().contains("INTAKE_LISTENER__2__ADDRESS"),
            "{}",
            e[0]
        );
        assert!(e[0].to_string().contains("skips"), "{}", e[0]);
    }

    #[test]
    fn bad_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bad.toml");
        std::fs::write(&f, "[smtp\n").unwrap();
        let e = load_table(Some(&f), vec![]).unwrap_err();
        assert!(e[0].to_string().contains("bad.toml"), "{}", e[0]);
    }
}
