//! The single writer of the decision log.
//!
//! One thread owns the open segment. The request path sends it entries over a bounded
//! queue and, for decisions, waits for its acknowledgement: the writer takes every entry
//! waiting (group write), frames them into one buffer, hands the buffer to the operating
//! system with one `write`, and only then acknowledges each with its sequence number. So
//! a `kill -9` loses no acknowledged decision; `fsync` runs on a timer (default every
//! 100 ms) and at shutdown, after a seal entry, so a power cut loses at most that window.
//!
//! The timed `fsync` runs on a thread of its own ([`Syncer`]), on a shared handle to the
//! segment: on a busy disk one takes 5–15 ms, and while the writer itself waited in it no
//! entry was acknowledged, so every request arriving in that time stalled behind it.
//! Appends go on while the disk syncs; the seal written before each sync still marks what
//! that sync covers. At shutdown the writer waits for the syncer and syncs in line.
//!
//! When a write fails (disk full, file-size limit, I/O error) the partial bytes are cut
//! off, the batch is refused (the proxy then fails closed for the groups configured to),
//! and every later batch tries again: the condition clears itself when writing works.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, Utc};
use tokio::sync::{mpsc, oneshot};

use super::reader::{list_segments, scan_tail};
use super::{chain_next, frame, genesis, segment_name, Body, SegmentHeader};

pub use crate::policy::LogSettings;

/// Why an entry was not logged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// The log cannot be written now.
    #[error("the decision log cannot be written: {0}")]
    Unavailable(String),
}

/// Counters and state shared with metrics and the proxy.
#[derive(Debug, Default)]
pub struct LogStats {
    /// Entries written.
    pub written: AtomicU64,
    /// Failed writes.
    pub write_failures: AtomicU64,
    /// Entries that could not be logged.
    pub lost: AtomicU64,
    /// Whether the log is failing now.
    pub failing: AtomicBool,
    /// Torn or corrupt tails cut off at start.
    pub tails_repaired: AtomicU64,
    /// Last fsync duration in microseconds.
    pub last_fsync_us: AtomicU64,
    /// fsyncs done.
    pub fsyncs: AtomicU64,
}

/// Where the writer acknowledges an entry.
type Ack = oneshot::Sender<Result<u64, LogError>>;
/// An entry waiting to be written: body, time, acknowledgement.
type Pending = (Body, i64, Option<Ack>);

// Entries travel by value through the queue's slots: boxing each would cost an
// allocation per request for no gain.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Entry(Body, i64, Option<Ack>),
    Tick,
    Shutdown(oneshot::Sender<()>),
}

/// An [`Entry`] that borrows its body, for encoding: serde writes a struct as its fields
/// in order, so this encodes to exactly the bytes of the owned `Entry`.
#[derive(serde::Serialize)]
struct EntryRef<'a> {
    seq: u64,
    time_us: i64,
    body: &'a Body,
}

/// The request path's handle on the writer.
#[derive(Clone)]
pub struct LogHandle {
    tx: mpsc::Sender<Msg>,
    /// Counters.
    pub stats: Arc<LogStats>,
    queue_timeout: Duration,
}

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

