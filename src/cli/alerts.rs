//! `gatehouse alerts test`: sends a test alert through every configured channel (email,
//! webhook) and says what happened on each, so a technician can prove the path to the
//! DSL works before a pupil needs it.
//!
//! `gatehouse alerts ack REF --by NAME`: the DSL acknowledges the alerts about a
//! decision. The running proxy owns the decision log (one writer per log), so this asks
//! it through the admin API (`POST /api/alerts/REF/ack`) with a `dsl` token, exactly as
//! the web console will.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use super::common::{admin_address, admin_post, admin_token, load, ConfigArg};

#[derive(Subcommand)]
pub enum AlertsCommand {
    /// Send a test alert through every channel configured in [alerts].
    Test(ConfigArg),
    /// Acknowledge the alerts about a decision (its reference, as the alert shows it).
    Ack(AckArgs),
}

#[derive(clap::Args)]
pub struct AckArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The reference the alert gave (`7Q3-K9`, or the decision's number).
    reference: String,
    /// Who is acknowledging (recorded with the token's name).
    #[arg(long = "by")]
    by: String,
    /// What is being done about it.
    #[arg(long, default_value = "")]
    note: String,
    /// A file holding a `dsl` admin token (default: $GATEHOUSE_ADMIN_TOKEN).
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// The admin listener to ask (default: [admin] listen from the policy).
    #[arg(long)]
    admin: Option<std::net::SocketAddr>,
}

/// `gatehouse alerts …`.
pub fn run(command: AlertsCommand) -> Result<ExitCode> {
    match command {
        AlertsCommand::Test(args) => test(&args),
        AlertsCommand::Ack(args) => ack(&args),
    }
}

fn ack(args: &AckArgs) -> Result<ExitCode> {
    let token = admin_token(args.token_file.as_deref(), "a dsl token")?;
    let admin = admin_address(args.admin, &args.config.config)?;
    let reference: String =
        percent_encoding::utf8_percent_encode(&args.reference, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let body = serde_json::json!({"by": args.by, "note": args.note});
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let value = runtime
        .block_on(admin_post(
            admin,
            &token,
            &format!("/api/alerts/{reference}/ack"),
            body,
            "sending the acknowledgement",
            "is gatehouse running?",
        ))
        .context("acknowledgement")?;
    println!(
        "acknowledged ref {} by {} (decision-log entry #{})",
        value["reference"].as_str().unwrap_or(&args.reference),
        value["acknowledged_by"].as_str().unwrap_or(&args.by),
        value["entry"]
    );
    Ok(ExitCode::SUCCESS)
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
