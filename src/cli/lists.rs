//! `gatehouse lists compile | import | stats`: the category lists as a technician keeps
//! them — the compiled cache, feeds brought in from the formats schools receive, and
//! what is loaded, from where, and how the lists overlap.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use gatehouse::core::feed::{self, Format};
use gatehouse::import::{self, ImportError};
use gatehouse::lists::CacheMode;

use super::check::print_list_warnings;
use super::common::{admin_address, admin_post, admin_token, load, ConfigArg};

#[derive(Subcommand)]
pub enum ListsCommand {
    /// Compile the domain lists and write the cache that start-up loads.
    Compile(ConfigArg),
    /// Import a list in another format into the policy's lists (written as
    /// <category>/domains.<name> and urls.<name>, replacing the last import of that name).
    Import(ImportArgs),
    /// Entries per category, where they come from, when they changed, and overlaps.
    Stats(ConfigArg),
    /// Fetch the [[lists.sources]] feeds and swap good lists into the running proxy
    /// (through its admin API, with a technician token); --offline does it here, for a
    /// proxy that is not running.
    Update(UpdateArgs),
}

#[derive(Args)]
pub struct UpdateArgs {
    /// Only this source (default: every [[lists.sources]] entry).
    #[arg(long)]
    source: Option<String>,
    /// Take an update that the shrink guard refuses (never for an illegal category).
    #[arg(long, requires = "reason")]
    allow_shrink: bool,
    /// Why the shrink is genuine: recorded in the decision log with who took it.
    #[arg(long, requires = "allow_shrink")]
    reason: Option<String>,
    /// Do the update in this process and write the decision log directly, instead of
    /// asking the running proxy: only while the proxy is stopped (one writer per log).
    #[arg(long)]
    offline: bool,
    /// A file holding a technician admin token (default: $GATEHOUSE_ADMIN_TOKEN).
    #[arg(long, conflicts_with = "offline")]
    token_file: Option<PathBuf>,
    /// The admin listener to ask (default: [admin] listen from the policy).
    #[arg(long, conflicts_with = "offline")]
    admin: Option<std::net::SocketAddr>,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Args)]
pub struct ImportArgs {
    /// ut1 (a UT1 directory or .tar.gz), hosts, plain, or e2guardian (bannedsitelist or
    /// bannedurllist).
    #[arg(long)]
    format: String,
    /// The list: a file, or for ut1 a directory or .tar.gz.
    source: PathBuf,
    /// The category a hosts, plain or e2guardian list fills.
    #[arg(long)]
    category: Option<String>,
    /// For ut1: a map of UT1 categories to the policy's (TOML, `adult = "pornography"`);
    /// default: the built-in map, the same as blocklists/ut1-map.toml (copy and edit it).
    #[arg(long)]
    map: Option<PathBuf>,
    /// The suffix of the files written; default: the format.
    #[arg(long)]
    name: Option<String>,
    /// Read and count, write nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    config: ConfigArg,
}

/// `gatehouse lists …`.
pub fn lists(command: ListsCommand) -> Result<ExitCode> {
    match command {
        ListsCommand::Compile(args) => super::check::compile(&args),
        ListsCommand::Import(args) => import(args),
        ListsCommand::Stats(args) => stats(&args),
        ListsCommand::Update(args) => update(&args),
    }
}

