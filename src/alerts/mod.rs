//! Safeguarding alerts to the Designated Safeguarding Lead, in real time.
//!
//! The request path decides nothing here and waits for nothing: once a decision is
//! recorded, [`AlertSender::offer`] hands an [`Attempt`] to a bounded channel with
//! `try_send` (a full channel drops it, counts `gatehouse_alerts_dropped_total` and says
//! so in the log — the decision itself is in the decision log either way). One task
//! owns everything after that:
//!
//! 1. it collapses attempts per person and category ([`Collapser`]): a new alert waits
//!    `gather_secs` for more, later attempts in the window make one follow-up;
//! 2. it writes each alert to the [`outbox`] *before* trying to send it, and rewrites it
//!    as attempts join; `digest` categories add a line to the open digest entry;
//! 3. when an entry is due it sends it on every configured channel ([`send`]) under the
//!    overall rate limit, writes a [`Body::Alert`] entry to the decision log for each
//!    delivery and each failure, and deletes the entry once every channel has it; a
//!    failure is retried with capped exponential back-off ([`backoff`]).
//!
//! At start the task reads the outbox, so alerts owed before a restart or `kill -9` go
//! out. What can be lost is only what sat in the channel when the process died (the
//! decisions themselves are in the decision log). The channels, the retry times and
//! the digest period are read from the live snapshot at each use, so a reload changes
//! them; the outbox directory, the queue size, the gather time, the collapse window and
//! the rate limit are fixed at start.

pub mod outbox;
pub mod send;
pub mod settings;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use tokio::sync::mpsc;

use crate::core::alert::{backoff, shown_url, Alert, Collapser, Digest, Placement, RateLimit};
use crate::core::category::{AlertMode, Severity};
use crate::decision_log::writer::LogHandle;
use crate::decision_log::Body;
use crate::metrics::Metrics;
use crate::snapshot::Live;
use outbox::{Outbox, OutboxEntry, OutboxError, Payload};
use settings::AlertSettings;

/// One decision that should alert, as the request path hands it over.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// When it was decided.
    pub at: DateTime<Utc>,
    /// Its reference (sequence number; 0 if it could not be recorded).
    pub reference: u64,
    /// The client.
    pub client: IpAddr,
    /// The client's device name, where known.
    pub device: Option<String>,
    /// The signed-in user.
    pub user: Option<String>,
    /// The group.
    pub group: String,
    /// The URL as recorded.
    pub url: String,
    /// The category alerted for.
    pub category: String,
    /// Its severity.
    pub severity: Severity,
    /// Immediate or digest.
    pub mode: AlertMode,
    /// Search terms found.
    pub terms: Vec<String>,
    /// `block` or `allow`.
    pub action: &'static str,
}

/// The request path's end of the hand-off.
#[derive(Clone)]
pub struct AlertSender {
    tx: mpsc::Sender<Attempt>,
    metrics: Arc<Metrics>,
}

impl AlertSender {
    /// Hands `attempt` to the alert task without waiting; if the queue is full (or the
    /// task has stopped) it is dropped, counted and logged.
    pub fn offer(&self, attempt: Attempt) {
        if let Err(e) = self.tx.try_send(attempt) {
            self.metrics.alerts_dropped.inc();
            let (why, a) = match e {
                mpsc::error::TrySendError::Full(a) => ("queue full", a),
                mpsc::error::TrySendError::Closed(a) => ("alert task stopped", a),
            };
            tracing::error!(target: "gatehouse::alerts", reference = a.reference, category = %a.category, "alert dropped: {why}");
        }
    }
}

/// Opens the outbox and starts the alert task; the sender is for the request path.
pub fn start(
    live: Arc<Live>,
    log: LogHandle,
    metrics: Arc<Metrics>,
) -> Result<AlertSender, OutboxError> {
    let settings = live.get().settings.alerts.clone();
    let (outbox, loaded) = Outbox::open(&settings.outbox)?;
    let (tx, rx) = mpsc::channel(settings.queue);
    let now = Utc::now().timestamp();
    let mut worker = Worker {
        live,
        log,
        metrics: metrics.clone(),
        outbox,
        next_id: loaded
            .last()
            .map_or(0, |e| e.id)
            .max(Utc::now().timestamp_micros().max(0) as u64)
            + 1,
        digest_open: loaded
            .iter()
            .find(|e| matches!(e.payload, Payload::Digest(_)) && e.due > now)
            .map(|e| e.id),
        entries: loaded.into_iter().map(|e| (e.id, e)).collect(),
        collapser: Collapser::new(
            settings.gather.as_secs() as i64,
            settings.collapse.as_secs() as i64,
        ),
        rate: RateLimit::new(settings.max_per_minute),
    };
    if !worker.entries.is_empty() {
        tracing::info!(target: "gatehouse::alerts", owed = worker.entries.len(), "alerts owed from before the restart");
    }
    worker.gauge();
    tokio::spawn(async move { worker.run(rx).await });
    Ok(AlertSender { tx, metrics })
}

