//! `[delivery]`, `[relay]`, `[webhook]` and `[program]` read from the configuration, and the
//! lists of target names a `[[listener]]` or `[[route]]` gives.

use std::path::PathBuf;
use std::time::Duration;

use intake_config::Reader;

use crate::program::ProgramConfig;
use crate::relay::{RelayConfig, RelayTls};
use crate::webhook::{HttpUrl, WebhookConfig};
use crate::{TargetName, TargetsConfig};

/// Where accepted mail goes.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// The targets of the default listener, in order (250 only when all took the message).
    pub targets: Vec<TargetName>,
    /// Each target's section (`[relay]`, `[webhook]`, `[program]`), when configured.
    pub sections: TargetsConfig,
}

/// Reads `[delivery]` and the target sections; `hostname` is the relay's default HELO name,
/// `catch_all` whether every domain is accepted (relaying them all is worth a warning).
pub fn read_delivery(r: &mut Reader<'_>, hostname: &str, catch_all: bool) -> DeliverySettings {
    let names: Vec<String> = r.get("delivery.targets", vec!["store".to_string()]);
    let mut targets = Vec::new();
    for n in &names {
        let Some(kind) = TargetName::parse(n) else {
            r.error(
                "delivery.targets",
                format!("{n:?}: expected one of {}", crate::registry::known_names()),
            );
            continue;
        };
        if targets.contains(&kind) {
            r.error("delivery.targets", format!("{n:?} is listed twice"));
        }
        targets.push(kind);
    }
    if names.is_empty() {
        r.error(
            "delivery.targets",
            "at least one target is needed (\"store\", \"relay\")",
        );
    }
    let d = RelayConfig::new("");
    let server: String = r.get("relay.server", String::new());
    let lmtp: bool = r.get("relay.lmtp", false);
    let helo: String = r.get("relay.helo", String::new());
    let tls: String = r.get("relay.tls", "optional".to_string());
    let tls = match tls.as_str() {
        "off" => RelayTls::Off,
        "optional" => RelayTls::Optional,
        "required" => RelayTls::Required,
        other => {
            r.error(
                "relay.tls",
                format!("{other:?}: expected \"off\", \"optional\" or \"required\""),
            );
            RelayTls::Optional
        }
    };
    let tls_ca: String = r.get("relay.tls_ca", String::new());
    let tls_name: String = r.get("relay.tls_name", String::new());
    let user: String = r.get("relay.auth_user", String::new());
    let password: String = r.get("relay.auth_password", String::new());
    if user.is_empty() != password.is_empty() {
        r.error(
            "relay.auth_user",
            "relay.auth_user and relay.auth_password go together",
        );
    }
    let max_connections: usize = r.get("relay.max_connections", d.max_connections);
    if max_connections == 0 {
        r.error("relay.max_connections", "must be at least 1");
    }
    let connect_timeout = r.timeout("relay.connect_timeout", d.connect_timeout);
    let command_timeout = r.timeout("relay.command_timeout", d.command_timeout);
    let data_timeout = r.timeout("relay.data_timeout", d.data_timeout);
    let idle_timeout = r.duration("relay.idle_timeout", d.idle_timeout);
    let relay_verify: bool = r.get("relay.verify_recipients", false);
    let wanted = targets.iter().any(|t| *t == "relay");
    let relay = if server.is_empty() {
        if wanted {
            r.error(
                "relay.server",
                "delivery.targets has \"relay\": the downstream host:port is needed",
            );
        }
        None
    } else if !server.contains(':') {
        r.error(
            "relay.server",
            format!("{server:?} is not host:port such as 127.0.0.1:24"),
        );
        None
    } else {
        let mut c = RelayConfig::new(server);
        if !tls_name.is_empty() && !c.set_tls_name(&tls_name) {
            r.error("relay.tls_name", format!("{tls_name:?} is not a host name"));
        }
        c.lmtp = lmtp;
        c.helo = if helo.is_empty() {
            hostname.to_string()
        } else {
            helo
        };
        c.tls = tls;
        c.tls_ca = (!tls_ca.is_empty()).then(|| PathBuf::from(tls_ca));
        c.auth = (!user.is_empty()).then_some((user, password));
        c.max_connections = max_connections.max(1);
        c.connect_timeout = connect_timeout;
        c.command_timeout = command_timeout;
        c.data_timeout = data_timeout;
        c.idle_timeout = idle_timeout;
        c.verify_recipients = relay_verify;
        Some(c)
    };
    if wanted && catch_all {
        r.warn(
            "smtp.domains",
            "mail for every domain is relayed: list the domains the downstream serves, \
             unless it refuses the others itself",
        );
    }
    let webhook = read_webhook(r, targets.iter().any(|t| *t == "webhook"));
    let program = read_program(r, targets.iter().any(|t| *t == "program"));
    DeliverySettings {
        targets,
        sections: TargetsConfig {
            relay,
            webhook,
            program,
        },
    }
}

