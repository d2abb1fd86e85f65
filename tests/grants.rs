//! Grants with real processes: the technician's CLI edits the grants file, the running
//! proxy sees it within a second, grants end on time, stay within their scope, never
//! reach illegal content, and a broken hand edit changes nothing.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests are shell: they read files and clocks

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::servers::{curl, Gatehouse, Origin};

const KS4: &str = "127.0.0.4";

fn start() -> Gatehouse {
    let policy = r#"[school]
name = "Grants School"
[lists]
dir = "lists"
[categories.csam]
severity = "illegal"
[categories.gambling]
severity = "inappropriate"
[categories.extremism]
severity = "safeguarding"
[identity]
default_group = "ks2"
[[identity.subnets]]
cidr = "127.0.0.4/32"
group = "ks4"
[groups.ks2]
mode = "blocklist"
block = ["gambling", "extremism"]
[groups.ks4]
mode = "blocklist"
block = ["gambling", "extremism"]
[log]
dir = "log"
[admin]
listen = "127.0.0.1:0"
[server]
listen = "127.0.0.1:0"
allow_internal_destinations = ["127.0.0.1/32"]
[server.resolve]
"bet.test" = "127.0.0.1"
"csam.test" = "127.0.0.1"
"radical.test" = "127.0.0.1"
"#;
    Gatehouse::start(&[
        ("policy.toml", policy),
        ("lists/csam/domains", "csam.test\n"),
        ("lists/gambling/domains", "bet.test\n"),
        ("lists/extremism/domains", "radical.test\n"),
    ])
}

