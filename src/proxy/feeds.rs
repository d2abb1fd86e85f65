//! List feeds in the running proxy: `POST /api/lists/update` and the in-process
//! schedule (`[lists] update_every`) run [`crate::feeds::update`], record every
//! outcome (decision log, metrics), and swap good lists in through the ordinary reload
//! ([`Proxy::reload`]), so a request sees the old lists or the new ones, never a mix,
//! and on any failure the old lists stay.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Proxy;
use crate::decision_log::{Body, ReloadKind};
use crate::feeds::{FeedState, Options, Outcome, UpdateError, UpdateResult};

/// Why an update did not run.
#[derive(Debug, thiserror::Error)]
pub enum NotRun {
    /// Another update is running (the schedule's, or another caller's).
    #[error("a list update is already running")]
    Busy,
    /// The update could not start.
    #[error("{0}")]
    Update(#[from] UpdateError),
}

impl Proxy {
    /// Updates the feeds `options` names; swaps the lists in if any changed.
    pub(super) async fn update_lists(&self, options: Options) -> Result<Vec<Outcome>, NotRun> {
        let Ok(_running) = self.feeds_running.try_lock() else {
            return Err(NotRun::Busy);
        };
        let snap = self.live.get();
        let outcomes = crate::feeds::update(&self.config, snap, &options).await?;
        let mut swap = false;
        for outcome in &outcomes {
            swap |= outcome.result == UpdateResult::Updated;
            self.metrics
                .list_updates
                .with_label_values(&[outcome.source.as_str(), outcome.result.as_str()])
                .inc();
            let detail = outcome.log_detail();
            if outcome.result.is_success() {
                tracing::info!(kind = "lists", result = outcome.result.as_str(), "{detail}");
            } else {
                tracing::error!(kind = "lists", result = outcome.result.as_str(), "{detail}");
            }
            self.log.handle.append_nowait(Body::Reload {
                what: ReloadKind::Lists,
                ok: outcome.result.is_success(),
                detail,
            });
        }
        self.set_feed_gauges();
        if swap {
            // The files are written and have loaded once already (feeds::apply); the
            // reload takes the start-up path again and swaps the snapshot in one store.
            self.reload().await;
        }
        Ok(outcomes)
    }

    /// Sets each configured source's last-success gauge from the state file (at start,
    /// so that staleness survives a restart, and after every update).
    pub(super) fn set_feed_gauges(&self) {
        let snap = self.live.get();
        let state = FeedState::read(&snap.policy.lists_dir);
        for source in &snap.settings.feeds.sources {
            for result in UpdateResult::ALL {
                self.metrics
                    .list_updates
                    .with_label_values(&[source.name.as_str(), result.as_str()]);
            }
            let last = state
                .sources
                .get(&source.name)
                .and_then(|s| s.last_success)
                .unwrap_or(0);
            self.metrics
                .list_source_last_success
                .with_label_values(&[source.name.as_str()])
                .set(last);
        }
    }
}

/// The in-process schedule: every `[lists] update_every` (read afresh each time, so a
/// reload can turn it on, off or change it), counted from each source's last good
/// update, so a restart does not fetch everything again at once.
pub(super) async fn schedule(proxy: Arc<Proxy>, shutdown: CancellationToken) {
    loop {
        let wait = next_due(&proxy);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
        let snap = proxy.live.get();
        let Some(every) = snap.settings.feeds.update_every else {
            continue;
        };
        let state = FeedState::read(&snap.policy.lists_dir);
        let now = chrono::Utc::now().timestamp();
        for source in &snap.settings.feeds.sources {
            let last = state
                .sources
                .get(&source.name)
                .and_then(|s| s.last_attempt)
                .unwrap_or(0);
            if now - last < every.as_secs() as i64 {
                continue;
            }
            let options = Options {
                only: Some(source.name.clone()),
                allow_shrink: None,
                by: "schedule".into(),
            };
            if let Err(e) = proxy.update_lists(options).await {
                tracing::warn!(source = %source.name, "scheduled list update not run: {e}");
            }
        }
    }
}

/// How long until a source is next due (at most a minute, so a reload that turns the
/// schedule on is noticed).
fn next_due(proxy: &Proxy) -> Duration {
    let snap = proxy.live.get();
    let Some(every) = snap.settings.feeds.update_every else {
        return Duration::from_secs(60);
    };
    let state = FeedState::read(&snap.policy.lists_dir);
    let now = chrono::Utc::now().timestamp();
    let soonest = snap
        .settings
        .feeds
        .sources
        .iter()
        .map(|s| {
            let last = state
                .sources
                .get(&s.name)
                .and_then(|s| s.last_attempt)
                .unwrap_or(0);
            (last + every.as_secs() as i64 - now).max(0) as u64
        })
        .min()
        .unwrap_or(60);
    // A few seconds at least: a source that keeps failing is retried at its interval,
    // not in a loop, and the first run waits for the proxy to settle.
    Duration::from_secs(soonest.clamp(5, 60))
}
