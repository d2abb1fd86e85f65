//! Teachers' lesson controls through the real proxy: a teacher's token blocks or allows
//! sites and categories for their own classroom until the lesson ends, never for
//! another room, never a locked or illegal category. Classrooms are loopback addresses
//! (curl `--interface 127.0.0.2`), and the lesson schedule ends a few seconds after the
//! test starts (windows take seconds), so the end of the lesson is seen without a long
//! wait.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests are shell: they read files and clocks

mod common;

use std::time::Duration;

use chrono::{Timelike, Utc};
use common::servers::{curl, Gatehouse, Origin};
use sha2::{Digest, Sha256};

const PATEL: &str = "teacher-patel-0123456789abcdef";
const JONES: &str = "teacher-jones-0123456789abcdef";
const TECH: &str = "tech-token-0123456789abcdef";

/// Room 1 (Mrs Patel's) and room 2 (Mr Jones's), as the proxy sees their devices.
const ROOM_1: &str = "127.0.0.2";
const ROOM_2: &str = "127.0.0.3";

fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The policy, with a lesson that ends at `lesson_end` (`HH:MM:SS`, UTC) today.
fn policy(lesson_end: &str) -> String {
    format!(
        r#"[school]
name = "Lesson School"
timezone = "UTC"
[lists]
dir = "lists"
[categories.csam]
severity = "illegal"
[categories.porn]
severity = "safeguarding"
locked = true
[categories.games]
severity = "productivity"
[categories.video]
severity = "productivity"
[schedules.lessons]
windows = ["Daily 00:00-{lesson_end}"]
[teachers]
max_minutes = 50
[teachers.classrooms.room-1]
subnets = ["{ROOM_1}/32"]
[teachers.classrooms.room-2]
subnets = ["{ROOM_2}/32"]
[identity]
default_group = "ks3"
[groups.ks3]
mode = "blocklist"
block = ["porn", "games"]
[groups.ks4]
mode = "blocklist"
block = ["porn"]
[log]
dir = "log"
[admin]
listen = "127.0.0.1:0"
[[admin.tokens]]
name = "mrs-patel"
role = "teacher"
classrooms = ["room-1"]
groups = ["ks4"]
sha256 = "{patel}"
[[admin.tokens]]
name = "mr-jones"
role = "teacher"
classrooms = ["room-2"]
sha256 = "{jones}"
[[admin.tokens]]
name = "helpdesk"
role = "technician"
sha256 = "{tech}"
[server]
listen = "127.0.0.1:0"
allow_internal_destinations = ["127.0.0.1/32"]
[server.resolve]
"video.test" = "127.0.0.1"
"games.test" = "127.0.0.1"
"porn.test" = "127.0.0.1"
"#,
        patel = hash(PATEL),
        jones = hash(JONES),
        tech = hash(TECH),
    )
}

fn start(lesson_end: &str) -> Gatehouse {
    let text = policy(lesson_end);
    Gatehouse::start(&[
        ("policy.toml", text.as_str()),
        ("lists/csam/domains", "csam.test\n"),
        ("lists/porn/domains", "porn.test\n"),
        ("lists/games/domains", "games.test\n"),
        ("lists/video/domains", "video.test\n"),
    ])
}

/// A lesson that ends `secs` seconds from now (UTC), as `HH:MM:SS`; waits first if
/// that would cross midnight (windows do not).
fn lesson_ending_in(secs: u32) -> (String, chrono::DateTime<Utc>) {
    let mut now = Utc::now();
    if now.num_seconds_from_midnight() + secs + 5 >= 24 * 3600 {
        std::thread::sleep(Duration::from_secs(u64::from(secs) + 10));
        now = Utc::now();
    }
    let end =
        now.with_nanosecond(0).expect("whole second") + chrono::Duration::seconds(secs.into());
    (end.format("%H:%M:%S").to_string(), end)
}

fn api(g: &Gatehouse, method: &str, path: &str, token: &str, body: Option<&str>) -> (u16, String) {
    let url = format!("http://127.0.0.1:{}{path}", g.admin_port);
    let auth = format!("Authorization: Bearer {token}");
    let mut args = vec![
        "-X",
        method,
        "-H",
        "Content-Type: application/json",
        "-H",
        &auth,
    ];
    if let Some(b) = body {
        args.extend(["--data-binary", b]);
    }
    args.push(&url);
    let r = curl(&args);
    (r.status, r.body)
}

