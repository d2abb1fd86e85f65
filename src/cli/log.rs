//! `gatehouse log`: verifies the decision log's checksums and hash chain, exports it
//! (JSON lines, CSV, Squid), looks decisions up by the reference a block page showed,
//! and follows it. These read the log directory directly and need only the policy's
//! log directory and time zone, not its lists.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use chrono::{DateTime, Utc};
use clap::Subcommand;

use super::common::{parse_time_arg, ConfigArg};

#[derive(Subcommand)]
pub enum LogCommand {
    /// Check every checksum, the sequence and the whole hash chain; exit 1 on any fault.
    Verify {
        /// Log directory (default: the policy's).
        dir: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Export entries as JSON lines, CSV or Squid's native access.log format.
    Export {
        #[command(flatten)]
        config: ConfigArg,
        /// Log directory (default: the policy's); repeat for several nodes.
        #[arg(long = "dir")]
        dirs: Vec<PathBuf>,
        /// From this time (RFC 3339 or local `YYYY-MM-DD HH:MM`).
        #[arg(long)]
        since: Option<String>,
        /// Until this time.
        #[arg(long)]
        until: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
    },
    /// Look up decisions by the reference a block page showed (or `#N` from `log tail`):
    /// who, what, when, why, how it ended, and how to unblock it with a grant.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// Log directory (default: the policy's); repeat for several nodes.
        #[arg(long = "dir")]
        dirs: Vec<PathBuf>,
        /// References as shown on the block page (`1A`, `3A-1F2C`) or `#26`.
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Print the latest decisions; with -f, keep printing new ones.
    Tail {
        #[command(flatten)]
        config: ConfigArg,
        /// Log directory (default: the policy's).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// How many to print first.
        #[arg(short = 'n', default_value_t = 20)]
        lines: usize,
        /// Follow.
        #[arg(short = 'f')]
        follow: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Csv,
    Squid,
}

/// The policy's log directory, without loading the lists.
fn policy_log_dir(config: &Path) -> Result<PathBuf> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let source = gatehouse::core::config::Source::new(config, &text);
    let raw: gatehouse::core::config::RawPolicy =
        source.parse(&text).map_err(|e| anyhow!("{e}"))?;
    let base = config.parent().unwrap_or(Path::new("."));
    Ok(gatehouse::settings::LogSettings::dir_of(&raw.log, base))
}

/// The policy's time zone for reading and printing times, without loading the lists;
/// London (the shipped default) if the policy cannot be read.
fn timezone_of(config: &Path) -> chrono_tz::Tz {
    std::fs::read_to_string(config)
        .ok()
        .and_then(|text| toml::from_str::<gatehouse::core::config::RawPolicy>(&text).ok())
        .and_then(|raw| raw.school.timezone.get_ref().parse().ok())
        .unwrap_or(chrono_tz::Europe::London)
}

/// `gatehouse log verify|export|show|tail`.
pub fn run(command: LogCommand) -> Result<ExitCode> {
    use gatehouse::decision_log::reader;
    match command {
        LogCommand::Verify { dir, config } => {
            let dir = match dir {
                Some(d) => d,
                None => policy_log_dir(&config.config)?,
            };
            let report = reader::verify(&dir).map_err(|e| anyhow!(e))?;
            println!(
                "{}: {} segments, {} entries ({}), {} seals checked",
                dir.display(),
                report.segments,
                report.entries,
                match (report.first_seq, report.last_seq) {
                    (Some(a), Some(b)) => format!("sequence {a}..{b}"),
                    _ => "empty".to_string(),
                },
                report.seals
            );
            match report.fault {
                None => {
                    println!("OK: every checksum, the sequence and the hash chain are intact");
                    Ok(ExitCode::SUCCESS)
                }
                Some(fault) => {
                    println!("FAULT: {fault}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        LogCommand::Export {
            config,
            dirs,
            since,
            until,
            format,
        } => {
            let tz = timezone_of(&config.config);
            let since = since
                .map(|t| parse_time_arg(&t, tz))
                .transpose()?
                .map(|t| t.timestamp_micros());
            let until = until
                .map(|t| parse_time_arg(&t, tz))
                .transpose()?
                .map(|t| t.timestamp_micros());
            let dirs = if dirs.is_empty() {
                vec![policy_log_dir(&config.config)?]
            } else {
                dirs
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let mut exporter = gatehouse::decision_log::export::Exporter::new(match format {
                ExportFormat::Jsonl => gatehouse::decision_log::export::Format::Jsonl,
                ExportFormat::Csv => gatehouse::decision_log::export::Format::Csv,
                ExportFormat::Squid => gatehouse::decision_log::export::Format::Squid,
            });
            exporter.header(&mut out)?;
            for dir in &dirs {
                for (node, entry) in reader::entries(dir).map_err(|e| anyhow!(e))? {
                    if since.is_some_and(|s| entry.time_us < s)
                        || until.is_some_and(|u| entry.time_us >= u)
                    {
                        continue;
                    }
                    exporter.entry(&node, &entry, &mut out)?;
                }
                exporter.flush_pending(&mut out)?;
            }
            std::io::Write::flush(&mut out)?;
            Ok(ExitCode::SUCCESS)
        }
        LogCommand::Show {
            config,
            dirs,
            references,
        } => {
            let tz = timezone_of(&config.config);
            let dirs = if dirs.is_empty() {
                vec![policy_log_dir(&config.config)?]
            } else {
                dirs
            };
            // Every reference is read before any is looked up, so a mistyped one is
            // reported before pages of output.
            let seqs = references
                .iter()
                .map(|text| {
                    gatehouse::decision::parse_reference(text)
                        .with_context(|| format!("reference {text:?}"))
                })
                .collect::<Result<Vec<u64>>>()?;
            let mut missing = false;
            for seq in seqs {
                let mut found = false;
                for dir in &dirs {
                    if let Some(f) = reader::find(dir, seq).map_err(|e| anyhow!(e))? {
                        found = true;
                        print!("{}", describe_found(&f, tz));
                    }
                }
                if !found {
                    missing = true;
                    let oldest = dirs
                        .iter()
                        .filter_map(|d| reader::entries(d).ok()?.next().map(|(_, e)| e.seq))
                        .min();
                    println!(
                        "Reference {} (#{seq}): not in {}{}",
                        gatehouse::decision::format_reference(seq),
                        dirs.iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                        match oldest {
                            Some(o) if o > seq => format!(
                                " (the oldest entry kept is #{o}: retention has deleted it)"
                            ),
                            _ => " (no such entry yet: check the reference and the node)".into(),
                        }
                    );
                }
                println!();
            }
            Ok(if missing {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        LogCommand::Tail {
            config,
            dir,
            lines,
            follow,
        } => {
            let dir = match dir {
                Some(d) => d,
                None => policy_log_dir(&config.config)?,
            };
            let mut last = 0u64;
            let mut recent = std::collections::VecDeque::with_capacity(lines);
            for (_, entry) in reader::entries(&dir).map_err(|e| anyhow!(e))? {
                last = entry.seq;
                if let Some(line) = gatehouse::decision_log::export::human_line(&entry) {
                    if recent.len() == lines {
                        recent.pop_front();
                    }
                    recent.push_back(line);
                }
            }
            for line in recent {
                println!("{line}");
            }
            if follow {
                loop {
                    std::thread::sleep(std::time::Duration::from_millis(500));
                    for (_, entry) in reader::entries_after(&dir, last).map_err(|e| anyhow!(e))? {
                        last = entry.seq;
                        if let Some(line) = gatehouse::decision_log::export::human_line(&entry) {
                            println!("{line}");
                        }
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What `gatehouse log show` prints for one entry: a decision in full, with how it
/// ended and, for a block a grant can lift, the grant command to lift it.
fn describe_found(found: &gatehouse::decision_log::reader::Found, tz: chrono_tz::Tz) -> String {
    use gatehouse::decision_log::Body;
    use std::fmt::Write as _;
    let entry = &found.entry;
    let mut out = String::new();
    let at = DateTime::<Utc>::from_timestamp_micros(entry.time_us).unwrap_or_default();
    let _ = writeln!(
        out,
        "Reference {} (#{}, node {})",
        gatehouse::decision::format_reference(entry.seq),
        entry.seq,
        found.node
    );
    let _ = writeln!(
        out,
        "  time      {} ({}; {})",
        at.with_timezone(&tz).format("%a %-d %b %Y %H:%M:%S"),
        tz.name(),
        at.format("%Y-%m-%dT%H:%M:%S%.3fZ")
    );
    let Body::Decision(d) = &entry.body else {
        if let Some(line) = gatehouse::decision_log::export::human_line(entry) {
            let _ = writeln!(out, "  not a decision: {line}");
        }
        return out;
    };
    let _ = writeln!(
        out,
        "  who       {}{} (user {}), group {}",
        d.client,
        d.device
            .as_deref()
            .map(|n| format!(", device {n}"))
            .unwrap_or_default(),
        d.user.as_deref().unwrap_or("-"),
        d.group
    );
    let _ = writeln!(
        out,
        "  request   {} {}{}",
        d.method,
        d.url,
        d.sni
            .as_deref()
            .map(|s| format!(" (TLS server name {s})"))
            .unwrap_or_default()
    );
    if let Some(original) = &d.original_destination {
        let _ = writeln!(
            out,
            "  redirect  transparent mode: the device was connecting to {original}"
        );
    }
    let _ = writeln!(
        out,
        "  verdict   {} ({}){}{}",
        d.action.as_str().to_uppercase(),
        d.reason,
        if d.categories.is_empty() {
            String::new()
        } else {
            format!(", categories {}", d.categories.join(", "))
        },
        d.grant
            .as_deref()
            .map(
                |g| match g.strip_prefix(gatehouse::core::grants::LESSON_TICKET_PREFIX) {
                    Some(id) => format!(", by a teacher's lesson override {id}"),
                    None => format!(", by the grant for ticket {g}"),
                }
            )
            .unwrap_or_default()
    );
    if !d.terms.is_empty() {
        let _ = writeln!(out, "  search    terms of concern: {}", d.terms.join(", "));
    }
    if let Some(r) = &d.safe_search {
        let _ = writeln!(
            out,
            "  safe      safe search enforced: {} ({}), dialled {} instead",
            r.engine, r.level, r.dialled
        );
    }
    match &found.completion {
        Some(c) => {
            if let Body::Completion {
                status,
                bytes_up,
                bytes_down,
                duration_us,
                ..
            } = &c.body
            {
                let _ = writeln!(
                    out,
                    "  ended     status {status}, {bytes_up} bytes up, {bytes_down} bytes down, {:.3} s",
                    *duration_us as f64 / 1e6
                );
            }
        }
        None if d.status != 0 => {
            let _ = writeln!(out, "  answered  {} by Gatehouse", d.status);
        }
        None => {}
    }
    for a in &found.alerts {
        if let Some(line) = gatehouse::decision_log::export::human_line(a) {
            let _ = writeln!(out, "  alerted   {line}");
        }
    }
    for a in &found.acks {
        if let Some(line) = gatehouse::decision_log::export::human_line(a) {
            let _ = writeln!(out, "  acked     {line}");
        }
    }
    if !found.alerts.is_empty() && found.acks.is_empty() {
        let _ = writeln!(out, "  acked     not yet acknowledged by the DSL");
    }
    use gatehouse::decision::Unblock;
    let next = match gatehouse::decision::unblock(d) {
        Unblock::Grant { site, user, group } => {
            let scope = match user {
                Some(u) => format!("--user {u}"),
                None => format!("--group {group}"),
            };
            format!("if the site is suitable, unblock it against the helpdesk ticket:\n            gatehouse grant add --ticket TICKET --by YOUR-NAME --reason \"...\" {scope} --site {site} --for 1d")
        }
        Unblock::Illegal => {
            "illegal content: no grant can unblock it. Tell the designated safeguarding lead."
                .to_string()
        }
        Unblock::ByAddress => "asked for by IP address (a common way round the filter): find out which named site was meant".to_string(),
        Unblock::NotTheSite => format!(
            "refused for how it connected ({}), not for the site: a grant does not change that",
            d.reason
        ),
        Unblock::Lesson { id } => format!(
            "closed for this lesson by a teacher's override {id}: it ends with the lesson; the teacher, or `gatehouse grant revoke {id}`, can end it sooner"
        ),
        Unblock::Nothing => return out,
    };
    let _ = writeln!(out, "  next      {next}");
    out
}
