//! `gatehouse grant`: adds, lists and revokes the time-boxed unblocks a technician
//! issues against a helpdesk ticket. The edits themselves (locking, validating, writing
//! atomically) are the library's `grant_store`; this turns arguments into its requests
//! and its answers into text.

use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use chrono::Utc;
use clap::{Args, Subcommand};

use gatehouse::grant_store::{self, GrantRow, GrantState, StoreError};
use gatehouse::lists::CacheMode;

use super::common::{load, parse_time_arg, ConfigArg};

#[derive(Subcommand)]
pub enum GrantCommand {
    /// Add a grant; prints its id.
    Add(Box<GrantAddArgs>),
    /// A teacher's lesson override: block or allow sites or categories for their
    /// classroom or class until the end of the lesson (no ticket). Prints its id.
    Lesson(Box<LessonArgs>),
    /// List grants in force (with --all: to come, expired and revoked too).
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Include grants not in force and the archive.
        #[arg(long)]
        all: bool,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Move a grants file's grants and archive into the etcd store (`[grants] store =
    /// "etcd"`), keeping their ids, in one transaction; safe to run again. The file is
    /// left as it is.
    Import {
        #[command(flatten)]
        config: ConfigArg,
        /// The grants file to move (the single-node store's `grants.toml`).
        file: std::path::PathBuf,
    },
    /// Revoke a grant (it moves to the archive, for the record).
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        /// Grant id.
        id: String,
        /// Technician revoking it.
        #[arg(long = "by")]
        by: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
}

#[derive(Args)]
pub struct GrantAddArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Helpdesk ticket (must match the policy's ticket pattern).
    #[arg(long)]
    ticket: String,
    /// Technician issuing it.
    #[arg(long = "by")]
    by: String,
    /// Why: the period of study.
    #[arg(long)]
    reason: String,
    /// Group it applies to (repeatable).
    #[arg(long = "group")]
    groups: Vec<String>,
    /// User it applies to (repeatable).
    #[arg(long = "user")]
    users: Vec<String>,
    /// Client network it applies to, CIDR (repeatable).
    #[arg(long = "subnet")]
    subnets: Vec<String>,
    /// Site it opens: a domain (and its subdomains) (repeatable).
    #[arg(long = "site")]
    sites: Vec<String>,
    /// URL prefix it opens (repeatable).
    #[arg(long = "url")]
    urls: Vec<String>,
    /// Category it opens (repeatable).
    #[arg(long = "category")]
    categories: Vec<String>,
    /// How long: `90m`, `6h`, `14d`, `2w`.
    #[arg(long = "for", group = "end")]
    duration: Option<String>,
    /// Until a time (RFC 3339 or local `YYYY-MM-DD HH:MM`), or `end-of-lesson`.
    #[arg(long, group = "end")]
    until: Option<String>,
    /// From a time (default now).
    #[arg(long)]
    starts: Option<String>,
}

#[derive(Args)]
pub struct LessonArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The teacher: the name of their `role = "teacher"` token in [admin.tokens], whose
    /// classrooms and groups say what they may act for.
    #[arg(long)]
    teacher: String,
    /// Block for the lesson.
    #[arg(long, group = "effect", required = true)]
    block: bool,
    /// Allow for the lesson.
    #[arg(long, group = "effect", required = true)]
    allow: bool,
    /// Why (no ticket: the reason is the record).
    #[arg(long)]
    reason: String,
    /// Classroom it is for, from [teachers.classrooms] (repeatable).
    #[arg(long = "classroom")]
    classrooms: Vec<String>,
    /// Group (class) it is for (repeatable).
    #[arg(long = "group")]
    groups: Vec<String>,
    /// Site: a domain and its subdomains (repeatable).
    #[arg(long = "site")]
    sites: Vec<String>,
    /// URL prefix (repeatable).
    #[arg(long = "url")]
    urls: Vec<String>,
    /// Category (repeatable).
    #[arg(long = "category")]
    categories: Vec<String>,
    /// At most this many minutes (default: to the end of the lesson, at most the
    /// policy's [teachers] max_minutes).
    #[arg(long)]
    minutes: Option<u32>,
}

/// Parses `--for`: a number and a unit (`90m`, `6h`, `14d`, `2w`).
fn parse_duration(text: &str) -> Result<chrono::Duration> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: i64 = number
        .parse()
        .with_context(|| format!("--for {text:?}: expected a number and a unit, e.g. 14d"))?;
    Ok(match unit {
        "m" | "min" => chrono::Duration::minutes(n),
        "h" => chrono::Duration::hours(n),
        "d" => chrono::Duration::days(n),
        "w" => chrono::Duration::weeks(n),
        _ => bail!("--for {text:?}: the unit must be m, h, d or w"),
    })
}

/// A refused edit as one error line; a grants file that would not validate prints each
/// of its errors first, so the technician sees every problem in one go.
fn store_error(e: StoreError) -> anyhow::Error {
    match e {
        StoreError::Invalid(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            anyhow!("refused: the grants file would not be valid; nothing was changed")
        }
        // A wrong request or a file that could not be used: already one line that says
        // what went wrong (and, for the file, which file and why).
        other => other.into(),
    }
}

