//! What several subcommands share: the `--config` argument, loading the policy and its
//! lists with every configuration error printed, and reading a time typed on the command
//! line in the school's time zone.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use clap::Args;

use gatehouse::lists::CacheMode;
use gatehouse::snapshot::{self, Snapshot};

/// The shipped example policy, used when `--config` is not given.
const DEFAULT_CONFIG: &str = "policy/gatehouse.toml";

#[derive(Args)]
pub struct ConfigArg {
    /// Policy file.
    #[arg(long, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
}

/// Loads a snapshot, printing every configuration error on its own line.
pub fn load(config: &Path, cache: CacheMode) -> Result<Snapshot> {
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

/// Parses a time given as an argument (`--from`, `--until`, `--starts`, …): RFC 3339,
/// or a local date and time, or a date, in the school's zone.
pub fn parse_time_arg(text: &str, tz: chrono_tz::Tz) -> Result<DateTime<Utc>> {
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
