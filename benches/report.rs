//! Weekly-report benchmark: a week of N decision-log entries (default 10 million) from
//! 2 000 pupils on 50 000 hosts, then the report over it — verification included, as
//! `gatehouse report` does — timing it and its memory.
//!
//! `cargo bench --bench report` (or `-- 10000000`).

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a benchmark reads the clock and files

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use gatehouse::decision_log::{
    chain_next, frame, genesis, segment_name, Body, Decision, Entry, SegmentHeader, StoredAction,
};
use gatehouse::lists::CacheMode;

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_string)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn main() {
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    // REPORT_BENCH_DIR keeps the generated log, to run `gatehouse report` or
    // `gatehouse log verify` on it afterwards.
    let dir = tempfile::tempdir().expect("dir");
    let log = match std::env::var_os("REPORT_BENCH_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => dir.path().join("log"),
    };
    let _ = std::fs::remove_dir_all(&log);
    std::fs::create_dir_all(&log).expect("log dir");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let snap = gatehouse::snapshot::load(&root.join("policy/gatehouse.toml"), CacheMode::Use)
        .expect("example policy");
    let period = gatehouse::report::iso_week("2026-W47", snap.policy.timezone).expect("week");
    let start = period.from.timestamp_micros();
    let span = (period.to - period.from).num_microseconds().unwrap_or(1);
    let groups = ["ks3", "ks4", "sixth-form", "staff"];
    let categories: [&[&str]; 6] = [
        &[],
        &[],
        &[],
        &["gambling"],
        &["pornography"],
        &["social-media"],
    ];

    // Write the week as 64 MiB segments, as the writer would.
    let t = Instant::now();
    let node = "bench";
    let mut chain = genesis(node);
    let mut buf = Vec::with_capacity(70 << 20);
    let mut first = 1u64;
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for seq in 1..=n {
        if buf.is_empty() {
            buf.extend(
                SegmentHeader {
                    node: node.into(),
                    first_seq: seq,
                    prev_chain: chain,
                    created_us: start,
                }
                .encode(),
            );
            first = seq;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let pupil = x % 2_000;
        let host = (x >> 16) % 50_000;
        let cats = categories[((x >> 40) % 6) as usize];
        let blocked = !cats.is_empty() && cats[0] != "social-media"
            || (cats == ["social-media"] && pupil.is_multiple_of(2));
        let body = Body::Decision(Decision {
            client: IpAddr::V4(Ipv4Addr::new(
                10,
                30,
                (pupil / 250) as u8,
                (pupil % 250) as u8,
            )),
            user: Some(format!("pupil{pupil}")),
            group: groups[(pupil % 4) as usize].to_string(),
            method: "CONNECT".into(),
            url: format!("site{host}.example:443"),
            sni: Some(format!("site{host}.example")),
            categories: cats.iter().map(|c| c.to_string()).collect(),
            action: if blocked {
                StoredAction::Block
            } else {
                StoredAction::Allow
            },
            reason: if blocked {
                gatehouse::decision_log::ReasonCode::Category
            } else {
                gatehouse::decision_log::ReasonCode::Mode
            },
            grant: None,
            status: if blocked { 403 } else { 200 },
            terms: vec![],
            safe_search: None,
            enforced: Vec::new(),
            device: None,
            original_destination: None,
        });
        let time_us = start + (seq as i64 * span / n as i64);
        let payload = postcard::to_stdvec(&Entry { seq, time_us, body }).expect("encode");
        frame(&payload, &mut buf);
        chain = chain_next(&chain, &payload);
        if buf.len() >= 64 << 20 || seq == n {
            std::fs::write(log.join(segment_name(first)), &buf).expect("segment");
            buf.clear();
        }
    }
    let written = t.elapsed().as_secs_f64();

    let rss_before = rss_mib();
    let t = Instant::now();
    let mut builder = gatehouse::report::Builder::new(&snap.policy, period);
    let r = gatehouse::decision_log::reader::verify_and_read(&log, &mut |node, e| {
        builder.entry(node, e)
    })
    .expect("read");
    assert!(r.fault.is_none(), "{:?}", r.fault);
    let report = builder.finish(
        &snap.grants,
        &Default::default(),
        vec![],
        chrono::Utc::now(),
    );
    let html = report.html();
    let secs = t.elapsed().as_secs_f64();
    println!("weekly report benchmark: {n} entries, 2 000 pupils, 50 000 hosts (log written in {written:.1} s)");
    println!(
        "  report (verify + aggregate + HTML): {secs:.2} s; peak RSS {:.0} MiB (before: {rss_before:.0} MiB); {} alert rows, HTML {} KiB",
        rss_mib(),
        report.alerts.len(),
        html.len() / 1024
    );
}
