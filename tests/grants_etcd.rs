//! Several nodes, one set of grants: two Gatehouse processes with one real etcd
//! (`[grants] store = "etcd"`). A grant added through one node's admin API opens the
//! site through the other within 2 s; a revocation reaches the first as fast; with
//! etcd killed, the nodes keep the grants they saw, a short grant still expires on
//! time, `/readyz` and the metrics say the store is degraded, and writes get `503`;
//! etcd back, the nodes read it again and writes work.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests are shell: they read files and clocks

mod common;

use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use common::etcd::Etcd;
use common::servers::{curl, Gatehouse, Origin};
use sha2::{Digest, Sha256};

const TECH: &str = "tech-token-0123456789abcdef";

fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One policy for both nodes: only the etcd endpoint varies between runs.
fn policy(endpoint: &str) -> String {
    policy_with(endpoint, "")
}

/// The policy with more `[grants.etcd]` lines (TLS files).
fn policy_with(endpoint: &str, etcd_extra: &str) -> String {
    format!(
        r#"[school]
name = "Trust School"
[lists]
dir = "lists"
[categories.gambling]
severity = "inappropriate"
[categories.games]
severity = "productivity"
[identity]
default_group = "ks4"
[groups.ks4]
mode = "blocklist"
block = ["gambling", "games"]
[grants]
store = "etcd"
[grants.etcd]
endpoints = ["{endpoint}"]
prefix = "/trust/grants/"
dial_timeout_ms = 500
request_timeout_ms = 1000
{etcd_extra}
[log]
dir = "log"
[admin]
listen = "127.0.0.1:0"
[[admin.tokens]]
name = "helpdesk"
role = "technician"
sha256 = "{tech}"
[server]
listen = "127.0.0.1:0"
allow_internal_destinations = ["127.0.0.1/32"]
[server.resolve]
"bet.test" = "127.0.0.1"
"game.test" = "127.0.0.1"
"#,
        tech = hash(TECH)
    )
}

fn node(endpoint: &str) -> Gatehouse {
    let text = policy(endpoint);
    Gatehouse::start(&[
        ("policy.toml", text.as_str()),
        ("lists/gambling/domains", "bet.test\n"),
        ("lists/games/domains", "game.test\n"),
    ])
}

fn api(g: &Gatehouse, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let url = format!("http://127.0.0.1:{}{path}", g.admin_port);
    let auth = format!("Authorization: Bearer {TECH}");
    let mut args = vec![
        "-X",
        method,
        "-H",
        "Content-Type: application/json",
        "-H",
        auth.as_str(),
    ];
    if let Some(b) = body {
        args.extend(["--data-binary", b]);
    }
    args.push(&url);
    let r = curl(&args);
    (r.status, r.body)
}

fn get(g: &Gatehouse, path: &str) -> String {
    curl(&[&format!("http://127.0.0.1:{}{path}", g.admin_port)]).body
}

fn status_through(g: &Gatehouse, url: &str) -> u16 {
    curl(&["-x", &g.url(), url]).status
}

/// Polls until `check` holds; how long that took, or `None` after `within`.
fn until(within: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if check() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    None
}