impl LogHandle {
    /// Appends an entry and waits until it is with the operating system; its sequence
    /// number.
    pub async fn append(&self, body: Body) -> Result<u64, LogError> {
        let (tx, rx) = oneshot::channel();
        let msg = Msg::Entry(body, now_us(), Some(tx));
        if self.tx.send_timeout(msg, self.queue_timeout).await.is_err() {
            self.stats.lost.fetch_add(1, Ordering::Relaxed);
            self.stats.failing.store(true, Ordering::Relaxed);
            return Err(LogError::Unavailable(
                "the writer's queue stayed full".into(),
            ));
        }
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(LogError::Unavailable("the writer stopped".into())),
        }
    }

    /// Appends an entry without waiting (completions). Counted as lost if the queue is
    /// full.
    pub fn append_nowait(&self, body: Body) {
        if self.tx.try_send(Msg::Entry(body, now_us(), None)).is_err() {
            self.stats.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Entries waiting for the writer.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Seals, fsyncs and stops the writer.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

struct Writer {
    settings: LogSettings,
    stats: Arc<LogStats>,
    /// Shared with the syncer, which fsyncs it while the writer goes on appending.
    file: Arc<File>,
    path: PathBuf,
    len: u64,
    next_seq: u64,
    chain: [u8; 32],
    day: (i32, u32),
    dirty: bool,
    last_fsync: Instant,
    last_retention: Instant,
    /// Where timed fsyncs go; `None` syncs in line (at start, and when the thread could
    /// not be started).
    syncer: Option<Syncer>,
}

/// Work for the sync thread.
enum SyncJob {
    /// `fdatasync` this segment.
    File(Arc<File>),
    /// `fsync` this directory (a new segment's name).
    Dir(PathBuf),
    /// Answer when everything sent before has been done.
    Barrier(std_mpsc::SyncSender<()>),
}

/// The thread that fsyncs segments so the writer never waits for the disk.
#[derive(Clone)]
struct Syncer {
    tx: std_mpsc::Sender<SyncJob>,
    /// Set when an fsync failed; the next tick asks again even with nothing new written.
    failed: Arc<AtomicBool>,
}

impl Syncer {
    fn start(stats: Arc<LogStats>) -> std::io::Result<Syncer> {
        let (tx, rx) = std_mpsc::channel::<SyncJob>();
        let failed = Arc::new(AtomicBool::new(false));
        let flag = failed.clone();
        std::thread::Builder::new()
            .name("gatehouse-log-sync".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    // Jobs that queued up while the last sync ran are done together; a
                    // segment asked for twice is synced once.
                    let mut jobs = vec![job];
                    jobs.extend(rx.try_iter());
                    let mut synced: Vec<Arc<File>> = Vec::new();
                    for job in jobs {
                        match job {
                            SyncJob::File(f) => {
                                if synced.iter().any(|s| Arc::ptr_eq(s, &f)) {
                                    continue;
                                }
                                let started = Instant::now();
                                match f.sync_data() {
                                    Ok(()) => {
                                        flag.store(false, Ordering::Relaxed);
                                        stats.fsyncs.fetch_add(1, Ordering::Relaxed);
                                        stats.last_fsync_us.store(
                                            started.elapsed().as_micros() as u64,
                                            Ordering::Relaxed,
                                        );
                                    }
                                    Err(e) => {
                                        flag.store(true, Ordering::Relaxed);
                                        tracing::error!(kind = "decision_log", error = %e, "decision log fsync failed; trying again at the next interval");
                                    }
                                }
                                synced.push(f);
                            }
                            SyncJob::Dir(dir) => {
                                if let Ok(d) = File::open(&dir) {
                                    let _ = d.sync_all();
                                }
                            }
                            SyncJob::Barrier(done) => {
                                let _ = done.send(());
                            }
                        }
                    }
                }
            })?;
        Ok(Syncer { tx, failed })
    }

    /// Queues a job; false if the thread is gone (the caller then syncs in line).
    fn send(&self, job: SyncJob) -> bool {
        self.tx.send(job).is_ok()
    }

    /// Waits until everything queued so far is done.
    fn drain(&self) {
        let (tx, rx) = std_mpsc::sync_channel(1);
        if self.send(SyncJob::Barrier(tx)) {
            let _ = rx.recv();
        }
    }
}

/// Opens (or creates) the log, repairs a torn tail, and starts the writer thread.
pub fn open(settings: LogSettings) -> Result<LogHandle, String> {
    std::fs::create_dir_all(&settings.dir)
        .map_err(|e| format!("{}: {e}", settings.dir.display()))?;
    let stats = Arc::new(LogStats::default());
    let mut writer = Writer::open(settings.clone(), stats.clone())?;
    match Syncer::start(stats.clone()) {
        Ok(s) => writer.syncer = Some(s),
        Err(e) => {
            tracing::warn!(kind = "decision_log", error = %e, "no sync thread; the writer fsyncs in line")
        }
    }
    let (tx, mut rx) = mpsc::channel::<Msg>(settings.queue.max(16));
    // The timer only turns time into messages; the writer does the work.
    {
        let tx = tx.clone();
        let interval = settings.fsync_interval;
        std::thread::Builder::new()
            .name("gatehouse-log-tick".into())
            .spawn(move || loop {
                std::thread::sleep(interval);
                if tx.blocking_send(Msg::Tick).is_err() {
                    return;
                }
            })
            .map_err(|e| e.to_string())?;
    }
    writer.append_batch(&mut vec![(
        Body::Start {
            version: env!("CARGO_PKG_VERSION").to_string(),
        },
        now_us(),
        None,
    )]);
    std::thread::Builder::new()
        .name("gatehouse-log".into())
        .spawn(move || {
            batch_scheduling();
            let mut batch = Vec::with_capacity(1024);
            while let Some(first) = rx.blocking_recv() {
                let mut tick = false;
                let mut shutdown = None;
                let mut push = |m: Msg, batch: &mut Vec<_>| match m {
                    Msg::Entry(body, t, ack) => batch.push((body, t, ack)),
                    Msg::Tick => tick = true,
                    Msg::Shutdown(done) => shutdown = Some(done),
                };
                push(first, &mut batch);
                // Let the request threads add what they have ready before writing: on a
                // busy (or single) core this turns a thread switch per record into one
                // per batch.
                std::thread::yield_now();
                while batch.len() < 4096 {
                    match rx.try_recv() {
                        Ok(m) => push(m, &mut batch),
                        Err(_) => break,
                    }
                }
                if !batch.is_empty() {
                    // Drained, not handed over: the batch keeps its capacity, where a fresh
                    // vector per batch regrew (and moved every entry) several times.
                    writer.append_batch(&mut batch);
                }
                if tick || shutdown.is_some() {
                    writer.maintain(shutdown.is_some());
                }
                if let Some(done) = shutdown {
                    let _ = done.send(());
                    return;
                }
            }
            writer.maintain(true);
        })
        .map_err(|e| e.to_string())?;
    Ok(LogHandle {
        tx,
        stats,
        queue_timeout: settings.queue_timeout,
    })
}

