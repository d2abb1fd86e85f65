//! The single writer of the decision log.
//!
//! One `Writer` owns the open segment, behind a lock. Requests queue their entries and,
//! for decisions, wait for an acknowledgement. The first request to queue an entry leads
//! a group write: it lets the other ready requests queue theirs, then takes every entry
//! waiting, frames them into one buffer, hands the buffer to the operating system with
//! one `write`, and only then acknowledges each with its sequence number. So a `kill -9`
//! loses no acknowledged decision; `fsync` runs on a timer (default every 100 ms) and at
//! shutdown, after a seal entry, so a power cut loses at most that window.
//!
//! The write happens on the leading request's thread. A page-cache `write` of a batch
//! takes microseconds; a disk that stops answering `write` at all stalls the threads that
//! lead writes, as it would stall a writer thread's acknowledgements.
//!
//! The timed `fsync` runs on a thread of its own (`Syncer`), on a shared handle to the
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
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, Utc};
use tokio::sync::oneshot;

use super::reader::{list_segments, scan_tail};
use super::{chain_next, frame, genesis, segment_name, Body, SegmentHeader};

pub use crate::settings::LogSettings;

/// Why an entry was not logged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// The log cannot be written now.
    #[error("the decision log cannot be written: {0}")]
    Unavailable(String),
}

/// Why the log could not be opened: the proxy does not start without it.
///
/// Each message names the directory or file and includes the operating system's reason,
/// which is therefore not also given as [`std::error::Error::source`] (the command line
/// prints an error's chain, which would then say it twice).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The log directory cannot be created or listed: check that its parent exists and
    /// that the user Gatehouse runs as may write there.
    #[error("{}: {error}", dir.display())]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// What the operating system said.
        error: std::io::Error,
    },
    /// The last segment could not be reopened for appending, or its damaged tail cut
    /// off, or an unreadable one set aside: check its permissions and the disk.
    #[error("{}: {error}", path.display())]
    Repair {
        /// The segment.
        path: PathBuf,
        /// What the operating system said.
        error: std::io::Error,
    },
    /// A new segment could not be created, written or synced: the disk may be full or
    /// read-only.
    #[error("{}: {error}", path.display())]
    Create {
        /// The segment it would have been.
        path: PathBuf,
        /// What the operating system said.
        error: std::io::Error,
    },
    /// The thread that writes and syncs on a timer could not be started (a limit on
    /// threads or memory).
    #[error("cannot start the decision log's timer thread: {0}")]
    Thread(std::io::Error),
}

// For `map_err`: the error about this directory or file.
impl OpenError {
    fn dir(dir: &Path) -> impl FnOnce(std::io::Error) -> OpenError + '_ {
        move |error| OpenError::Dir {
            dir: dir.to_path_buf(),
            error,
        }
    }

    fn repair(path: &Path) -> impl FnOnce(std::io::Error) -> OpenError + '_ {
        move |error| OpenError::Repair {
            path: path.to_path_buf(),
            error,
        }
    }

    fn create(path: &Path) -> impl FnOnce(std::io::Error) -> OpenError + '_ {
        move |error| OpenError::Create {
            path: path.to_path_buf(),
            error,
        }
    }
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

/// An [`Entry`] that borrows its body, for encoding: serde writes a struct as its fields
/// in order, so this encodes to exactly the bytes of the owned `Entry`.
#[derive(serde::Serialize)]
struct EntryRef<'a> {
    seq: u64,
    time_us: i64,
    body: &'a Body,
}

/// Entries waiting to be written, and whether a request has taken on writing them.
struct Queue {
    entries: Vec<Pending>,
    leader: bool,
    closed: bool,
}

/// What the handles, the tick thread and the writing request share.
struct Shared {
    queue: Mutex<Queue>,
    writer: Mutex<Writer>,
    cap: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Writes everything queued, in one `write`, and acknowledges it; with `close`, no
    /// entry is queued after these. The caller holds the writer, and the queue is taken
    /// under it, so entries reach the file in the order they were queued.
    fn write_queued(&self, writer: &mut Writer, close: bool) {
        let mut batch = std::mem::take(&mut writer.spare);
        {
            let mut queue = lock(&self.queue);
            queue.leader = false;
            queue.closed |= close;
            std::mem::swap(&mut queue.entries, &mut batch);
        }
        if !batch.is_empty() {
            writer.append_batch(&mut batch);
        }
        // Drained, not dropped: the two vectors keep their capacity between batches.
        writer.spare = batch;
    }

    fn flush(&self) {
        self.write_queued(&mut lock(&self.writer), false);
    }
}

