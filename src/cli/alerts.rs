//! `gatehouse alerts test`: sends a test alert through every configured channel (email,
//! webhook) and says what happened on each, so a technician can prove the path to the
//! DSL works before a pupil needs it.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use super::common::{load, ConfigArg};

#[derive(Subcommand)]
pub enum AlertsCommand {
    /// Send a test alert through every channel configured in [alerts].
    Test(ConfigArg),
}

/// `gatehouse alerts …`.
pub fn run(command: AlertsCommand) -> Result<ExitCode> {
    match command {
        AlertsCommand::Test(args) => test(&args),
    }
}

fn test(args: &ConfigArg) -> Result<ExitCode> {
    let snap = load(&args.config, gatehouse::lists::CacheMode::Use)?;
    let settings = &snap.settings.alerts;
    if settings.channels().is_empty() {
        bail!(
            "{}: no alert channel is configured: add [alerts.email] and/or [alerts.webhook]",
            args.config.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let results = runtime.block_on(gatehouse::alerts::send_test(
        settings,
        &snap.policy.school,
        &snap.policy.timezone,
    ));
    let mut failed = 0;
    for (channel, result) in results {
        let target = match channel {
            "email" => settings.email.as_ref().map_or(String::new(), |e| {
                let to: Vec<String> = e.to.iter().map(|m| m.to_string()).collect();
                format!("{}:{} to {}", e.server, e.port, to.join(", "))
            }),
            _ => settings
                .webhook
                .as_ref()
                .map_or(String::new(), |w| w.url.to_string()),
        };
        match result {
            Ok(()) => println!("{channel}: sent ({target})"),
            Err(e) => {
                failed += 1;
                println!("{channel}: FAILED ({target}): {e}");
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
