//! The decision log with real processes: nothing acknowledged is lost to `kill -9`, a
//! torn or corrupt tail is cut off on restart, tampering is found by `log verify`, a
//! full disk fails closed for pupils only and clears itself, export round-trips.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests are shell: they read files and clocks

mod common;

use std::path::{Path, PathBuf};

use std::process::Command;
use std::time::Duration;

use common::servers::{curl, Gatehouse, Origin};
use gatehouse::decision_log::{reader, SegmentHeader};

fn policy() -> String {
    r#"[school]
name = "Log School"
[lists]
dir = "lists"
[categories.gambling]
severity = "inappropriate"
[identity]
default_group = "pupils"
[[identity.subnets]]
cidr = "127.0.0.2/32"
group = "staff"
[groups.pupils]
mode = "blocklist"
block = ["gambling"]
[groups.staff]
mode = "blocklist"
block = ["gambling"]
on_log_failure = "allow"
[log]
dir = "log"
fsync_interval_ms = 50
[admin]
listen = "127.0.0.1:0"
[server]
listen = "127.0.0.1:0"
allow_internal_destinations = ["127.0.0.1/32"]
[server.resolve]
"origin.test" = "127.0.0.1"
"bet.test" = "127.0.0.1"
"#
    .to_string()
}

fn files() -> Vec<(&'static str, String)> {
    vec![
        ("policy.toml", policy()),
        ("lists/gambling/domains", "bet.test\n".into()),
    ]
}

fn start() -> Gatehouse {
    let f = files();
    let refs: Vec<(&str, &str)> = f.iter().map(|(a, b)| (*a, b.as_str())).collect();
    Gatehouse::start(&refs)
}

fn gatehouse_cmd(args: &[&str]) -> (i32, String) {
    let out = common::gatehouse().args(args).output().expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn export(log: &Path) -> Vec<serde_json::Value> {
    let (code, text) = gatehouse_cmd(&[
        "log",
        "export",
        "--dir",
        log.to_str().expect("path"),
        "--format",
        "jsonl",
    ]);
    assert_eq!(code, 0, "{text}");
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn verify(log: &Path) -> (i32, String) {
    gatehouse_cmd(&["log", "verify", log.to_str().expect("path")])
}

fn last_segment(log: &Path) -> PathBuf {
    reader::list_segments(log)
        .expect("segments")
        .pop()
        .expect("a segment")
}

#[test]
fn kill_9_loses_no_decision_and_verify_is_clean() {
    let origin = Origin::http();
    let g = start();
    let n = 40;
    for i in 0..n {
        let host = if i % 2 == 0 {
            "origin.test"
        } else {
            "bet.test"
        };
        let r = curl(&[
            "-x",
            &g.url(),
            &format!("http://{host}:{}/{i}", origin.port),
        ]);
        assert!(
            r.status == 200 || r.status == 403 || r.status == 404,
            "{r:?}"
        );
    }
    // kill -9: no chance to flush or seal.
    let dir = g.kill9();
    let log = dir.path().join("log");
    let decisions = export(&log);
    assert_eq!(decisions.len(), n, "every acknowledged decision is on disk");
    assert_eq!(
        decisions.iter().filter(|d| d["action"] == "block").count(),
        n / 2
    );
    let (code, text) = verify(&log);
    assert_eq!(code, 0, "{text}");
    // Restart on the same directory: sequence numbers continue, the chain still holds.
    let before = reader::verify(&log)
        .expect("verify")
        .last_seq
        .expect("entries");
    let g2 = Gatehouse::start_in(dir);
    let r = curl(&[
        "-x",
        &g2.url(),
        &format!("http://bet.test:{}/again", origin.port),
    ]);
    assert_eq!(r.status, 403);
    let dir = g2.stop();
    let log = dir.path().join("log");
    let report = reader::verify(&log).expect("verify");
    assert!(report.fault.is_none(), "{:?}", report.fault);
    assert!(report.first_seq == Some(1) && report.last_seq.expect("entries") > before);
}

#[test]
fn torn_tail_is_cut_off_and_corruption_is_named() {
    let origin = Origin::http();
    let g = start();
    for i in 0..10 {
        curl(&[
            "-x",
            &g.url(),
            &format!("http://bet.test:{}/{i}", origin.port),
        ]);
    }
    let dir = g.kill9();
    let log = dir.path().join("log");
    let segment = last_segment(&log);
    let len = std::fs::metadata(&segment).expect("meta").len();

    // Tear the last entry: cut the file 5 bytes short.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .expect("open")
        .set_len(len - 5)
        .expect("truncate");
    let (code, text) = verify(&log);
    assert_eq!(code, 1, "a torn tail is a fault until repaired: {text}");
    assert!(text.contains("torn"), "{text}");
    let g2 = Gatehouse::start_in(dir);
    assert!(
        g2.wait_for_log("decision log tail damaged", Duration::from_secs(5)),
        "{}",
        g2.log()
    );
    let r = curl(&[
        "-x",
        &g2.url(),
        &format!("http://bet.test:{}/after", origin.port),
    ]);
    assert_eq!(r.status, 403);
    let dir = g2.stop();
    let log = dir.path().join("log");
    let segment = last_segment(&log);
    let (code, text) = verify(&log);
    assert_eq!(code, 0, "restart cut the tail and carried on: {text}");

    // Flip one byte in the middle of the segment: verify names the entry.
    let mut bytes = std::fs::read(&segment).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&segment, &bytes).expect("write");
    let (code, text) = verify(&log);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("FAULT") && text.contains("entry "), "{text}");
}

