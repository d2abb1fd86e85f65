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

use super::common::{load, ConfigArg};

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
    use http_body_util::BodyExt;
    let token = match &args.token_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the token from {}", path.display()))?,
        None => std::env::var("GATEHOUSE_ADMIN_TOKEN").context(
            "no token: give --token-file FILE or set GATEHOUSE_ADMIN_TOKEN to a dsl token",
        )?,
    };
    let token = token.trim().to_string();
    let mut admin = match args.admin {
        Some(a) => a,
        None => {
            load(&args.config.config, gatehouse::lists::CacheMode::Use)?
                .settings
                .admin
                .listen
        }
    };
    if admin.port() == 0 {
        bail!("the policy's [admin] listen has port 0 (any free port): give --admin ADDRESS:PORT, the address the running proxy logged");
    }
    // A listener on every address is reached on loopback from here.
    if admin.ip().is_unspecified() {
        admin.set_ip(if admin.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let reference: String =
        percent_encoding::utf8_percent_encode(&args.reference, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let body = serde_json::json!({"by": args.by, "note": args.note}).to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let (status, answer) = runtime.block_on(async {
        let stream = tokio::net::TcpStream::connect(admin)
            .await
            .with_context(|| {
                format!("connecting to the admin listener at {admin} (is gatehouse running?)")
            })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .context("talking to the admin listener")?;
        tokio::spawn(conn);
        let req = hyper::Request::post(format!("/api/alerts/{reference}/ack"))
            .header(hyper::header::HOST, admin.to_string())
            .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .context("building the request")?;
        let res = sender
            .send_request(req)
            .await
            .context("sending the acknowledgement")?;
        let status = res.status();
        let bytes = res
            .into_body()
            .collect()
            .await
            .context("reading the answer")?
            .to_bytes();
        anyhow::Ok((status, bytes))
    })?;
    let value: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
    if status.is_success() {
        println!(
            "acknowledged ref {} by {} (decision-log entry #{})",
            value["reference"].as_str().unwrap_or(&args.reference),
            value["acknowledged_by"].as_str().unwrap_or(&args.by),
            value["entry"]
        );
        return Ok(ExitCode::SUCCESS);
    }
    let why = value["errors"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        })
        .or_else(|| value["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&answer).trim().to_string());
    bail!("acknowledgement refused ({status}): {why}")
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