fn metric(g: &Gatehouse, name: &str) -> Option<f64> {
    get(g, "/metrics")
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Says so when etcd is not installed, for the test to return.
fn etcd_missing() -> bool {
    let missing = !common::etcd::available();
    if missing {
        eprintln!(
            "SKIPPED: {} is not installed (Debian package etcd-server)",
            common::etcd::ETCD
        );
    }
    missing
}

fn grant(ticket: &str, site: &str, expires: chrono::DateTime<Utc>) -> String {
    format!(
        r#"{{"ticket": "{ticket}", "reason": "statistics lesson on odds", "groups": ["ks4"], "sites": ["{site}"], "expires": "{}"}}"#,
        expires.to_rfc3339_opts(SecondsFormat::Secs, true)
    )
}

#[test]
fn a_grant_on_one_node_applies_on_every_node() {
    if etcd_missing() {
        return;
    }
    let mut etcd = Etcd::start();
    let origin = Origin::http();
    let a = node(&etcd.endpoint());
    let b = node(&etcd.endpoint());
    let bet = format!("http://bet.test:{}/", origin.port);
    let game = format!("http://game.test:{}/", origin.port);
    assert_eq!(status_through(&a, &bet), 403);
    assert_eq!(status_through(&b, &bet), 403);
    assert!(
        get(&b, "/readyz").contains("grants store ok: etcd"),
        "{}",
        get(&b, "/readyz")
    );
    assert_eq!(metric(&b, "gatehouse_grants_store_up"), Some(1.0));

    // Added on A, open through B within 2 s.
    let (status, body) = api(
        &a,
        "POST",
        "/api/grants",
        Some(&grant(
            "HD-8001",
            "bet.test",
            Utc::now() + chrono::Duration::days(7),
        )),
    );
    assert_eq!(status, 201, "{body}");
    assert!(body.contains("\"g-1\""), "{body}");
    let took = until(Duration::from_secs(5), || status_through(&b, &bet) == 200)
        .expect("the grant reaches node B");
    println!("grant propagation A → B: {} ms", took.as_millis());
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let stored = etcd.get_prefix("/trust/grants/");
    assert!(
        stored.contains("/trust/grants/grant/g-1") && stored.contains("ticket = \"HD-8001\""),
        "{stored}"
    );
    // B's API lists it, read from the store.
    let (status, list) = api(&b, "GET", "/api/grants", None);
    assert_eq!(status, 200);
    assert!(
        list.contains("HD-8001") && list.contains("\"active\""),
        "{list}"
    );

    // Revoked on B, closed through A within 2 s; archived in the store.
    let (status, body) = api(&b, "DELETE", "/api/grants/g-1?reason=unit+finished", None);
    assert_eq!(status, 200, "{body}");
    let took = until(Duration::from_secs(5), || status_through(&a, &bet) == 403)
        .expect("the revocation reaches node A");
    println!("revocation propagation B → A: {} ms", took.as_millis());
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let stored = etcd.get_prefix("/trust/grants/");
    assert!(
        stored.contains("/trust/grants/archived/g-1")
            && !stored.contains("/trust/grants/grant/g-1"),
        "{stored}"
    );

    // A week-long grant and a short one (ends in a few seconds), both on B.
    let (status, body) = api(
        &a,
        "POST",
        "/api/grants",
        Some(&grant(
            "HD-8002",
            "bet.test",
            Utc::now() + chrono::Duration::days(7),
        )),
    );
    assert_eq!(status, 201, "{body}");
    // Whole seconds: grants are stored to the second.
    let short_end = chrono::DateTime::from_timestamp(
        (Utc::now() + chrono::Duration::seconds(10)).timestamp(),
        0,
    )
    .expect("a time");
    let (status, body) = api(
        &a,
        "POST",
        "/api/grants",
        Some(&grant("HD-8003", "game.test", short_end)),
    );
    assert_eq!(status, 201, "{body}");
    assert!(
        until(Duration::from_secs(2), || status_through(&b, &bet) == 200
            && status_through(&b, &game) == 200)
        .is_some(),
        "both grants reach B"
    );

    // etcd gone: B keeps both, and says it is degraded.
    etcd.stop();
    let lost = until(Duration::from_secs(10), || {
        get(&b, "/readyz").contains("grants store degraded since")
    });
    if let Some(t) = lost {
        println!("store loss noticed by B after {} ms", t.as_millis());
    }
    assert!(lost.is_some(), "{}", get(&b, "/readyz"));
    let ready = curl(&[&format!("http://127.0.0.1:{}/readyz", b.admin_port)]);
    assert_eq!(ready.status, 200, "filtering works: still ready");
    assert!(
        ready.body.contains("keeping the 2 grants last seen"),
        "{}",
        ready.body
    );
    assert_eq!(metric(&b, "gatehouse_grants_store_up"), Some(0.0));
    assert!(metric(&b, "gatehouse_grants_store_last_sync_timestamp_seconds").unwrap_or(0.0) > 0.0);
    assert_eq!(status_through(&b, &bet), 200, "the grant still holds");
    // Writes while the store is down: a clear 503, nothing half-done.
    let (status, body) = api(
        &a,
        "POST",
        "/api/grants",
        Some(&grant(
            "HD-8004",
            "game.test",
            Utc::now() + chrono::Duration::days(1),
        )),
    );
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("unavailable"), "{body}");

    // The short grant still ends on time, on its own end time.
    while Utc::now() < short_end - chrono::Duration::milliseconds(500) {
        assert_eq!(status_through(&b, &game), 200, "open until it ends");
        std::thread::sleep(Duration::from_millis(250));
    }
    until(Duration::from_secs(3), || status_through(&b, &game) == 403)
        .expect("the short grant expires while etcd is down");
    let late = Utc::now() - short_end;
    println!(
        "short grant closed {} ms after its end",
        late.num_milliseconds()
    );
    assert!(late < chrono::Duration::seconds(1), "{late:?}");
    assert_eq!(status_through(&b, &bet), 200, "the long grant still holds");

    // etcd back: both nodes read it again, writes work, and reach the other node.
    etcd.run();
    let back = until(Duration::from_secs(15), || {
        get(&a, "/readyz").contains("grants store ok")
            && get(&b, "/readyz").contains("grants store ok")
    });
    assert!(back.is_some(), "{}", get(&b, "/readyz"));
    assert_eq!(metric(&b, "gatehouse_grants_store_up"), Some(1.0));
    let (status, body) = api(
        &b,
        "POST",
        "/api/grants",
        Some(&grant(
            "HD-8005",
            "game.test",
            Utc::now() + chrono::Duration::days(1),
        )),
    );
    assert_eq!(status, 201, "{body}");
    assert!(
        until(Duration::from_secs(2), || status_through(&a, &game) == 200).is_some(),
        "a grant made after the outage reaches A"
    );

    // The audit trail on each node, as for file grants.
    let tail = common::log_tail(&b.dir.path().join("log"));
    assert!(
        tail.contains("grant added g-1 ticket HD-8001 by helpdesk"),
        "{tail}"
    );
    assert!(
        tail.contains("grant revoked g-1 ticket HD-8001 by helpdesk"),
        "{tail}"
    );
    assert!(tail.contains("grant added g-3 ticket HD-8003"), "{tail}");
    assert!(
        tail.contains("ALLOW  GET http://game.test") && tail.contains("ticket HD-8003"),
        "requests carry the ticket: {tail}"
    );
}

