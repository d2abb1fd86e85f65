//! The admin listener: health endpoints and the grants API for helpdesk integrations,
//! with bearer tokens stored in policy as hashes, driven by curl.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests are shell: they read files and clocks

mod common;

use std::time::{Duration, Instant};

use common::servers::{curl, Gatehouse, Origin};
use sha2::{Digest, Sha256};

const TECH: &str = "tech-token-0123456789abcdef";
const VIEWER: &str = "viewer-token-0123456789abcdef";

fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn policy(with_tech: bool) -> String {
    let tech = if with_tech {
        format!(
            "[[admin.tokens]]\nname = \"helpdesk\"\nrole = \"technician\"\nsha256 = \"{}\"\n",
            hash(TECH)
        )
    } else {
        String::new()
    };
    format!(
        r#"[school]
name = "API School"
[lists]
dir = "lists"
[categories.csam]
severity = "illegal"
[categories.gambling]
severity = "inappropriate"
[identity]
default_group = "ks4"
[groups.ks4]
mode = "blocklist"
block = ["gambling"]
[log]
dir = "log"
[admin]
listen = "127.0.0.1:0"
{tech}
[[admin.tokens]]
name = "dashboard"
role = "viewer"
sha256 = "{viewer}"
[server]
listen = "127.0.0.1:0"
allow_internal_destinations = ["127.0.0.1/32"]
[server.resolve]
"bet.test" = "127.0.0.1"
"csam.test" = "127.0.0.1"
"#,
        viewer = hash(VIEWER)
    )
}

fn api(
    g: &Gatehouse,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let url = format!("http://127.0.0.1:{}{path}", g.admin_port);
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    let mut args = vec!["-X", method, "-H", "Content-Type: application/json"];
    if let Some(a) = &auth {
        args.extend(["-H", a.as_str()]);
    }
    if let Some(b) = body {
        args.extend(["--data-binary", b]);
    }
    args.push(&url);
    let r = curl(&args);
    (r.status, r.body)
}

/// Gatehouse on the test policy (with the technician's token) and its two lists.
fn start() -> Gatehouse {
    let text = policy(true);
    Gatehouse::start(&[
        ("policy.toml", text.as_str()),
        ("lists/csam/domains", "csam.test\n"),
        ("lists/gambling/domains", "bet.test\n"),
    ])
}

#[test]
fn health_and_the_grants_api() {
    let origin = Origin::http();
    let g = start();
    assert_eq!(api(&g, "GET", "/healthz", None, None).0, 200);
    assert_eq!(api(&g, "GET", "/readyz", None, None).0, 200);

    let url = format!("http://bet.test:{}/", origin.port);
    assert_eq!(curl(&["-x", &g.url(), &url]).status, 403);
    let grant = r#"{"ticket": "HD-7001", "reason": "statistics lesson on odds", "groups": ["ks4"], "sites": ["bet.test"], "expires": "2099-01-01T00:00:00Z"}"#;
    // No token, a viewer's token: refused.
    assert_eq!(api(&g, "POST", "/api/grants", None, Some(grant)).0, 401);
    assert_eq!(
        api(&g, "POST", "/api/grants", Some("made-up"), Some(grant)).0,
        401
    );
    assert_eq!(
        api(&g, "POST", "/api/grants", Some(VIEWER), Some(grant)).0,
        403
    );
    let (status, _) = api(&g, "GET", "/api/grants", Some(VIEWER), None);
    assert_eq!(status, 200, "viewers may read");
    // Bad input: 400 with the reasons, and nothing reaches illegal content.
    let (status, body) = api(&g, "POST", "/api/grants", Some(TECH), Some("{not json"));
    assert_eq!(status, 400, "{body}");
    let illegal = r#"{"ticket": "HD-7002", "reason": "no reason is good enough", "groups": ["ks4"], "sites": ["csam.test"], "expires": "2099-01-01T00:00:00Z"}"#;
    let (status, body) = api(&g, "POST", "/api/grants", Some(TECH), Some(illegal));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("no grant can unblock it"), "{body}");
    let (status, body) = api(&g, "POST", "/api/grants", Some(TECH), Some(grant));
    assert_eq!(status, 400);
    assert!(body.contains("at most 30 days"), "{body}");
    let bad_ticket = grant.replace("HD-7001", "7001");
    let (status, body) = api(&g, "POST", "/api/grants", Some(TECH), Some(&bad_ticket));
    assert_eq!(status, 400);
    assert!(body.contains("helpdesk ticket"), "{body}");
    // A good grant from the technician's token: in force within a second.
    let grant = grant.replace(
        "2099-01-01T00:00:00Z",
        &(chrono::Utc::now() + chrono::Duration::days(7)).to_rfc3339(),
    );
    let (status, body) = api(&g, "POST", "/api/grants", Some(TECH), Some(&grant));
    assert_eq!(status, 201, "{body}");
    let id: serde_json::Value = serde_json::from_str(&body).expect("json");
    let id = id["id"].as_str().expect("id").to_string();
    let started = Instant::now();
    while curl(&["-x", &g.url(), &url]).status != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "allowed within a second"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, list) = api(&g, "GET", "/api/grants", Some(TECH), None);
    let rows: serde_json::Value = serde_json::from_str(&list).expect("json");
    assert_eq!(
        rows[0]["issued_by"], "helpdesk",
        "the token says who: {rows}"
    );
    assert_eq!(rows[0]["state"], "active");
    // Revoke through the API.
    let (status, body) = api(
        &g,
        "DELETE",
        &format!("/api/grants/{id}?reason=lesson+over"),
        Some(TECH),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let started = Instant::now();
    while curl(&["-x", &g.url(), &url]).status != 403 {
        assert!(started.elapsed() < Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(50));
    }
    // A revoked token (removed from the policy, SIGHUP) is refused.
    std::fs::write(g.dir.path().join("policy.toml"), policy(false)).expect("policy");
    g.signal("HUP");
    assert!(g.wait_for_log("reloaded policy and lists", Duration::from_secs(5)));
    assert_eq!(api(&g, "GET", "/api/grants", Some(TECH), None).0, 401);
    // Every call is in the audit trail.
    let dir = g.stop();
    let tail = common::log_tail(&dir.path().join("log"));
    assert!(
        tail.contains("grant api POST refused") && tail.contains("by unauthenticated"),
        "{tail}"
    );
    assert!(
        tail.contains("grant added g-1 ticket HD-7001 by helpdesk"),
        "{tail}"
    );
    assert!(
        tail.contains("grant revoked g-1 ticket HD-7001 by helpdesk"),
        "{tail}"
    );
}

