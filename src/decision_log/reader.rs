//! Reading the decision log: segments in order, frames with their checksums, the
//! chain check behind `gatehouse log verify`, and the entry stream behind export, tail
//! and the weekly report.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};

use serde::Deserialize;

use super::{
    chain_next, genesis, segment_first_seq, Body, Entry, HeaderError, SegmentHeader, MAX_PAYLOAD,
};

/// Why a log directory or a segment could not be read at all. Damage inside a segment
/// is not one of these: [`verify`] reports it as the log's fault, readers stop before
/// it, and [`scan_tail`] says where the good entries end.
///
/// Each message names the directory or file and includes its cause, and the cause is
/// not also given as [`std::error::Error::source`]: the command line prints an error's
/// chain, which would then say it twice.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The log directory cannot be listed: it does not exist, or this user may not read
    /// it.
    #[error("{}: {error}", dir.display())]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// What the operating system said.
        error: io::Error,
    },
    /// A segment cannot be opened or read: removed meanwhile, or not readable by this
    /// user.
    #[error("{}: {error}", path.display())]
    Segment {
        /// The segment.
        path: PathBuf,
        /// What the operating system said.
        error: io::Error,
    },
    /// A segment's header is missing, damaged or of another format: none of its entries
    /// can be trusted, so none is read.
    #[error("{}: {fault}", path.display())]
    Header {
        /// The segment.
        path: PathBuf,
        /// What is wrong with the header.
        fault: HeaderError,
    },
}

impl ReadError {
    fn dir(dir: &Path) -> impl FnOnce(io::Error) -> ReadError + '_ {
        move |error| ReadError::Dir {
            dir: dir.to_path_buf(),
            error,
        }
    }
}

