//! Editing the grants file: what `gatehouse grant add|revoke` and the admin API's
//! `POST`/`DELETE /api/grants` do.
//!
//! Every edit runs under an exclusive lock on `grants.toml.lock`, archives grants that
//! have expired, validates the whole resulting file against the policy and its lists,
//! and only then replaces the file atomically (temporary file and rename): concurrent
//! edits queue and none is lost, and the file is never half-written or invalid. The
//! running proxy sees the rename through its watcher.

use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::core::config::{ConfigErrors, Source};
use crate::snapshot::Snapshot;

/// Why an edit was refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be read, locked or written.
    #[error("{0}")]
    Io(String),
    /// The request itself is wrong (no such grant, no duration, …).
    #[error("{0}")]
    Request(String),
    /// The resulting file would not validate; nothing was changed.
    #[error("refused: the grants file would not be valid; nothing was changed\n{0}")]
    Invalid(ConfigErrors),
}

/// A grant to add, as the CLI and the API take it.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGrant {
    /// Helpdesk ticket.
    pub ticket: String,
    /// Technician issuing it (the API fills in the token's owner).
    #[serde(default)]
    pub issued_by: String,
    /// Why.
    pub reason: String,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Users.
    #[serde(default)]
    pub users: Vec<String>,
    /// Client networks.
    #[serde(default)]
    pub subnets: Vec<String>,
    /// Sites and URL prefixes.
    #[serde(default)]
    pub sites: Vec<String>,
    /// Categories.
    #[serde(default)]
    pub categories: Vec<String>,
    /// Start (default now).
    #[serde(default)]
    pub starts: Option<DateTime<Utc>>,
    /// Expiry.
    pub expires: DateTime<Utc>,
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn tables<'a>(
    doc: &'a mut toml_edit::DocumentMut,
    key: &str,
) -> Result<&'a mut toml_edit::ArrayOfTables, StoreError> {
    if !doc.contains_key(key) {
        doc.insert(
            key,
            toml_edit::Item::ArrayOfTables(toml_edit::ArrayOfTables::new()),
        );
    }
    doc[key]
        .as_array_of_tables_mut()
        .ok_or_else(|| StoreError::Request(format!("`{key}` must be [[{key}]] tables")))
}

/// Moves grants that have expired into the archive, so the file says what is in force.
fn archive_expired(doc: &mut toml_edit::DocumentMut, now: DateTime<Utc>) -> Result<(), StoreError> {
    let Some(grants) = doc
        .get_mut("grant")
        .and_then(|g| g.as_array_of_tables_mut())
    else {
        return Ok(());
    };
    let mut expired = Vec::new();
    let mut i = 0;
    while i < grants.len() {
        let ended = grants
            .get(i)
            .and_then(|t| t.get("expires"))
            .and_then(|v| v.as_str())
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .is_some_and(|t| t <= now);
        if ended {
            if let Some(t) = grants.get(i).cloned() {
                expired.push(t);
            }
            grants.remove(i);
        } else {
            i += 1;
        }
    }
    if !expired.is_empty() {
        let archive = tables(doc, "archived")?;
        for mut t in expired {
            t.insert("revoke_reason", toml_edit::value("expired"));
            archive.push(t);
        }
    }
    Ok(())
}

fn next_id(doc: &toml_edit::DocumentMut) -> String {
    let max = ["grant", "archived"]
        .iter()
        .filter_map(|k| doc.get(k).and_then(|g| g.as_array_of_tables()))
        .flat_map(|a| a.iter())
        .filter_map(|t| t.get("id").and_then(|v| v.as_str()))
        .filter_map(|id| id.strip_prefix("g-").and_then(|n| n.parse::<u64>().ok()))
        .max()
        .unwrap_or(0);
    format!("g-{}", max + 1)
}

fn string_array(items: &[String]) -> toml_edit::Item {
    let mut a = toml_edit::Array::new();
    for i in items {
        a.push(i.as_str());
    }
    toml_edit::value(a)
}

/// Runs `edit` on the grants file under the lock, validates, writes. Returns what
/// `edit` returned.
fn edit<T>(
    snap: &Snapshot,
    now: DateTime<Utc>,
    edit: impl FnOnce(&mut toml_edit::DocumentMut) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let path = snap.policy.grant_rules.file.clone();
    let io = |what: &str, p: &Path, e: std::io::Error| {
        StoreError::Io(format!("{what} {}: {e}", p.display()))
    };
    let lock_path = path.with_extension("toml.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| io("opening", &lock_path, e))?;
    lock.lock().map_err(|e| io("locking", &lock_path, e))?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io("reading", &path, e)),
    };
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| StoreError::Io(format!("{} is not valid TOML: {e}", path.display())))?;
    archive_expired(&mut doc, now)?;
    let result = edit(&mut doc)?;
    let new_text = doc.to_string();
    let source = Source::new(&path, &new_text);
    crate::core::grants::compile_file(&new_text, &source, &snap.policy, &snap.lists, now)
        .map_err(StoreError::Invalid)?;
    crate::lists::write_atomically(&path, new_text.as_bytes())
        .map_err(|e| io("writing", &path, e))?;
    drop(lock);
    Ok(result)
}