struct Worker {
    live: Arc<Live>,
    log: LogHandle,
    metrics: Arc<Metrics>,
    outbox: Outbox,
    entries: BTreeMap<u64, OutboxEntry>,
    next_id: u64,
    digest_open: Option<u64>,
    collapser: Collapser,
    rate: RateLimit,
}

impl Worker {
    async fn run(&mut self, mut rx: mpsc::Receiver<Attempt>) {
        loop {
            let now = Utc::now().timestamp();
            self.send_due(now).await;
            let now = Utc::now().timestamp();
            let wait = self
                .entries
                .values()
                .map(|e| e.due - now)
                .min()
                .unwrap_or(60)
                .clamp(0, 60);
            let wait = Duration::from_secs(wait as u64).max(Duration::from_millis(250));
            tokio::select! {
                attempt = rx.recv() => match attempt {
                    Some(a) => self.take(a),
                    None => return,
                },
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn settings(&self) -> AlertSettings {
        self.live.get().settings.alerts.clone()
    }

    fn gauge(&self) {
        self.metrics.alerts_outbox.set(self.entries.len() as i64);
    }

    fn save(&mut self, entry: OutboxEntry) {
        if let Err(e) = self.outbox.write(&entry) {
            // Kept in memory and retried; said loudly, since a restart now would lose it.
            tracing::error!(target: "gatehouse::alerts", id = entry.id, "{e}");
        }
        self.entries.insert(entry.id, entry);
        self.gauge();
    }

    fn take(&mut self, a: Attempt) {
        let settings = self.settings();
        if settings.channels().is_empty() {
            tracing::debug!(target: "gatehouse::alerts", category = %a.category, "no alert channel configured");
            return;
        }
        let snap = self.live.get();
        let now = a.at.timestamp();
        let person = a.user.clone().unwrap_or_else(|| "-".into());
        // Without a user the device is the person: anonymous pupils do not share a window.
        let key = a.user.clone().unwrap_or_else(|| a.client.to_string());
        if a.mode == AlertMode::Digest {
            let open = self
                .digest_open
                .and_then(|id| self.entries.get(&id))
                .filter(|e| e.due > now)
                .cloned();
            let mut entry = open.unwrap_or_else(|| {
                let (from, until) = digest_period(settings.digest, &snap.policy.timezone, a.at);
                let id = self.next_id;
                self.next_id += 1;
                OutboxEntry {
                    id,
                    due: until.timestamp(),
                    of: 0,
                    payload: Payload::Digest(Digest {
                        school: snap.policy.school.clone(),
                        timezone: snap.policy.timezone.name().to_string(),
                        from,
                        until,
                        lines: Vec::new(),
                    }),
                    sent: Vec::new(),
                    failures: 0,
                }
            });
            if let Payload::Digest(d) = &mut entry.payload {
                d.add(
                    &person,
                    &a.group,
                    &a.client.to_string(),
                    a.device.as_deref(),
                    &a.category,
                );
            }
            self.digest_open = Some(entry.id);
            self.save(entry);
            return;
        }
        self.collapser.prune(now);
        let placed = self.collapser.place(&key, &a.category, now);
        if let Placement::Join(id) = placed {
            if let Some(mut entry) = self.entries.get(&id).cloned() {
                if let Payload::Alert(alert) = &mut entry.payload {
                    alert.attempts += 1;
                    alert.last = alert.last.max(a.at);
                    for t in &a.terms {
                        if !alert.terms.contains(t) {
                            alert.terms.push(t.clone());
                        }
                    }
                }
                self.save(entry);
                return;
            }
        }
        let (due, follow_up) = match placed {
            Placement::New { due, follow_up } => (due, follow_up),
            Placement::Join(_) => (now + settings.gather.as_secs() as i64, false),
        };
        let id = self.next_id;
        self.next_id += 1;
        let alert = Alert {
            school: snap.policy.school.clone(),
            person,
            group: a.group.clone(),
            client: a.client.to_string(),
            device: a.device.clone(),
            first: a.at,
            last: a.at,
            timezone: snap.policy.timezone.name().to_string(),
            url: shown_url(&a.url, a.severity),
            category: a.category.clone(),
            severity: a.severity.as_str().to_string(),
            terms: a.terms.clone(),
            action: a.action.to_string(),
            reference: if a.reference == 0 {
                "unrecorded".into()
            } else {
                crate::decision::format_reference(a.reference)
            },
            attempts: 1,
            follow_up,
            test: false,
        };
        self.collapser.opened(&key, &a.category, id, due);
        self.save(OutboxEntry {
            id,
            due,
            of: a.reference,
            payload: Payload::Alert(alert),
            sent: Vec::new(),
            failures: 0,
        });
    }

    /// Sends every entry that is due: fresh alerts before retries, each entry's channels
    /// at once (one channel's outage does not hold up the other), and a channel that
    /// failed in this pass is not tried again for the other entries until the next
    /// pass, so a mail server that hangs costs one timeout per pass, not one per alert.
    async fn send_due(&mut self, now: i64) {
        let mut due: Vec<(u32, u64)> = self
            .entries
            .values()
            .filter(|e| e.due <= now)
            .map(|e| (e.failures, e.id))
            .collect();
        due.sort_unstable();
        let mut down: Vec<&'static str> = Vec::new();
        for (_, id) in due {
            let Some(mut entry) = self.entries.get(&id).cloned() else {
                continue;
            };
            let settings = self.settings();
            let owed: Vec<&'static str> = settings
                .channels()
                .into_iter()
                .filter(|c| !entry.sent.iter().any(|s| s == c))
                .collect();
            let now_owed: Vec<&'static str> =
                owed.iter().copied().filter(|c| !down.contains(c)).collect();
            if now_owed.is_empty() && !owed.is_empty() {
                // Its channel just failed for another alert: try again next pass.
                entry.due = now + settings.retry_initial.as_secs() as i64;
                self.save(entry);
                continue;
            }
            if let Err(free_at) = self.rate.admit(now) {
                entry.due = free_at;
                self.save(entry);
                continue;
            }
            let timestamp = Utc::now().timestamp();
            let email = async {
                match (&settings.email, now_owed.contains(&"email")) {
                    (Some(e), true) => Some(send::email(e, &entry.payload).await),
                    _ => None,
                }
            };
            let webhook = async {
                match (&settings.webhook, now_owed.contains(&"webhook")) {
                    (Some(w), true) => Some(send::webhook(w, id, timestamp, &entry.payload).await),
                    _ => None,
                }
            };
            let (email, webhook) = tokio::join!(email, webhook);
            let mut failed = false;
            for (channel, result) in [("email", email), ("webhook", webhook)] {
                let Some(result) = result else { continue };
                let (subject, _) = send::words(&entry.payload);
                let detail = match &result {
                    Ok(()) => match &entry.payload {
                        Payload::Alert(a) => format!("{} attempts", a.attempts),
                        Payload::Digest(d) => format!("{} lines", d.lines.len()),
                    },
                    Err(e) => e.to_string(),
                };
                let sent = result.is_ok();
                if sent {
                    self.metrics.alerts_sent.with_label_values(&[channel]).inc();
                    entry.sent.push(channel.to_string());
                    tracing::info!(target: "gatehouse::alerts", id, channel, "{subject}");
                } else {
                    failed = true;
                    down.push(channel);
                    self.metrics
                        .alerts_failed
                        .with_label_values(&[channel])
                        .inc();
                    tracing::warn!(target: "gatehouse::alerts", id, channel, attempt = entry.failures + 1, "alert not delivered, will retry: {detail}");
                }
                let _ = self
                    .log
                    .append(Body::Alert {
                        id,
                        channel: channel.to_string(),
                        sent,
                        attempt: entry.failures + 1,
                        subject,
                        of: entry.of,
                        detail,
                    })
                    .await;
            }
            // Owed on a channel that was down this pass, but not tried: not done yet.
            let untried = owed.len() > now_owed.len();
            if failed || untried {
                if failed {
                    entry.failures += 1;
                }
                let wait = backoff(
                    entry.failures.max(1),
                    settings.retry_initial.as_secs(),
                    settings.retry_max.as_secs(),
                );
                entry.due = Utc::now().timestamp() + wait as i64;
                self.save(entry);
            } else {
                if let Err(e) = self.outbox.remove(id) {
                    tracing::error!(target: "gatehouse::alerts", id, "{e}");
                }
                self.entries.remove(&id);
                if self.digest_open == Some(id) {
                    self.digest_open = None;
                }
                self.gauge();
            }
        }
    }
}

/// The digest period holding `at`: the hour, or the school's day (midnight to midnight
/// in its time zone).
fn digest_period(
    period: settings::DigestPeriod,
    tz: &chrono_tz::Tz,
    at: DateTime<Utc>,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let local = at.with_timezone(tz);
    let start = match period {
        settings::DigestPeriod::Hourly => {
            local
                .date_naive()
                .and_hms_opt(chrono::Timelike::hour(&local), 0, 0)
        }
        settings::DigestPeriod::Daily => local.date_naive().and_hms_opt(0, 0, 0),
    };
    let start = start
        .and_then(|s| tz.from_local_datetime(&s).earliest())
        .map_or(at, |s| s.with_timezone(&Utc));
    let length = match period {
        settings::DigestPeriod::Hourly => chrono::Duration::hours(1),
        settings::DigestPeriod::Daily => chrono::Duration::days(1),
    };
    (start, start + length)
}

/// A test alert through every configured channel, for `gatehouse alerts test`: each
/// channel's name and what happened.
pub async fn send_test(
    settings: &AlertSettings,
    school: &str,
    tz: &chrono_tz::Tz,
) -> Vec<(&'static str, Result<(), send::SendError>)> {
    let now = Utc::now();
    let payload = Payload::Alert(Alert {
        school: school.to_string(),
        person: "-".into(),
        group: "-".into(),
        client: "-".into(),
        device: None,
        first: now,
        last: now,
        timezone: tz.name().to_string(),
        url: "http://gatehouse.invalid/test".into(),
        category: "test".into(),
        severity: "test".into(),
        terms: Vec::new(),
        action: "none".into(),
        reference: "-".into(),
        attempts: 1,
        follow_up: false,
        test: true,
    });
    let mut out = Vec::new();
    if let Some(e) = &settings.email {
        out.push(("email", send::email(e, &payload).await));
    }
    if let Some(w) = &settings.webhook {
        out.push((
            "webhook",
            send::webhook(w, 0, now.timestamp(), &payload).await,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let metrics = Arc::new(Metrics::new());
        let (tx, rx) = mpsc::channel(1);
        let sender = AlertSender {
            tx,
            metrics: metrics.clone(),
        };
        let attempt = Attempt {
            at: Utc::now(),
            reference: 1,
            client: "10.0.0.1".parse().expect("ip"),
            device: None,
            user: None,
            group: "ks3".into(),
            url: "http://a.test/".into(),
            category: "self-harm".into(),
            severity: Severity::Safeguarding,
            mode: AlertMode::Immediate,
            terms: vec![],
            action: "block",
        };
        sender.offer(attempt.clone());
        assert_eq!(metrics.alerts_dropped.get(), 0);
        sender.offer(attempt.clone());
        assert_eq!(metrics.alerts_dropped.get(), 1, "full: dropped, counted");
        drop(rx);
        sender.offer(attempt);
        assert_eq!(metrics.alerts_dropped.get(), 2, "stopped: dropped, counted");
    }

    /// A worker on a policy in a temporary directory whose channels point at a closed
    /// port, and its log's directory.
    fn worker(dir: &std::path::Path) -> Worker {
        let smtp = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a port")
            .port();
        std::fs::create_dir_all(dir.join("lists/gambling")).expect("lists");
        std::fs::write(dir.join("lists/gambling/domains"), "bet.test\n").expect("list");
        std::fs::write(
            dir.join("policy.toml"),
            format!(
                "[school]\nname = \"S\"\n[lists]\ndir = \"lists\"\n[categories.gambling]\nseverity = \"inappropriate\"\nalert = \"digest\"\n[identity]\ndefault_group = \"g\"\n[groups.g]\nmode = \"blocklist\"\n[alerts]\noutbox = \"outbox\"\ndigest = \"hourly\"\nretry_initial_secs = 7\n[alerts.email]\nserver = \"127.0.0.1\"\nport = {smtp}\ntls = \"none\"\nfrom = \"gh@s.test\"\nto = [\"dsl@s.test\"]\n"
            ),
        )
        .expect("policy");
        let snap = crate::snapshot::load(&dir.join("policy.toml"), crate::lists::CacheMode::Off)
            .expect("loads");
        let log = crate::decision_log::writer::open(crate::decision_log::writer::LogSettings {
            dir: dir.join("log"),
            node: "test".into(),
            fsync_interval: Duration::from_millis(100),
            segment_bytes: 64 << 20,
            queue: 1024,
            retention_days: 0,
        })
        .expect("log opens");
        let (outbox, _) = Outbox::open(&dir.join("outbox")).expect("outbox");
        Worker {
            live: Arc::new(Live::new(snap)),
            log,
            metrics: Arc::new(Metrics::new()),
            outbox,
            entries: BTreeMap::new(),
            next_id: 1,
            digest_open: None,
            collapser: Collapser::new(5, 600),
            rate: RateLimit::new(30),
        }
    }

    #[tokio::test]
    async fn digest_attempts_gather_in_one_entry_until_the_period_ends() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut w = worker(dir.path());
        let at = |s: &str| s.parse::<DateTime<Utc>>().expect("time");
        let attempt = |client: &str, when: &str| Attempt {
            at: at(when),
            reference: 3,
            client: client.parse().expect("ip"),
            device: None,
            user: None,
            group: "g".into(),
            url: "http://bet.test/".into(),
            category: "gambling".into(),
            severity: Severity::Inappropriate,
            mode: AlertMode::Digest,
            terms: vec![],
            action: "block",
        };
        w.take(attempt("10.0.0.1", "2026-07-01T09:05:00Z"));
        w.take(attempt("10.0.0.1", "2026-07-01T09:06:00Z"));
        w.take(attempt("10.0.0.2", "2026-07-01T09:07:00Z"));
        assert_eq!(w.entries.len(), 1, "one digest for the hour");
        let entry = w.entries.values().next().cloned().expect("the digest");
        // Due at the end of the school's hour: 09:05 UTC is 10:05 BST, whose hour ends at
        // 11:00 BST, 10:00 UTC.
        assert_eq!(entry.due, at("2026-07-01T10:00:00Z").timestamp());
        let Payload::Digest(d) = &entry.payload else {
            panic!("{entry:?}")
        };
        let counts: Vec<(&str, u32)> = d
            .lines
            .iter()
            .map(|l| (l.client.as_str(), l.attempts))
            .collect();
        assert_eq!(counts, [("10.0.0.1", 2), ("10.0.0.2", 1)]);
        // It is on disk, as it stands.
        let (_, on_disk) = Outbox::open(&dir.path().join("outbox")).expect("reopens");
        assert_eq!(on_disk, std::slice::from_ref(&entry));
        // The next hour starts another.
        w.take(attempt("10.0.0.1", "2026-07-01T10:01:00Z"));
        assert_eq!(w.entries.len(), 2);
        // Not due before the hour ends; at its end the send fails (nothing listens) and
        // the entry waits with its back-off, recorded in the log.
        w.send_due(entry.due - 1).await;
        assert_eq!(w.entries[&entry.id].failures, 0);
        w.send_due(entry.due).await;
        let after = &w.entries[&entry.id];
        assert_eq!(after.failures, 1);
        assert!(after.due >= Utc::now().timestamp() + 6, "back-off of 7 s");
        assert_eq!(
            w.metrics.alerts_failed.with_label_values(&["email"]).get(),
            1
        );
        w.log.close().await;
        let failures: Vec<(u64, bool)> =
            crate::decision_log::reader::entries(&dir.path().join("log"))
                .expect("log reads")
                .filter_map(|(_, e)| match e.body {
                    Body::Alert { id, sent, .. } => Some((id, sent)),
                    _ => None,
                })
                .collect();
        assert_eq!(failures, [(entry.id, false)]);
    }

    #[test]
    fn digest_periods_follow_school_time() {
        let tz = chrono_tz::Europe::London;
        let at: DateTime<Utc> = "2026-07-01T09:15:00Z".parse().expect("time");
        let (from, until) = digest_period(settings::DigestPeriod::Hourly, &tz, at);
        assert_eq!(from.to_rfc3339(), "2026-07-01T09:00:00+00:00");
        assert_eq!(until.to_rfc3339(), "2026-07-01T10:00:00+00:00");
        // Midnight BST is 23:00 UTC the day before.
        let (from, until) = digest_period(settings::DigestPeriod::Daily, &tz, at);
        assert_eq!(from.to_rfc3339(), "2026-06-30T23:00:00+00:00");
        assert_eq!(until.to_rfc3339(), "2026-07-01T23:00:00+00:00");
    }
}
