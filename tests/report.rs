//! The weekly safeguarding report from a deterministic synthetic log (several groups,
//! users, categories, grants, the week the clocks go back): its figures match counts
//! computed here independently, illegal URLs never appear in full in any format, and
//! the HTML renders in headless Chromium.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests are shell: they read files and clocks

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use gatehouse::decision_log::{
    chain_next, frame, genesis, segment_name, Body, Decision, Entry, SegmentHeader, StoredAction,
};

const SECRET_PATH: &str = "/hidden/abuse-material-7731";

/// Writes one valid segment holding `entries` (sequence numbers from 1, chained).
fn write_log(dir: &Path, node: &str, entries: &[(i64, Body)]) {
    std::fs::create_dir_all(dir).expect("log dir");
    let header = SegmentHeader {
        node: node.into(),
        first_seq: 1,
        prev_chain: genesis(node),
        created_us: entries[0].0,
    };
    let mut bytes = header.encode();
    let mut chain = genesis(node);
    for (i, (time_us, body)) in entries.iter().enumerate() {
        let payload = postcard::to_stdvec(&Entry {
            seq: i as u64 + 1,
            time_us: *time_us,
            body: body.clone(),
        })
        .expect("encode");
        frame(&payload, &mut bytes);
        chain = chain_next(&chain, &payload);
    }
    let _ = chain;
    std::fs::write(dir.join(segment_name(1)), bytes).expect("write segment");
}

struct Gen(u64);
impl Gen {
    /// splitmix64: deterministic, and its successive outputs are not correlated.
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) >> 1
    }
}

/// (who, group): four pupils by user name, two devices with no user, a member of staff.
const PEOPLE: &[(Option<&str>, u8, &str)] = &[
    (Some("a.pupil"), 11, "ks4"),
    (Some("b.pupil"), 12, "ks4"),
    (Some("c.pupil"), 13, "ks3"),
    (Some("d.pupil"), 14, "ks3"),
    (None, 21, "sixth-form"),
    (None, 22, "ks3"),
    (Some("j.smith"), 31, "staff"),
];

/// (url, categories, blocked, reason, terms)
fn request(
    kind: u64,
) -> (
    String,
    Vec<&'static str>,
    bool,
    &'static str,
    Vec<&'static str>,
) {
    match kind {
        0..=5 => (
            "http://www.bbc.co.uk/bitesize/maths".into(),
            vec![],
            false,
            "mode",
            vec![],
        ),
        6 => (
            "http://www.pokerstars.com/poker".into(),
            vec!["gambling"],
            true,
            "category",
            vec![],
        ),
        7 => (
            "http://www.pornhub.com/video?id=1".into(),
            vec!["pornography"],
            true,
            "category",
            vec![],
        ),
        8 => (
            format!("http://child-abuse.canary.gatehouse.invalid{SECRET_PATH}?q=1"),
            vec!["child-abuse"],
            true,
            "illegal",
            vec![],
        ),
        9 => (
            "https://www.google.com/search?q=how+to+self+harm".into(),
            vec!["self-harm"],
            true,
            "category",
            vec!["how to self harm"],
        ),
        10 => (
            "nordvpn.com:443".into(),
            vec!["circumvention"],
            true,
            "category",
            vec![],
        ),
        11 => ("10.1.2.3:443".into(), vec![], true, "ip_literal", vec![]),
        12 => ("www.bbc.co.uk:443".into(), vec![], true, "ech", vec![]),
        13 => (
            "http://www.bbc.co.uk/".into(),
            vec![],
            true,
            "auth_failed",
            vec![],
        ),
        _ => (
            "http://www.youtube.com/watch?v=x".into(),
            vec!["video"],
            false,
            "grant",
            vec![],
        ),
    }
}

fn us(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .expect("time")
        .timestamp_micros()
}

