//! What several subcommands share: the `--config` argument, loading the policy and its
//! lists with every configuration error printed, reading a time typed on the command
//! line in the school's time zone, and asking the running proxy's admin API (`alerts
//! ack`, `lists update`).

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

/// The bearer token for the admin API: the file's, else `$GATEHOUSE_ADMIN_TOKEN`.
/// `which` names the token needed and what else to try, for the error.
pub fn admin_token(file: Option<&Path>, which: &str) -> Result<String> {
    let token = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the token from {}", path.display()))?,
        None => std::env::var("GATEHOUSE_ADMIN_TOKEN").with_context(|| {
            format!("no token: give --token-file FILE or set GATEHOUSE_ADMIN_TOKEN to {which}")
        })?,
    };
    Ok(token.trim().to_string())
}

/// The admin listener to ask: `given`, else the policy's `[admin] listen`, reached on
/// loopback when it listens on every address.
pub fn admin_address(
    given: Option<std::net::SocketAddr>,
    config: &Path,
) -> Result<std::net::SocketAddr> {
    let mut admin = match given {
        Some(a) => a,
        None => load(config, CacheMode::Use)?.settings.admin.listen,
    };
    if admin.port() == 0 {
        bail!("the policy's [admin] listen has port 0 (any free port): give --admin ADDRESS:PORT, the address the running proxy logged");
    }
    if admin.ip().is_unspecified() {
        admin.set_ip(if admin.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Ok(admin)
}

/// POSTs the JSON `body` to `path` on the admin listener with the bearer `token`, and
/// returns the answer as JSON when it succeeded. A refusal is an error with the API's
/// own words; `doing` says what was asked (`sending the acknowledgement`), `unreachable`
/// what to do when nothing listens.
pub async fn admin_post(
    admin: std::net::SocketAddr,
    token: &str,
    path: &str,
    body: serde_json::Value,
    doing: &str,
    unreachable: &str,
) -> Result<serde_json::Value> {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(admin)
        .await
        .with_context(|| format!("connecting to the admin listener at {admin} ({unreachable})"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .context("talking to the admin listener")?;
    tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header(hyper::header::HOST, admin.to_string())
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .context("building the request")?;
    let res = sender.send_request(req).await.context(doing.to_string())?;
    let status = res.status();
    let answer = res
        .into_body()
        .collect()
        .await
        .context("reading the answer")?
        .to_bytes();
    let value: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
    if status.is_success() {
        return Ok(value);
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
    bail!("refused ({status}): {why}")
}