/// The status a device in `room` gets for `host` through the proxy.
fn visit(g: &Gatehouse, origin: &Origin, room: &str, host: &str) -> u16 {
    let url = format!("http://{host}:{}/", origin.port);
    curl(&["-x", &g.url(), "--interface", room, &url]).status
}

#[test]
fn a_teachers_lesson_block_and_allow_work_for_their_room_only_and_end_with_the_lesson() {
    let origin = Origin::http();
    let (end_text, lesson_end) = lesson_ending_in(14);
    let g = start(&end_text);
    // Before: video is allowed and games blocked, in both rooms.
    for room in [ROOM_1, ROOM_2] {
        assert_eq!(visit(&g, &origin, room, "video.test"), 200, "{room}");
        assert_eq!(visit(&g, &origin, room, "games.test"), 403, "{room}");
    }

    // Mrs Patel closes video and opens games for room 1, for the lesson.
    let (status, body) = api(
        &g,
        "POST",
        "/api/lessons",
        PATEL,
        Some(
            r#"{"effect": "block", "sites": ["video.test"], "classrooms": ["room-1"], "reason": "Eyes on the worksheet"}"#,
        ),
    );
    assert_eq!(status, 201, "{body}");
    let made: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let block_id = made["id"].as_str().expect("id").to_string();
    // It ends at the lesson's end (not max_minutes, 50 minutes away).
    let expires = chrono::DateTime::parse_from_rfc3339(made["expires"].as_str().expect("expires"))
        .expect("RFC 3339");
    assert_eq!(expires, lesson_end, "{body}");
    let (status, body) = api(
        &g,
        "POST",
        "/api/lessons",
        PATEL,
        Some(
            r#"{"effect": "allow", "categories": ["games"], "classrooms": ["room-1"], "reason": "Maths games starter"}"#,
        ),
    );
    assert_eq!(status, 201, "{body}");

    // In force at once, in room 1 only.
    assert_eq!(visit(&g, &origin, ROOM_1, "video.test"), 403);
    assert_eq!(visit(&g, &origin, ROOM_1, "games.test"), 200);
    assert_eq!(visit(&g, &origin, ROOM_2, "video.test"), 200);
    assert_eq!(visit(&g, &origin, ROOM_2, "games.test"), 403);
    let metrics = curl(&[&format!("http://127.0.0.1:{}/metrics", g.admin_port)]).body;
    assert!(
        metrics.contains("gatehouse_lesson_overrides_active{effect=\"block\"} 1")
            && metrics.contains("gatehouse_lesson_overrides_active{effect=\"allow\"} 1"),
        "{metrics}"
    );
    // The block page says why.
    let page = curl(&[
        "-x",
        &g.url(),
        "--interface",
        ROOM_1,
        &format!("http://video.test:{}/", origin.port),
    ]);
    assert!(page.body.to_lowercase().contains("lesson"), "{}", page.body);
    // log show, from the page's reference: the override, and what ends it.
    let reference = page
        .headers
        .lines()
        .find_map(|l| l.strip_prefix("x-gatehouse-reference: "))
        .expect("the reference header")
        .trim()
        .to_string();
    let show = common::gatehouse()
        .args(["log", "show", &reference, "--config"])
        .arg(g.dir.path().join("policy.toml"))
        .output()
        .expect("log show runs");
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(
        shown.contains(&format!(
            "BLOCK (lesson_block), categories video, by a teacher's lesson override {block_id}"
        )),
        "{shown}"
    );
    assert!(
        shown.contains(&format!(
            "closed for this lesson by a teacher's override {block_id}: it ends with the lesson"
        )),
        "{shown}"
    );

    // Not for another teacher's room, nor a class that is not theirs.
    let (status, body) = api(
        &g,
        "POST",
        "/api/lessons",
        PATEL,
        Some(
            r#"{"effect": "block", "sites": ["video.test"], "classrooms": ["room-2"], "reason": "Eyes on the worksheet"}"#,
        ),
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains(r#"classroom \"room-2\" is not one of yours"#),
        "{body}"
    );
    let (status, body) = api(
        &g,
        "POST",
        "/api/lessons",
        JONES,
        Some(
            r#"{"effect": "allow", "sites": ["video.test"], "groups": ["ks3"], "reason": "Film clip for the lesson"}"#,
        ),
    );
    assert_eq!(status, 403, "{body}");
    // Nor a locked or an illegal category, either way.
    let (status, body) = api(
        &g,
        "POST",
        "/api/lessons",
        PATEL,
        Some(
            r#"{"effect": "allow", "categories": ["porn"], "classrooms": ["room-1"], "reason": "Biology lesson"}"#,
        ),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("porn is a locked category; teachers cannot override it"),
        "{body}"
    );
    let (status, body) = api(
        &g,
        "POST",
        "/api/lessons",
        PATEL,
        Some(
            r#"{"effect": "allow", "sites": ["porn.test"], "classrooms": ["room-1"], "reason": "Biology lesson"}"#,
        ),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("porn.test: porn is a locked category"),
        "{body}"
    );
    let (status, body) = api(
        &g,
        "POST",
        "/api/lessons",
        PATEL,
        Some(
            r#"{"effect": "block", "categories": ["csam"], "classrooms": ["room-1"], "reason": "Belt and braces"}"#,
        ),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("csam is an illegal category, blocked for everyone, always"),
        "{body}"
    );
    // Longer than max_minutes: refused.
    let (status, body) = api(
        &g,
        "POST",
        "/api/lessons",
        PATEL,
        Some(
            r#"{"effect": "block", "sites": ["video.test"], "classrooms": ["room-1"], "reason": "Eyes on the worksheet", "minutes": 51}"#,
        ),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("at most 50 minutes"), "{body}");
    // Nothing the teacher asked for wrongly reached the room.
    assert_eq!(visit(&g, &origin, ROOM_2, "video.test"), 200);
    assert_eq!(visit(&g, &origin, ROOM_1, "porn.test"), 403);

    // A teacher's token reaches the lessons API only; a technician's cannot make one.
    assert_eq!(api(&g, "GET", "/api/grants", PATEL, None).0, 403);
    assert_eq!(api(&g, "GET", "/api/decisions/1", PATEL, None).0, 403);
    let (status, _) = api(
        &g,
        "POST",
        "/api/lessons",
        TECH,
        Some(
            r#"{"effect": "block", "sites": ["video.test"], "classrooms": ["room-1"], "reason": "x"}"#,
        ),
    );
    assert_eq!(status, 403);
    // Each teacher lists their own; the technician lists all, with grant list.
    let (status, body) = api(&g, "GET", "/api/lessons", PATEL, None);
    assert_eq!(status, 200);
    let rows: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(rows.as_array().map(Vec::len), Some(2), "{body}");
    assert_eq!(
        api(&g, "GET", "/api/lessons", JONES, None).1.trim(),
        "[]",
        "Mr Jones has none"
    );
    let (_, body) = api(&g, "GET", "/api/grants", TECH, None);
    assert!(
        body.contains(r#""kind":"lesson""#) && body.contains(r#""effect":"block""#),
        "{body}"
    );
    let list = common::gatehouse()
        .args(["grant", "list", "--config"])
        .arg(g.dir.path().join("policy.toml"))
        .output()
        .expect("grant list runs");
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        listed.contains(&format!(
            "{block_id}  active  lesson-block  by mrs-patel  for [room-1]  closes [video.test]"
        )),
        "{listed}"
    );
    assert!(
        listed.contains("lesson-allow  by mrs-patel  for [room-1]  opens [games]"),
        "{listed}"
    );

    // The lesson ends: both overrides with it, without anyone touching them.
    let wait = (lesson_end - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(300);
    std::thread::sleep(wait);
    assert_eq!(visit(&g, &origin, ROOM_1, "video.test"), 200);
    assert_eq!(visit(&g, &origin, ROOM_1, "games.test"), 403);

    // The audit trail: who made each, why, for whom, until when; and the decisions.
    let tail = common::log_tail(&g.dir.path().join("log"));
    assert!(
        tail.contains(&format!("grant added {block_id} ticket lesson:{block_id} by mrs-patel: lesson block: Eyes on the worksheet (for classrooms room-1; closes sites video.test;")),
        "{tail}"
    );
    assert!(tail.contains("lesson allow: Maths games starter"), "{tail}");
    assert!(tail.contains("api lesson refused"), "{tail}");
    assert!(tail.contains("lesson_block  ticket lesson:"), "{tail}");
    assert!(tail.contains("lesson_allow  ticket lesson:"), "{tail}");

    // The report's teacher overrides section.
    let today = Utc::now().format("%Y-%m-%d").to_string();
    let tomorrow = (Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let report = common::gatehouse()
        .args([
            "report", "--from", &today, "--to", &tomorrow, "--format", "json", "--config",
        ])
        .arg(g.dir.path().join("policy.toml"))
        .output()
        .expect("report runs");
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).expect("JSON report");
    let overrides = report["teacher_overrides"]
        .as_array()
        .expect("teacher overrides");
    let block = overrides
        .iter()
        .find(|r| r["id"] == block_id.as_str() && r["event"] == "added")
        .unwrap_or_else(|| panic!("the block in {overrides:?}"));
    assert_eq!(block["by"], "mrs-patel");
    assert_eq!(
        block["requests_allowed"], 2,
        "the two blocked visits: {block}"
    );
    assert!(
        report["grants"]
            .as_array()
            .expect("grants")
            .iter()
            .all(|r| r["id"] != block_id.as_str()),
        "lesson overrides are not ticketed grants"
    );
    let html = common::gatehouse()
        .args(["report", "--from", &today, "--to", &tomorrow, "--config"])
        .arg(g.dir.path().join("policy.toml"))
        .output()
        .expect("report runs");
    let html = String::from_utf8_lossy(&html.stdout);
    assert!(html.contains("Teacher overrides"), "{html}");
}

#[test]
fn the_cli_makes_lesson_overrides_for_a_named_teacher_within_their_rooms() {
    let origin = Origin::http();
    let g = start("24:00");
    let config = g.dir.path().join("policy.toml");
    let lesson = |args: &[&str]| {
        let out = common::gatehouse()
            .args(["grant", "lesson", "--config"])
            .arg(&config)
            .args(args)
            .output()
            .expect("grant lesson runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = lesson(&[
        "--teacher",
        "mr-jones",
        "--block",
        "--site",
        "video.test",
        "--classroom",
        "room-2",
        "--minutes",
        "5",
        "--reason",
        "Test in progress",
    ]);
    assert!(ok, "{out}");
    assert!(out.starts_with("g-1  until "), "{out}");
    // The watcher picks the file up.
    let mut blocked = false;
    for _ in 0..50 {
        if visit(&g, &origin, ROOM_2, "video.test") == 403 {
            blocked = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(blocked, "room 2's block took effect");
    assert_eq!(visit(&g, &origin, ROOM_1, "video.test"), 200);
    // Mr Jones's token names room 2 only; porn is locked.
    let (ok, out) = lesson(&[
        "--teacher",
        "mr-jones",
        "--block",
        "--site",
        "video.test",
        "--classroom",
        "room-1",
        "--reason",
        "Test in progress",
    ]);
    assert!(!ok);
    assert!(
        out.contains(r#"classroom "room-1" is not one of yours"#),
        "{out}"
    );
    let (ok, out) = lesson(&[
        "--teacher",
        "mr-jones",
        "--allow",
        "--category",
        "porn",
        "--classroom",
        "room-2",
        "--reason",
        "Biology lesson",
    ]);
    assert!(!ok);
    assert!(out.contains("porn is a locked category"), "{out}");
    let (ok, out) = lesson(&[
        "--teacher",
        "helpdesk",
        "--block",
        "--site",
        "video.test",
        "--classroom",
        "room-2",
        "--reason",
        "Test in progress",
    ]);
    assert!(!ok);
    assert!(
        out.contains(r#"no teacher token named "helpdesk""#),
        "{out}"
    );
    // Mr Jones ends his own early; Mrs Patel cannot end his.
    assert_eq!(api(&g, "DELETE", "/api/lessons/g-1", PATEL, None).0, 403);
    let (status, body) = api(&g, "DELETE", "/api/lessons/g-1", JONES, None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(visit(&g, &origin, ROOM_2, "video.test"), 200);
}