/// Adds a grant; its id.
pub fn add(snap: &Snapshot, grant: &NewGrant, now: DateTime<Utc>) -> Result<String, StoreError> {
    edit(snap, now, |doc| {
        let id = next_id(doc);
        let mut t = toml_edit::Table::new();
        t.insert("id", toml_edit::value(id.as_str()));
        t.insert("ticket", toml_edit::value(grant.ticket.as_str()));
        t.insert("issued_by", toml_edit::value(grant.issued_by.as_str()));
        t.insert("reason", toml_edit::value(grant.reason.as_str()));
        t.insert("issued_at", toml_edit::value(stamp(now)));
        for (key, items) in [
            ("groups", &grant.groups),
            ("users", &grant.users),
            ("subnets", &grant.subnets),
            ("sites", &grant.sites),
            ("categories", &grant.categories),
        ] {
            if !items.is_empty() {
                t.insert(key, string_array(items));
            }
        }
        t.insert(
            "starts",
            toml_edit::value(stamp(grant.starts.unwrap_or(now))),
        );
        t.insert("expires", toml_edit::value(stamp(grant.expires)));
        tables(doc, "grant")?.push(t);
        Ok(id)
    })
}

/// Revokes a grant in force: it moves to the archive with who, when and why.
pub fn revoke(
    snap: &Snapshot,
    id: &str,
    by: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if by.trim().is_empty() || reason.trim().is_empty() {
        return Err(StoreError::Request(
            "a revocation needs who (--by) and why (--reason)".into(),
        ));
    }
    edit(snap, now, |doc| {
        let grants = tables(doc, "grant")?;
        let i = grants
            .iter()
            .position(|t| t.get("id").and_then(|v| v.as_str()) == Some(id))
            .ok_or_else(|| StoreError::Request(format!("no grant {id:?} in force")))?;
        let mut t = grants
            .get(i)
            .cloned()
            .ok_or_else(|| StoreError::Request(format!("no grant {id:?} in force")))?;
        grants.remove(i);
        t.insert("revoked_at", toml_edit::value(stamp(now)));
        t.insert("revoked_by", toml_edit::value(by));
        t.insert("revoke_reason", toml_edit::value(reason));
        tables(doc, "archived")?.push(t);
        Ok(())
    })
}

/// Every grant in the file, as JSON objects with their state (`active`, `future`,
/// `expired`, `revoked`) and time left.
pub fn list(snap: &Snapshot, now: DateTime<Utc>) -> Result<Vec<serde_json::Value>, StoreError> {
    let path = &snap.policy.grant_rules.file;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(StoreError::Io(format!("reading {}: {e}", path.display()))),
    };
    let raw: crate::core::grants::RawGrantsFile = toml::from_str(&text).map_err(|e| {
        StoreError::Io(format!(
            "{} is not a valid grants file: {e}",
            path.display()
        ))
    })?;
    let mut rows = Vec::new();
    for (section, list) in [("grant", &raw.grant), ("archived", &raw.archived)] {
        for g in list {
            let starts = g
                .starts
                .as_ref()
                .and_then(|s| DateTime::parse_from_rfc3339(s.get_ref()).ok());
            let expires = DateTime::parse_from_rfc3339(g.expires.get_ref()).ok();
            let state = match (section, starts, expires) {
                ("archived", _, _) if g.revoked_by.is_some() => "revoked",
                ("archived", _, _) => "expired",
                (_, _, Some(e)) if e <= now => "expired",
                (_, Some(s), _) if s > now => "future",
                _ => "active",
            };
            let left = expires.filter(|_| state == "active").map(|e| {
                let d = e.with_timezone(&Utc) - now;
                format!(
                    "{}d {}h {}m left",
                    d.num_days(),
                    d.num_hours() % 24,
                    d.num_minutes() % 60
                )
            });
            let names = |v: &[toml::Spanned<String>]| {
                v.iter().map(|s| s.get_ref().clone()).collect::<Vec<_>>()
            };
            rows.push(serde_json::json!({
                "id": g.id.get_ref(),
                "state": state,
                "ticket": g.ticket.get_ref(),
                "issued_by": g.issued_by.get_ref(),
                "reason": g.reason.get_ref(),
                "groups": names(&g.groups),
                "users": g.users,
                "subnets": names(&g.subnets),
                "sites": names(&g.sites),
                "categories": names(&g.categories),
                "starts": g.starts.as_ref().map(|s| s.get_ref().clone()),
                "expires": g.expires.get_ref(),
                "time_left": left,
                "revoked_by": g.revoked_by,
                "revoke_reason": g.revoke_reason,
            }));
        }
    }
    Ok(rows)
}