/// A list of target names from a `[[listener]]` or `[[route]]` table; each must have its
/// section configured.
/// A list of target names from a `[[listener]]` or `[[route]]` table (`key` for errors);
/// each must have its section configured.
pub fn read_target_list(
    r: &mut Reader<'_>,
    key: &str,
    v: &intake_config::toml::Value,
    delivery: &DeliverySettings,
) -> Vec<TargetName> {
    let names: Vec<String> = v.clone().try_into().unwrap_or_else(|_| {
        r.error(key, "expected a list such as [\"store\"]");
        Vec::new()
    });
    let mut kinds = Vec::new();
    for n in names {
        let Some(k) = TargetName::parse(&n) else {
            r.error(key, format!("{n:?} is not a target"));
            continue;
        };
        if !k.is_configured(&delivery.sections) {
            r.error(key, format!("{n:?} needs its section ([{n}])"));
        }
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    if kinds.is_empty() {
        r.error(key, "at least one target is needed");
    }
    kinds
}

fn read_webhook(r: &mut Reader<'_>, wanted: bool) -> Option<WebhookConfig> {
    let url: String = r.get("webhook.url", String::new());
    let secret: String = r.get("webhook.secret", String::new());
    let timeout = r.timeout("webhook.timeout", Duration::from_secs(30));
    let tls_ca: String = r.get("webhook.tls_ca", String::new());
    if url.is_empty() {
        if wanted {
            r.error(
                "webhook.url",
                "delivery.targets has \"webhook\": the URL is needed",
            );
        }
        return None;
    }
    let Some(parsed) = HttpUrl::parse(&url) else {
        r.error(
            "webhook.url",
            format!("{url:?} is not http://host[:port]/path or https://…"),
        );
        return None;
    };
    if !parsed.tls && !tls_ca.is_empty() {
        r.warn("webhook.tls_ca", "ignored: webhook.url is not https://");
    }
    if secret.is_empty() {
        r.warn("webhook.secret", "webhook requests will not be signed");
    }
    Some(WebhookConfig {
        url,
        secret,
        timeout,
        tls_ca: (!tls_ca.is_empty()).then(|| PathBuf::from(tls_ca)),
    })
}

fn read_program(r: &mut Reader<'_>, wanted: bool) -> Option<ProgramConfig> {
    let command: Vec<String> = r.get("program.command", Vec::new());
    let d = ProgramConfig::new(Vec::new());
    let timeout = r.timeout("program.timeout", d.timeout);
    let max_running: usize = r.get("program.max_running", d.max_running);
    if max_running == 0 {
        r.error("program.max_running", "must be at least 1");
    }
    let path: String = r.get("program.path", d.path.clone());
    let dir: String = r.get("program.directory", String::new());
    if command.is_empty() || command[0].is_empty() {
        if wanted {
            r.error(
                "program.command",
                "delivery.targets has \"program\": the command is needed, e.g. [\"/usr/local/bin/deliver\", \"--queue\"]",
            );
        }
        return None;
    }
    Some(ProgramConfig {
        command,
        timeout,
        max_running: max_running.max(1),
        path,
        dir: (!dir.is_empty()).then(|| PathBuf::from(dir)),
    })
}
