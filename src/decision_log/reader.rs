//! Reading the decision log: segments in order, frames with their checksums, the
//! chain check behind `gatehouse log verify`, and the entry stream behind export, tail
//! and the weekly report.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use super::{chain_next, genesis, segment_first_seq, Body, Entry, SegmentHeader, MAX_PAYLOAD};

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameFault {
    /// The file ends inside a frame.
    Torn,
    /// The length field is impossible.
    BadLength(u32),
    /// The checksum does not match the payload.
    BadChecksum,
}

impl std::fmt::Display for FrameFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameFault::Torn => write!(f, "the file ends in the middle of an entry (torn write)"),
            FrameFault::BadLength(n) => write!(f, "impossible entry length {n}"),
            FrameFault::BadChecksum => {
                write!(f, "checksum mismatch (the entry's bytes were changed)")
            }
        }
    }
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
    pub fn open(path: &Path) -> Result<(SegmentHeader, Frames), String> {
        let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut start = vec![0u8; 10];
        reader
            .read_exact(&mut start)
            .map_err(|_| format!("{}: segment header is truncated", path.display()))?;
        let node_len = usize::from(u16::from_le_bytes([start[8], start[9]]));
        let mut rest = vec![0u8; node_len + 8 + 32 + 8 + 4];
        reader
            .read_exact(&mut rest)
            .map_err(|_| format!("{}: segment header is truncated", path.display()))?;
        start.extend_from_slice(&rest);
        let (header, len) =
            SegmentHeader::decode(&start).map_err(|e| format!("{}: {e}", path.display()))?;
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
    pub damage: Option<String>,
}

/// Scans a segment to its last good entry.
pub fn scan_tail(path: &Path) -> Result<TailScan, String> {
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
                    damage = Some(format!(
                        "entry at byte {good_len} has sequence {} after {last_seq}",
                        entry.seq
                    ));
                    break;
                }
                Err(e) => {
                    damage = Some(format!("entry at byte {good_len} does not decode: {e}"));
                    break;
                }
            },
            Err((at, fault)) => {
                damage = Some(format!("at byte {at}: {fault}"));
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
    pub fault: Option<String>,
}

/// Checks every checksum, the sequence and the whole chain, from the oldest segment kept
/// (retention may have removed older ones: the oldest segment's header anchors the
/// chain). Stops at the first fault.
pub fn verify(dir: &Path) -> Result<VerifyReport, String> {
    verify_and_read(dir, &mut |_, _| {})
}

/// [`verify`], handing every entry it checks to `on_entry` (with the node that wrote
/// it): one pass for readers, such as the weekly report, that must also verify.
pub fn verify_and_read(
    dir: &Path,
    on_entry: &mut dyn FnMut(&str, &Entry),
) -> Result<VerifyReport, String> {
    let segments = list_segments(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut report = VerifyReport::default();
    let mut expect: Option<(u64, [u8; 32])> = None; // next seq, chain
    for path in &segments {
        report.segments += 1;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_string();
        let (header, frames) = match Frames::open(path) {
            Ok(x) => x,
            Err(e) => {
                report.fault = Some(e);
                return Ok(report);
            }
        };
        match expect {
            None => {
                if header.first_seq == 1 && header.prev_chain != genesis(&header.node) {
                    report.fault = Some(format!(
                        "{name}: the first segment does not start the chain"
                    ));
                    return Ok(report);
                }
            }
            Some((seq, chain)) => {
                if header.first_seq != seq {
                    report.fault = Some(format!(
                        "{name}: starts at entry {} but entry {seq} was expected (entries missing or reordered)",
                        header.first_seq
                    ));
                    return Ok(report);
                }
                if header.prev_chain != chain {
                    report.fault = Some(format!(
                        "{name}: does not continue the previous segment's chain"
                    ));
                    return Ok(report);
                }
            }
        }
        let mut seq = header.first_seq;
        let mut chain = header.prev_chain;
        for frame in frames {
            let payload = match frame {
                Ok(p) => p,
                Err((at, fault)) => {
                    report.fault = Some(format!("{name}: entry {seq} (byte {at}): {fault}"));
                    return Ok(report);
                }
            };
            let entry: Entry = match postcard::from_bytes(&payload) {
                Ok(e) => e,
                Err(e) => {
                    report.fault = Some(format!("{name}: entry {seq}: does not decode: {e}"));
                    return Ok(report);
                }
            };
            if entry.seq != seq {
                report.fault = Some(format!(
                    "{name}: entry {seq} carries sequence {} (entries missing or reordered)",
                    entry.seq
                ));
                return Ok(report);
            }
            if let Body::Seal { chain: sealed } = &entry.body {
                if *sealed != chain {
                    report.fault = Some(format!(
                        "{name}: the seal at entry {seq} does not match the chain: an entry before it was changed"
                    ));
                    return Ok(report);
                }
                report.seals += 1;
            }
            chain = chain_next(&chain, &payload);
            on_entry(&header.node, &entry);
            report.first_seq.get_or_insert(seq);
            report.last_seq = Some(seq);
            report.entries += 1;
            seq += 1;
        }
        expect = Some((seq, chain));
    }
    Ok(report)
}

/// Every readable entry of a log directory, oldest first, with the node that wrote it.
/// Stops quietly at a damaged frame (verify reports damage; readers read what is sound).
pub fn entries(dir: &Path) -> Result<impl Iterator<Item = (String, Entry)>, String> {
    entries_after(dir, 0)
}

/// Entries with a sequence number above `after`, reading only the segments that can
/// hold them (for `log tail -f`).
pub fn entries_after(
    dir: &Path,
    after: u64,
) -> Result<impl Iterator<Item = (String, Entry)>, String> {
    let mut segments = list_segments(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
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
