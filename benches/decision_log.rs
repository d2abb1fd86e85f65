//! Decision-log benchmark: sustained append rate of the writer alone (default 100 ms
//! fsync), bytes per record on disk, and `log verify` time.
//!
//! `cargo bench --bench decision_log` (or `-- 10000000` for the number of records).
//! The workload is synthetic and deterministic: a school day's mix of allowed and
//! blocked requests from a few hundred clients, with completions for forwarded ones.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a benchmark reads the clock

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse::decision_log::writer::{open, LogSettings};
use gatehouse::decision_log::{reader, Body, Decision, StoredAction};

const HOSTS: &[&str] = &[
    "www.bbc.co.uk",
    "www.google.com",
    "classroom.google.com",
    "www.youtube.com",
    "login.microsoftonline.com",
    "www.wikipedia.org",
    "www.instagram.com",
    "www.tiktok.com",
    "www.pokerstars.com",
    "www.roblox.com",
    "www.topmarks.co.uk",
    "www.mathsisfun.com",
    "teams.microsoft.com",
    "www.theguardian.com",
];
const GROUPS: &[&str] = &["ks3", "ks4", "sixth-form", "staff", "guest"];

fn decision(i: u64) -> Body {
    let host = HOSTS[(i % HOSTS.len() as u64) as usize];
    let blocked = matches!(
        host,
        "www.instagram.com" | "www.tiktok.com" | "www.pokerstars.com" | "www.roblox.com"
    );
    let tunnel = !i.is_multiple_of(3);
    Body::Decision(Decision {
        client: IpAddr::V4(Ipv4Addr::new(10, 30, (i / 250 % 4) as u8, (i % 250) as u8)),
        user: None,
        group: GROUPS[(i % GROUPS.len() as u64) as usize].to_string(),
        method: if tunnel {
            "CONNECT".into()
        } else {
            "GET".into()
        },
        url: if tunnel {
            format!("{host}:443")
        } else {
            format!("http://{host}/page/{}", i % 1000)
        },
        sni: tunnel.then(|| host.to_string()),
        categories: if blocked {
            vec!["social-media".into()]
        } else {
            vec![]
        },
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
        status: if blocked { 403 } else { 0 },
        terms: vec![],
        enforced: Vec::new(),
        safe_search: None,
        device: None,
        original_destination: None,
    })
}

fn main() {
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = LogSettings {
        dir: dir.path().join("log"),
        node: "bench".into(),
        fsync_interval: Duration::from_millis(100),
        segment_bytes: 64 << 20,
        queue: 65_536,
        retention_days: 0,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let handle = open(settings).expect("log opens");
    // 256 concurrent "requests", each waiting for its acknowledgement as the proxy does;
    // forwarded ones also send a completion without waiting.
    let started = Instant::now();
    let tasks = 256u64;
    runtime.block_on(async {
        let handle = Arc::new(handle);
        let mut joins = Vec::new();
        for t in 0..tasks {
            let handle = handle.clone();
            joins.push(tokio::spawn(async move {
                let mut i = t;
                let mut records = 0u64;
                while i < n {
                    let body = decision(i);
                    let forwarded = matches!(&body, Body::Decision(d) if d.status == 0);
                    let seq = handle.append(body).await.expect("append");
                    records += 1;
                    if forwarded {
                        handle.append_later(Body::Completion { of: seq, status: 200, bytes_up: 800, bytes_down: 35_000, duration_us: 40_000 });
                        records += 1;
                    }
                    i += tasks;
                }
                records
            }));
        }
        let mut total = 0;
        for j in joins {
            total += j.await.expect("task");
        }
        handle.close().await;
        let secs = started.elapsed().as_secs_f64();
        let bytes: u64 = reader::list_segments(&dir.path().join("log"))
            .expect("segments")
            .iter()
            .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum();
        println!("decision log benchmark: {n} decisions (+ completions: {total} records) from {tasks} concurrent writers");
        println!("  append: {:.0} records/s ({:.0} decisions/s) with 100 ms fsync", total as f64 / secs, n as f64 / secs);
        println!("  on disk: {:.1} bytes/record ({:.1} bytes/decision incl. its completion)", bytes as f64 / total as f64, bytes as f64 / n as f64);
    });
    let t = Instant::now();
    let report = reader::verify(&dir.path().join("log")).expect("verify");
    assert!(report.fault.is_none(), "{:?}", report.fault);
    println!(
        "  verify: {} entries in {:.2} s ({:.0} entries/s)",
        report.entries,
        t.elapsed().as_secs_f64(),
        report.entries as f64 / t.elapsed().as_secs_f64()
    );
}