/// Who is at fault picks the status: a revocation of a grant not in force is the
/// caller's (400); a grants file edited by hand into the wrong shape is the server's (500),
/// and nothing is written to it.
#[test]
fn grant_edit_errors_say_whose_fault() {
    let g = start();
    let (status, body) = api(
        &g,
        "DELETE",
        "/api/grants/g-99?reason=gone",
        Some(TECH),
        None,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("no grant \\\"g-99\\\" in force"), "{body}");
    let file = g.dir.path().join("grants.toml");
    std::fs::write(&file, "grant = 5\n").expect("grants file");
    let grant = format!(
        r#"{{"ticket": "HD-7003", "reason": "statistics lesson on odds", "groups": ["ks4"], "sites": ["bet.test"], "expires": "{}"}}"#,
        (chrono::Utc::now() + chrono::Duration::days(7)).to_rfc3339()
    );
    let (status, body) = api(&g, "POST", "/api/grants", Some(TECH), Some(&grant));
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("must be [[grant]] tables"), "{body}");
    assert_eq!(std::fs::read_to_string(&file).expect("read"), "grant = 5\n");
}

/// A helpdesk integration's path: the reference on a pupil's block page names the
/// decision, which says what would unblock it, and that, with a ticket and a reason, is
/// the body of a grant.
#[test]
fn the_decisions_api_reads_a_block_page_reference() {
    let origin = Origin::http();
    let g = start();
    let reference_of = |url: &str| {
        let r = curl(&["-x", &g.url(), url]);
        assert_eq!(r.status, 403, "{r:?}");
        r.headers
            .lines()
            .find_map(|l| l.strip_prefix("x-gatehouse-reference: "))
            .expect("reference header")
            .trim()
            .to_string()
    };
    let url = format!("http://bet.test:{}/odds", origin.port);
    let reference = reference_of(&url);
    let path = format!("/api/decisions/{}", reference.to_lowercase());
    assert_eq!(api(&g, "GET", &path, None, None).0, 401);
    let (status, body) = api(&g, "GET", &path, Some(VIEWER), None);
    assert_eq!(status, 200, "{body}");
    let d: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(d["reference"], reference.as_str());
    assert_eq!(d["kind"], "decision");
    assert_eq!(d["action"], "block");
    assert_eq!(d["url"], url.as_str());
    assert_eq!(d["group"], "ks4");
    assert_eq!(d["categories"], serde_json::json!(["gambling"]));
    assert_eq!(d["status"], 403);
    assert_eq!(d["unblock"]["kind"], "grant");
    assert_eq!(
        d["unblock"]["grant"],
        serde_json::json!({"groups": ["ks4"], "sites": ["bet.test"]})
    );

    // Ticket, reason and expiry added, the suggested grant opens the site.
    let mut grant = d["unblock"]["grant"].clone();
    grant["ticket"] = "HD-7101".into();
    grant["reason"] = "probability lesson".into();
    grant["expires"] = (chrono::Utc::now() + chrono::Duration::days(1))
        .to_rfc3339()
        .into();
    let (status, body) = api(
        &g,
        "POST",
        "/api/grants",
        Some(TECH),
        Some(&grant.to_string()),
    );
    assert_eq!(status, 201, "{body}");
    let started = Instant::now();
    while curl(&["-x", &g.url(), &url]).status != 200 {
        assert!(started.elapsed() < Duration::from_secs(2), "allowed soon");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Illegal content: nothing unblocks it. Spaces as a person types them are fine.
    let reference = reference_of(&format!("http://csam.test:{}/", origin.port));
    let spaced = reference.replace('-', "%20");
    let (status, body) = api(
        &g,
        "GET",
        &format!("/api/decisions/{spaced}"),
        Some(VIEWER),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let d: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(d["unblock"]["kind"], "illegal", "{d}");

    let (status, body) = api(&g, "GET", "/api/decisions/FFFF-FFFF", Some(VIEWER), None);
    assert_eq!(status, 404, "{body}");
    let (status, body) = api(&g, "GET", "/api/decisions/12O4", Some(VIEWER), None);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("cannot be in a reference"), "{body}");
}