fn grant(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = common::gatehouse()
        .args(["grant"])
        .args(args)
        .arg("--config")
        .arg(dir.join("policy.toml"))
        .output()
        .expect("gatehouse grant runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Polls until the request gets `want`, for at most `within`; how long it took.
fn until_status(
    g: &Gatehouse,
    source: &str,
    url: &str,
    want: u16,
    within: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        if curl(&["-x", &g.url(), "--interface", source, url]).status == want {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn a_grant_opens_a_site_for_its_group_within_a_second_and_revoke_closes_it() {
    let origin = Origin::http();
    let g = start();
    let url = format!("http://radical.test:{}/unit", origin.port);
    assert_eq!(
        curl(&["-x", &g.url(), "--interface", KS4, &url]).status,
        403
    );
    let (code, out) = grant(
        g.dir.path(),
        &[
            "add",
            "--ticket",
            "HD-4411",
            "--by",
            "j.smith",
            "--reason",
            "GCSE RE unit on extremism",
            "--group",
            "ks4",
            "--site",
            "radical.test",
            "--for",
            "14d",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let id = out.trim().to_string();
    assert_eq!(id, "g-1");
    let took =
        until_status(&g, KS4, &url, 200, Duration::from_secs(3)).expect("allowed after the grant");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // The grant is for ks4 only.
    assert_eq!(
        curl(&["-x", &g.url(), &url]).status,
        403,
        "ks2 is still blocked"
    );
    assert!(g.wait_for_log("reloaded grants", Duration::from_secs(2)));
    // Listed with time left.
    let (_, list) = grant(g.dir.path(), &["list"]);
    assert!(
        list.contains("g-1  active  HD-4411  by j.smith") && list.contains("13d 23h"),
        "{list}"
    );
    // Revoked: blocked again, archived for the record.
    let (code, out) = grant(
        g.dir.path(),
        &[
            "revoke",
            "g-1",
            "--by",
            "a.tech",
            "--reason",
            "unit finished early",
        ],
    );
    assert_eq!(code, 0, "{out}");
    until_status(&g, KS4, &url, 403, Duration::from_secs(3)).expect("blocked after revoke");
    let (_, list) = grant(g.dir.path(), &["list", "--all"]);
    assert!(list.contains("g-1  revoked"), "{list}");
    let text = std::fs::read_to_string(g.dir.path().join("grants.toml")).expect("grants file");
    assert!(
        text.contains("[[archived]]") && text.contains("revoked_by = \"a.tech\""),
        "{text}"
    );
    // The audit trail has both.
    let dir = g.stop();
    let tail = common::log_tail(&dir.path().join("log"));
    assert!(
        tail.contains("grant added g-1 ticket HD-4411 by j.smith"),
        "{tail}"
    );
    assert!(
        tail.contains("grant revoked g-1 ticket HD-4411 by a.tech"),
        "{tail}"
    );
    assert!(
        tail.contains("ALLOW  GET") && tail.contains("ticket HD-4411"),
        "requests carry the ticket: {tail}"
    );
}

#[test]
fn a_short_grant_lapses_on_time_without_a_reload() {
    let origin = Origin::http();
    let g = start();
    let url = format!("http://bet.test:{}/", origin.port);
    let until = (Utc::now() + chrono::Duration::seconds(3)).to_rfc3339();
    let (code, out) = grant(
        g.dir.path(),
        &[
            "add",
            "--ticket",
            "HD-1",
            "--by",
            "t",
            "--reason",
            "maths lesson on probability",
            "--group",
            "ks2",
            "--category",
            "gambling",
            "--until",
            &until,
        ],
    );
    assert_eq!(code, 0, "{out}");
    until_status(&g, "127.0.0.1", &url, 200, Duration::from_secs(2))
        .expect("allowed while the grant runs");
    until_status(&g, "127.0.0.1", &url, 403, Duration::from_secs(6))
        .expect("blocked once it has lapsed");
}

#[test]
fn nothing_reaches_illegal_content_and_bad_files_change_nothing() {
    let origin = Origin::http();
    let g = start();
    let dir = g.dir.path();
    for target in [
        ["--site", "csam.test"],
        ["--site", "www.csam.test"],
        ["--category", "csam"],
    ] {
        let (code, out) = grant(
            dir,
            &[
                "add",
                "--ticket",
                "HD-2",
                "--by",
                "t",
                "--reason",
                "a plausible reason",
                "--group",
                "ks4",
                target[0],
                target[1],
                "--for",
                "1d",
            ],
        );
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("no grant can unblock it") && out.contains("nothing was changed"),
            "{out}"
        );
    }
    // Rules: ticket pattern, a real reason, a bounded duration, known names.
    for (args, says) in [
        (
            vec![
                "--ticket",
                "4411",
                "--reason",
                "a plausible reason",
                "--for",
                "1d",
            ],
            "does not look like a helpdesk ticket",
        ),
        (
            vec!["--ticket", "HD-3", "--reason", "tbc", "--for", "1d"],
            "real reason",
        ),
        (
            vec![
                "--ticket",
                "HD-3",
                "--reason",
                "a plausible reason",
                "--for",
                "60d",
            ],
            "at most 30 days",
        ),
    ] {
        let mut all = vec!["add", "--by", "t", "--group", "ks4", "--site", "bet.test"];
        all.extend(args);
        let (code, out) = grant(dir, &all);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains(says), "{out}");
    }
    let (code, out) = grant(
        dir,
        &[
            "add",
            "--ticket",
            "HD-5",
            "--by",
            "t",
            "--reason",
            "a plausible reason",
            "--group",
            "year9",
            "--site",
            "bet.test",
            "--for",
            "1d",
        ],
    );
    assert_eq!(code, 1);
    assert!(out.contains("unknown group \"year9\""), "{out}");

    // A good grant, then hand edits: one reaching illegal content, one broken TOML.
    let (code, out) = grant(
        dir,
        &[
            "add",
            "--ticket",
            "HD-6",
            "--by",
            "t",
            "--reason",
            "a plausible reason",
            "--group",
            "ks2",
            "--site",
            "bet.test",
            "--for",
            "1d",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let url = format!("http://bet.test:{}/", origin.port);
    until_status(&g, "127.0.0.1", &url, 200, Duration::from_secs(3)).expect("granted");
    let path = dir.join("grants.toml");
    let good = std::fs::read_to_string(&path).expect("grants file");
    std::fs::write(&path, good.replace("\"bet.test\"", "\"csam.test\"")).expect("hand edit");
    assert!(
        g.wait_for_log(
            "grants file refused; the grants in force stay",
            Duration::from_secs(3)
        ),
        "{}",
        g.log()
    );
    assert!(g.log().contains("no grant can unblock it"), "{}", g.log());
    assert_eq!(
        curl(&["-x", &g.url(), &url]).status,
        200,
        "the last good grants stay in force"
    );
    assert_eq!(
        curl(&[
            "-x",
            &g.url(),
            &format!("http://csam.test:{}/", origin.port)
        ])
        .status,
        403
    );
    std::fs::write(&path, "[[grant]\nbroken = ").expect("broken edit");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        curl(&["-x", &g.url(), &url]).status,
        200,
        "still the last good grants"
    );
    assert!(
        g.log().matches("grants file refused").count() >= 2,
        "{}",
        g.log()
    );
}

#[test]
fn concurrent_grant_adds_lose_none() {
    let g = start();
    let dir = g.dir.path().to_path_buf();
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                grant(
                    &dir,
                    &[
                        "add",
                        "--ticket",
                        &format!("HD-{}", 100 + i),
                        "--by",
                        "t",
                        "--reason",
                        "a plausible reason",
                        "--group",
                        "ks4",
                        "--site",
                        "bet.test",
                        "--for",
                        "1d",
                    ],
                )
            })
        })
        .collect();
    let mut ids: Vec<String> = handles
        .into_iter()
        .map(|h| {
            let (code, out) = h.join().expect("thread");
            assert_eq!(code, 0, "{out}");
            out.trim().to_string()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "{ids:?}");
    let text = std::fs::read_to_string(dir.join("grants.toml")).expect("grants file");
    assert_eq!(text.matches("[[grant]]").count(), 6, "{text}");
}
