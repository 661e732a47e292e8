//! `intake`: parse the command line, load the configuration, run the command.

use std::process::ExitCode;

use clap::Parser;
use intake_server::cli::{self, Cli, Command, MailboxCommand, MessageCommand};
use intake_server::config::Settings;
use intake_server::{logging, server};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::CheckConfig = cli.command {
        return ExitCode::from(cli::check_config(cli.config.as_deref()) as u8);
    }
    let settings = match cli::load_settings(cli.config.as_deref()) {
        Ok(s) => s,
        Err(errors) => {
            cli::report_errors(&errors);
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Serve => serve(settings, cli.config.clone()),
        Command::Mailbox {
            command: MailboxCommand::List { address, limit },
        } => run_small(|| async { cli::mailbox_list(&settings, &address, limit).await }),
        Command::Message {
            command: MessageCommand::Show { id, raw },
        } => run_small(|| async { cli::message_show(&settings, &id, raw).await }),
        Command::Recipient { command } => {
            run_small(|| async { cli::recipient(&settings, &command).await })
        }
        Command::User { command } => run_small(|| async { cli::user(&settings, &command).await }),
        Command::CheckConfig => unreachable!("handled above"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("intake: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// CLI commands: a small single-threaded runtime.
fn run_small<F, Fut>(f: F) -> anyhow::Result<()>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f())
}

fn serve(settings: Settings, config: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let _log_flusher = logging::init(&settings);
    for w in &settings.warnings {
        tracing::warn!("config: {w}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let running = server::start(&settings).await?;
        let token = running.shutdown_token();
        // SIGHUP: read the configuration again (file and environment) and the certificates.
        server::on_sighup(running.reloader.clone(), running.tls.clone(), config);
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: no new connections, finishing open transactions");
            token.cancel();
        });
        running.wait().await?;
        tracing::info!("stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