/// `gatehouse grant` on a node's policy writes to etcd; two nodes adding at once get
/// distinct ids (the transaction's compare); a policy reload (SIGHUP) keeps the grants;
/// a node started while etcd is down says so from the start and catches up when it is
/// back.
#[test]
fn the_cli_concurrent_adds_reloads_and_a_node_started_without_the_store() {
    if etcd_missing() {
        return;
    }
    let mut etcd = Etcd::start();
    let origin = Origin::http();
    let a = node(&etcd.endpoint());
    let b = node(&etcd.endpoint());
    let bet = format!("http://bet.test:{}/", origin.port);
    let game = format!("http://game.test:{}/", origin.port);

    // The CLI, with A's policy: the grant lands in etcd and opens the site on B.
    let out = common::gatehouse()
        .args(["grant", "add", "--config"])
        .arg(a.dir.path().join("policy.toml"))
        .args([
            "--ticket",
            "HD-9001",
            "--by",
            "a.tech",
            "--reason",
            "probability unit",
            "--group",
            "ks4",
            "--site",
            "bet.test",
            "--for",
            "2d",
        ])
        .output()
        .expect("gatehouse grant add runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        until(Duration::from_secs(2), || status_through(&b, &bet) == 200).is_some(),
        "the CLI's grant reaches B"
    );
    let out = common::gatehouse()
        .args(["grant", "list", "--json", "--config"])
        .arg(b.dir.path().join("policy.toml"))
        .output()
        .expect("gatehouse grant list runs");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("HD-9001"), "{listed}");

    // Two nodes at once, several times: every grant gets its own id.
    let mut ids = std::collections::BTreeSet::new();
    for round in 0..4 {
        let expires = Utc::now() + chrono::Duration::days(1);
        let body_a = grant(&format!("HD-92{round}1"), "game.test", expires);
        let body_b = grant(&format!("HD-92{round}2"), "game.test", expires);
        let (ra, rb) = std::thread::scope(|s| {
            let ha = s.spawn(|| api(&a, "POST", "/api/grants", Some(&body_a)));
            let hb = s.spawn(|| api(&b, "POST", "/api/grants", Some(&body_b)));
            (ha.join().expect("thread"), hb.join().expect("thread"))
        });
        for (status, body) in [ra, rb] {
            assert_eq!(status, 201, "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).expect("json");
            assert!(
                ids.insert(v["id"].as_str().expect("id").to_string()),
                "{body}"
            );
        }
    }
    assert_eq!(ids.len(), 8);
    let stored = etcd.get_prefix("/trust/grants/grant/");
    assert_eq!(stored.matches("ticket = \"HD-92").count(), 8, "{stored}");

    // A policy reload keeps the grants from the store (and records no change to them).
    b.signal("HUP");
    assert!(
        b.wait_for_log("reloaded policy and lists", Duration::from_secs(10)),
        "{}",
        b.log()
    );
    assert_eq!(status_through(&b, &bet), 200);
    assert_eq!(status_through(&b, &game), 200);
    let tail = common::log_tail(&b.dir.path().join("log"));
    assert!(!tail.contains("grant removed"), "{tail}");

    // `check` and `classify` read the store too.
    let config = b.dir.path().join("policy.toml");
    let out = common::gatehouse()
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("gatehouse check runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("grants: etcd at http://127.0.0.1:"), "{text}");
    let out = common::gatehouse()
        .args(["classify", "--group", "ks4", "--config"])
        .arg(&config)
        .arg("http://bet.test/")
        .output()
        .expect("gatehouse classify runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("HD-9001"), "{text}");

    // A grant written by hand that does not validate: the nodes refuse the set and keep
    // the grants in force, and `check` names the key and the line.
    etcd.put(
        "/trust/grants/grant/g-99",
        "[[grant]]\nid = \"g-99\"\nticket = \"no ticket\"\nissued_by = \"x\"\nreason = \"by hand\"\ngroups = [\"ks4\"]\nsites = [\"game.test\"]\nexpires = \"2099-01-01T00:00:00Z\"\n",
    );
    assert!(
        b.wait_for_log("etcd:/trust/grants/grant/g-99:3", Duration::from_secs(5)),
        "{}",
        b.log()
    );
    assert_eq!(status_through(&b, &bet), 200, "the grants in force stay");
    let out = common::gatehouse()
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("gatehouse check runs");
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        errors.contains("etcd:/trust/grants/grant/g-99:3"),
        "{errors}"
    );
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &etcd.endpoint(),
            "del",
            "/trust/grants/grant/g-99",
        ])
        .output()
        .expect("etcdctl runs");
    assert!(out.status.success());

    // A node started while etcd is down: ready (filtering works), degraded, no grants;
    // when etcd is back it reads them.
    etcd.stop();
    let c = node(&etcd.endpoint());
    let ready = get(&c, "/readyz");
    assert!(
        ready.starts_with("ready\n") && ready.contains("grants store degraded since"),
        "{ready}"
    );
    assert_eq!(metric(&c, "gatehouse_grants_store_up"), Some(0.0));
    assert_eq!(status_through(&c, &bet), 403, "no grants seen yet");
    etcd.run();
    assert!(
        until(Duration::from_secs(15), || status_through(&c, &bet) == 200).is_some(),
        "{}",
        get(&c, "/readyz")
    );
    assert!(get(&c, "/readyz").contains("grants store ok"));
}

