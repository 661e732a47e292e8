//! The command line: `serve`, `check-config`, `mailbox list`, `message show`,
//! `recipient add|remove|list`, `user add|passwd|disable|enable|list`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use intake_core::{MailStore, MessageId, Page, RecipientTable, UserDirectory};

use crate::config::{ConfigError, Settings, load_table};

/// Intake: a receive-only mail server.
#[derive(Debug, Parser)]
#[command(name = "intake", version, about)]
pub struct Cli {
    /// Configuration file (TOML). Every key can also be set as INTAKE_<SECTION>__<KEY>.
    #[arg(long, short, global = true, env = "INTAKE_CONFIG")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (SMTP; by default on 127.0.0.1:2525, data in ./intake-data).
    Serve,
    /// Check the configuration and report every error with its key.
    CheckConfig,
    /// Mailboxes.
    Mailbox {
        /// What to do with mailboxes.
        #[command(subcommand)]
        command: MailboxCommand,
    },
    /// Messages.
    Message {
        /// What to do with messages.
        #[command(subcommand)]
        command: MessageCommand,
    },
    /// Valid recipients kept in the store (a running server sees changes within a second).
    Recipient {
        /// What to do with the recipient table.
        #[command(subcommand)]
        command: RecipientCommand,
    },
    /// SMTP AUTH users kept in the store (the next AUTH sees a change, no reload).
    User {
        /// What to do with the user table.
        #[command(subcommand)]
        command: UserCommand,
    },
}

/// `intake user ...`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user. The password is read from the first line of standard input (never from
    /// the command line) and stored as an argon2id hash.
    Add {
        /// The login: the user's address.
        address: String,
        /// Another envelope sender the user may use (`other@example.com`, or `@example.com`
        /// for a whole domain); repeat for more. The user's own address is always allowed.
        #[arg(long = "sender")]
        senders: Vec<String>,
        /// Read an existing hash (argon2, bcrypt, SHA-512-crypt, Dovecot `{SCHEME}hash`)
        /// from standard input instead of a password.
        #[arg(long)]
        hash: bool,
    },
    /// Set a user's password (read from standard input; `--hash`: an existing hash).
    Passwd {
        /// The user's address.
        address: String,
        /// Read an existing hash instead of a password.
        #[arg(long)]
        hash: bool,
    },
    /// Stop a user from logging in.
    Disable {
        /// The user's address.
        address: String,
    },
    /// Let a disabled user log in again.
    Enable {
        /// The user's address.
        address: String,
    },
    /// List users: address, enabled or disabled, allowed senders.
    List,
}

/// `intake recipient ...`
#[derive(Debug, Subcommand)]
pub enum RecipientCommand {
    /// Accept mail for an address, or for every address of a domain (`@example.com`).
    Add {
        /// `user@example.com` or `@example.com`.
        address: String,
    },
    /// Stop accepting mail for an address or `@domain`.
    Remove {
        /// As it was added.
        address: String,
    },
    /// Print the addresses and `@domain` entries, one per line.
    List,
}

/// `intake mailbox ...`
#[derive(Debug, Subcommand)]
pub enum MailboxCommand {
    /// List a mailbox, newest first: id, received time, sender, subject, size.
    List {
        /// The mailbox: a recipient address (case does not matter).
        address: String,
        /// Show at most this many messages.
        #[arg(long)]
        limit: Option<u64>,
    },
}

/// `intake message ...`
#[derive(Debug, Subcommand)]
pub enum MessageCommand {
    /// Show one message: envelope, parsed fields and text; or the raw source.
    Show {
        /// The message id (as printed by `mailbox list`).
        id: String,
        /// Print the raw message exactly as stored (with Intake's Received: header).
        #[arg(long)]
        raw: bool,
    },
}

/// Loads settings from the file and the process environment.
pub fn load_settings(file: Option<&std::path::Path>) -> Result<Settings, Vec<ConfigError>> {
    let (table, sources) = load_table(file, std::env::vars())?;
    Settings::from_table(&table, &sources)
}

/// Prints configuration errors, one per line.
pub fn report_errors(errors: &[ConfigError]) {
    for e in errors {
        eprintln!("intake: config error: {e}");
    }
}

/// `intake check-config`.
pub fn check_config(file: Option<&std::path::Path>) -> i32 {
    match load_settings(file).and_then(|s| {
        let problems = preflight(&s);
        if problems.is_empty() {
            Ok(s)
        } else {
            Err(problems)
        }
    }) {
        Ok(s) => {
            for w in &s.warnings {
                eprintln!("intake: config warning: {w}");
            }
            println!(
                "configuration OK: SMTP on {}, store {}",
                s.smtp_listen,
                s.store.describe()
            );
            0
        }
        Err(errors) => {
            report_errors(&errors);
            eprintln!("intake: {} error(s) in the configuration", errors.len());
            1
        }
    }
}

