//! Changes at run time: SIGHUP reloads policy and lists, and the watched grants file
//! reloads the grants. Either builds a whole new snapshot on the start-up path and swaps
//! it in; one that fails changes nothing, and the snapshot in force keeps serving.
//! Grant changes (added, revoked, removed by hand, expired) become audit records in the
//! decision log; the gauges that describe the snapshot are set here too.

use std::sync::Arc;

use chrono::Utc;

use super::Proxy;
use crate::core::grants::{Effect, GrantKind};
use crate::decision_log::{GrantEvent, ReloadKind};
use crate::lists::CacheMode;
use crate::snapshot::{self, Snapshot};

/// Loads policy and lists (on a blocking thread), then runs `after_load` there.
pub(super) fn load_then(
    path: &std::path::Path,
    after_load: fn(),
) -> Result<Snapshot, crate::core::config::ConfigErrors> {
    let result = snapshot::load(path, CacheMode::Use);
    after_load();
    result
}

/// Watches the grants file's directory; `None` (with a warning) if it cannot.
pub(super) fn watch_grants(
    file: &std::path::Path,
    tx: tokio::sync::mpsc::UnboundedSender<()>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let dir = file.parent()?.to_path_buf();
    let name = file.file_name()?.to_os_string();
    let mut watcher = match notify::recommended_watcher(
        move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event {
                // Opening and reading the file (every reload does) is not a change: on
                // inotify those are Access events, and reacting to them reloaded in a
                // loop, an audit entry every 150 ms.
                if matches!(event.kind, notify::EventKind::Access(_)) {
                    return;
                }
                // `..data`: a Kubernetes ConfigMap holding the file is swapped whole.
                if event.paths.iter().any(|p| {
                    p.file_name() == Some(name.as_os_str())
                        || p.file_name() == Some(std::ffi::OsStr::new("..data"))
                }) {
                    let _ = tx.send(());
                }
            }
        },
    ) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the grants file; send SIGHUP after editing it");
            return None;
        }
    };
    if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
        tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the grants directory; send SIGHUP after editing it");
        return None;
    }
    Some(watcher)
}

/// Watches what a reload reads — the policy file's directory (the file itself, the users
/// file beside it, and the `..data` link through which Kubernetes swaps a mounted
/// ConfigMap whole) and the lists directory, recursively — and sends on `tx` when any of
/// it changes. The grants file has its own watcher; the decision log is elsewhere. `None`
/// (with a warning) if the watch cannot be set.
pub(super) fn watch_config(
    policy: &std::path::Path,
    users: Option<&std::path::Path>,
    lists: &std::path::Path,
    grants: &std::path::Path,
    tx: tokio::sync::mpsc::UnboundedSender<()>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let policy_dir = policy.parent()?.to_path_buf();
    let mut names: Vec<std::ffi::OsString> =
        vec![policy.file_name()?.to_os_string(), "..data".into()];
    if let Some(users) = users.filter(|u| u.parent() == Some(policy_dir.as_path())) {
        names.extend(users.file_name().map(|n| n.to_os_string()));
    }
    let lists_dir = lists.to_path_buf();
    let grants = grants.to_path_buf();
    let watched_lists = lists_dir.clone();
    let mut watcher = match notify::recommended_watcher(
        move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if event.kind.is_access() {
                return;
            }
            let relevant = event.paths.iter().any(|p| {
                // `.feeds/` holds a feed update's download and state, not lists: the
                // update swaps its lists in itself once they are whole.
                *p != grants
                    && !p.components().any(|c| c.as_os_str() == ".feeds")
                    && (p.starts_with(&watched_lists)
                        || (p.parent() == Some(policy_dir.as_path())
                            && p.file_name().is_some_and(|n| names.iter().any(|w| w == n))))
            });
            if relevant {
                let _ = tx.send(());
            }
        },
    ) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "reload_on_change: cannot watch the policy; send SIGHUP after changing it");
            return None;
        }
    };
    let dir = policy.parent()?;
    if let Err(e) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
        tracing::warn!(error = %e, dir = %dir.display(), "reload_on_change: cannot watch the policy's directory; send SIGHUP after changing it");
        return None;
    }
    if lists_dir.is_dir() {
        if let Err(e) = watcher.watch(&lists_dir, notify::RecursiveMode::Recursive) {
            tracing::warn!(error = %e, dir = %lists_dir.display(), "reload_on_change: cannot watch the lists; send SIGHUP after changing them");
        }
    }
    Some(watcher)
}