/// `gatehouse grant add|lesson|import|list|revoke`.
pub fn run(command: GrantCommand) -> Result<ExitCode> {
    match command {
        GrantCommand::Add(args) => {
            let snap = load(&args.config.config, CacheMode::Use)?;
            let now = Utc::now();
            let tz = snap.policy.timezone;
            let starts = match &args.starts {
                Some(t) => parse_time_arg(t, tz)?,
                None => now,
            };
            let expires = match (&args.duration, &args.until) {
                (Some(d), _) => starts + parse_duration(d)?,
                (_, Some(u)) if u == "end-of-lesson" => {
                    let lessons = snap.policy.schedule_named("lessons").context(
                        "the policy has no `lessons` schedule for --until end-of-lesson",
                    )?;
                    lessons
                        .current_window_end(starts)
                        .context("it is not lesson time now: give --for or --until TIME")?
                }
                (_, Some(u)) => parse_time_arg(u, tz)?,
                (None, None) => {
                    bail!("say how long: --for 14d, --until TIME or --until end-of-lesson")
                }
            };
            let mut sites = args.sites.clone();
            sites.extend(args.urls.iter().cloned());
            let grant = grant_store::NewGrant {
                ticket: args.ticket.clone(),
                issued_by: args.by.clone(),
                reason: args.reason.clone(),
                groups: args.groups.clone(),
                users: args.users.clone(),
                subnets: args.subnets.clone(),
                sites,
                categories: args.categories.clone(),
                starts: Some(starts),
                expires,
            };
            let id = grant_store::add(&snap, &grant, now).map_err(store_error)?;
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        GrantCommand::Lesson(args) => {
            let snap = load(&args.config.config, CacheMode::Use)?;
            let token = snap
                .settings
                .admin
                .tokens
                .iter()
                .find(|t| t.name == args.teacher && t.role == gatehouse::settings::Role::Teacher)
                .with_context(|| {
                    format!(
                        "no teacher token named {:?} in [admin.tokens] (role = \"teacher\", with its classrooms and groups)",
                        args.teacher
                    )
                })?;
            let mut sites = args.sites.clone();
            sites.extend(args.urls.iter().cloned());
            let lesson = grant_store::NewLesson {
                effect: if args.block { "block" } else { "allow" }.into(),
                reason: args.reason.clone(),
                classrooms: args.classrooms.clone(),
                groups: args.groups.clone(),
                sites,
                categories: args.categories.clone(),
                minutes: args.minutes,
            };
            let made =
                grant_store::add_lesson(&snap, &lesson, &token.name, &token.teacher, Utc::now())
                    .map_err(store_error)?;
            println!("{}  until {}", made.id, made.expires);
            Ok(ExitCode::SUCCESS)
        }
        GrantCommand::Import { config, file } => {
            let snap = load(&config.config, CacheMode::Use)?;
            let done = grant_store::import(&snap, &file, Utc::now()).map_err(store_error)?;
            println!(
                "{} moved into the grants store{}; {} already there",
                done.added.len(),
                if done.added.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", done.added.join(", "))
                },
                done.already.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        GrantCommand::Revoke {
            config,
            id,
            by,
            reason,
        } => {
            let snap = load(&config.config, CacheMode::Use)?;
            grant_store::revoke(&snap, &id, &by, &reason, Utc::now()).map_err(store_error)?;
            println!("revoked {id}");
            Ok(ExitCode::SUCCESS)
        }
        GrantCommand::List { config, all, json } => {
            let snap = load(&config.config, CacheMode::Use)?;
            let rows: Vec<GrantRow> = grant_store::list(&snap, Utc::now())
                .map_err(store_error)?
                .into_iter()
                .filter(|r| all || r.state == GrantState::Active)
                .collect();
            if json {
                // By way of a `Value`, whose objects sort their keys: the same text as
                // the admin API's `GET /api/grants` gives for the same rows.
                println!("{}", serde_json::to_value(&rows)?);
            } else if rows.is_empty() {
                println!("no grants{}", if all { "" } else { " in force" });
            } else {
                for r in rows {
                    let (what, verb) = match (r.kind, r.effect) {
                        ("lesson", "block") => ("lesson-block", "closes"),
                        ("lesson", _) => ("lesson-allow", "opens"),
                        _ => (r.ticket.as_str(), "opens"),
                    };
                    println!(
                        "{}  {}  {}  by {}  for [{}]  {verb} [{}]  until {}  {}  \"{}\"",
                        r.id,
                        r.state.as_str(),
                        what,
                        r.issued_by,
                        [&r.classrooms, &r.groups, &r.users, &r.subnets]
                            .into_iter()
                            .flatten()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(","),
                        [&r.sites, &r.categories]
                            .into_iter()
                            .flatten()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(","),
                        r.expires,
                        r.time_left.as_deref().unwrap_or(""),
                        r.reason,
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
