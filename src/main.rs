//! The `gatehouse` command: the only place that prints to the terminal and uses `anyhow`.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // the shell reads the clock and files; the core may not

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Datelike, NaiveDateTime, TimeZone, Utc};
use clap::{Args, Parser, Subcommand};

use gatehouse::core::host::Target;
use gatehouse::core::policy::{Action, GroupId, Policy, Requester};
use gatehouse::lists::CacheMode;
use gatehouse::snapshot::{self, Snapshot};

/// The shipped example policy, used when `--config` is not given.
const DEFAULT_CONFIG: &str = "policy/gatehouse.toml";

/// The proxy allocates and frees small buffers for every request on every worker;
/// mimalloc's per-thread free lists cost a fraction of glibc's (measured with perf under
/// the anchor benchmark: malloc/free were 16 % of a blocked request's time).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` in mimalloc.h's `mi_option_e` (v2).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// On Linux mimalloc by default commits its 1 GiB arenas eagerly and later only resets
/// (not decommits) freed pages, which the kernel goes on counting as resident: with the
/// 1M-domain index loaded that was 31 MiB of anonymous memory against 15 MiB with the
/// arena committed on demand, and no difference in requests per second under the anchor
/// benchmark. The first arena is reserved by the first allocation, which the Rust runtime
/// makes before `main`, so the option is set from the ELF constructors, which run first.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static MIMALLOC_OPTIONS: extern "C" fn() = {
    extern "C" fn commit_arenas_on_demand() {
        // SAFETY: mi_option_set only stores a value in mimalloc's option table; it is
        // sound before mimalloc's own initialisation, which keeps options already set.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) }
    }
    commit_arenas_on_demand
};

/// After a load of policy and lists: return the list build's freed scratch memory (about
/// 30 MiB for a million domains) to the system now, not at the allocator's next purge.
fn release_freed_memory() {
    // SAFETY: mi_collect has no preconditions; it frees only memory no longer in use.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "A web-filtering forward proxy for school networks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the filtering proxy.
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Log format for the tracing log (level from RUST_LOG, default info).
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        /// Threads that serve requests: 0 means one for each CPU this process may use
        /// (its CPU affinity). With 1, requests are served on the main thread by
        /// tokio's single-threaded scheduler.
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
    /// Manage the users who authenticate to the proxy.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Validate the policy, its users file and its lists; print a summary.
    Check(ConfigArg),
    /// Print the verdict for each URL, for a group, user or client address.
    Classify(ClassifyArgs),
    /// Time-boxed unblocks against a helpdesk ticket.
    Grant {
        #[command(subcommand)]
        command: GrantCommand,
    },
    /// Make an admin API token.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// The weekly safeguarding report.
    Report(ReportArgs),
    /// Check, export and follow the decision log.
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
    /// Manage category lists.
    Lists {
        #[command(subcommand)]
        command: ListsCommand,
    },
}

#[derive(Args)]
struct ConfigArg {
    /// Policy file.
    #[arg(long, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
}

#[derive(Args)]
struct ClassifyArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Decide for this group.
    #[arg(long, group = "who")]
    group: Option<String>,
    /// Decide for this user (from the users file).
    #[arg(long, group = "who")]
    user: Option<String>,
    /// Decide for a client at this address (its subnet's group).
    #[arg(long, group = "who")]
    client: Option<std::net::IpAddr>,
    /// Decide as at this time: RFC 3339 (`2026-11-23T10:35:00Z`) or local school time
    /// (`2026-11-23 10:35`). Default: now.
    #[arg(long)]
    at: Option<String>,
    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,
    /// URLs (`http://…`, `https://…`, or a bare `host/path`, taken as http).
    #[arg(required = true)]
    urls: Vec<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user; the password is read from the terminal (or one line of stdin).
    Add {
        #[command(flatten)]
        config: ConfigArg,
        /// Login name.
        name: String,
        /// Their group.
        #[arg(long)]
        group: String,
    },
    /// Set a user's password.
    Passwd {
        #[command(flatten)]
        config: ConfigArg,
        /// Login name.
        name: String,
    },
    /// Remove a user.
    Remove {
        #[command(flatten)]
        config: ConfigArg,
        /// Login name.
        name: String,
    },
}