/// Audit records for what changed between two grant sets.
fn grant_changes(
    old: &crate::core::grants::GrantSet,
    new: &crate::core::grants::GrantSet,
    policy: &crate::core::policy::Policy,
    by_hand: &str,
) -> Vec<crate::decision_log::Body> {
    use crate::decision_log::Body;
    let mut out = Vec::new();
    for g in &new.grants {
        if !old.grants.iter().any(|o| o.id == g.id) {
            out.push(Body::Grant {
                action: GrantEvent::Added,
                id: g.id.to_string(),
                ticket: g.ticket.to_string(),
                by: g.issued_by.clone(),
                detail: {
                    let (scope, target) = g.terms(policy);
                    let (kind, verb) = match g.kind {
                        GrantKind::Ticketed => ("", "opens"),
                        GrantKind::Lesson(Effect::Allow) => ("lesson allow: ", "opens"),
                        GrantKind::Lesson(Effect::Block) => ("lesson block: ", "closes"),
                    };
                    format!(
                        "{kind}{} (for {scope}; {verb} {target}; from {} until {})",
                        g.reason,
                        g.starts.to_rfc3339(),
                        g.expires.to_rfc3339()
                    )
                },
            });
        }
    }
    for g in &old.grants {
        if new.grants.iter().any(|n| n.id == g.id) {
            continue;
        }
        let revoked_by = new
            .archived
            .iter()
            .find(|(id, _)| **id == *g.id)
            .and_then(|(_, by)| by.clone());
        out.push(Body::Grant {
            action: if revoked_by.is_some() {
                GrantEvent::Revoked
            } else {
                GrantEvent::Removed
            },
            id: g.id.to_string(),
            ticket: g.ticket.to_string(),
            by: revoked_by.unwrap_or_else(|| by_hand.into()),
            detail: g.reason.clone(),
        });
    }
    out
}

impl Proxy {
    /// Gauges that describe the snapshot in force: list sizes, load time, grants.
    pub(super) fn set_snapshot_gauges(&self) {
        let snap = self.live.get();
        for (id, def) in snap.policy.categories() {
            let c = &snap.report.counts[id.index()];
            let entries = c.domains + c.urls + c.hashes + c.expressions + c.terms;
            self.metrics
                .list_entries
                .with_label_values(&[def.category.name.as_str()])
                .set(entries as i64);
            let modified = snap.report.modified(id).unwrap_or(0);
            self.metrics
                .list_modified
                .with_label_values(&[def.category.name.as_str(), def.category.severity.as_str()])
                .set(modified);
        }
        // Each engine's series exists from the start, at zero, so that its rate works.
        for engine in snap.policy.safe_search.engines() {
            self.metrics
                .safe_search_rewrites
                .with_label_values(&[engine.name.as_str()]);
        }
        self.set_store_gauges();
        let now = Utc::now();
        self.metrics.grants_active.set(
            snap.grants
                .grants
                .iter()
                .filter(|g| g.active_at(now))
                .count() as i64,
        );
        for effect in [Effect::Allow, Effect::Block] {
            self.metrics
                .lesson_overrides_active
                .with_label_values(&[effect.as_str()])
                .set(
                    snap.grants
                        .grants
                        .iter()
                        .filter(|g| g.kind == GrantKind::Lesson(effect) && g.active_at(now))
                        .count() as i64,
                );
        }
    }

    /// The grants store's gauges: the file always answers; etcd as the mirror says.
    pub(super) fn set_store_gauges(&self) {
        match &self.grants_mirror {
            None => {
                self.metrics.grants_store_up.set(1);
                self.metrics
                    .grants_store_last_sync
                    .set(Utc::now().timestamp());
            }
            Some((mirror, _)) => {
                let status = mirror.status();
                self.metrics.grants_store_up.set(i64::from(status.up));
                if let Some(t) = status.last_sync {
                    self.metrics.grants_store_last_sync.set(t.timestamp());
                }
            }
        }
    }