/// Marks the calling thread `SCHED_BATCH`: a record handed to the writer then does not
/// preempt the request thread that handed it over. The writer runs when that thread
/// waits (or on another core), and finds a batch instead of one record. On one busy core
/// this halved the context switches per request. Best effort: without it the log is
/// only slower.
fn batch_scheduling() {
    // SAFETY: plain system call on the calling thread with a valid parameter block.
    let param = libc::sched_param { sched_priority: 0 };
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "decision log writer: SCHED_BATCH not set");
    }
}

fn utc_day(us: i64) -> (i32, u32) {
    let t = DateTime::<Utc>::from_timestamp_micros(us).unwrap_or_default();
    (t.year(), t.ordinal())
}

impl Writer {
    fn open(settings: LogSettings, stats: Arc<LogStats>) -> Result<Writer, String> {
        let dir = settings.dir.clone();
        loop {
            let segments = list_segments(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let Some(last) = segments.last() else {
                let node = settings.node.clone();
                return Writer::create(settings, stats, 1, genesis(&node), None);
            };
            match scan_tail(last) {
                Ok(tail) => {
                    if let Some(damage) = &tail.damage {
                        tracing::warn!(segment = %last.display(), cut_at = tail.good_len, "decision log tail damaged ({damage}); cutting it off");
                        stats.tails_repaired.fetch_add(1, Ordering::Relaxed);
                    }
                    let file = OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(last)
                        .map_err(|e| format!("{}: {e}", last.display()))?;
                    file.set_len(tail.good_len)
                        .map_err(|e| format!("{}: {e}", last.display()))?;
                    file.sync_all()
                        .map_err(|e| format!("{}: {e}", last.display()))?;
                    let mut file = file;
                    use std::io::Seek;
                    file.seek(std::io::SeekFrom::End(0))
                        .map_err(|e| e.to_string())?;
                    return Ok(Writer {
                        day: utc_day(tail.last_time_us),
                        settings,
                        stats,
                        file: Arc::new(file),
                        path: last.clone(),
                        len: tail.good_len,
                        next_seq: tail.last_seq + 1,
                        chain: tail.chain,
                        dirty: false,
                        last_fsync: Instant::now(),
                        last_retention: Instant::now() - Duration::from_secs(24 * 3600),
                        syncer: None,
                    });
                }
                Err(e) => {
                    // A segment whose header never made it to disk whole holds nothing:
                    // set it aside and continue from the one before.
                    let aside = last.with_extension("ghlog.damaged");
                    tracing::warn!(segment = %last.display(), "decision log segment unreadable ({e}); moved to {}", aside.display());
                    std::fs::rename(last, &aside)
                        .map_err(|e| format!("{}: {e}", last.display()))?;
                    stats.tails_repaired.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn create(
        settings: LogSettings,
        stats: Arc<LogStats>,
        first_seq: u64,
        prev_chain: [u8; 32],
        syncer: Option<Syncer>,
    ) -> Result<Writer, String> {
        let path = settings.dir.join(segment_name(first_seq));
        let created_us = now_us();
        let header = SegmentHeader {
            node: settings.node.clone(),
            first_seq,
            prev_chain,
            created_us,
        }
        .encode();
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        file.write_all(&header)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let file = Arc::new(file);
        // A segment started while running (a roll) is made durable by the syncer, with
        // its directory entry; the one started at first start, in line.
        let queued = syncer.as_ref().is_some_and(|s| {
            s.send(SyncJob::File(file.clone())) && s.send(SyncJob::Dir(settings.dir.clone()))
        });
        if !queued {
            file.sync_all()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if let Ok(d) = File::open(&settings.dir) {
                let _ = d.sync_all();
            }
        }
        Ok(Writer {
            day: utc_day(created_us),
            settings,
            stats,
            file,
            path,
            len: header.len() as u64,
            next_seq: first_seq,
            chain: prev_chain,
            dirty: false,
            last_fsync: Instant::now(),
            last_retention: Instant::now() - Duration::from_secs(24 * 3600),
            syncer,
        })
    }

    /// Starts a new segment first if this one is full or from another day, then writes.
    /// Writes and acknowledges the entries in `batch`, leaving it empty.
    fn append_batch(&mut self, batch: &mut Vec<Pending>) {
        if let Some((_, t, _)) = batch.first() {
            if self.len >= self.settings.segment_bytes || utc_day(*t) != self.day {
                self.roll();
            }
        }
        self.write_batch(batch);
    }

    /// Frames and writes a batch in one `write`, then acknowledges it.
    fn write_batch(&mut self, batch: &mut Vec<Pending>) {
        let mut buf = Vec::with_capacity(batch.len() * 128);
        let (start_seq, start_chain) = (self.next_seq, self.chain);
        let mut seqs = Vec::with_capacity(batch.len());
        let mut payload = Vec::with_capacity(256);
        for (body, time_us, _) in batch.iter() {
            // Encoded from a borrow of the body (the same bytes as an `Entry`), into one
            // reused buffer: no copy of the record's strings per entry.
            let entry = EntryRef {
                seq: self.next_seq,
                time_us: *time_us,
                body,
            };
            payload.clear();
            let Ok(encoded) = postcard::to_extend(&entry, std::mem::take(&mut payload)) else {
                seqs.push(None);
                continue;
            };
            payload = encoded;
            frame(&payload, &mut buf);
            self.chain = chain_next(&self.chain, &payload);
            seqs.push(Some(self.next_seq));
            self.next_seq += 1;
        }
        match (&*self.file).write_all(&buf) {
            Ok(()) => {
                self.len += buf.len() as u64;
                self.dirty = true;
                self.stats
                    .written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                if self.stats.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(kind = "decision_log", "decision log writable again");
                }
                for ((_, _, ack), seq) in batch.drain(..).zip(seqs) {
                    if let Some(ack) = ack {
                        let _ = ack.send(seq.ok_or_else(|| {
                            LogError::Unavailable("entry could not be encoded".into())
                        }));
                    }
                }
            }
            Err(e) => {
                // Cut off whatever part of the batch reached the file, so the log never
                // holds half an entry, and refuse the whole batch.
                let _ = self.file.set_len(self.len);
                self.next_seq = start_seq;
                self.chain = start_chain;
                self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .lost
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                if !self.stats.failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(kind = "decision_log", error = %e, segment = %self.path.display(), "decision log write failed; failing closed for the groups configured to");
                }
                let err = LogError::Unavailable(e.to_string());
                for (_, _, ack) in batch.drain(..) {
                    if let Some(ack) = ack {
                        let _ = ack.send(Err(err.clone()));
                    }
                }
            }
        }
    }

    /// Seal and fsync when due (or at shutdown); apply retention once an hour.
    fn maintain(&mut self, closing: bool) {
        let retry = self
            .syncer
            .as_ref()
            .is_some_and(|s| s.failed.load(Ordering::Relaxed));
        if (self.dirty || retry)
            && (closing || self.last_fsync.elapsed() >= self.settings.fsync_interval)
        {
            self.seal_and_sync(closing);
        }
        if self.settings.retention_days > 0
            && self.last_retention.elapsed() >= Duration::from_secs(3600)
        {
            self.last_retention = Instant::now();
            self.retention();
        }
    }

    /// Writes a seal and syncs the segment: on the syncer, or with `in_line` (shutdown)
    /// here, after everything queued on the syncer is done.
    fn seal_and_sync(&mut self, in_line: bool) {
        let seal = Body::Seal { chain: self.chain };
        self.write_batch(&mut vec![(seal, now_us(), None)]);
        if let Some(syncer) = &self.syncer {
            if in_line {
                syncer.drain();
            } else if syncer.send(SyncJob::File(self.file.clone())) {
                self.dirty = false;
                self.last_fsync = Instant::now();
                return;
            }
        }
        let started = Instant::now();
        if self.file.sync_data().is_ok() {
            self.dirty = false;
            self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
            self.stats
                .last_fsync_us
                .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        self.last_fsync = Instant::now();
    }

    fn roll(&mut self) {
        self.seal_and_sync(false);
        match Writer::create(
            self.settings.clone(),
            self.stats.clone(),
            self.next_seq,
            self.chain,
            self.syncer.clone(),
        ) {
            Ok(next) => *self = next,
            Err(e) => {
                self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(kind = "decision_log", error = %e, "cannot start a new decision-log segment; continuing in the current one");
            }
        }
    }

    /// Deletes whole segments older than the retention period (never the open one) and
    /// records what it deleted.
    fn retention(&mut self) {
        let cutoff = std::time::SystemTime::now()
            - Duration::from_secs(u64::from(self.settings.retention_days) * 86_400);
        let Ok(segments) = list_segments(&self.settings.dir) else {
            return;
        };
        let mut deleted = Vec::new();
        // A segment's last write time is when its newest entry was written.
        for path in segments.iter().filter(|p| **p != self.path) {
            let old = std::fs::metadata(path)
                .and_then(|m| m.modified())
                .map(|t| t < cutoff)
                .unwrap_or(false);
            if !old {
                break; // segments are in order: the rest are newer
            }
            if std::fs::remove_file(path).is_ok() {
                deleted.push(
                    path.file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or("?")
                        .to_string(),
                );
            }
        }
        if !deleted.is_empty() {
            tracing::info!(
                kind = "decision_log",
                segments = deleted.len(),
                "retention deleted old segments"
            );
            self.append_batch(&mut vec![(Body::Retention { deleted }, now_us(), None)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision_log::Entry;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn timed_fsyncs_and_rolls_run_on_the_sync_thread_and_the_chain_holds() {
        let dir = tempfile::tempdir().expect("dir");
        let settings = LogSettings {
            dir: dir.path().to_path_buf(),
            node: "test".into(),
            fsync_interval: Duration::from_millis(5),
            segment_bytes: 64 * 1024,
            queue: 1024,
            queue_timeout: Duration::from_secs(2),
            retention_days: 0,
        };
        let log = open(settings).expect("open");
        let mut seqs = Vec::new();
        for i in 0..3000u64 {
            let seq = log
                .append(Body::Completion {
                    of: i,
                    status: 200,
                    bytes_up: i,
                    bytes_down: i,
                    duration_us: i,
                })
                .await
                .expect("acknowledged");
            seqs.push(seq);
            if i % 500 == 0 {
                tokio::time::sleep(Duration::from_millis(12)).await;
            }
        }
        // Every acknowledgement came back in order while the syncer worked (seals take
        // sequence numbers between them).
        assert!(seqs.windows(2).all(|w| w[1] > w[0]));
        let timed = log.stats.fsyncs.load(Ordering::Relaxed);
        assert!(timed > 0, "the sync thread ran");
        log.close().await;
        let segments = list_segments(dir.path()).expect("segments");
        assert!(segments.len() > 1, "the log rolled: {segments:?}");
        let report = super::super::reader::verify(dir.path()).expect("verify");
        assert_eq!(report.fault, None);
        assert!(report.seals > segments.len() as u64, "{report:?}");
    }

    #[test]
    fn a_borrowed_entry_encodes_as_the_owned_one() {
        let bodies = [
            Body::Start {
                version: "1.2.3".into(),
            },
            Body::Seal { chain: [7; 32] },
            Body::Completion {
                of: 9,
                status: 200,
                bytes_up: 1,
                bytes_down: 2,
                duration_us: 3,
            },
            Body::Decision(crate::decision_log::Decision {
                client: std::net::IpAddr::from([10, 0, 0, 1]),
                user: Some("pupil".into()),
                group: "ks2".into(),
                method: "GET".into(),
                url: "http://example.com/".into(),
                sni: None,
                categories: vec!["games".into()],
                action: crate::decision_log::StoredAction::Block,
                reason: "category".into(),
                grant: None,
                status: 403,
                terms: vec![],
            }),
        ];
        for body in bodies {
            let owned = postcard::to_stdvec(&Entry {
                seq: 42,
                time_us: -5,
                body: body.clone(),
            })
            .expect("owned");
            let borrowed = postcard::to_stdvec(&EntryRef {
                seq: 42,
                time_us: -5,
                body: &body,
            })
            .expect("borrowed");
            assert_eq!(owned, borrowed, "{body:?}");
        }
    }
}
