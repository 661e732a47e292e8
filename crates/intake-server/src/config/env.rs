//! Merging the config file and the environment.

use std::collections::BTreeMap;
use std::path::Path;

use super::reader::{ConfigError, Origin, Sources};

/// Environment variables that configure Intake start with this.
pub const ENV_PREFIX: &str = "INTAKE_";

/// Variables with the prefix that are not settings (`--config` reads `INTAKE_CONFIG`).
const NOT_SETTINGS: &[&str] = &["INTAKE_CONFIG"];

/// Reads `file` (if any) and overlays `vars` (normally `std::env::vars()`).
///
/// `INTAKE_SMTP__MAX_RECIPIENTS=50` sets `smtp.max_recipients`: the part after the prefix
/// is split at `__` into the key path and lower-cased. The value is read as a TOML literal
/// (`50`, `true`, `["a.example", "b.example"]`, `"quoted"`) and otherwise taken as a plain
/// string, so `INTAKE_SMTP__LISTEN=0.0.0.0:25` needs no quotes.
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
    let vars: BTreeMap<String, String> = vars.into_iter().collect();
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if NOT_SETTINGS.contains(&name.as_str()) || rest.is_empty() {
            continue;
        }
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

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut t = table;
    for p in parents {
        let entry = t
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = match entry {
            toml::Value::Table(inner) => inner,
            _ => return Err(format!("`{p}` is not a section")),
        };
    }
    t.insert(last.clone(), value);
    Ok(())
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
    fn bad_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bad.toml");
        std::fs::write(&f, "[smtp\n").unwrap();
        let e = load_table(Some(&f), vec![]).unwrap_err();
        assert!(e[0].to_string().contains("bad.toml"), "{}", e[0]);
    }
}