    /// After this node changed the grants: reloads them so that the answer to the
    /// change is true on this node when it is sent. With etcd, first waits (up to a
    /// second) for the watch to bring the change into the mirror.
    pub(super) async fn reload_grants_after_write(&self) {
        if let Some((mirror, seen)) = &self.grants_mirror {
            let compiled = seen.load(std::sync::atomic::Ordering::Acquire);
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
            while mirror.generation() == compiled && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        self.reload_grants();
    }

    /// Who removed a grant that left the store unrevoked, for the audit trail.
    fn by_hand(&self) -> &'static str {
        match self.grants_mirror {
            None => "a hand edit of the grants file",
            Some(_) => "a hand edit of the grants store (etcd)",
        }
    }

    /// With grants in etcd, one line on how the store stands, for `/readyz`.
    pub(super) fn grants_store_detail(&self) -> Option<String> {
        let (mirror, _) = self.grants_mirror.as_ref()?;
        let status = mirror.status();
        let stamp = |t: Option<chrono::DateTime<Utc>>| {
            t.map_or("never".to_string(), |t| {
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            })
        };
        let grants = self.live.get().grants.grants.len();
        Some(if status.up {
            format!(
                "grants store ok: etcd, {grants} grants, in sync at {}",
                stamp(status.last_sync)
            )
        } else {
            format!(
                "grants store degraded since {}: {}; keeping the {grants} grants last seen (synced {}), expiry still enforced",
                stamp(status.down_since),
                status.error.as_deref().unwrap_or("unreachable"),
                stamp(status.last_sync)
            )
        })
    }

    /// With grants in etcd, `snap` (just loaded, without grants) with the mirror's
    /// grants compiled against its policy; one that does not validate refuses the load,
    /// as a grants file would.
    pub(super) fn with_store_grants(
        &self,
        snap: Snapshot,
    ) -> Result<Snapshot, crate::core::config::ConfigErrors> {
        match &self.grants_mirror {
            None => Ok(snap),
            Some((mirror, seen)) => {
                let generation = mirror.generation();
                let grants = mirror.compile(&snap.policy, &snap.lists, Utc::now())?;
                seen.store(generation, std::sync::atomic::Ordering::Release);
                Ok(snap.with_grant_set(grants))
            }
        }
    }

    /// Re-reads the grants file (or, with etcd, recompiles the mirror when it has
    /// changed); a set that fails is refused whole and the grants in force stay.
    pub(super) fn reload_grants(&self) {
        let current = self.live.get();
        let next = match &self.grants_mirror {
            None => current.with_grants(),
            Some((mirror, seen)) => {
                self.set_store_gauges();
                let generation = mirror.generation();
                // Only the store's status changed (a probe, a loss): nothing to reload.
                if seen.swap(generation, std::sync::atomic::Ordering::AcqRel) == generation {
                    return;
                }
                mirror
                    .compile(&current.policy, &current.lists, Utc::now())
                    .map(|grants| current.with_grant_set(grants))
            }
        };
        match next {
            Ok(next) => {
                let changes =
                    grant_changes(&current.grants, &next.grants, &next.policy, self.by_hand());
                let active = next.grants.grants.len();
                self.live.replace(next);
                self.set_snapshot_gauges();
                tracing::info!(
                    kind = "grants",
                    result = "ok",
                    grants = active,
                    "reloaded grants"
                );
                self.log
                    .handle
                    .append_nowait(crate::decision_log::Body::Reload {
                        what: ReloadKind::Grants,
                        ok: true,
                        detail: format!("{active} grants"),
                    });
                for change in changes {
                    self.log.handle.append_nowait(change);
                }
            }
            Err(errors) => {
                for e in &errors.0 {
                    tracing::error!(kind = "grants", result = "error", "{e}");
                }
                tracing::error!(
                    kind = "grants",
                    result = "error",
                    "grants file refused; the grants in force stay"
                );
                self.log
                    .handle
                    .append_nowait(crate::decision_log::Body::Reload {
                        what: ReloadKind::Grants,
                        ok: false,
                        detail: errors.to_string(),
                    });
            }
        }
    }

