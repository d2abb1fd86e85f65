//! Property tests of the decision-log reader against damage. A real log is written by
//! the writer (two runs into one segment, each ending with a seal), then cut short,
//! flipped or padded at arbitrary places. Whatever the damage:
//!
//! - reading, scanning and verifying never panic;
//! - what any reader returns is a prefix of what was written: no damaged entry ever
//!   comes back as data;
//! - `verify` reports a fault unless the file is exactly a run of whole frames of the
//!   log as written (a tail cut at a frame boundary), so it catches any byte changed;
//! - `scan_tail` stops at the end of the last whole frame before the damage, which is
//!   where the writer cuts a torn tail on restart — and a restarted writer then
//!   continues a log that verifies.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests are shell: they read files and clocks

use std::net::IpAddr;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use gatehouse::decision_log::reader::{self, Frames};
use gatehouse::decision_log::writer::{self, LogSettings};
use gatehouse::decision_log::{segment_name, Body, Decision, Entry, SegmentHeader, StoredAction};
use proptest::prelude::*;
use proptest::sample::Index;

/// The log as written: its one segment's bytes and entries, and where frames end.
struct Clean {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
    /// The header's end, then each frame's end: the lengths at which a cut leaves only
    /// whole frames.
    boundaries: Vec<usize>,
}

fn settings(dir: &Path) -> LogSettings {
    LogSettings {
        dir: dir.to_path_buf(),
        node: "prop".into(),
        // Long: no timed seal lands at a moment the test does not choose.
        fsync_interval: Duration::from_secs(3600),
        segment_bytes: 64 << 20,
        queue: 1024,
        retention_days: 0,
    }
}

/// The `i`th entry body: decisions with user-typed text of every length, and the other
/// kinds of entry between them.
fn body(i: u64) -> Body {
    match i % 5 {
        0 => Body::Completion {
            of: i,
            status: 200,
            bytes_up: i * 17,
            bytes_down: i << 20,
            duration_us: i * 1_003,
        },
        1 => Body::Grant {
            action: gatehouse::decision_log::GrantEvent::Added,
            id: format!("g-{i}"),
            ticket: format!("HD-{i}"),
            by: "j.smith".into(),
            detail: "x".repeat(i as usize % 40),
        },
        _ => Body::Decision(Decision {
            client: IpAddr::from([10, 0, (i % 7) as u8, (i % 251) as u8]),
            user: i.is_multiple_of(3).then(|| format!("pupil-{i}")),
            group: "ks4".into(),
            method: if i.is_multiple_of(4) {
                "CONNECT"
            } else {
                "GET"
            }
            .into(),
            url: format!(
                "http://site-{i}.example/{}?q={i}",
                "p/".repeat(i as usize % 30)
            ),
            sni: None,
            categories: vec!["games".into(); i as usize % 3],
            action: if i.is_multiple_of(2) {
                StoredAction::Block
            } else {
                StoredAction::Allow
            },
            reason: gatehouse::decision_log::ReasonCode::Category,
            grant: None,
            status: if i.is_multiple_of(2) { 403 } else { 0 },
            terms: Vec::new(),
            enforced: Vec::new(),
            safe_search: None,
            device: None,
            original_destination: None,
        }),
    }
}

/// Writes the log once for all cases: two runs of the writer, so the segment holds a
/// restart (a second `Start`) and two seals.
fn clean() -> &'static Clean {
    static CLEAN: OnceLock<Clean> = OnceLock::new();
    CLEAN.get_or_init(|| {
        let dir = tempfile::tempdir().expect("dir");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        for run in 0..2u64 {
            let log = writer::open(settings(dir.path())).expect("open");
            for i in 0..60 {
                log.append_nowait(body(run * 60 + i));
            }
            runtime.block_on(log.close());
        }
        let segments = reader::list_segments(dir.path()).expect("segments");
        assert_eq!(segments.len(), 1, "one segment: {segments:?}");
        let bytes = std::fs::read(&segments[0]).expect("read");
        let entries: Vec<Entry> = reader::entries(dir.path())
            .expect("entries")
            .map(|(_, e)| e)
            .collect();
        let report = reader::verify(dir.path()).expect("verify");
        assert!(
            report.fault.is_none(),
            "the clean log verifies: {:?}",
            report.fault
        );
        assert_eq!(report.seals, 2);
        let (_, header_len) = SegmentHeader::decode(&bytes).expect("header");
        let mut boundaries = vec![header_len];
        let mut at = header_len;
        while at < bytes.len() {
            let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
            at += 8 + len as usize;
            boundaries.push(at);
        }
        assert_eq!(at, bytes.len(), "the clean segment ends with a whole frame");
        assert_eq!(boundaries.len() - 1, entries.len(), "one entry per frame");
        assert_eq!(
            entries.len(),
            2 + 120 + 2,
            "two starts, the bodies, two seals"
        );
        Clean {
            bytes,
            entries,
            boundaries,
        }
    })
}

