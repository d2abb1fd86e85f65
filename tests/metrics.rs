//! `/metrics` on the admin listener: a known mix of requests moves the counters by
//! exactly that mix, and promtool accepts the exposition.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests are shell: they read files and clocks

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::servers::{curl, Gatehouse, Origin};

fn start() -> Gatehouse {
    let policy = r#"[school]
name = "Metrics School"
[lists]
dir = "lists"
# A feed (never fetched here: no update_every), so that its series exist.
[[lists.sources]]
name = "hosts"
url = "https://feeds.invalid/hosts.txt"
format = "hosts"
category = "gambling"
[categories.gambling]
severity = "inappropriate"
[identity]
default_group = "pupils"
[groups.pupils]
mode = "blocklist"
block = ["gambling"]
[log]
dir = "log"
[admin]
listen = "127.0.0.1:0"
[server]
listen = "127.0.0.1:0"
allow_internal_destinations = ["127.0.0.1/32"]
[server.resolve]
"origin.test" = "127.0.0.1"
"bet.test" = "127.0.0.1"
"#;
    Gatehouse::start(&[
        ("policy.toml", policy),
        ("lists/gambling/domains", "bet.test\nmore.test\n"),
    ])
}

fn scrape(g: &Gatehouse) -> String {
    let r = curl(&[&format!("http://127.0.0.1:{}/metrics", g.admin_port)]);
    assert_eq!(r.status, 200);
    assert!(r
        .headers
        .to_ascii_lowercase()
        .contains("content-type: text/plain; version=0.0.4"));
    r.body
}

/// The value of the series whose line starts with `series` (name and labels).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn counters_move_by_exactly_the_mix_and_promtool_accepts_them() {
    let origin = Origin::http();
    let g = start();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    for _ in 0..3 {
        assert_eq!(
            curl(&[
                "-x",
                &g.url(),
                &format!("http://origin.test:{}/", origin.port)
            ])
            .status,
            200
        );
    }
    for _ in 0..2 {
        assert_eq!(
            curl(&["-x", &g.url(), &format!("http://bet.test:{}/", origin.port)]).status,
            403
        );
    }
    assert_eq!(
        curl(&["-x", &g.url(), &format!("http://origin.test:{closed}/")]).status,
        502
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    let text = scrape(&g);
    let rows: &[(&str, f64)] = &[
        (
            r#"gatehouse_requests_total{action="allow",category="none",group="pupils"}"#,
            4.0,
        ),
        (
            r#"gatehouse_requests_total{action="block",category="gambling",group="pupils"}"#,
            2.0,
        ),
        (r#"gatehouse_upstream_errors_total{kind="refused"}"#, 1.0),
        (r#"gatehouse_list_entries{category="gambling"}"#, 2.0),
        ("gatehouse_decision_seconds_count", 6.0),
        ("gatehouse_grants_active", 0.0),
        ("gatehouse_log_failing", 0.0),
        (r#"gatehouse_build_info{version=""#, 0.0),
    ];
    for (series, want) in rows {
        if series.ends_with('"') {
            assert!(text.contains(series), "{series} missing:\n{text}");
            continue;
        }
        assert_eq!(value(&text, series), *want, "{series}\n{text}");
    }
    assert!(value(&text, "gatehouse_log_records_total") >= 6.0, "{text}");
    // Each category's lists' age: the list file's own modification time.
    let mtime = std::fs::metadata(g.dir.path().join("lists/gambling/domains"))
        .and_then(|m| m.modified())
        .expect("mtime")
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as f64;
    assert_eq!(
        value(
            &text,
            r#"gatehouse_list_category_modified_timestamp_seconds{category="gambling",severity="inappropriate"}"#
        ),
        mtime,
        "{text}"
    );
    assert!(
        value(&text, r#"gatehouse_bytes_total{direction="down"}"#) >= 3.0 * 17.0,
        "{text}"
    );
    assert!(value(&text, "gatehouse_connections") >= 0.0);
    assert!(text.contains("process_resident_memory_bytes"), "{text}");
    // No user, host or URL ever becomes a label.
    assert!(
        !text.contains("origin.test") && !text.contains("bet.test"),
        "{text}"
    );

    // promtool (Debian's prometheus package) checks the exposition format.
    if let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("promtool");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        panic!("promtool is needed (apt-get install prometheus)");
    }
}

#[test]
fn the_dashboard_and_alert_rules_use_only_metrics_that_exist() {
    let g = start();
    // Make every labelled family appear at least once.
    curl(&["-x", &g.url(), "http://bet.test/"]);
    curl(&["-x", &g.url(), "http://origin.test:1/"]);
    let text = scrape(&g);
    let exposed: std::collections::HashSet<String> = text
        .lines()
        .filter(|l| l.starts_with("# TYPE "))
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect();
    let root = common::root();
    let dashboard = std::fs::read_to_string(root.join("deploy/grafana/gatehouse-dashboard.json"))
        .expect("dashboard");
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for p in json["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            exprs.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    let rules =
        std::fs::read_to_string(root.join("deploy/prometheus/gatehouse-rules.yml")).expect("rules");
    exprs.push(rules);
    let names = regex::Regex::new(r"\b((?:gatehouse|process)_[a-z_]+)").expect("regex");
    let mut checked = 0;
    for e in &exprs {
        for m in names.captures_iter(e) {
            let name = &m[1];
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_count")
                .trim_end_matches("_sum");
            assert!(
                exposed.contains(family),
                "{name} is queried but not exposed:\n{}",
                exposed.iter().cloned().collect::<Vec<_>>().join("\n")
            );
            checked += 1;
        }
    }
    assert!(checked > 20, "{checked}");
    // promtool checks the alert rules.
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(root.join("deploy/prometheus/gatehouse-rules.yml"))
        .output()
        .expect("promtool runs (apt-get install prometheus)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