/// The request that leads a group write. It writes when dropped: after its yield, or
/// earlier if its client went away, so no one else's entry waits for the next tick.
struct Leader<'a>(&'a Shared);

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        self.0.flush();
    }
}

/// The request path's handle on the writer.
#[derive(Clone)]
pub struct LogHandle {
    shared: Arc<Shared>,
    /// Counters.
    pub stats: Arc<LogStats>,
}

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

impl LogHandle {
    /// Queues an entry; with `lead`, whether the caller is now the one to write the
    /// queue (no other request is about to).
    fn push(&self, body: Body, ack: Option<Ack>, lead: bool) -> Result<bool, LogError> {
        let mut queue = lock(&self.shared.queue);
        if queue.closed {
            return Err(LogError::Unavailable("the writer stopped".into()));
        }
        if queue.entries.len() >= self.shared.cap {
            self.stats.lost.fetch_add(1, Ordering::Relaxed);
            self.stats.failing.store(true, Ordering::Relaxed);
            return Err(LogError::Unavailable("the writer's queue is full".into()));
        }
        queue.entries.push((body, now_us(), ack));
        Ok(lead && !std::mem::replace(&mut queue.leader, true))
    }

    /// Appends an entry and waits until it is with the operating system; its sequence
    /// number.
    ///
    /// Group commit, with no thread in between: the first request to queue an entry
    /// leads. It yields once, so that the other requests ready to run queue theirs, then
    /// writes the lot with one `write` and acknowledges each. Handing entries to a writer
    /// thread instead cost a thread switch and two wake-ups per batch: about 3 µs per
    /// request on one core, a sixth of an allowed request's time.
    pub async fn append(&self, body: Body) -> Result<u64, LogError> {
        let (tx, rx) = oneshot::channel();
        if self.push(body, Some(tx), true)? {
            let leader = Leader(&self.shared);
            tokio::task::yield_now().await;
            drop(leader);
        }
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(LogError::Unavailable("the writer stopped".into())),
        }
    }

    /// Appends an entry without waiting (grant changes, audit entries) and writes it now.
    pub fn append_nowait(&self, body: Body) {
        if self.push(body, None, false).is_ok() {
            self.shared.flush();
        }
    }

    /// Queues an entry no one waits for (a request's completion). It is written with the
    /// next group write, or by the timer within one fsync interval when traffic stops.
    pub fn append_later(&self, body: Body) {
        let _ = self.push(body, None, false);
    }

    /// Entries waiting for the writer.
    pub fn queue_depth(&self) -> usize {
        lock(&self.shared.queue).entries.len()
    }

    /// Writes what is queued, seals, fsyncs and stops the writer; later appends fail.
    pub async fn close(&self) {
        let mut writer = lock(&self.shared.writer);
        self.shared.write_queued(&mut writer, true);
        writer.maintain(true);
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
    /// The vector the next batch is taken into.
    spare: Vec<Pending>,
}

/// `fdatasync`s a segment, recording how long it took.
fn sync_segment(file: &File, stats: &LogStats) -> std::io::Result<()> {
    let started = Instant::now();
    file.sync_data()?;
    stats.fsyncs.fetch_add(1, Ordering::Relaxed);
    stats
        .last_fsync_us
        .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    Ok(())
}

/// `fsync`s a directory, so that a new segment's name survives a power cut (best effort).
fn sync_dir(dir: &std::path::Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
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
                                match sync_segment(&f, &stats) {
                                    Ok(()) => flag.store(false, Ordering::Relaxed),
                                    Err(e) => {
                                        flag.store(true, Ordering::Relaxed);
                                        tracing::error!(kind = "decision_log", error = %e, "decision log fsync failed; trying again at the next interval");
                                    }
                                }
                                synced.push(f);
                            }
                            SyncJob::Dir(dir) => sync_dir(&dir),
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

/// Opens (or creates) the log, repairs a torn tail, and starts the sync and timer threads.
pub fn open(settings: LogSettings) -> Result<LogHandle, OpenError> {
    std::fs::create_dir_all(&settings.dir).map_err(OpenError::dir(&settings.dir))?;
    let stats = Arc::new(LogStats::default());
    let mut writer = Writer::open(settings.clone(), stats.clone())?;
    match Syncer::start(stats.clone()) {
        Ok(s) => writer.syncer = Some(s),
        Err(e) => {
            tracing::warn!(kind = "decision_log", error = %e, "no sync thread; the writer fsyncs in line")
        }
    }
    writer.append_batch(&mut vec![(
        Body::Start {
            version: env!("CARGO_PKG_VERSION").to_string(),
        },
        now_us(),
        None,
    )]);
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            entries: Vec::with_capacity(1024),
            leader: false,
            closed: false,
        }),
        writer: Mutex::new(writer),
        cap: settings.queue.max(16),
    });
    // The timer writes what traffic left queued (completions), then seals and hands the
    // segment to the syncer when due; it stops when the log is closed or dropped.
    {
        let weak = Arc::downgrade(&shared);
        let interval = settings.fsync_interval;
        std::thread::Builder::new()
            .name("gatehouse-log-tick".into())
            .spawn(move || loop {
                std::thread::sleep(interval);
                let Some(shared) = weak.upgrade() else { return };
                if lock(&shared.queue).closed {
                    return;
                }
                let mut writer = lock(&shared.writer);
                shared.write_queued(&mut writer, false);
                writer.maintain(false);
            })
            .map_err(OpenError::Thread)?;
    }
    Ok(LogHandle { shared, stats })
}

