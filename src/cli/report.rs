//! `gatehouse report`: the weekly safeguarding report, built by the library's `report`
//! from the decision logs of one or more nodes, with the grants file's terms for each
//! grant, in HTML, CSV, JSON or Markdown.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use chrono::{Datelike, Utc};
use clap::Args;

use gatehouse::core::grants::describe_terms;
use gatehouse::grant_store::GrantRow;
use gatehouse::lists::CacheMode;
use gatehouse::report::GrantTerms;

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

/// Grant id → terms, from `grant_store::list`'s rows.
fn grant_terms(rows: &[GrantRow]) -> BTreeMap<String, GrantTerms> {
    rows.iter()
        .map(|row| {
            // The same wording as the audit trail's (`Grant::terms`).
            let terms = GrantTerms {
                scope: describe_terms(&[
                    ("groups", row.groups.clone()),
                    ("users", row.users.clone()),
                    ("networks", row.subnets.clone()),
                ]),
                target: describe_terms(&[
                    ("sites", row.sites.clone()),
                    ("categories", row.categories.clone()),
                ]),
                reason: row.reason.clone(),
            };
            (row.id.clone(), terms)
        })
        .collect()
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
        _ => {
            // Last complete ISO week.
            let last = Utc::now().with_timezone(&tz).date_naive() - chrono::Duration::days(7);
            let w = last.iso_week();
            report::iso_week(&format!("{}-W{:02}", w.year(), w.week()), tz)
                .map_err(|e| anyhow!(e))?
        }
    };
    let dirs = if args.logs.is_empty() {
        vec![snap.settings.log.dir.clone()]
    } else {
        args.logs.clone()
    };
    let mut builder = report::Builder::new(policy, period);
    let mut integrity = Vec::new();
    for dir in &dirs {
        let result = gatehouse::decision_log::reader::verify_and_read(dir, &mut |node, entry| {
            builder.entry(node, entry)
        });
        integrity.push(match result {
            Ok(r) => report::Integrity {
                dir: dir.display().to_string(),
                ok: r.fault.is_none(),
                detail: match r.fault {
                    Some(fault) => fault.to_string(),
                    None => format!("{} entries in {} segments", r.entries, r.segments),
                },
            },
            Err(e) => report::Integrity {
                dir: dir.display().to_string(),
                ok: false,
                detail: e.to_string(),
            },
        });
    }
    // Who each grant covered and what it opened, from the grants file's live and
    // archived sections (revoked and expired grants stay there for the record).
    let terms = gatehouse::grant_store::list(&snap, Utc::now())
        .map(|rows| grant_terms(&rows))
        .unwrap_or_else(|e| {
            eprintln!("warning: the report's grant table lacks scopes and targets: {e}");
            Default::default()
        });
    let rep = builder.finish(&snap.grants, &terms, integrity, Utc::now());
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