/// What `serve` would refuse beyond the file itself: a store directory that cannot be made
/// or written (SQLite). Certificates are checked when the settings are read.
fn preflight(s: &Settings) -> Vec<ConfigError> {
    let mut problems = Vec::new();
    if s.store.kind == intake_store::StoreKind::Sqlite
        && let Err(why) = writable_dir(&s.store.path)
    {
        problems.push(ConfigError::new(
            "store.path".into(),
            crate::config::Origin::File,
            format!("{}: {why}", s.store.path.display()),
        ));
    }
    problems
}

/// Whether `path` is (or could be made as) a directory this process can write in: the
/// nearest existing ancestor must be a directory that takes a new file.
fn writable_dir(path: &std::path::Path) -> Result<(), String> {
    let mut existing = path;
    while !existing.exists() {
        existing = match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => std::path::Path::new("."),
        };
    }
    if !existing.is_dir() {
        return Err(format!(
            "{} is not a directory, so the store cannot be made there",
            existing.display()
        ));
    }
    let probe = existing.join(format!(".intake-check-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!("cannot write in {}: {e}", existing.display())),
    }
}

fn format_time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// The store for listings: read-only, and only if it has data.
async fn open_existing(settings: &Settings) -> anyhow::Result<Arc<intake_store::Store>> {
    open(settings, intake_store::Mode::ReadOnly).await
}

async fn open(
    settings: &Settings,
    mode: intake_store::Mode,
) -> anyhow::Result<Arc<intake_store::Store>> {
    Ok(intake_store::open(&settings.store, mode).await?.store)
}

/// `intake mailbox list`.
pub async fn mailbox_list(
    settings: &Settings,
    address: &str,
    limit: Option<u64>,
) -> anyhow::Result<()> {
    let store = open_existing(settings).await?;
    let mut out = std::io::stdout().lock();
    let mut offset = 0;
    let want = limit.unwrap_or(u64::MAX);
    while offset < want {
        let page = Page {
            offset,
            limit: (want - offset).min(1000),
        };
        let items = store.list_mailbox(address, page).await?.messages;
        for m in &items {
            let sender = if m.mail_from.is_empty() {
                "<>"
            } else {
                &m.mail_from
            };
            let subject = m
                .subject
                .as_deref()
                .unwrap_or("")
                .replace(['\t', '\r', '\n'], " ");
            writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}",
                m.id,
                format_time(m.received_at),
                sender,
                subject,
                m.size
            )?;
        }
        if (items.len() as u64) < page.limit {
            break;
        }
        offset += items.len() as u64;
    }
    store.close().await;
    Ok(())
}

/// `intake message show`.
pub async fn message_show(settings: &Settings, id: &str, raw: bool) -> anyhow::Result<()> {
    let id: MessageId = id
        .parse()
        .with_context(|| format!("{id:?} is not a message id"))?;
    let store = open_existing(settings).await?;
    let Some(m) = store.fetch(id).await? else {
        bail!("no message {id}");
    };
    store.close().await;
    let mut out = std::io::stdout().lock();
    if raw {
        out.write_all(&m.raw)?;
        return Ok(());
    }
    let sender = if m.envelope.mail_from.is_empty() {
        "<>"
    } else {
        &m.envelope.mail_from
    };
    writeln!(out, "Id:          {}", m.id)?;
    writeln!(out, "Received:    {}", format_time(m.received_at))?;
    writeln!(
        out,
        "Envelope:    from {} to {}",
        sender,
        m.envelope.rcpt_to.join(", ")
    )?;
    writeln!(
        out,
        "Client:      {} (HELO {})",
        m.client,
        if m.helo.is_empty() { "-" } else { &m.helo }
    )?;
    if let Some(t) = &m.tls {
        writeln!(out, "TLS:         {} {}", t.version, t.cipher)?;
    }
    writeln!(out, "Size:        {} octets, sha256 {}", m.size, m.sha256)?;
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    writeln!(out, "Message-ID:  {}", opt(&m.meta.message_id))?;
    writeln!(out, "From:        {}", opt(&m.meta.from))?;
    writeln!(out, "To:          {}", opt(&m.meta.to))?;
    if m.meta.cc.is_some() {
        writeln!(out, "Cc:          {}", opt(&m.meta.cc))?;
    }
    writeln!(out, "Subject:     {}", opt(&m.meta.subject))?;
    writeln!(out, "Date:        {}", opt(&m.meta.date))?;
    writeln!(
        out,
        "Type:        {}{}",
        opt(&m.meta.content_type),
        m.meta
            .charset
            .as_ref()
            .map(|c| format!("; charset={c}"))
            .unwrap_or_default()
    )?;
    for a in &m.meta.attachments {
        writeln!(
            out,
            "Attachment:  {} ({}, {} octets)",
            a.name.as_deref().unwrap_or("(unnamed)"),
            a.content_type,
            a.size
        )?;
    }
    writeln!(out)?;
    if let Some(text) = intake_core::mime::text_body(&m.raw) {
        writeln!(out, "{}", text.trim_end())?;
    }
    Ok(())
}