/// The segments in `dir`, oldest first.
pub fn list_segments(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(seq) = name.to_str().and_then(segment_first_seq) {
            found.push((seq, entry.path()));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// Why a frame could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameFault {
    /// The file ends inside a frame.
    #[error("the file ends in the middle of an entry (torn write)")]
    Torn,
    /// The length field is impossible.
    #[error("impossible entry length {0}")]
    BadLength(u32),
    /// The checksum does not match the payload.
    #[error("checksum mismatch (the entry's bytes were changed)")]
    BadChecksum,
}

/// Frames of one segment, in order.
pub struct Frames {
    reader: BufReader<File>,
    /// Offset of the next frame.
    pub offset: u64,
    done: bool,
}

impl Frames {
    /// Opens a segment; its header and the frame iterator after it.
    pub fn open(path: &Path) -> Result<(SegmentHeader, Frames), ReadError> {
        let unreadable = |error: io::Error| match error.kind() {
            io::ErrorKind::UnexpectedEof => ReadError::Header {
                path: path.to_path_buf(),
                fault: HeaderError::Truncated,
            },
            _ => ReadError::Segment {
                path: path.to_path_buf(),
                error,
            },
        };
        let file = File::open(path).map_err(unreadable)?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut start = vec![0u8; 10];
        reader.read_exact(&mut start).map_err(unreadable)?;
        let node_len = usize::from(u16::from_le_bytes([start[8], start[9]]));
        let mut rest = vec![0u8; node_len + 8 + 32 + 8 + 4];
        reader.read_exact(&mut rest).map_err(unreadable)?;
        start.extend_from_slice(&rest);
        let (header, len) = SegmentHeader::decode(&start).map_err(|fault| ReadError::Header {
            path: path.to_path_buf(),
            fault,
        })?;
        Ok((
            header,
            Frames {
                reader,
                offset: len as u64,
                done: false,
            },
        ))
    }
}

impl Iterator for Frames {
    type Item = Result<Vec<u8>, (u64, FrameFault)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut head = [0u8; 8];
        let mut got = 0;
        while got < 8 {
            match self.reader.read(&mut head[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        if got == 0 {
            self.done = true;
            return None;
        }
        let at = self.offset;
        self.done = true; // until proven good
        if got < 8 {
            return Some(Err((at, FrameFault::Torn)));
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len as usize > MAX_PAYLOAD || len == 0 {
            return Some(Err((at, FrameFault::BadLength(len))));
        }
        let mut payload = vec![0u8; len as usize];
        if self.reader.read_exact(&mut payload).is_err() {
            return Some(Err((at, FrameFault::Torn)));
        }
        if crc32c::crc32c(&payload) != crc {
            return Some(Err((at, FrameFault::BadChecksum)));
        }
        self.offset += 8 + u64::from(len);
        self.done = false;
        Some(Ok(payload))
    }
}

/// The state at the end of the last good entry of a segment, for the writer's restart.
#[derive(Debug)]
pub struct TailScan {
    /// The segment's header.
    pub header: SegmentHeader,
    /// Bytes of the segment that hold good entries (header included).
    pub good_len: u64,
    /// Sequence number of the last good entry (`first_seq - 1` if none).
    pub last_seq: u64,
    /// Chain value after the last good entry.
    pub chain: [u8; 32],
    /// Time of the last good entry (µs), or the header's creation time.
    pub last_time_us: i64,
    /// What was wrong after the last good entry, if anything.
    pub damage: Option<TailDamage>,
}

/// What ends a segment's good entries before its end: what a crash or a full disk
/// leaves (a torn frame), or a change to the file. The writer cuts the segment there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TailDamage {
    /// The frame at `offset` is torn, too long or fails its checksum.
    #[error("at byte {offset}: {fault}")]
    Frame {
        /// Where the frame starts in the segment.
        offset: u64,
        /// What is wrong with it.
        fault: FrameFault,
    },
    /// A whole, checksummed frame holds something that is not an entry.
    #[error("entry at byte {offset} does not decode: {error}")]
    Undecodable {
        /// Where the frame starts in the segment.
        offset: u64,
        /// What the decoder said.
        error: postcard::Error,
    },
    /// An entry out of sequence: entries were removed, repeated or reordered.
    #[error("entry at byte {offset} has sequence {seq} after {after}")]
    OutOfSequence {
        /// Where the frame starts in the segment.
        offset: u64,
        /// The sequence number it carries.
        seq: u64,
        /// The sequence number of the last good entry before it.
        after: u64,
    },
}

/// Scans a segment to its last good entry.
pub fn scan_tail(path: &Path) -> Result<TailScan, ReadError> {
    let (header, mut frames) = Frames::open(path)?;
    let mut chain = header.prev_chain;
    let mut last_seq = header.first_seq.saturating_sub(1);
    let mut last_time_us = header.created_us;
    let mut good_len = frames.offset;
    let mut damage = None;
    while let Some(frame) = frames.next() {
        match frame {
            Ok(payload) => match postcard::from_bytes::<Entry>(&payload) {
                Ok(entry) if entry.seq == last_seq + 1 => {
                    chain = chain_next(&chain, &payload);
                    last_seq = entry.seq;
                    last_time_us = entry.time_us;
                    good_len = frames.offset;
                }
                Ok(entry) => {
                    damage = Some(TailDamage::OutOfSequence {
                        offset: good_len,
                        seq: entry.seq,
                        after: last_seq,
                    });
                    break;
                }
                Err(e) => {
                    damage = Some(TailDamage::Undecodable {
                        offset: good_len,
                        error: e,
                    });
                    break;
                }
            },
            Err((at, fault)) => {
                damage = Some(TailDamage::Frame { offset: at, fault });
                break;
            }
        }
    }
    Ok(TailScan {
        header,
        good_len,
        last_seq,
        chain,
        last_time_us,
        damage,
    })
}

/// The result of verifying a log directory.
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Segments read.
    pub segments: usize,
    /// Entries read and checked.
    pub entries: u64,
    /// Seals checked.
    pub seals: u64,
    /// First and last sequence numbers.
    pub first_seq: Option<u64>,
    /// Last sequence number.
    pub last_seq: Option<u64>,
    /// The first fault found: where and what.
    pub fault: Option<LogFault>,
}

/// The first thing [`verify`] found wrong in a log, and where: what `gatehouse log
/// verify` prints and the weekly report's integrity table shows.
#[derive(Debug, thiserror::Error)]
pub enum LogFault {
    /// The oldest segment starts the log (entry 1) but not from the node's genesis value.
    #[error("{segment}: the first segment does not start the chain")]
    ChainStart {
        /// The segment's file name.
        segment: Arc<str>,
    },
    /// A segment's header does not carry on from the previous segment's chain.
    #[error("{segment}: does not continue the previous segment's chain")]
    ChainBreak {
        /// The segment's file name.
        segment: Arc<str>,
    },
    /// A seal does not match the chain: an entry before it was changed.
    #[error("{segment}: the seal at entry {seq} does not match the chain: an entry before it was changed")]
    Seal {
        /// The segment's file name.
        segment: Arc<str>,
        /// The seal's sequence number.
        seq: u64,
    },
    /// A segment starts at another sequence number than the previous one ended.
    #[error("{segment}: starts at entry {starts} but entry {expected} was expected (entries missing or reordered)")]
    Gap {
        /// The segment's file name.
        segment: Arc<str>,
        /// Where it starts.
        starts: u64,
        /// Where it should start.
        expected: u64,
    },
    /// An entry carries another sequence number than its place.
    #[error("{segment}: entry {seq} carries sequence {found} (entries missing or reordered)")]
    Sequence {
        /// The segment's file name.
        segment: Arc<str>,
        /// The sequence number its place calls for.
        seq: u64,
        /// The one it carries.
        found: u64,
    },
    /// An entry marked as a seal is not one.
    #[error("{segment}: entry {seq}: does not decode as a seal")]
    BadSeal {
        /// The segment's file name.
        segment: Arc<str>,
        /// Its sequence number.
        seq: u64,
    },
    /// A whole, checksummed frame holds something that is not an entry.
    #[error("{segment}: entry {seq}: does not decode: {error}")]
    Undecodable {
        /// The segment's file name.
        segment: Arc<str>,
        /// Its sequence number.
        seq: u64,
        /// What the decoder said.
        error: postcard::Error,
    },
    /// A frame is torn, too long or fails its checksum.
    #[error("{segment}: entry {seq} (byte {offset}): {fault}")]
    Frame {
        /// The segment's file name.
        segment: Arc<str>,
        /// The sequence number it would have had.
        seq: u64,
        /// Where the frame starts in the segment.
        offset: u64,
        /// What is wrong with it.
        fault: FrameFault,
    },
    /// The segment could not be read.
    #[error("{segment}: {error}")]
    Io {
        /// The segment's file name.
        segment: Arc<str>,
        /// The error.
        error: io::Error,
    },
    /// A segment could not be opened or its header is bad.
    #[error(transparent)]
    Open(#[from] ReadError),
    /// The chain check ended early (its thread stopped).
    #[error("the chain check stopped")]
    ChainStopped,
}

/// Checks every checksum, the sequence and the whole chain, from the oldest segment kept
/// (retention may have removed older ones: the oldest segment's header anchors the
/// chain). Stops at the first fault.
pub fn verify(dir: &Path) -> Result<VerifyReport, ReadError> {
    verify_and_read(dir, &mut |_, _| {})
}

/// Bytes read from a segment at a time by [`verify_and_read`]: the pipeline holds a few
/// of these, so its memory does not grow with the log.
const CHUNK_BYTES: usize = 4 << 20;

/// Whole frames read from one segment, checksummed and decoded, on their way to the
/// chain thread.
struct ChainJob {
    /// Set on a segment's first chunk: the segment's name, header and whether it is the
    /// oldest segment read.
    segment: Option<(Arc<str>, SegmentHeader, bool)>,
    /// The segment's name, for messages.
    name: Arc<str>,
    /// Sequence number of the first frame.
    first_seq: u64,
    chunk: Arc<Chunk>,
    /// Seals among the frames: (frame index, the chain value they record).
    seals: Vec<(usize, [u8; 32])>,
}

/// Bytes holding whole frames, and where each frame's payload is.
struct Chunk {
    data: Vec<u8>,
    /// Each frame's payload as (start, length) in `data`.
    frames: Vec<(usize, usize)>,
}

impl Chunk {
    fn payload(&self, i: usize) -> &[u8] {
        let (start, len) = self.frames[i];
        &self.data[start..start + len]
    }
}

/// The start of an encoded [`Entry`]: enough to check the sequence and find seals
/// without decoding (and allocating) the whole entry.
#[derive(Deserialize)]
struct EntryHead {
    seq: u64,
    #[allow(dead_code)] // decoded only to reach `kind`
    time_us: i64,
    /// The [`Body`] variant's index.
    kind: u32,
}

/// [`Body::Seal`]'s variant index in the encoding (format version 1).
const SEAL_KIND: u32 = 4;

/// What the chain thread found in one job: the frames before `fault` continue the chain.
struct ChainVerdict {
    /// (frame index, fault) of the first chain fault; `None` in the fault for the jobs
    /// after one, which are not checked.
    fault: Option<(usize, Option<LogFault>)>,
}

/// The chain thread: BLAKE3 over every payload in order, checking each segment's anchor
/// and each seal. Runs beside the reader, because hashing is half of reading the log.
fn chain_worker(jobs: mpsc::Receiver<ChainJob>, verdicts: mpsc::SyncSender<ChainVerdict>) {
    let mut chain: Option<[u8; 32]> = None;
    let mut broken = false;
    for job in jobs {
        if broken {
            let _ = verdicts.send(ChainVerdict {
                fault: Some((0, None)),
            });
            continue;
        }
        let mut fault = None;
        if let Some((name, header, oldest)) = &job.segment {
            match chain {
                None if *oldest
                    && header.first_seq == 1
                    && header.prev_chain != genesis(&header.node) =>
                {
                    fault = Some((
                        0,
                        Some(LogFault::ChainStart {
                            segment: name.clone(),
                        }),
                    ));
                }
                Some(c) if c != header.prev_chain => {
                    fault = Some((
                        0,
                        Some(LogFault::ChainBreak {
                            segment: name.clone(),
                        }),
                    ));
                }
                _ => chain = Some(header.prev_chain),
            }
        }
        if fault.is_none() {
            let mut c = chain.unwrap_or_default();
            let mut seals = job.seals.iter().peekable();
            for i in 0..job.chunk.frames.len() {
                if let Some(&&(at, sealed)) = seals.peek() {
                    if at == i {
                        seals.next();
                        if sealed != c {
                            fault = Some((
                                i,
                                Some(LogFault::Seal {
                                    segment: job.name.clone(),
                                    seq: job.first_seq + i as u64,
                                }),
                            ));
                            break;
                        }
                    }
                }
                c = chain_next(&c, job.chunk.payload(i));
            }
            chain = Some(c);
        }
        broken = fault.is_some();
        if verdicts.send(ChainVerdict { fault }).is_err() {
            return;
        }
    }
}

/// Reads one segment's frames in chunks of about [`CHUNK_BYTES`].
struct ChunkReader {
    file: File,
    /// Bytes read but not yet handed out (the start of a frame cut by the last read).
    carry: Vec<u8>,
    /// File offset of `carry`'s first byte.
    offset: u64,
    eof: bool,
}

impl ChunkReader {
    /// The next run of whole frames: (data, each frame's payload as (start, length) in
    /// `data`), and the fault (file offset, what) that ended the segment, if one did.
    /// `None` once the segment is done.
    #[allow(clippy::type_complexity)]
    fn next_chunk(&mut self) -> Option<(Vec<u8>, Vec<(usize, usize)>, Option<(u64, FrameFault)>)> {
        if self.eof && self.carry.is_empty() {
            return None;
        }
        let mut data = std::mem::take(&mut self.carry);
        if !self.eof {
            let want = data.len() + CHUNK_BYTES;
            data.reserve(CHUNK_BYTES);
            while data.len() < want {
                let n = match (&self.file)
                    .take((want - data.len()) as u64)
                    .read_to_end(&mut data)
                {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => 0,
                };
                if n == 0 {
                    self.eof = true;
                    break;
                }
            }
        }
        let base = self.offset;
        let mut frames = Vec::new();
        let mut at = 0usize;
        let mut fault = None;
        while at < data.len() {
            let Some(head) = data.get(at..at + 8) else {
                if self.eof {
                    fault = Some((base + at as u64, FrameFault::Torn));
                }
                break;
            };
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            if len as usize > MAX_PAYLOAD || len == 0 {
                fault = Some((base + at as u64, FrameFault::BadLength(len)));
                break;
            }
            let Some(payload) = data.get(at + 8..at + 8 + len as usize) else {
                if self.eof {
                    fault = Some((base + at as u64, FrameFault::Torn));
                }
                break;
            };
            if crc32c::crc32c(payload) != crc {
                fault = Some((base + at as u64, FrameFault::BadChecksum));
                break;
            }
            frames.push((at + 8, len as usize));
            at += 8 + len as usize;
        }
        if fault.is_some() {
            self.eof = true;
        } else {
            self.carry = data[at..].to_vec();
            self.offset = base + at as u64;
        }
        data.truncate(at);
        Some((data, frames, fault))
    }
}

/// [`verify`], handing every entry it checks to `on_entry` (with the node that wrote
/// it): one pass for readers, such as the weekly report, that must also verify.
///
/// Reading, checksums and decoding happen here while a second thread follows the hash
/// chain one chunk behind; an entry reaches `on_entry` only once the chain up to it is
/// known good, so readers see exactly the entries before the first fault.
pub fn verify_and_read(
    dir: &Path,
    on_entry: &mut dyn FnMut(&str, &Entry),
) -> Result<VerifyReport, ReadError> {
    let segments = list_segments(dir).map_err(ReadError::dir(dir))?;
    let mut report = VerifyReport::default();
    std::thread::scope(|scope| {
        let (job_tx, job_rx) = mpsc::sync_channel::<ChainJob>(2);
        let (verdict_tx, verdict_rx) = mpsc::sync_channel::<ChainVerdict>(2);
        scope.spawn(move || chain_worker(job_rx, verdict_tx));
        // A chunk waiting for the chain thread's verdict: its node, segment name, first
        // sequence number, frames, and the fault (frame index, message) this thread
        // found in it, if any.
        type Waiting = (
            Arc<str>,
            Arc<str>,
            u64,
            Arc<Chunk>,
            Option<(usize, LogFault)>,
        );
        let mut waiting: Option<Waiting> = None;
        let mut deliver = |waiting: Option<Waiting>, report: &mut VerifyReport| -> bool {
            let Some((node, name, first_seq, chunk, own_fault)) = waiting else {
                return true;
            };
            let chain_fault = match verdict_rx.recv() {
                Ok(ChainVerdict { fault }) => {
                    fault.map(|(i, f)| (i, f.unwrap_or(LogFault::ChainStopped)))
                }
                Err(_) => Some((0, LogFault::ChainStopped)),
            };
            let mut fault = match (own_fault, chain_fault) {
                (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
                (a, b) => a.or(b),
            };
            let good = fault.as_ref().map_or(chunk.frames.len(), |f| f.0);
            for i in 0..good {
                // Decoded one at a time, just before use: the entry and its strings
                // stay in cache and the allocator reuses the same blocks.
                let entry = match postcard::from_bytes::<Entry>(chunk.payload(i)) {
                    Ok(e) => e,
                    Err(e) => {
                        let seq = first_seq + i as u64;
                        fault = Some((
                            i,
                            LogFault::Undecodable {
                                segment: name.clone(),
                                seq,
                                error: e,
                            },
                        ));
                        break;
                    }
                };
                if matches!(entry.body, Body::Seal { .. }) {
                    report.seals += 1;
                }
                on_entry(&node, &entry);
                report.first_seq.get_or_insert(entry.seq);
                report.last_seq = Some(entry.seq);
                report.entries += 1;
            }
            match fault {
                Some((_, found)) => {
                    report.fault = Some(found);
                    false
                }
                None => true,
            }
        };
        let mut next_seq: Option<u64> = None;
        'segments: for (index, path) in segments.iter().enumerate() {
            report.segments += 1;
            let name: Arc<str> = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("?")
                .into();
            let (header, frames) = match Frames::open(path) {
                Ok(x) => x,
                Err(e) => {
                    if deliver(waiting.take(), &mut report) {
                        report.fault = Some(LogFault::Open(e));
                    }
                    break;
                }
            };
            let node: Arc<str> = header.node.as_str().into();
            let mut own_fault = None;
            if let Some(seq) = next_seq {
                if header.first_seq != seq {
                    own_fault = Some((
                        0,
                        LogFault::Gap {
                            segment: name.clone(),
                            starts: header.first_seq,
                            expected: seq,
                        },
                    ));
                }
            }
            let mut seq = header.first_seq;
            // The header was read through a buffer: go back to just after it.
            let mut file = frames.reader.into_inner();
            let rewound = file.seek(SeekFrom::Start(frames.offset));
            let mut chunks = ChunkReader {
                file,
                carry: Vec::new(),
                offset: frames.offset,
                eof: false,
            };
            if let Err(e) = rewound {
                own_fault = Some((
                    0,
                    LogFault::Io {
                        segment: name.clone(),
                        error: e,
                    },
                ));
            }
            let mut segment = Some((name.clone(), header, index == 0));
            loop {
                // After a fault at the segment's start nothing more is read; the segment's
                // first job still goes out (empty), so its anchor is checked too.
                let chunk = match own_fault {
                    None => chunks.next_chunk(),
                    Some(_) => None,
                };
                let (data, frames, frame_fault) = match chunk {
                    Some(c) => c,
                    None if segment.is_some() => (Vec::new(), Vec::new(), None),
                    None => break,
                };
                let first_seq = seq;
                let mut good = 0;
                let mut seals = Vec::new();
                for &(start, len) in &frames {
                    if own_fault.is_some() {
                        break;
                    }
                    let payload = &data[start..start + len];
                    match postcard::from_bytes::<EntryHead>(payload) {
                        Ok(head) if head.seq != seq => {
                            own_fault = Some((
                                good,
                                LogFault::Sequence {
                                    segment: name.clone(),
                                    seq,
                                    found: head.seq,
                                },
                            ));
                        }
                        Ok(head) => {
                            if head.kind == SEAL_KIND {
                                match postcard::from_bytes::<Entry>(payload) {
                                    Ok(Entry {
                                        body: Body::Seal { chain },
                                        ..
                                    }) => seals.push((good, chain)),
                                    _ => {
                                        own_fault = Some((
                                            good,
                                            LogFault::BadSeal {
                                                segment: name.clone(),
                                                seq,
                                            },
                                        ));
                                        continue;
                                    }
                                }
                            }
                            good += 1;
                            seq += 1;
                        }
                        Err(e) => {
                            own_fault = Some((
                                good,
                                LogFault::Undecodable {
                                    segment: name.clone(),
                                    seq,
                                    error: e,
                                },
                            ));
                        }
                    }
                }
                if own_fault.is_none() {
                    if let Some((at, fault)) = frame_fault {
                        own_fault = Some((
                            good,
                            LogFault::Frame {
                                segment: name.clone(),
                                seq,
                                offset: at,
                                fault,
                            },
                        ));
                    }
                }
                let mut frames = frames;
                frames.truncate(good);
                let chunk = Arc::new(Chunk { data, frames });
                let job = ChainJob {
                    segment: segment.take(),
                    name: name.clone(),
                    first_seq,
                    chunk: chunk.clone(),
                    seals,
                };
                let stop = own_fault.is_some();
                if job_tx.send(job).is_err() {
                    break 'segments;
                }
                let previous = waiting.replace((
                    node.clone(),
                    name.clone(),
                    first_seq,
                    chunk,
                    own_fault.take(),
                ));
                if !deliver(previous, &mut report) {
                    waiting = None;
                    break 'segments;
                }
                if stop {
                    break 'segments;
                }
            }
            next_seq = Some(seq);
        }
        deliver(waiting.take(), &mut report);
        drop(job_tx);
    });
    Ok(report)
}

/// Every readable entry of a log directory, oldest first, with the node that wrote it.
/// Stops quietly at a damaged frame (verify reports damage; readers read what is sound).
pub fn entries(dir: &Path) -> Result<impl Iterator<Item = (String, Entry)>, ReadError> {
    entries_after(dir, 0)
}

/// Entries with a sequence number above `after`, reading only the segments that can
/// hold them (for `log tail -f`).
pub fn entries_after(
    dir: &Path,
    after: u64,
) -> Result<impl Iterator<Item = (String, Entry)>, ReadError> {
    let mut segments = list_segments(dir).map_err(ReadError::dir(dir))?;
    let first_needed = segments
        .iter()
        .rposition(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(segment_first_seq)
                .is_some_and(|first| first <= after + 1)
        })
        .unwrap_or(0);
    segments.drain(..first_needed);
    Ok(segments.into_iter().flat_map(move |path| {
        let opened = Frames::open(&path).ok();
        opened.into_iter().flat_map(move |(header, frames)| {
            let node = header.node.clone();
            frames
                .map_while(Result::ok)
                .map_while(|payload| postcard::from_bytes::<Entry>(&payload).ok())
                .filter(move |e| e.seq > after)
                .map(move |e| (node.clone(), e))
        })
    }))
}

/// A decision (or any entry) found by its sequence number, with the completion that
/// recorded how a forwarded request ended, if there is one.
pub struct Found {
    /// The node that wrote it.
    pub node: String,
    /// The entry.
    pub entry: Entry,
    /// Its completion (status, bytes, duration).
    pub completion: Option<Entry>,
    /// The alerts sent about it, and failed attempts to send them.
    pub alerts: Vec<Entry>,
    /// Acknowledgements of those alerts by the DSL ([`Body::AlertAck`]), found within
    /// the same horizon as the alerts (a day and an hour after the decision).
    pub acks: Vec<Entry>,
}

/// How long after a decision its completion is looked for (a tunnel may stay open for
/// hours; the default lifetime limit is well under a day).
const COMPLETION_HORIZON_US: i64 = 25 * 3600 * 1_000_000;

/// The entry with sequence number `seq` in `dir`, reading only the segments from the
/// one that holds it; `Ok(None)` if the log does not hold it (never written, or deleted
/// by retention).
pub fn find(dir: &Path, seq: u64) -> Result<Option<Found>, ReadError> {
    find_until(dir, seq, false)
}

/// As [`find`], but reads to the horizon whatever the decision was: an alert on an
/// allowed visit (`alert_on_allow`) can come after the request's completion, where
/// `find` stops. For acknowledging an alert, a rare call worth the longer read.
pub fn find_with_alerts(dir: &Path, seq: u64) -> Result<Option<Found>, ReadError> {
    find_until(dir, seq, true)
}

fn find_until(dir: &Path, seq: u64, to_horizon: bool) -> Result<Option<Found>, ReadError> {
    let mut after = entries_after(dir, seq.saturating_sub(1))?;
    let Some((node, entry)) = after.next() else {
        return Ok(None);
    };
    if entry.seq != seq {
        return Ok(None);
    }
    let horizon = entry.time_us.saturating_add(COMPLETION_HORIZON_US);
    // A block has no completion: its alerts are looked for up to the horizon. An allow
    // is looked at until its completion (an alert on an allowed visit is rare).
    let blocked = to_horizon
        || matches!(&entry.body, Body::Decision(d) if d.action == super::StoredAction::Block);
    let (mut completion, mut alerts, mut acks) = (None, Vec::new(), Vec::new());
    for (_, e) in after.take_while(|(_, e)| e.time_us <= horizon) {
        match e.body {
            Body::Completion { of, .. } if of == seq => {
                completion = Some(e);
                if !blocked {
                    break;
                }
            }
            Body::Alert { of, .. } if of == seq => alerts.push(e),
            Body::AlertAck { of, .. } if of == seq => acks.push(e),
            _ => {}
        }
    }
    Ok(Some(Found {
        node,
        entry,
        completion,
        alerts,
        acks,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision_log::{frame, segment_name};

    /// Writes one segment of `n` entries, a seal every 1 000, returning the offset of
    /// each frame (so tests can damage a chosen one).
    fn write_segment(dir: &Path, n: u64) -> Vec<usize> {
        let node = "test";
        let mut chain = genesis(node);
        let mut buf = SegmentHeader {
            node: node.into(),
            first_seq: 1,
            prev_chain: chain,
            created_us: 0,
        }
        .encode();
        let mut offsets = Vec::new();
        for seq in 1..=n {
            let body = if seq % 1_000 == 0 {
                Body::Seal { chain }
            } else {
                // Some 200 bytes each, so the segment spans several read chunks.
                Body::Start {
                    version: format!("{seq:0>200}"),
                }
            };
            let payload = postcard::to_stdvec(&Entry {
                seq,
                time_us: seq as i64,
                body,
            })
            .expect("encode");
            offsets.push(buf.len());
            frame(&payload, &mut buf);
            chain = chain_next(&chain, &payload);
        }
        std::fs::write(dir.join(segment_name(1)), &buf).expect("write");
        offsets
    }

    fn read(dir: &Path) -> (VerifyReport, Vec<u64>) {
        let mut seen = Vec::new();
        let report = verify_and_read(dir, &mut |_, e| seen.push(e.seq)).expect("read");
        (report, seen)
    }

    #[test]
    fn a_clean_log_across_chunks_reads_every_entry_in_order() {
        let dir = tempfile::tempdir().expect("dir");
        write_segment(dir.path(), 60_000);
        let (report, seen) = read(dir.path());
        assert!(report.fault.is_none(), "{:?}", report.fault);
        assert_eq!(report.entries, 60_000);
        assert_eq!(report.seals, 60);
        assert_eq!(seen, (1..=60_000).collect::<Vec<_>>());
    }

    #[test]
    fn faults_are_named_and_nothing_after_them_is_read() {
        // (what to do to the segment, the entry the fault names, entries read)
        type Damage = fn(&mut Vec<u8>, &[usize]);
        let cases: [(Damage, &str, u64); 3] = [
            // A flipped byte in entry 45 678's payload: its checksum fails.
            (|b, o| b[o[45_677] + 20] ^= 1, "entry 45678 (byte", 45_677),
            // Torn in the middle of entry 59 999.
            (
                |b, o| b.truncate(o[59_998] + 30),
                "entry 59999 (byte",
                59_998,
            ),
            // Entry 22 222 rewritten with a good checksum: the seal at 23 000 catches it.
            (
                |b, o| {
                    let at = o[22_221];
                    let len = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize;
                    b[at + 8 + 100] ^= 1;
                    let crc = crc32c::crc32c(&b[at + 8..at + 8 + len]);
                    b[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
                },
                "the seal at entry 23000",
                22_999,
            ),
        ];
        for (damage, named, read_before) in cases {
            let dir = tempfile::tempdir().expect("dir");
            let offsets = write_segment(dir.path(), 60_000);
            let path = dir.path().join(segment_name(1));
            let mut bytes = std::fs::read(&path).expect("read");
            damage(&mut bytes, &offsets);
            std::fs::write(&path, &bytes).expect("write");
            let (report, seen) = read(dir.path());
            let fault = report.fault.expect("a fault").to_string();
            assert!(fault.contains(named), "{named}: {fault}");
            assert_eq!(report.entries, read_before, "{named}");
            assert_eq!(seen, (1..=read_before).collect::<Vec<_>>(), "{named}");
        }
    }
}
