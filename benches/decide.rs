//! `Policy::decide` with and without grants and teachers' lesson overrides: what a
//! lesson block's extra pass over the grants (before the grants' own) costs a request.
//!
//! `cargo bench --bench decide`. A small synthetic policy (six categories, three groups,
//! a lessons schedule, two classrooms) and its lists, written to a temporary directory;
//! targets are classified once, so only `decide` is timed. For each grant set it
//! reports the median over 15 runs of the time per decision, cycling through an allowed
//! site, a blocked category and two sites grants name, for a device in room 1. A grant
//! whose scope does not cover the requester costs a comparison or two; one that does
//! costs a site-list lookup (hashing the host's suffixes), which is what the last row,
//! every override in the requester's room, shows.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a benchmark reads the clock

use std::hint::black_box;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use gatehouse::core::category::CategorySet;
use gatehouse::core::grants::{Effect, Grant, GrantKind, GrantRequest, GrantScope};
use gatehouse::core::host::Target;
use gatehouse::core::verdict::Requester;
use gatehouse::lists::CacheMode;
use gatehouse::snapshot::{self, Snapshot};

const POLICY: &str = r#"[school]
name = "Bench School"
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
[categories.social]
severity = "productivity"
[categories.learning]
severity = "productivity"
[schedules.lessons]
windows = ["Daily 00:00-24:00"]
[teachers]
[teachers.classrooms.room-0]
subnets = ["10.31.0.0/24"]
[teachers.classrooms.room-1]
subnets = ["10.31.1.0/24"]
[teachers.classrooms.room-2]
subnets = ["10.31.2.0/24"]
[teachers.classrooms.room-3]
subnets = ["10.31.3.0/24"]
[teachers.classrooms.room-4]
subnets = ["10.31.4.0/24"]
[teachers.classrooms.room-5]
subnets = ["10.31.5.0/24"]
[teachers.classrooms.room-6]
subnets = ["10.31.6.0/24"]
[teachers.classrooms.room-7]
subnets = ["10.31.7.0/24"]
[teachers.classrooms.room-8]
subnets = ["10.31.8.0/24"]
[teachers.classrooms.room-9]
subnets = ["10.31.9.0/24"]
[identity]
default_group = "ks4"
[groups.ks4]
mode = "blocklist"
block = ["porn", "games", "social"]
[groups.ks3]
mode = "blocklist"
block = ["porn", "games", "social", "video"]
[groups.staff]
mode = "blocklist"
block = ["porn"]
"#;

/// Grant `i`; a lesson override is for `room`.
fn request(snap: &Snapshot, kind: GrantKind, i: usize, room: usize, at: DateTime<Utc>) -> Grant {
    let p = &snap.policy;
    let (ticket, classrooms, groups) = match kind {
        GrantKind::Ticketed => (
            format!("HD-{i}"),
            vec![],
            vec![p.group_id("ks3").expect("group")],
        ),
        GrantKind::Lesson(_) => (String::new(), vec![format!("room-{room}")], vec![]),
    };
    Grant::new(
        GrantRequest {
            id: format!("g-{i}"),
            kind,
            ticket,
            classrooms,
            issued_by: "bench".into(),
            reason: "Benchmark lesson".into(),
            scope: GrantScope {
                groups,
                ..GrantScope::default()
            },
            sites: vec![format!("site{i}.example")],
            categories: CategorySet::EMPTY,
            starts: at - Duration::minutes(10),
            expires: at + Duration::minutes(30),
        },
        p,
        &snap.lists,
    )
    .expect("valid bench grant")
}

fn main() {
    let dir = tempfile::tempdir().expect("bench dir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        std::fs::write(path, text).expect("write");
    };
    write("policy.toml", POLICY);
    write("lists/csam/domains", "csam.example\n");
    write("lists/porn/domains", "porn.example\n");
    write("lists/games/domains", "games.example\nsite0.example\n");
    write("lists/video/domains", "video.example\n");
    write("lists/social/domains", "social.example\n");
    write("lists/learning/domains", "learn.example\n");
    let snap = snapshot::load(&dir.path().join("policy.toml"), CacheMode::Off).expect("loads");
    let p = &snap.policy;
    let at: DateTime<Utc> = "2026-12-07T10:00:00Z".parse().expect("time");
    let targets: Vec<(Target, _)> = [
        "http://learn.example/",
        "http://games.example/",
        "http://site3.example/",
        "http://site25.example/",
    ]
    .iter()
    .map(|u| {
        let t = Target::parse(u).expect("URL");
        let c = snap.classify(&t);
        (t, c)
    })
    .collect();
    let requester = Requester {
        group: p.group_id("ks4").expect("group"),
        user: None,
        client: Some("10.31.1.20".parse().expect("ip")),
    };
    let ticketed: Vec<Grant> = (0..20)
        .map(|i| request(&snap, GrantKind::Ticketed, i, 0, at))
        .collect();
    // Twenty overrides, two per room (a block and an allow): the requester's room has
    // two; then the worst case, all twenty for the requester's room.
    let lessons = |room: &dyn Fn(usize) -> usize| {
        let mut grants = ticketed.clone();
        grants.extend((20..40).map(|i| {
            let effect = if i % 2 == 0 {
                Effect::Block
            } else {
                Effect::Allow
            };
            request(&snap, GrantKind::Lesson(effect), i, room(i), at)
        }));
        grants
    };
    let spread = lessons(&|i| (i / 2) % 10);
    let one_room = lessons(&|_| 1);
    println!("decide benchmark (median of 15 runs, ns per decision)");
    for (label, grants) in [
        ("no grants", Vec::new()),
        ("20 ticketed grants (other groups)", ticketed.clone()),
        ("+ 20 lesson overrides, 2 in this room", spread),
        ("+ 20 lesson overrides, all in this room", one_room),
    ] {
        const N: usize = 200_000;
        let mut runs = Vec::new();
        for _ in 0..15 {
            let start = Instant::now();
            for i in 0..N {
                let (t, c) = &targets[i % targets.len()];
                black_box(p.decide(&requester, t, c, black_box(&grants), at));
            }
            runs.push(start.elapsed().as_nanos() as f64 / N as f64);
        }
        runs.sort_by(f64::total_cmp);
        println!("  {label:<42} {:>7.1} ns", runs[runs.len() / 2]);
    }
}