#[derive(Args)]
struct ReportArgs {
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
enum ReportFormat {
    Html,
    Csv,
    Json,
    Md,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Print a new random API token and the [[admin.tokens]] entry (its hash) for policy.
    Token {
        /// Whose token: recorded with every call it makes.
        name: String,
        /// `technician` (may change grants) or `viewer` (may read).
        #[arg(long, default_value = "viewer")]
        role: String,
    },
}

#[derive(Subcommand)]
enum GrantCommand {
    /// Add a grant; prints its id.
    Add(Box<GrantAddArgs>),
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
struct GrantAddArgs {
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

#[derive(Subcommand)]
enum LogCommand {
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
enum ExportFormat {
    Jsonl,
    Csv,
    Squid,
}

#[derive(Subcommand)]
enum ListsCommand {
    /// Compile the domain lists and write the cache that start-up loads.
    Compile(ConfigArg),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. }) {
        // A report piped into `head` should end quietly when `head` stops reading, as
        // other command-line tools do, not panic on a broken pipe. Not for `run`: there
        // a client closing its socket must be an error to handle, never a signal.
        // SAFETY: restoring a signal's default disposition before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let result = match cli.command {
        Command::Run {
            config,
            log_format,
            threads,
        } => run(&config.config, log_format, threads),
        Command::User { command } => user(command),
        Command::Log { command } => log_command(command),
        Command::Grant { command } => grant_command(command),
        Command::Report(args) => report(&args),
        Command::Admin {
            command: AdminCommand::Token { name, role },
        } => admin_token(&name, &role),
        Command::Check(args) => check(&args.config),
        Command::Classify(args) => classify(&args),
        Command::Lists {
            command: ListsCommand::Compile(args),
        } => compile(&args.config),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gatehouse: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads a snapshot, printing every configuration error on its own line.
fn load(config: &Path, cache: CacheMode) -> Result<Snapshot> {
    snapshot::load(config, cache).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("{e}");
        }
        anyhow!(
            "{} error{} in the policy; nothing was loaded",
            errors.0.len(),
            if errors.0.len() == 1 { "" } else { "s" }
        )
    })
}

fn print_list_warnings(snap: &Snapshot) {
    for dir in &snap.report.missing_dirs {
        eprintln!(
            "warning: {}: no list directory; the category matches nothing",
            dir.display()
        );
    }
    for w in &snap.report.warnings {
        if w.line == 0 {
            eprintln!("warning: {}: {}", w.file.display(), w.message);
        } else {
            eprintln!(
                "warning: {}:{}: skipped {}",
                w.file.display(),
                w.line,
                w.message
            );
        }
    }
    let unshown = (snap.report.skipped as usize).saturating_sub(snap.report.warnings.len());
    if unshown > 0 {
        eprintln!("warning: … and {unshown} more list lines skipped");
    }
    if let Some(e) = &snap.report.cache_error {
        eprintln!("warning: compiled lists not cached: {e}");
    }
}

fn check(config: &Path) -> Result<ExitCode> {
    let snap = load(config, CacheMode::Use)?;
    print_list_warnings(&snap);
    let p = &snap.policy;
    println!("policy {}: OK", p.path.display());
    println!("school: {} (time zone {})", p.school, p.timezone.name());
    println!(
        "lists: {} ({} in {} ms)",
        p.lists_dir.display(),
        if snap.report.from_cache {
            "compiled cache"
        } else {
            "compiled from text"
        },
        snap.report.elapsed.as_millis()
    );
    println!("categories: {}", p.categories().count());
    println!(
        "  {:<20} {:<14} {:>9} {:>6} {:>6} {:>6}",
        "name", "severity", "domains", "urls", "exprs", "terms"
    );
    for (id, def) in p.categories() {
        let c = &snap.report.counts[id.index()];
        println!(
            "  {:<20} {:<14} {:>9} {:>6} {:>6} {:>6}",
            def.category.name,
            def.category.severity.as_str(),
            c.domains,
            c.urls + c.hashes,
            c.expressions,
            c.terms
        );
    }
    println!("schedules:");
    for s in p.schedules() {
        let windows: Vec<String> = s.windows.iter().map(|w| w.to_string()).collect();
        println!("  {:<12} {} ({})", s.name, windows.join(", "), s.tz.name());
    }
    println!("groups:");
    for (_, g) in p.groups() {
        let mut parts = vec![format!("{} mode", g.mode)];
        let blocked = p.category_names(g.block);
        if !blocked.is_empty() {
            parts.push(format!("blocks {}", blocked.join(" ")));
        }
        for (c, s) in &g.allow_during {
            parts.push(format!(
                "{} only during {}",
                p.category(*c).name,
                p.schedule(*s).name
            ));
        }
        let allowed = p.category_names(g.allow);
        if !allowed.is_empty() {
            parts.push(format!("allows {}", allowed.join(" ")));
        }
        if !g.allow_sites.is_empty() || !g.block_sites.is_empty() {
            parts.push(format!(
                "{} allowed / {} blocked sites",
                g.allow_sites.entries().len(),
                g.block_sites.entries().len()
            ));
        }
        if g.block_ip_literals {
            parts.push("IP-address hosts blocked".to_string());
        }
        println!("  {:<12} {}", g.name, parts.join("; "));
    }
    let id = &p.identity;
    println!(
        "identity: default group {}; {} subnets; {} users",
        p.group(id.default_group).name,
        id.subnets().len(),
        id.users().count()
    );
    for s in id.subnets() {
        println!(
            "  {:<20} → {}{}{}",
            s.net.to_string(),
            p.group(s.group).name,
            if s.auth == gatehouse::core::identity::AuthRequirement::Required {
                " (authentication required)"
            } else {
                ""
            },
            if s.description.is_empty() {
                String::new()
            } else {
                format!("  # {}", s.description)
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn compile(config: &Path) -> Result<ExitCode> {
    let snap = load(config, CacheMode::Rebuild)?;
    print_list_warnings(&snap);
    if snap.report.cache_error.is_some() {
        bail!("the compiled lists could not be written");
    }
    println!(
        "compiled {} domain entries into {} in {} ms",
        snap.lists.domains.len(),
        snap.policy.lists_cache.display(),
        snap.report.elapsed.as_millis()
    );
    Ok(ExitCode::SUCCESS)
}

/// Parses `--at`: RFC 3339, or a local date and time in the school's zone.
fn parse_at(text: &str, policy: &Policy) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return policy
                .timezone
                .from_local_datetime(&naive)
                .earliest()
                .map(|t| t.with_timezone(&Utc))
                .ok_or_else(|| {
                    anyhow!(
                        "{text} does not exist in {} (clocks went forward)",
                        policy.timezone.name()
                    )
                });
        }
    }
    bail!("--at {text:?}: use RFC 3339 (2026-11-23T10:35:00Z) or local time (2026-11-23 10:35)")
}

fn classify(args: &ClassifyArgs) -> Result<ExitCode> {
    let snap = load(&args.config.config, CacheMode::Use)?;
    let p = &snap.policy;
    let at = match &args.at {
        Some(text) => parse_at(text, p)?,
        None => Utc::now(),
    };
    let (group, user): (GroupId, Option<&str>) = match (&args.group, &args.user, &args.client) {
        (Some(g), _, _) => (
            p.group_id(g).with_context(|| {
                let names: Vec<&str> = p.groups().map(|(_, g)| g.name.as_str()).collect();
                format!("no group {g:?} (groups: {})", names.join(", "))
            })?,
            None,
        ),
        (_, Some(u), _) => (
            p.identity
                .user(u)
                .map(|user| user.group)
                .with_context(|| format!("no user {u:?} in the users file"))?,
            Some(u.as_str()),
        ),
        (_, _, Some(ip)) => (p.identity.group_for_client(*ip).0, None),
        (None, None, None) => bail!("say who is asking: --group G, --user U or --client IP"),
    };
    let requester = Requester {
        group,
        user,
        client: args.client,
    };
    let mut bad = 0;
    for url in &args.urls {
        let text = if url.contains("://") {
            url.clone()
        } else {
            format!("http://{url}")
        };
        let target = match Target::parse(&text) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{url}: {e}");
                bad += 1;
                continue;
            }
        };
        let classification = snap.classify(&target);
        let verdict = p.decide(
            &requester,
            &target,
            &classification,
            &snap.grants.grants,
            at,
        );
        let categories = p.category_names(verdict.categories);
        if args.json {
            let terms: Vec<serde_json::Value> = classification
                .terms
                .iter()
                .map(|m| serde_json::json!({"term": m.term, "category": p.category(m.category).name}))
                .collect();
            let line = serde_json::json!({
                "url": url,
                "normalised": format!("{}://{}:{}{}", scheme_name(&target), target.host, target.port, target.path),
                "group": p.group(verdict.group).name,
                "user": user,
                "at": at.to_rfc3339(),
                "action": verdict.action.as_str(),
                "categories": categories,
                "reason": Policy::reason_code(&verdict.reason),
                "explanation": p.explain(&verdict),
                "grant": verdict.grant.as_ref().map(|g| serde_json::json!({"id": &*g.id, "ticket": &*g.ticket})),
                "search": classification.search,
                "search_terms": terms,
            });
            println!("{line}");
        } else {
            let action = match verdict.action {
                Action::Allow => "ALLOW",
                Action::Block => "BLOCK",
            };
            let cats = if categories.is_empty() {
                "-".to_string()
            } else {
                categories.join(",")
            };
            println!("{action}  {url}  [{cats}]  {}", p.explain(&verdict));
            if !classification.terms.is_empty() {
                let terms: Vec<&str> = classification
                    .terms
                    .iter()
                    .map(|m| m.term.as_str())
                    .collect();
                println!("       search terms of concern: {}", terms.join(", "));
            }
        }
    }
    Ok(if bad > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn scheme_name(target: &Target) -> &'static str {
    use gatehouse::core::host::Scheme;
    match target.scheme {
        Scheme::Http => "http",
        Scheme::Https => "https",
        Scheme::Ws => "ws",
        Scheme::Wss => "wss",
    }
}

/// The async runtime for `run`. On one CPU (a small VM, or a proxy pinned to a core)
/// the single-threaded scheduler serves requests on the main thread: the multi-threaded
/// one would run a lone worker beside the main thread and pay for handing work between
/// them. Interleaved A/B on one pinned core, 5 runs of 5 s each: 26.8 against 31.5 µs of
/// CPU per allowed request, 13.6 against 14.7 per blocked one. Blocking work (list
/// loads, password checks) goes to tokio's blocking pool either way.
fn runtime(threads: usize) -> std::io::Result<(tokio::runtime::Runtime, usize)> {
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    Ok((builder.enable_all().build()?, threads))
}

fn run(config: &Path, format: LogFormat, threads: usize) -> Result<ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
    let (runtime, threads) = runtime(threads).context("starting the async runtime")?;
    tracing::info!(threads, "serving requests on {threads} thread(s)");
    let result = runtime.block_on(gatehouse::proxy::run(
        config.to_path_buf(),
        release_freed_memory,
    ));
    // Tunnels still open after the grace period are dropped with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(gatehouse::proxy::RunError::Policy(errors)) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            bail!("the policy did not load; the proxy did not start")
        }
        Err(e) => Err(e.into()),
    }
}