/// Puts `damaged` in place of the clean segment and checks what every reader makes of it.
fn check(damaged: &[u8]) -> Result<(), TestCaseError> {
    let clean = clean();
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join(segment_name(1));
    std::fs::write(&path, damaged).expect("write");

    // The damage starts where the bytes stop matching what was written (an inserted
    // byte equal to the one it displaces changes nothing there); the frames wholly
    // before that are intact, and the first frame after it fails its checksum, is torn
    // or has an impossible length (short of a CRC-32C collision: one in 2^32).
    let same = damaged
        .iter()
        .zip(&clean.bytes)
        .take_while(|(a, b)| a == b)
        .count();
    let intact = clean.boundaries.iter().rposition(|b| *b <= same);
    let whole_frames = intact.unwrap_or(0);
    let expected = &clean.entries[..whole_frames];
    // Only a cut at a frame boundary leaves a log with nothing wrong in it.
    let undamaged = same == damaged.len() && clean.boundaries.contains(&same);

    let read: Vec<Entry> = reader::entries(dir.path())
        .expect("entries")
        .map(|(_, e)| e)
        .collect();
    prop_assert_eq!(&read, expected, "entries() reads exactly the intact frames");

    let mut verified = Vec::new();
    let report = reader::verify_and_read(dir.path(), &mut |_, e| verified.push(e.clone()))
        .expect("the directory is readable");
    prop_assert_eq!(
        &verified,
        expected,
        "verify hands on exactly the intact frames"
    );
    prop_assert_eq!(
        report.fault.is_none(),
        undamaged,
        "fault {:?} (same for {} bytes of {})",
        report.fault,
        same,
        damaged.len()
    );

    match (reader::scan_tail(&path), intact) {
        (Ok(tail), Some(i)) => {
            prop_assert_eq!(tail.good_len, clean.boundaries[i] as u64, "cut at");
            let last_seq = expected.last().map_or(0, |e| e.seq);
            prop_assert_eq!(tail.last_seq, last_seq);
            prop_assert_eq!(tail.damage.is_none(), undamaged, "{:?}", tail.damage);
        }
        (Err(_), None) => {} // the header itself is damaged: nothing to scan
        (tail, intact) => {
            return Err(TestCaseError::fail(format!(
                "scan_tail {tail:?} with the header intact: {intact:?}"
            )))
        }
    }

    // The raw frame iterator and lookups by sequence number: no panic, no garbage.
    if let Ok((_, frames)) = Frames::open(&path) {
        let good = frames.take_while(Result::is_ok).count();
        prop_assert!(good <= clean.entries.len());
    }
    for seq in [1, 60, clean.entries.len() as u64] {
        let found = reader::find(dir.path(), seq).expect("find");
        if let Some(found) = found {
            prop_assert_eq!(Some(&found.entry), expected.get(seq as usize - 1));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A segment cut anywhere, as a crash or a full disk leaves it.
    #[test]
    fn a_cut_segment_reads_as_its_whole_frames(cut in any::<Index>()) {
        let clean = clean();
        let cut = cut.index(clean.bytes.len() + 1);
        check(&clean.bytes[..cut])?;
    }

    /// One byte changed anywhere in the written region.
    #[test]
    fn a_flipped_byte_is_reported_and_never_read(at in any::<Index>(), mask in 1..=255u8) {
        let clean = clean();
        let mut bytes = clean.bytes.clone();
        let at = at.index(bytes.len());
        bytes[at] ^= mask;
        check(&bytes)?;
    }

    /// Bytes inserted anywhere, the end included (garbage after the last frame).
    #[test]
    fn inserted_bytes_are_reported_and_never_read(
        at in any::<Index>(),
        extra in proptest::collection::vec(any::<u8>(), 1..24),
    ) {
        let clean = clean();
        let at = at.index(clean.bytes.len() + 1);
        let mut bytes = clean.bytes[..at].to_vec();
        bytes.extend_from_slice(&extra);
        bytes.extend_from_slice(&clean.bytes[at..]);
        check(&bytes)?;
    }
}

proptest! {
    // Each case starts a writer (two threads) and syncs to disk: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A writer restarted on a torn segment cuts it at the last whole frame and goes on
    /// with the next sequence number; the log then verifies.
    #[test]
    fn a_restarted_writer_cuts_a_torn_tail_and_continues(cut in any::<Index>()) {
        let clean = clean();
        let cut = cut.index(clean.bytes.len() + 1);
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join(segment_name(1)), &clean.bytes[..cut]).expect("write");
        let kept = clean.boundaries.iter().rposition(|b| *b <= cut);
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let log = writer::open(settings(dir.path())).expect("open");
        log.append_nowait(body(1));
        runtime.block_on(log.close());
        drop(log);
        let report = reader::verify(dir.path()).expect("verify");
        prop_assert!(report.fault.is_none(), "{:?}", report.fault);
        let read: Vec<Entry> = reader::entries(dir.path()).expect("entries").map(|(_, e)| e).collect();
        // A segment whose header was torn is set aside and the log starts again.
        let kept = &clean.entries[..kept.unwrap_or(0)];
        prop_assert_eq!(&read[..kept.len()], kept);
        let seqs: Vec<u64> = read.iter().map(|e| e.seq).collect();
        prop_assert_eq!(seqs, (1..=read.len() as u64).collect::<Vec<_>>());
        // Then its own start, the entry, and the seal at close.
        prop_assert_eq!(read.len(), kept.len() + 3);
    }
}
