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
use super::common::{load, ConfigArg};

#[derive(Subcommand)]
pub enum ListsCommand {
    /// Compile the domain lists and write the cache that start-up loads.
    Compile(ConfigArg),
    /// Import a list in another format into the policy's lists (written as
    /// <category>/domains.<name> and urls.<name>, replacing the last import of that name).
    Import(ImportArgs),
    /// Entries per category, where they come from, when they changed, and overlaps.
    Stats(ConfigArg),
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
        let dir = &def.list_dir;
        let mut files = Vec::new();
        let mut newest: Option<std::time::SystemTime> = None;
        let kinds = ["domains", "urls"]
            .into_iter()
            .flat_map(|k| gatehouse::lists::list_files(dir, k))
            .chain(
                ["urls.sha256", "expressions", "search_terms"]
                    .into_iter()
                    .map(|k| dir.join(k)),
            );
        for file in kinds {
            if let Ok(meta) = std::fs::metadata(&file) {
                if let Some(name) = file.file_name().and_then(|n| n.to_str()) {
                    files.push(name.to_string());
                }
                if let Ok(m) = meta.modified() {
                    newest = Some(newest.map_or(m, |n| n.max(m)));
                }
            }
        }
        let changed = newest
            .map(|t| {
                chrono::DateTime::<chrono::Utc>::from(t)
                    .format("%Y-%m-%d %H:%M")
                    .to_string()
            })
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