#[test]
fn editing_a_url_in_place_breaks_the_chain() {
    let origin = Origin::http();
    let g = start();
    for i in 0..5 {
        curl(&[
            "-x",
            &g.url(),
            &format!("http://bet.test:{}/page{i}", origin.port),
        ]);
    }
    std::thread::sleep(Duration::from_millis(200)); // a seal after the writes
    let dir = g.stop();
    let log = dir.path().join("log");
    let segment = last_segment(&log);
    let mut bytes = std::fs::read(&segment).expect("read");
    // Change "page2" to "pagX2" and fix the frame's checksum, as a careful forger would.
    let at = bytes
        .windows(5)
        .position(|w| w == b"page2")
        .expect("url in the log");
    bytes[at + 3] = b'X';
    let (_, header_len) = SegmentHeader::decode(&bytes).expect("header");
    let mut pos = header_len;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("len")) as usize;
        let payload = pos + 8..pos + 8 + len;
        if payload.contains(&at) {
            let crc = crc32c::crc32c(&bytes[payload.clone()]);
            bytes[pos + 4..pos + 8].copy_from_slice(&crc.to_le_bytes());
        }
        pos = payload.end;
    }
    std::fs::write(&segment, &bytes).expect("write");
    let (code, text) = verify(&log);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("does not match the chain"), "{text}");
}