fn utc_day(us: i64) -> (i32, u32) {
    let t = DateTime::<Utc>::from_timestamp_micros(us).unwrap_or_default();
    (t.year(), t.ordinal())
}

impl Writer {
    fn open(settings: LogSettings, stats: Arc<LogStats>) -> Result<Writer, OpenError> {
        let dir = settings.dir.clone();
        loop {
            let segments = list_segments(&dir).map_err(OpenError::dir(&dir))?;
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
                        .map_err(OpenError::repair(last))?;
                    file.set_len(tail.good_len)
                        .map_err(OpenError::repair(last))?;
                    file.sync_all().map_err(OpenError::repair(last))?;
                    let mut file = file;
                    use std::io::Seek;
                    file.seek(std::io::SeekFrom::End(0))
                        .map_err(OpenError::repair(last))?;
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
                        spare: Vec::new(),
                    });
                }
                Err(e) => {
                    // A segment whose header never made it to disk whole holds nothing:
                    // set it aside and continue from the one before.
                    let aside = last.with_extension("ghlog.damaged");
                    tracing::warn!(segment = %last.display(), "decision log segment unreadable ({e}); moved to {}", aside.display());
                    std::fs::rename(last, &aside).map_err(OpenError::repair(last))?;
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
    ) -> Result<Writer, OpenError> {
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
            .map_err(OpenError::create(&path))?;
        file.write_all(&header).map_err(OpenError::create(&path))?;
        let file = Arc::new(file);
        // A segment started while running (a roll) is made durable by the syncer, with
        // its directory entry; the one started at first start, in line.
        let queued = syncer.as_ref().is_some_and(|s| {
            s.send(SyncJob::File(file.clone())) && s.send(SyncJob::Dir(settings.dir.clone()))
        });
        if !queued {
            file.sync_all().map_err(OpenError::create(&path))?;
            sync_dir(&settings.dir);
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
            spare: Vec::new(),
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
        if sync_segment(&self.file, &self.stats).is_ok() {
            self.dirty = false;
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

    fn settings(dir: &std::path::Path, fsync_ms: u64) -> LogSettings {
        LogSettings {
            dir: dir.to_path_buf(),
            node: "test".into(),
            fsync_interval: Duration::from_millis(fsync_ms),
            segment_bytes: 64 << 20,
            queue: 1024,
            retention_days: 0,
        }
    }

    fn completion(of: u64) -> Body {
        Body::Completion {
            of,
            status: 200,
            bytes_up: 0,
            bytes_down: 0,
            duration_us: 0,
        }
    }

    fn logged(dir: &std::path::Path) -> Vec<u64> {
        super::super::reader::entries(dir)
            .expect("entries")
            .filter_map(|(_, e)| match e.body {
                Body::Completion { of, .. } => Some(of),
                _ => None,
            })
            .collect()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_appends_are_written_in_groups_and_each_acknowledged_once() {
        let dir = tempfile::tempdir().expect("dir");
        // A long interval: nothing here may depend on the timer.
        let log = open(settings(dir.path(), 60_000)).expect("open");
        let tasks: Vec<_> = (0..200u64)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.append(completion(i)).await })
            })
            .collect();
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.push(t.await.expect("task").expect("acknowledged"));
        }
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), 200, "one sequence number each");
        // With the file read back while the log is still open: acknowledged means written.
        let mut written = logged(dir.path());
        written.sort_unstable();
        assert_eq!(written, (0..200).collect::<Vec<_>>());
        log.close().await;
        assert!(log.append(completion(999)).await.is_err(), "closed");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_leader_dropped_before_writing_still_writes_the_group() {
        let dir = tempfile::tempdir().expect("dir");
        let log = open(settings(dir.path(), 60_000)).expect("open");
        // The first append leads; poll it once (it queues and yields) and drop it, as when
        // a client goes away mid-request. A second append queued meanwhile must not wait
        // for the timer.
        let mut lead = Box::pin(log.append(completion(1)));
        assert!(futures_poll_once(lead.as_mut()).await.is_none());
        let follower = {
            let log = log.clone();
            tokio::spawn(async move { log.append(completion(2)).await })
        };
        tokio::task::yield_now().await;
        drop(lead);
        let seq = tokio::time::timeout(Duration::from_secs(5), follower)
            .await
            .expect("not left for the timer")
            .expect("task")
            .expect("acknowledged");
        assert!(seq > 0);
        assert_eq!(logged(dir.path()), vec![1, 2]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_entry_no_one_waits_for_is_written_by_the_timer() {
        let dir = tempfile::tempdir().expect("dir");
        let log = open(settings(dir.path(), 20)).expect("open");
        log.append_later(completion(7));
        assert_eq!(log.queue_depth(), 1);
        let deadline = Instant::now() + Duration::from_secs(5);
        while logged(dir.path()).is_empty() {
            assert!(Instant::now() < deadline, "the timer wrote it");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(log.queue_depth(), 0);
        log.close().await;
    }

    /// Polls a future once; its output if it finished.
    async fn futures_poll_once<F: std::future::Future>(
        mut f: std::pin::Pin<&mut F>,
    ) -> Option<F::Output> {
        std::future::poll_fn(|cx| match f.as_mut().poll(cx) {
            std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
            std::task::Poll::Pending => std::task::Poll::Ready(None),
        })
        .await
    }

    /// Decisions with and without safe search, in one log: the two stored shapes of a
    /// decision side by side verify end to end and read back as they were written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_log_with_both_shapes_of_decision_verifies_and_reads_back() {
        use crate::decision_log::{Decision, ReasonCode, SafeSearchRewrite, StoredAction};
        let dir = tempfile::tempdir().expect("dir");
        let log = open(settings(dir.path(), 5)).expect("open");
        let decision = |host: &str, safe_search: Option<SafeSearchRewrite>| Decision {
            client: std::net::IpAddr::from([10, 20, 1, 5]),
            user: None,
            group: "ks1".into(),
            method: "CONNECT".into(),
            url: format!("{host}:443"),
            sni: Some(host.into()),
            categories: vec![],
            action: StoredAction::Allow,
            reason: ReasonCode::Mode,
            grant: None,
            status: 200,
            terms: vec![],
            enforced: Vec::new(),
            safe_search,
            device: None,
            original_destination: None,
        };
        let written = [
            decision("www.example.com", None),
            decision(
                "www.google.co.uk",
                Some(SafeSearchRewrite {
                    engine: "google".into(),
                    level: crate::core::safe_search::Level::Strict,
                    dialled: "forcesafesearch.google.com".into(),
                }),
            ),
            decision("www.example.org", None),
        ];
        for d in &written {
            log.append(Body::Decision(d.clone()))
                .await
                .expect("acknowledged");
        }
        log.close().await;
        let mut read = Vec::new();
        let report = super::super::reader::verify_and_read(dir.path(), &mut |_, e| {
            if let Body::Decision(d) = &e.body {
                read.push(d.clone());
            }
        })
        .expect("verify");
        assert!(report.fault.is_none(), "{report:?}");
        assert_eq!(read, written);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn timed_fsyncs_and_rolls_run_on_the_sync_thread_and_the_chain_holds() {
        let dir = tempfile::tempdir().expect("dir");
        let settings = LogSettings {
            segment_bytes: 64 * 1024,
            ..settings(dir.path(), 5)
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
        assert!(report.fault.is_none(), "{:?}", report.fault);
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
                reason: crate::decision_log::ReasonCode::Category,
                grant: None,
                status: 403,
                terms: vec![],
                enforced: Vec::new(),
                safe_search: None,
                device: None,
                original_destination: None,
            }),
            Body::Decision(crate::decision_log::Decision {
                client: std::net::IpAddr::from([10, 0, 0, 2]),
                user: None,
                group: "ks2".into(),
                method: "CONNECT".into(),
                url: "www.youtube.com:443".into(),
                sni: Some("www.youtube.com".into()),
                categories: vec![],
                action: crate::decision_log::StoredAction::Allow,
                reason: crate::decision_log::ReasonCode::Mode,
                grant: None,
                status: 200,
                terms: vec![],
                enforced: Vec::new(),
                safe_search: Some(crate::decision_log::SafeSearchRewrite {
                    engine: "youtube".into(),
                    level: crate::core::safe_search::Level::Moderate,
                    dialled: "restrictmoderate.youtube.com".into(),
                }),
                device: None,
                original_destination: None,
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
