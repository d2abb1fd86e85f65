//! `gatehouse report`: the weekly safeguarding report, built by the library's `report`
//! from the decision logs of one or more nodes, with the grants file's terms for each
//! grant, in HTML, CSV, JSON or Markdown.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use chrono::Utc;
use clap::Args;

use gatehouse::lists::CacheMode;

use super::common::{load, parse_time_arg, ConfigArg};

#[derive(Args)]
pub struct ReportArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// ISO week in the school's time zone, e.g. 2026-W47 (default: last week).
    #[arg(long)]
    week: Option<String>,
    /// Instead of --week: from this time (RFC 3339 or local `YYYY-MM-DD[ HH:MM]`).
    #[arg(long, requires = "to")]
    from: Option<String>,
    /// Instead of --week: until this time.
    #[arg(long, requires = "from")]
    to: Option<String>,
    /// Log directory (repeat for several nodes; default: the policy's).
    #[arg(long = "log")]
    logs: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "html")]
    format: ReportFormat,
    /// Write to this file instead of standard output.
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Html,
    Csv,
    Json,
    Md,
}

/// `gatehouse report`: exit 3 if any log directory failed its integrity check (the
/// report is still written, with the fault in it).
pub fn run(args: &ReportArgs) -> Result<ExitCode> {
    use gatehouse::report;
    let snap = load(&args.config.config, CacheMode::Use)?;
    let policy = &snap.policy;
    let tz = policy.timezone;
    let period = match (&args.week, &args.from, &args.to) {
        (Some(w), _, _) => report::iso_week(w, tz).map_err(|e| anyhow!(e))?,
        (None, Some(f), Some(t)) => report::Period {
            from: parse_time_arg(f, tz)?,
            to: parse_time_arg(t, tz)?,
        },
        _ => report::last_week(tz, Utc::now()),
    };
    let dirs = if args.logs.is_empty() {
        vec![snap.settings.log.dir.clone()]
    } else {
        args.logs.clone()
    };
    let (rep, warning) = report::build(&snap, period, &dirs, Utc::now());
    if let Some(e) = warning {
        eprintln!("warning: the report's grant table lacks scopes and targets: {e}");
    }
    let text = match args.format {
        ReportFormat::Html => rep.html(),
        ReportFormat::Csv => rep.csv(),
        ReportFormat::Json => serde_json::to_string_pretty(&rep)? + "\n",
        ReportFormat::Md => rep.markdown(),
    };
    match &args.output {
        Some(path) => gatehouse::lists::write_atomically(path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?,
        None => print!("{text}"),
    }
    Ok(if rep.integrity.iter().all(|i| i.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}