struct Expected {
    requests: u64,
    blocked: u64,
    alerts: u64,
    previous_requests: u64,
    by_group: std::collections::BTreeMap<String, (u64, u64)>,
    grant_uses: u64,
    /// Group → YouTube requests dialled to a Restricted Mode address, and which.
    safe_search: std::collections::BTreeMap<String, (u64, &'static str)>,
}

fn synthetic(n: usize) -> (Vec<(i64, Body)>, Expected) {
    // The report covers 2026-W43 (Mon 19 Oct to Mon 26 Oct, London), when the clocks
    // go back; entries run from the week before to the week after.
    let start = us("2026-10-11T23:00:00Z");
    let week_from = us("2026-10-18T23:00:00Z");
    let week_to = us("2026-10-26T00:00:00Z");
    let span = us("2026-11-01T00:00:00Z") - start;
    let mut g = Gen(47);
    let mut out = Vec::new();
    let mut e = Expected {
        requests: 0,
        blocked: 0,
        alerts: 0,
        previous_requests: 0,
        by_group: Default::default(),
        grant_uses: 0,
        safe_search: Default::default(),
    };
    let mut times: Vec<i64> = (0..n).map(|_| start + (g.next() as i64 % span)).collect();
    times.sort();
    for t in times {
        let (user, host, group) = PEOPLE[(g.next() % PEOPLE.len() as u64) as usize];
        let (url, cats, blocked, reason, terms) = request(g.next() % 14);
        let granted = reason == "grant";
        let d = Decision {
            client: IpAddr::V4(Ipv4Addr::new(10, 30, 0, host)),
            user: user.map(str::to_string),
            group: group.into(),
            method: if url.contains("://") {
                "GET".into()
            } else {
                "CONNECT".into()
            },
            url,
            sni: None,
            categories: cats.iter().map(|c| c.to_string()).collect(),
            action: if blocked {
                StoredAction::Block
            } else {
                StoredAction::Allow
            },
            reason: gatehouse::decision_log::ReasonCode::parse(reason)
                .expect("a known reason code"),
            grant: granted.then(|| "HD-4411".to_string()),
            status: if blocked { 403 } else { 0 },
            terms: terms.iter().map(|s| s.to_string()).collect(),
            enforced: Vec::new(),
            safe_search: None,
            device: None,
            original_destination: None,
        };
        if t >= week_from && t < week_to {
            e.requests += 1;
            e.blocked += u64::from(blocked);
            e.alerts += u64::from(
                cats.iter()
                    .any(|c| ["child-abuse", "pornography", "self-harm"].contains(c)),
            );
            let row = e.by_group.entry(group.to_string()).or_default();
            row.0 += 1;
            row.1 += u64::from(blocked);
            e.grant_uses += u64::from(granted);
        } else if t < week_from && t >= week_from - (week_to - week_from) {
            e.previous_requests += 1;
        }
        out.push((t, Body::Decision(d)));
    }
    // YouTube for KS3 and KS4 dialled to Restricted Mode (moderate, as in the example
    // policy), one Wednesday morning.
    for (i, group) in ["ks3", "ks4", "ks4"].into_iter().enumerate() {
        out.push((
            us("2026-10-21T10:00:00Z") + i as i64,
            Body::Decision(Decision {
                client: IpAddr::V4(Ipv4Addr::new(10, 30, 0, 40 + i as u8)),
                user: None,
                group: group.into(),
                method: "CONNECT".into(),
                url: "www.youtube.com:443".into(),
                sni: Some("www.youtube.com".into()),
                categories: vec!["video".into()],
                action: StoredAction::Allow,
                reason: gatehouse::decision_log::ReasonCode::AllowedCategory,
                grant: None,
                status: 200,
                terms: vec![],
                enforced: Vec::new(),
                safe_search: Some(gatehouse::decision_log::SafeSearchRewrite {
                    engine: "youtube".into(),
                    level: gatehouse::core::safe_search::Level::Moderate,
                    dialled: "restrictmoderate.youtube.com".into(),
                }),
                device: None,
                original_destination: None,
            }),
        ));
        e.requests += 1;
        e.by_group.entry(group.to_string()).or_default().0 += 1;
        e.safe_search
            .entry(group.to_string())
            .or_insert((0, "restrictmoderate.youtube.com"))
            .0 += 1;
    }
    out.push((
        us("2026-10-20T09:00:00Z"),
        Body::Grant {
            action: gatehouse::decision_log::GrantEvent::Added,
            id: "g-1".into(),
            ticket: "HD-4411".into(),
            by: "j.smith".into(),
            detail: "Media studies unit on music videos".into(),
        },
    ));
    out.sort_by_key(|(t, _)| *t);
    (out, e)
}

/// The example policy in `dir/policy`, its lists beside it, with `grants` as its grants
/// file: the report reads the grants file for each grant's scope and target.
fn policy_with_grants(dir: &Path, grants: &str) -> std::path::PathBuf {
    let policy = dir.join("policy");
    std::fs::create_dir_all(&policy).expect("policy dir");
    let example = common::example_policy();
    let example_dir = example.parent().expect("policy dir");
    for file in ["gatehouse.toml", "users.toml"] {
        std::fs::copy(example_dir.join(file), policy.join(file)).expect("copy policy");
    }
    std::fs::write(policy.join("grants.toml"), grants).expect("grants");
    let lists = example_dir.parent().expect("root").join("blocklists");
    std::os::unix::fs::symlink(lists, dir.join("blocklists")).expect("lists");
    policy.join("gatehouse.toml")
}

fn run_report(log: &Path, format: &str) -> String {
    run_report_with(log, format, &common::example_policy())
}

fn run_report_with(log: &Path, format: &str, config: &Path) -> String {
    let out = common::gatehouse()
        .args([
            "report", "--week", "2026-W43", "--format", format, "--config",
        ])
        .arg(config)
        .arg("--log")
        .arg(log)
        .output()
        .expect("gatehouse report runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn figures_match_independent_counts_and_illegal_urls_never_appear() {
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("log");
    let (entries, want) = synthetic(5000);
    write_log(&log, "node-a", &entries);

    let json: serde_json::Value = serde_json::from_str(&run_report(&log, "json")).expect("json");
    assert_eq!(json["totals"]["requests"], want.requests);
    assert_eq!(json["totals"]["blocked"], want.blocked);
    assert_eq!(json["totals"]["alerts"], want.alerts);
    assert_eq!(json["previous"]["requests"], want.previous_requests);
    assert_eq!(json["integrity"][0]["ok"], true);
    assert_eq!(json["nodes"], serde_json::json!(["node-a"]));
    for g in json["groups"].as_array().expect("groups") {
        let name = g["group"].as_str().expect("name");
        let (requests, blocked) = want.by_group[name];
        assert_eq!(
            (g["requests"].as_u64(), g["blocked"].as_u64()),
            (Some(requests), Some(blocked)),
            "{name}"
        );
    }
    assert_eq!(
        json["groups"].as_array().map(Vec::len),
        Some(want.by_group.len())
    );
    // Safe search enforced, per group and engine, as counted here.
    let safe: std::collections::BTreeMap<String, (u64, &str)> = json["safe_search"]
        .as_array()
        .expect("safe_search")
        .iter()
        .map(|r| {
            assert_eq!(
                (r["engine"].as_str(), r["level"].as_str()),
                (Some("youtube"), Some("moderate"))
            );
            (
                r["group"].as_str().expect("group").to_string(),
                (
                    r["requests"].as_u64().expect("requests"),
                    r["dialled"].as_str().expect("dialled"),
                ),
            )
        })
        .collect();
    assert!(!safe.is_empty());
    assert_eq!(safe, want.safe_search);
    for format in ["html", "md"] {
        let text = run_report(&log, format);
        assert!(
            text.contains("Safe search enforced") && text.contains("restrictmoderate.youtube.com"),
            "{format}: {text}"
        );
    }
    // Seven local days, Monday to Sunday, even with the 25-hour Sunday.
    let daily = json["daily"].as_array().expect("daily");
    assert_eq!(daily.len(), 7);
    let day_total: u64 = daily
        .iter()
        .map(|d| d["allowed"].as_u64().unwrap_or(0) + d["blocked"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(day_total, want.requests);
    // Alerts are collapsed per person, category and host; illegal ones name the host only.
    let alerts = json["alerts"].as_array().expect("alerts");
    let alert_attempts: u64 = alerts
        .iter()
        .map(|a| a["count"].as_u64().unwrap_or(0))
        .sum();
    assert!(alert_attempts >= want.alerts);
    assert_eq!(alerts[0]["severity"], "illegal", "most severe first");
    assert!(alerts
        .iter()
        .filter(|a| a["severity"] == "illegal")
        .all(|a| a["example_url"].is_null()));
    assert!(json["searches"]
        .as_array()
        .expect("searches")
        .iter()
        .any(|s| s["search"] == "how to self harm"));
    let kinds: Vec<&str> = json["bypass"]
        .as_array()
        .expect("bypass")
        .iter()
        .filter_map(|b| b["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"circumvention") && kinds.contains(&"ip_literal") && kinds.contains(&"ech"),
        "{kinds:?}"
    );
    let grants = json["grants"].as_array().expect("grants");
    assert!(
        !grants.is_empty(),
        "{}",
        serde_json::to_string_pretty(&json["grants"]).unwrap_or_default()
    );
    let grant = &grants[0];
    assert_eq!(
        (grant["ticket"].as_str(), grant["requests_allowed"].as_u64()),
        (Some("HD-4411"), Some(want.grant_uses))
    );
    // With the grants file (the grant since revoked, so archived), each grant says whom
    // it covered and what it opened, in every format.
    let config = policy_with_grants(
        dir.path(),
        r#"
[[archived]]
id = "g-1"
ticket = "HD-4411"
issued_by = "j.smith"
reason = "Media studies unit on music videos"
groups = ["ks4", "sixth-form"]
sites = ["youtube.com"]
categories = ["video"]
starts = "2026-10-20T09:00:00Z"
expires = "2026-10-30T15:15:00Z"
revoked_by = "j.smith"
"#,
    );
    let json: serde_json::Value =
        serde_json::from_str(&run_report_with(&log, "json", &config)).expect("json");
    let grant = &json["grants"][0];
    assert_eq!(
        (grant["scope"].as_str(), grant["target"].as_str()),
        (
            Some("groups ks4, sixth-form"),
            Some("sites youtube.com; categories video")
        ),
        "{grant}"
    );
    for format in ["html", "csv", "md"] {
        let text = run_report_with(&log, format, &config);
        assert!(
            text.contains("groups ks4, sixth-form") && text.contains("youtube.com"),
            "{format}: {text}"
        );
    }
    assert!(json["people"][0]["attempts"].as_u64().unwrap_or(0) > 0);

    for format in ["json", "html", "csv", "md"] {
        let text = run_report(&log, format);
        assert!(
            !text.contains(SECRET_PATH),
            "{format} shows an illegal URL in full"
        );
        assert!(
            text.contains("child-abuse.canary.gatehouse.invalid"),
            "{format} names the host"
        );
    }
}

#[test]
fn html_is_self_contained_and_renders_in_chromium() {
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("log");
    let (entries, _) = synthetic(800);
    write_log(&log, "node-a", &entries);
    let html = run_report(&log, "html");
    // No scripts, no fetches: nothing that names another resource.
    for forbidden in ["<script", "src=", "href=", "url(", "@import"] {
        assert!(!html.contains(forbidden), "{forbidden}");
    }
    for needed in [
        "<h2 id=\"alerts\">",
        "<th scope=\"col\">",
        "role=\"img\"",
        "<title id=",
        "@page{size:A4",
    ] {
        assert!(html.contains(needed), "{needed}");
    }
    let page = dir.path().join("report.html");
    std::fs::write(&page, &html).expect("write");
    let png = dir.path().join("report.png");
    let out = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1200,3000",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs (apt-get install chromium)");
    let log_text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !log_text.contains("CONSOLE"),
        "console messages: {log_text}"
    );
    let bytes = std::fs::read(&png).unwrap_or_else(|_| panic!("no screenshot: {log_text}"));
    assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
    // A blank page compresses to almost nothing; tables, text and charts do not.
    assert!(
        bytes.len() > 30_000,
        "screenshot is {} bytes: blank?",
        bytes.len()
    );
}