/// TLS with a client certificate (`ca_file`, `cert_file`, `key_file`): the node reaches
/// an etcd that asks for one, and a node without the certificate is refused (degraded,
/// and its writes get a 503).
#[test]
fn etcd_over_tls_with_a_client_certificate() {
    if etcd_missing() {
        return;
    }
    let etcd = Etcd::start_tls();
    let origin = Origin::http();
    let bet = format!("http://bet.test:{}/", origin.port);
    let d = etcd.tls_dir();
    let with_cert = policy_with(
        &etcd.endpoint(),
        &format!(
            "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"",
            d.join("ca.crt").display(),
            d.join("client.crt").display(),
            d.join("client.key").display()
        ),
    );
    let files = |text: &str| {
        Gatehouse::start(&[
            ("policy.toml", text),
            ("lists/gambling/domains", "bet.test\n"),
            ("lists/games/domains", "game.test\n"),
        ])
    };
    let a = files(&with_cert);
    assert!(
        get(&a, "/readyz").contains("grants store ok"),
        "{}",
        get(&a, "/readyz")
    );
    let (status, body) = api(
        &a,
        "POST",
        "/api/grants",
        Some(&grant(
            "HD-9501",
            "bet.test",
            Utc::now() + chrono::Duration::days(1),
        )),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        status_through(&a, &bet),
        200,
        "in force on the node that made it when the API answers"
    );

    let without_cert = policy_with(
        &etcd.endpoint(),
        &format!("ca_file = \"{}\"", d.join("ca.crt").display()),
    );
    let b = files(&without_cert);
    let ready = get(&b, "/readyz");
    assert!(ready.contains("grants store degraded since"), "{ready}");
    assert_eq!(status_through(&b, &bet), 403);
    let (status, body) = api(
        &b,
        "POST",
        "/api/grants",
        Some(&grant(
            "HD-9502",
            "bet.test",
            Utc::now() + chrono::Duration::days(1),
        )),
    );
    assert_eq!(status, 503, "{body}");
}