fn read_password() -> Result<String> {
    use std::io::IsTerminal;
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").context("reading the password")?;
        let again = rpassword::prompt_password("Again: ").context("reading the password")?;
        if first != again {
            bail!("the passwords do not match");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if password.chars().count() < 8 {
        bail!("passwords must be at least 8 characters");
    }
    Ok(password)
}

fn user(command: UserCommand) -> Result<ExitCode> {
    let (config, name) = match &command {
        UserCommand::Add { config, name, .. }
        | UserCommand::Passwd { config, name }
        | UserCommand::Remove { config, name } => (config.config.clone(), name.clone()),
    };
    let snap = load(&config, CacheMode::Use)?;
    let policy = &snap.policy;
    let path = policy.users_file.clone().with_context(|| {
        format!(
            "{} names no users_file in [identity]",
            policy.path.display()
        )
    })?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", path.display()))?;
    if !doc.contains_key("user") {
        doc.insert(
            "user",
            toml_edit::Item::ArrayOfTables(toml_edit::ArrayOfTables::new()),
        );
    }
    let users = doc["user"]
        .as_array_of_tables_mut()
        .with_context(|| format!("{}: `user` must be [[user]] tables", path.display()))?;
    let position = users
        .iter()
        .position(|t| t.get("name").and_then(|v| v.as_str()) == Some(name.as_str()));
    match command {
        UserCommand::Add { ref group, .. } => {
            if position.is_some() {
                bail!("user {name:?} already exists; use `gatehouse user passwd`");
            }
            if policy.group_id(group).is_none() {
                let names: Vec<&str> = policy.groups().map(|(_, g)| g.name.as_str()).collect();
                bail!("no group {group:?} (groups: {})", names.join(", "));
            }
            let hash =
                gatehouse::proxy::auth::hash_password(&read_password()?).map_err(|e| anyhow!(e))?;
            let mut table = toml_edit::Table::new();
            table.insert("name", toml_edit::value(name.as_str()));
            table.insert("group", toml_edit::value(group.as_str()));
            table.insert("password_hash", toml_edit::value(hash));
            users.push(table);
        }
        UserCommand::Passwd { .. } => {
            let i = position.with_context(|| format!("no user {name:?}"))?;
            let hash =
                gatehouse::proxy::auth::hash_password(&read_password()?).map_err(|e| anyhow!(e))?;
            if let Some(t) = users.get_mut(i) {
                t.insert("password_hash", toml_edit::value(hash));
            }
        }
        UserCommand::Remove { .. } => {
            let i = position.with_context(|| format!("no user {name:?}"))?;
            users.remove(i);
        }
    }
    gatehouse::lists::write_atomically(&path, doc.to_string().as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "{} updated; send SIGHUP to a running proxy to apply it",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The policy's log directory, without loading the lists.
fn policy_log_dir(config: &Path) -> Result<PathBuf> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let source = gatehouse::core::config::Source::new(config, &text);
    let raw: gatehouse::core::config::RawPolicy =
        source.parse(&text).map_err(|e| anyhow!("{e}"))?;
    let base = config.parent().unwrap_or(Path::new("."));
    Ok(base.join(raw.log.dir.as_deref().unwrap_or("../var/decisions")))
}

fn timezone_of(config: &Path) -> chrono_tz::Tz {
    std::fs::read_to_string(config)
        .ok()
        .and_then(|text| toml::from_str::<gatehouse::core::config::RawPolicy>(&text).ok())
        .and_then(|raw| raw.school.timezone.get_ref().parse().ok())
        .unwrap_or(chrono_tz::Europe::London)
}

fn parse_time_arg(text: &str, tz: chrono_tz::Tz) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return tz
                .from_local_datetime(&naive)
                .earliest()
                .map(|t| t.with_timezone(&Utc))
                .ok_or_else(|| anyhow!("{text} does not exist in {}", tz.name()));
        }
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let naive = date.and_hms_opt(0, 0, 0).context("midnight")?;
        return tz
            .from_local_datetime(&naive)
            .earliest()
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| anyhow!("{text} does not exist in {}", tz.name()));
    }
    bail!("{text:?}: use RFC 3339 (2026-11-23T10:35:00Z), local time (2026-11-23 10:35) or a date")
}