/// `intake recipient add|remove|list`.
pub async fn recipient(settings: &Settings, command: &RecipientCommand) -> anyhow::Result<()> {
    if let RecipientCommand::List = command {
        let store = open_existing(settings).await?;
        let list = store.recipient_list().await?;
        store.close().await;
        let mut out = std::io::stdout().lock();
        for a in list {
            writeln!(out, "{a}")?;
        }
        return Ok(());
    }
    if !settings.policy.recipients.store {
        eprintln!(
            "note: recipients.store is off in this configuration: the server does not read \
             this table (set recipients.store = true)"
        );
    }
    let store = open(settings, intake_store::Mode::Admin).await?;
    match command {
        RecipientCommand::Add { address } => {
            let (_, bad) = intake_policy::recipients::RecipientList::parse([address]);
            if !bad.is_empty() {
                bail!(
                    "{address:?} is not an address (user@example.com) or a domain (@example.com)"
                );
            }
            if store.recipient_add(address).await? {
                println!("added {}", address.trim().to_lowercase());
            } else {
                println!("{} was already listed", address.trim().to_lowercase());
            }
        }
        RecipientCommand::Remove { address } => {
            if !store.recipient_remove(address).await? {
                bail!("{} is not listed", address.trim().to_lowercase());
            }
            println!("removed {}", address.trim().to_lowercase());
        }
        RecipientCommand::List => unreachable!("handled above"),
    }
    Ok(())
}

/// The first line of standard input: a password, or with `is_hash` a hash to import.
fn secret_from_stdin(is_hash: bool) -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading standard input")?;
    let line = line.trim_end_matches(['\r', '\n']).to_string();
    if line.is_empty() {
        bail!(
            "expected the {} on standard input",
            if is_hash { "hash" } else { "password" }
        );
    }
    if is_hash {
        // An imported hash must be one AUTH can check (no plain-text schemes).
        let known = ["$argon2", "$2a$", "$2b$", "$2y$", "$6$", "$5$", "{"];
        let bare = line.split_once('}').map(|(_, h)| h).unwrap_or(&line);
        if !known.iter().any(|k| line.starts_with(k)) || !bare.starts_with('$') {
            bail!(
                "not a hash Intake can verify (argon2, bcrypt, SHA-512-crypt, SHA-256-crypt, optionally as {{SCHEME}}hash)"
            );
        }
        Ok(line)
    } else {
        Ok(intake_core::password::hash(&line))
    }
}

/// `intake user add|passwd|disable|enable|list`.
pub async fn user(settings: &Settings, command: &UserCommand) -> anyhow::Result<()> {
    if let UserCommand::List = command {
        let store = open_existing(settings).await?;
        let list = store.user_list().await?;
        store.close().await;
        let mut out = std::io::stdout().lock();
        for u in list {
            let state = if u.enabled { "enabled" } else { "disabled" };
            writeln!(out, "{}\t{state}\t{}", u.address, u.senders.join(","))?;
        }
        return Ok(());
    }
    let store = open(settings, intake_store::Mode::Admin).await?;
    let shown = |a: &str| a.trim().to_lowercase();
    match command {
        UserCommand::Add {
            address,
            senders,
            hash,
        } => {
            if !address.contains('@') || address.contains(char::is_whitespace) {
                bail!("{address:?} is not an address (user@example.com)");
            }
            for s in senders {
                if !s.contains('@') || s.contains(char::is_whitespace) {
                    bail!("--sender {s:?} is not an address or @domain");
                }
            }
            let password_hash = secret_from_stdin(*hash)?;
            let user = intake_core::User {
                address: shown(address),
                password_hash,
                enabled: true,
                senders: senders.clone(),
            };
            if !store.user_add(user).await? {
                bail!(
                    "{} exists already (use `intake user passwd`)",
                    shown(address)
                );
            }
            println!("added {}", shown(address));
        }
        UserCommand::Passwd { address, hash } => {
            let h = secret_from_stdin(*hash)?;
            if !store.user_set_password(address, &h).await? {
                bail!("no user {}", shown(address));
            }
            println!("password changed for {}", shown(address));
        }
        UserCommand::Disable { address } | UserCommand::Enable { address } => {
            let enable = matches!(command, UserCommand::Enable { .. });
            if !store.user_set_enabled(address, enable).await? {
                bail!("no user {}", shown(address));
            }
            println!(
                "{} {}",
                if enable { "enabled" } else { "disabled" },
                shown(address)
            );
        }
        UserCommand::List => unreachable!("handled above"),
    }
    Ok(())
}