    /// Records grants that have run out since the last check (expiry itself is checked
    /// at every decision; this is the audit trail's note of it).
    pub(super) fn audit_expiries(&self, seen: &mut std::collections::HashSet<Arc<str>>) {
        self.set_snapshot_gauges();
        let now = Utc::now();
        for g in &self.live.get().grants.grants {
            if g.expires <= now && seen.insert(g.id.clone()) {
                self.log
                    .handle
                    .append_nowait(crate::decision_log::Body::Grant {
                        action: GrantEvent::Expired,
                        id: g.id.to_string(),
                        ticket: g.ticket.to_string(),
                        by: g.issued_by.clone(),
                        detail: format!("expired at {}", g.expires.to_rfc3339()),
                    });
            }
        }
    }

    /// Reloads policy and lists; a failure leaves the snapshot in force untouched. The
    /// service manager's status line says how it went.
    pub(super) async fn reload(&self) {
        super::service::reloading();
        let status = self.reload_inner().await;
        super::service::ready(&status);
    }

    async fn reload_inner(&self) -> String {
        let path = self.config.clone();
        let after_load = self.after_load;
        let result = tokio::task::spawn_blocking(move || load_then(&path, after_load))
            .await
            .map(|loaded| loaded.and_then(|snap| self.with_store_grants(snap)));
        match result {
            Ok(Ok(snap)) => {
                let old_listen = self.live.get().settings.server.listen;
                if snap.settings.server.listen != old_listen {
                    tracing::warn!(old = %old_listen, new = %snap.settings.server.listen, "the listen address changes only at restart");
                }
                let old_enrol = self.live.get().settings.inspection.enrol_listen;
                if snap.settings.inspection.enrol_listen != old_enrol {
                    tracing::warn!(old = ?old_enrol, new = ?snap.settings.inspection.enrol_listen, "the enrolment listener changes only at restart");
                }
                if snap.settings.grants_store != self.live.get().settings.grants_store {
                    tracing::warn!("[grants] store and [grants.etcd] change only at restart; the grants store in use stays");
                }
                let entries = snap.lists.domains.len();
                let illegal = crate::snapshot::illegal_counts(&snap);
                let changes = grant_changes(
                    &self.live.get().grants,
                    &snap.grants,
                    &snap.policy,
                    self.by_hand(),
                );
                self.live.replace(snap);
                self.metrics.lists_loaded.set(Utc::now().timestamp());
                self.set_snapshot_gauges();
                // A source added by this reload has its series (at zero) from now.
                self.set_feed_gauges();
                tracing::info!(illegal = %illegal, "illegal lists in force");
                self.log
                    .handle
                    .append_nowait(crate::decision_log::Body::Reload {
                        what: ReloadKind::Policy,
                        ok: true,
                        detail: format!("{entries} domains; illegal lists: {illegal}"),
                    });
                for change in changes {
                    self.log.handle.append_nowait(change);
                }
                tracing::info!(
                    kind = "policy",
                    result = "ok",
                    domains = entries,
                    "reloaded policy and lists"
                );
                format!(
                    "serving; policy and lists reloaded at {} ({entries} domains)",
                    chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
                )
            }
            Ok(Err(errors)) => {
                for e in &errors.0 {
                    tracing::error!(kind = "policy", result = "error", "{e}");
                }
                tracing::error!(
                    kind = "policy",
                    result = "error",
                    "reload refused; the previous policy stays in force"
                );
                // The audit trail has the refusal too, with every problem it named.
                self.log
                    .handle
                    .append_nowait(crate::decision_log::Body::Reload {
                        what: ReloadKind::Policy,
                        ok: false,
                        detail: errors.to_string(),
                    });
                let first = errors.0.first().map(|e| e.to_string()).unwrap_or_default();
                format!(
                    "serving the previous policy: reload at {} refused ({} problem(s); first: {first})",
                    chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC"),
                    errors.0.len()
                )
            }
            Err(e) => {
                tracing::error!(error = %e, "reload task failed");
                "serving the previous policy: the reload task failed".to_string()
            }
        }
    }
}