/// A school going from one node to several: the single node's grants file (made by the
/// CLI with the file store) moves into etcd with its ids and its archive; the grant
/// applies on a node of the trust; an import run again changes nothing; an id the store
/// holds as another grant is refused whole; a policy still on the file store is told
/// there is nowhere to move them.
#[test]
fn a_single_nodes_grants_file_moves_into_etcd() {
    if etcd_missing() {
        return;
    }
    let etcd = Etcd::start();
    let origin = Origin::http();
    let node = node(&etcd.endpoint());
    let bet = format!("http://bet.test:{}/", origin.port);
    assert_eq!(status_through(&node, &bet), 403);

    // The single node: the same policy with the file store.
    let text = policy(&etcd.endpoint());
    let (head, rest) = text.split_once("[grants]\n").expect("grants section");
    let (_, tail) = rest.split_once("[log]\n").expect("log section");
    let single = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        single.path().join("policy.toml"),
        format!("{head}[log]\n{tail}"),
    )
    .expect("policy");
    for (category, host) in [("gambling", "bet.test"), ("games", "game.test")] {
        let dir = single.path().join("lists").join(category);
        std::fs::create_dir_all(&dir).expect("lists");
        std::fs::write(dir.join("domains"), format!("{host}\n")).expect("list");
    }
    let single_policy = single.path().join("policy.toml");
    for (ticket, site) in [("HD-7001", "bet.test"), ("HD-7002", "game.test")] {
        let (ok, _, err) = common::run_cli(
            &[
                "grant",
                "add",
                "--ticket",
                ticket,
                "--by",
                "a.tech",
                "--reason",
                "probability unit",
                "--group",
                "ks4",
                "--site",
                site,
                "--for",
                "2d",
            ],
            &single_policy,
        );
        assert!(ok, "{err}");
    }
    let (ok, _, err) = common::run_cli(
        &[
            "grant",
            "revoke",
            "g-2",
            "--by",
            "a.tech",
            "--reason",
            "unit over",
        ],
        &single_policy,
    );
    assert!(ok, "{err}");
    let file = single.path().join("grants.toml");
    let file_arg = file.to_str().expect("utf-8 path");

    // The file store itself has nowhere to move them.
    let (ok, _, err) = common::run_cli(&["grant", "import", file_arg], &single_policy);
    assert!(!ok);
    assert!(err.contains("set [grants] store = \"etcd\""), "{err}");

    // Into etcd: both ids, the grant in force applies on the trust's node.
    let trust_policy = node.dir.path().join("policy.toml");
    let (ok, out, err) = common::run_cli(&["grant", "import", file_arg], &trust_policy);
    assert!(ok, "{err}");
    assert!(
        out.contains("2 moved into the grants store (g-1, g-2); 0 already there"),
        "{out}"
    );
    assert!(
        until(Duration::from_secs(2), || status_through(&node, &bet)
            == 200)
        .is_some(),
        "the moved grant applies"
    );
    let (_, listed, _) = common::run_cli(&["grant", "list", "--all", "--json"], &trust_policy);
    let rows: serde_json::Value = serde_json::from_str(&listed).expect("json");
    let states: Vec<(String, String)> = rows
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap_or("").to_string(),
                r["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(
        states.contains(&("g-1".into(), "active".into())),
        "{listed}"
    );
    assert!(
        states.contains(&("g-2".into(), "revoked".into())),
        "{listed}"
    );

    // Again: nothing changes. A new grant takes the next id.
    let (ok, out, err) = common::run_cli(&["grant", "import", file_arg], &trust_policy);
    assert!(ok, "{err}");
    assert!(
        out.contains("0 moved into the grants store; 2 already there"),
        "{out}"
    );
    let (ok, out, err) = common::run_cli(
        &[
            "grant",
            "add",
            "--ticket",
            "HD-7003",
            "--by",
            "b.tech",
            "--reason",
            "odds",
            "--group",
            "ks4",
            "--site",
            "game.test",
            "--for",
            "1d",
        ],
        &trust_policy,
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "g-3");

    // A file whose g-1 is another grant: refused, and nothing of it is written.
    let other = file.with_file_name("other.toml");
    let changed = std::fs::read_to_string(&file)
        .expect("grants file")
        .replace("HD-7001", "HD-7999");
    std::fs::write(&other, changed).expect("write");
    let (ok, _, err) = common::run_cli(
        &["grant", "import", other.to_str().expect("utf-8 path")],
        &trust_policy,
    );
    assert!(!ok);
    assert!(
        err.contains("g-1 is already in the store as another grant"),
        "{err}"
    );
    let (_, listed, _) = common::run_cli(&["grant", "list", "--all", "--json"], &trust_policy);
    assert!(!listed.contains("HD-7999"), "{listed}");
}