fn import(args: ImportArgs) -> Result<ExitCode> {
    let Some(format) = Format::parse(&args.format) else {
        bail!(
            "--format {:?}: one of ut1, hosts, plain, e2guardian",
            args.format
        );
    };
    let snap = load(&args.config.config, CacheMode::Use)?;
    let map = if format == Format::Ut1 {
        let (text, label) = match &args.map {
            Some(path) => (
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the map {}", path.display()))?,
                path.display().to_string(),
            ),
            None => (
                feed::DEFAULT_UT1_MAP.to_string(),
                "the shipped UT1 map".into(),
            ),
        };
        feed::parse_ut1_map(&text).map_err(|e| anyhow::anyhow!("{label}:{e}"))?
    } else {
        if args.map.is_some() {
            bail!("--map is for --format ut1");
        }
        BTreeMap::new()
    };
    let categories = snap
        .policy
        .categories()
        .map(|(_, def)| (def.category.name.to_string(), def.list_dir.clone()))
        .collect();
    let request = import::Request {
        format,
        source: args.source.clone(),
        category: args.category.clone(),
        map,
        own_map: args.map.is_some(),
        name: args.name.clone().unwrap_or_else(|| format.as_str().into()),
        categories,
        dry_run: args.dry_run,
        origin: None,
    };
    let started = Instant::now();
    let report = match import::run(&request) {
        Ok(r) => r,
        Err(e @ ImportError::Usage(_)) => bail!("{e}"),
        Err(e) => bail!("{e}; nothing was imported"),
    };
    let took = started.elapsed();
    println!(
        "{} {} ({}) in {:.1} s: {} lines",
        if args.dry_run {
            "read (dry run, nothing written)"
        } else {
            "imported"
        },
        args.source.display(),
        format.as_str(),
        took.as_secs_f64(),
        report.lines
    );
    for (category, (domains, urls, files)) in &report.written {
        let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        println!(
            "  {category}: {domains} domains, {urls} URL prefixes → {}",
            if files.is_empty() {
                "nothing to write".into()
            } else {
                files.join(", ")
            }
        );
    }
    if report.written.is_empty() {
        println!("  no entries");
    }
    let skipped: u64 = report.skipped.values().map(|(n, _)| n).sum();
    if skipped > 0 {
        println!("skipped {skipped} lines:");
        for reason in feed::Skip::ALL {
            if let Some((n, samples)) = report.skipped.get(&reason) {
                println!("  {reason}: {n}");
                for (file, line, text) in samples {
                    println!("    {file}:{line}: {text}");
                }
            }
        }
    }
    if !report.unmapped.is_empty() {
        let names: Vec<String> = report
            .unmapped
            .iter()
            .map(|(c, n)| format!("{c} ({n} lines)"))
            .collect();
        println!(
            "UT1 categories not imported (not in the map): {}",
            names.join(", ")
        );
    }
    if !report.not_in_policy.is_empty() {
        let names: Vec<String> = report
            .not_in_policy
            .iter()
            .map(|(ut1, target)| format!("{ut1} → {target}"))
            .collect();
        println!(
            "the built-in UT1 map's categories that the policy does not define were passed over: {}",
            names.join(", ")
        );
    }
    if !args.dry_run && !report.written.is_empty() {
        // Compile now, as start-up would: the new lists load, and the cache is ready.
        let snap = load(&args.config.config, CacheMode::Rebuild)?;
        print_list_warnings(&snap);
        println!(
            "compiled {} domain entries in {} ms; the running proxy takes them at its next reload (systemctl reload gatehouse, or by itself with [server] reload_on_change)",
            snap.lists.domains.len(),
            snap.report.elapsed.as_millis()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn stats(args: &ConfigArg) -> Result<ExitCode> {
    let snap = load(&args.config, CacheMode::Use)?;
    print_list_warnings(&snap);
    let policy = &snap.policy;
    println!(
        "{:<20} {:<14} {:>10} {:>8} {:>7} {:>6} {:>6}  {:<17} files",
        "category", "severity", "domains", "urls", "hashes", "exprs", "terms", "last changed"
    );
    for (id, def) in policy.categories() {
        let c = &snap.report.counts[id.index()];
        let files: Vec<String> = gatehouse::lists::category_files(&def.list_dir)
            .iter()
            .filter_map(|f| f.file_name()?.to_str().map(str::to_string))
            .collect();
        let changed = snap
            .report
            .modified(id)
            .and_then(|secs| chrono::DateTime::<chrono::Utc>::from_timestamp(secs, 0))
            .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_else(|| "no files".into());
        println!(
            "{:<20} {:<14} {:>10} {:>8} {:>7} {:>6} {:>6}  {:<17} {}",
            def.category.name,
            def.category.severity.as_str(),
            c.domains,
            c.urls,
            c.hashes,
            c.expressions,
            c.terms,
            changed,
            if files.is_empty() {
                "-".to_string()
            } else {
                files.join(" ")
            }
        );
    }
    println!(
        "{} distinct domains and addresses in the compiled index ({})",
        snap.lists.domains.len(),
        if snap.report.from_cache {
            format!("read from {}", policy.lists_cache.display())
        } else {
            "compiled from the lists".to_string()
        }
    );
    let overlaps: Vec<(u64, u64)> = snap
        .lists
        .domains
        .counts_per_set()
        .into_iter()
        .filter(|(bits, _)| bits.count_ones() > 1)
        .collect();
    if overlaps.is_empty() {
        println!("no domain is in more than one category");
    } else {
        println!("domains in more than one category:");
        for (bits, n) in overlaps.iter().take(20) {
            let names =
                policy.category_names(gatehouse::core::category::CategorySet::from_bits(*bits));
            println!("  {}: {n}", names.join(" + "));
        }
        if overlaps.len() > 20 {
            println!("  … and {} more combinations", overlaps.len() - 20);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One source's outcome as the API or the library gives it.
struct Shown {
    source: String,
    result: String,
    detail: String,
}

fn update(args: &UpdateArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let reason = args
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    if args.allow_shrink && reason.is_none() {
        bail!("--allow-shrink needs --reason TEXT (it is logged)");
    }
    let shown = if args.offline {
        runtime.block_on(update_offline(args, reason))?
    } else {
        runtime.block_on(update_via_admin(args, reason))?
    };
    let mut failed = false;
    for s in &shown {
        println!("{}: {}: {}", s.source, s.result, s.detail);
        failed |= s.result == "refused" || s.result == "failed";
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn update_offline(args: &UpdateArgs, reason: Option<&str>) -> Result<Vec<Shown>> {
    use gatehouse::decision_log::{Body, ReloadKind};
    let snap = load(&args.config.config, CacheMode::Use)?;
    let mut log_settings = snap.settings.log.clone();
    if log_settings.node.is_empty() {
        log_settings.node = gatehouse::proxy::node_name();
    }
    let by = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .map(|u| format!("{u} (gatehouse lists update --offline)"))
        .unwrap_or_else(|_| "gatehouse lists update --offline".into());
    let options = gatehouse::feeds::Options {
        only: args.source.clone(),
        allow_shrink: if args.allow_shrink {
            reason.map(str::to_string)
        } else {
            None
        },
        by,
    };
    let outcomes =
        gatehouse::feeds::update(&args.config.config, std::sync::Arc::new(snap), &options).await?;
    let log = gatehouse::decision_log::writer::open(log_settings)
        .context("opening the decision log (is the proxy running? then leave out --offline)")?;
    for o in &outcomes {
        log.append(Body::Reload {
            what: ReloadKind::Lists,
            ok: o.result.is_success(),
            detail: o.log_detail(),
        })
        .await
        .context("writing the decision log")?;
    }
    log.close().await;
    Ok(outcomes
        .into_iter()
        .map(|o| Shown {
            source: o.source,
            result: o.result.as_str().to_string(),
            detail: o.detail,
        })
        .collect())
}

async fn update_via_admin(args: &UpdateArgs, reason: Option<&str>) -> Result<Vec<Shown>> {
    let token = admin_token(
        args.token_file.as_deref(),
        "a technician token (or --offline while the proxy is stopped)",
    )?;
    let admin = admin_address(args.admin, &args.config.config)?;
    let body = serde_json::json!({
        "source": args.source,
        "allow_shrink": args.allow_shrink,
        "reason": reason,
    });
    let value = admin_post(
        admin,
        &token,
        "/api/lists/update",
        body,
        "asking for the update",
        "is gatehouse running? if not, use --offline",
    )
    .await
    .context("update")?;
    Ok(value["outcomes"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|o| Shown {
                    source: o["source"].as_str().unwrap_or("?").to_string(),
                    result: o["result"].as_str().unwrap_or("?").to_string(),
                    detail: o["detail"].as_str().unwrap_or("").to_string(),
                })
                .collect()
        })
        .unwrap_or_default())
}

/// `gatehouse check`'s lines about `[[lists.sources]]`: each feed, and when it was last
/// current (from the state file).
pub fn print_feeds(snap: &gatehouse::snapshot::Snapshot) {
    let feeds = &snap.settings.feeds;
    if feeds.sources.is_empty() {
        println!("list feeds: none ([[lists.sources]])");
        return;
    }
    let state = gatehouse::feeds::FeedState::read(&snap.policy.lists_dir);
    println!(
        "list feeds: {} ({})",
        feeds.sources.len(),
        match feeds.update_every {
            Some(every) => format!("updated by the proxy every {} min", every.as_secs() / 60),
            None => "updated when asked: gatehouse lists update, or the systemd timer".into(),
        }
    );
    for s in &feeds.sources {
        let last = state
            .sources
            .get(&s.name)
            .and_then(|st| st.last_success)
            .and_then(|t| chrono::DateTime::<chrono::Utc>::from_timestamp(t, 0))
            .map(|t| format!("current at {}", t.format("%Y-%m-%d %H:%M UTC")))
            .unwrap_or_else(|| "never fetched".into());
        println!(
            "  {:<12} {:<10} → {:<20} {}{}  ({last})",
            s.name,
            s.format.as_str(),
            s.category.as_deref().unwrap_or("(UT1 map)"),
            s.url,
            if s.sha256.is_some() { " [pinned]" } else { "" },
        );
    }
}
