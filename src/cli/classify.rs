//! `gatehouse classify`: what the policy would decide for given URLs, for a group, a
//! user or a client address, now or at a given time — the same `decide` the proxy calls,
//! so a technician can test a policy change before reloading it.

use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use clap::Args;

use gatehouse::core::group::GroupId;
use gatehouse::core::host::Target;
use gatehouse::core::policy::Policy;
use gatehouse::core::verdict::{Action, Requester};
use gatehouse::lists::CacheMode;

use super::common::{load, ConfigArg};

#[derive(Args)]
pub struct ClassifyArgs {
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

/// `gatehouse classify`: the verdict for each URL; exit 2 if any URL could not be read.
pub fn run(args: &ClassifyArgs) -> Result<ExitCode> {
    let snap = load(&args.config.config, CacheMode::Use)?;
    // Grants in etcd are read from there; without the store, verdicts are given
    // without grants, and say so.
    let snap = match &snap.settings.grants_store {
        gatehouse::settings::GrantsStore::File => snap,
        gatehouse::settings::GrantsStore::Etcd(etcd) => {
            match gatehouse::etcd_grants::fetch(etcd, &snap.policy, &snap.lists, Utc::now()) {
                Ok(grants) => snap.with_grant_set(grants),
                Err(e) => {
                    eprintln!("warning: no grants applied: {e}");
                    snap
                }
            }
        }
    };
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
        // What the proxy would dial instead, for an allowed search engine or YouTube.
        let safe_search = (verdict.action == Action::Allow)
            .then(|| p.safe_search(verdict.group, &target.host))
            .flatten();
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
                "reason": verdict.reason.code(),
                "explanation": p.explain(&verdict),
                "grant": verdict.grant.as_ref().map(|g| serde_json::json!({"id": &*g.id, "ticket": &*g.ticket})),
                "search": classification.search,
                "search_terms": terms,
                "safe_search": safe_search.as_ref().map(|r| serde_json::json!({
                    "engine": r.engine,
                    "level": r.level.as_str(),
                    "dialled": r.dialled,
                })),
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
            if let Some(r) = &safe_search {
                println!(
                    "       safe search: dialled {} instead ({}, {})",
                    r.dialled, r.engine, r.level
                );
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