#[test]
fn a_full_disk_fails_closed_for_pupils_only_and_recovers() {
    let origin = Origin::http();
    let g = start();
    // Limit the proxy's file size to the log's current size: every write now fails.
    let log = g.dir.path().join("log");
    let size = std::fs::metadata(last_segment(&log)).expect("meta").len();
    let status = Command::new("prlimit")
        .args([
            &format!("--pid={}", g.pid()),
            &format!("--fsize={size}:unlimited"),
        ])
        .status()
        .expect("prlimit runs");
    assert!(status.success());
    let url = format!("http://origin.test:{}/", origin.port);
    let r = curl(&["-x", &g.url(), &url]);
    assert_eq!(
        r.status, 503,
        "pupils are refused while nothing can be logged: {r:?}"
    );
    assert!(r.body.contains("cannot record requests"), "{r:?}");
    let r = curl(&["-x", &g.url(), "--interface", "127.0.0.2", &url]);
    assert_eq!(
        r.status, 200,
        "staff (on_log_failure = allow) are served: {r:?}"
    );
    let r = curl(&["-x", &g.url(), &format!("http://bet.test:{}/", origin.port)]);
    assert_eq!(r.status, 403, "blocks still block");
    assert!(g.wait_for_log("decision log write failed", Duration::from_secs(2)));
    // Space returns: the next write succeeds and pupils are served again.
    let status = Command::new("prlimit")
        .args([&format!("--pid={}", g.pid()), "--fsize=unlimited:unlimited"])
        .status()
        .expect("prlimit runs");
    assert!(status.success());
    let r = curl(&["-x", &g.url(), &url]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(g.wait_for_log("decision log writable again", Duration::from_secs(2)));
    let dir = g.stop();
    let (code, text) = verify(&dir.path().join("log"));
    assert_eq!(code, 0, "no half-written entry was left behind: {text}");
}

#[test]
fn export_round_trips_in_every_format() {
    let origin = Origin::http();
    let g = start();
    let ok = format!("http://origin.test:{}/a?b=c", origin.port);
    let bad = format!("http://bet.test:{}/odds", origin.port);
    assert_eq!(
        curl(&["-x", &g.url(), "--interface", "127.0.0.2", &ok]).status,
        200
    );
    assert_eq!(curl(&["-x", &g.url(), &bad]).status, 403);
    let dir = g.stop();
    let log = dir.path().join("log");
    let rows = export(&log);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["url"], ok);
    assert_eq!(rows[0]["group"], "staff");
    assert_eq!(rows[0]["action"], "allow");
    assert_eq!(rows[0]["status"], 200);
    assert!(rows[0]["bytes_down"].as_u64().expect("bytes") > 0);
    assert_eq!(rows[1]["url"], bad);
    assert_eq!(rows[1]["categories"], serde_json::json!(["gambling"]));
    assert_eq!(rows[1]["action"], "block");
    assert_eq!(rows[1]["client"], "127.0.0.1");
    let (_, csv) = gatehouse_cmd(&[
        "log",
        "export",
        "--dir",
        log.to_str().expect("p"),
        "--format",
        "csv",
    ]);
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("time,node,seq,client"));
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[2].contains(",gambling,block,category,"), "{csv}");
    let (_, squid) = gatehouse_cmd(&[
        "log",
        "export",
        "--dir",
        log.to_str().expect("p"),
        "--format",
        "squid",
    ]);
    let lines: Vec<&str> = squid.lines().collect();
    assert!(
        lines[0].contains(" 127.0.0.2 TCP_MISS/200 ") && lines[0].contains(&format!(" GET {ok} ")),
        "{squid}"
    );
    assert!(
        lines[1].contains(" TCP_DENIED/403 ") && lines[1].contains(&bad),
        "{squid}"
    );
    // --since after everything exports nothing.
    let (_, none) = gatehouse_cmd(&[
        "log",
        "export",
        "--dir",
        log.to_str().expect("p"),
        "--since",
        "2999-01-01",
    ]);
    assert!(none.trim().is_empty(), "{none}");
}

#[test]
fn retention_deletes_whole_old_segments_and_records_it() {
    let origin = Origin::http();
    let small = policy().replace(
        "fsync_interval_ms = 50",
        "fsync_interval_ms = 50\nsegment_mib = 1\nretention_days = 30",
    );
    let g = Gatehouse::start(&[
        ("policy.toml", small.as_str()),
        ("lists/gambling/domains", "bet.test\n"),
    ]);
    // ~20 000 refusals on one keep-alive connection: more than a 1 MiB segment holds.
    let config = g.dir.path().join("urls.curl");
    let lines: String = (0..20_000)
        .map(|i| {
            format!(
                "url = \"http://bet.test:{}/{i}\"\noutput = \"/dev/null\"\n",
                origin.port
            )
        })
        .collect();
    std::fs::write(&config, lines).expect("curl config");
    let status = Command::new("curl")
        .args(["-s", "-x", &g.url(), "-K"])
        .arg(&config)
        .status()
        .expect("curl runs");
    assert!(status.success());
    let dir = g.stop();
    let log = dir.path().join("log");
    let segments = reader::list_segments(&log).expect("segments");
    assert!(segments.len() >= 2, "{segments:?}");
    // The oldest segment was last written 400 days ago.
    let old = &segments[0];
    let touched = Command::new("touch")
        .args(["-d", "400 days ago"])
        .arg(old)
        .status()
        .expect("touch runs");
    assert!(touched.success());
    let g = Gatehouse::start_in(dir);
    assert!(
        g.wait_for_log("retention deleted old segments", Duration::from_secs(5)),
        "{}",
        g.log()
    );
    let dir = g.stop();
    let log = dir.path().join("log");
    assert!(!old.exists(), "the old segment is gone");
    let (code, text) = verify(&log);
    assert_eq!(
        code, 0,
        "the chain verifies from the oldest kept segment: {text}"
    );
    let (_, tail) = gatehouse_cmd(&[
        "log",
        "tail",
        "--dir",
        log.to_str().expect("path"),
        "-n",
        "50",
    ]);
    assert!(
        tail.contains("retention deleted decisions-00000000000000000001.ghlog"),
        "{tail}"
    );
}