fn log_command(command: LogCommand) -> Result<ExitCode> {
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
        "  who       {} (user {}), group {}",
        d.client,
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
            .map(|g| format!(", by the grant for ticket {g}"))
            .unwrap_or_default()
    );
    if !d.terms.is_empty() {
        let _ = writeln!(out, "  search    terms of concern: {}", d.terms.join(", "));
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
        Unblock::Nothing => return out,
    };
    let _ = writeln!(out, "  next      {next}");
    out
}

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

fn store_error(e: gatehouse::grant_store::StoreError) -> anyhow::Error {
    match e {
        gatehouse::grant_store::StoreError::Invalid(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            anyhow!("refused: the grants file would not be valid; nothing was changed")
        }
        other => anyhow!("{other}"),
    }
}

fn grant_command(command: GrantCommand) -> Result<ExitCode> {
    use gatehouse::grant_store;
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
            let rows: Vec<serde_json::Value> = grant_store::list(&snap, Utc::now())
                .map_err(store_error)?
                .into_iter()
                .filter(|r| all || r["state"] == "active")
                .collect();
            if json {
                println!("{}", serde_json::Value::Array(rows));
            } else if rows.is_empty() {
                println!("no grants{}", if all { "" } else { " in force" });
            } else {
                for r in rows {
                    let join = |k: &str| {
                        r[k].as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|v| v.as_str())
                                    .collect::<Vec<_>>()
                                    .join(",")
                            })
                            .unwrap_or_default()
                    };
                    println!(
                        "{}  {}  {}  by {}  for [{}{}{}]  opens [{}{}]  until {}  {}  \"{}\"",
                        r["id"].as_str().unwrap_or(""),
                        r["state"].as_str().unwrap_or(""),
                        r["ticket"].as_str().unwrap_or(""),
                        r["issued_by"].as_str().unwrap_or(""),
                        join("groups"),
                        join("users"),
                        join("subnets"),
                        join("sites"),
                        join("categories"),
                        r["expires"].as_str().unwrap_or(""),
                        r["time_left"].as_str().unwrap_or(""),
                        r["reason"].as_str().unwrap_or(""),
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Grant id → terms, from `grant_store::list`'s rows.
fn grant_terms(
    rows: &[serde_json::Value],
) -> std::collections::BTreeMap<String, gatehouse::report::GrantTerms> {
    // The same wording as the audit trail's (`Grant::terms`).
    let join = |row: &serde_json::Value, parts: &[(&'static str, &str)]| {
        let parts: Vec<(&str, Vec<String>)> = parts
            .iter()
            .map(|(key, label)| {
                let names = row[*key]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                (*label, names)
            })
            .collect();
        gatehouse::core::grants::describe_terms(&parts)
    };
    rows.iter()
        .filter_map(|row| {
            let id = row["id"].as_str()?.to_string();
            let terms = gatehouse::report::GrantTerms {
                scope: join(
                    row,
                    &[
                        ("groups", "groups"),
                        ("users", "users"),
                        ("subnets", "networks"),
                    ],
                ),
                target: join(row, &[("sites", "sites"), ("categories", "categories")]),
                reason: row["reason"].as_str().unwrap_or_default().to_string(),
            };
            Some((id, terms))
        })
        .collect()
}

fn admin_token(name: &str, role: &str) -> Result<ExitCode> {
    use argon2::password_hash::rand_core::{OsRng, RngCore};
    use sha2::Digest;
    if role != "technician" && role != "viewer" {
        bail!("--role must be technician or viewer");
    }
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let hash: String = sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    eprintln!("Give this token to {name} (it is shown once; only its hash goes in the policy):");
    println!("{token}");
    eprintln!("\nAdd to the policy, then send SIGHUP:\n\n[[admin.tokens]]\nname = {name:?}\nrole = {role:?}\nsha256 = {hash:?}");
    Ok(ExitCode::SUCCESS)
}

fn report(args: &ReportArgs) -> Result<ExitCode> {
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
        vec![policy.log.dir.clone()]
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
                detail: r
                    .fault
                    .unwrap_or_else(|| format!("{} entries in {} segments", r.entries, r.segments)),
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
