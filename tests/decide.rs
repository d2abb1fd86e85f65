//! `decide` by table: precedence, grants, schedules, allowlist mode. One row per case,
//! the expected verdict beside the input.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests are shell: they read files and clocks

mod common;

use chrono::{DateTime, Duration, Utc};
use common::{tree, utc};
use gatehouse::core::category::CategorySet;
use gatehouse::core::grants::{
    lesson_expiry, Effect, Grant, GrantError, GrantKind, GrantRequest, GrantScope, TeacherScope,
};
use gatehouse::core::host::Target;
use gatehouse::core::verdict::{Action, Requester};
use gatehouse::lists::CacheMode;
use gatehouse::snapshot::{self, Snapshot};

const POLICY: &str = r#"[school]
name = "Decide School"
[lists]
dir = "lists"
[categories.csam]
severity = "illegal"
[categories.porn]
severity = "safeguarding"
locked = true
[categories.gambling]
severity = "inappropriate"
[categories.games]
severity = "productivity"
[categories.social]
severity = "productivity"
[categories.learning]
severity = "productivity"
[schedules.lunch]
windows = ["Mon-Fri 12:00-13:00"]
[schedules.lessons]
windows = ["Mon-Fri 09:00-10:30", "Mon-Fri 10:45-12:00"]
[teachers]
max_minutes = 90
[teachers.classrooms.room-1]
subnets = ["10.31.1.0/24"]
[teachers.classrooms.room-2]
subnets = ["10.31.2.0/24", "10.31.3.7"]
[identity]
default_group = "ks2"
[groups.early]
mode = "allowlist"
allow = ["learning"]
allow_sites = ["garden.example", "mixed.example/kids/"]
[groups.ks2]
mode = "blocklist"
block = ["porn", "gambling", "games", "social"]
block_sites = ["blocked-for-ks2.example"]
allow_sites = ["www.casino-history.example"]
block_ip_literals = true
[groups.ks4]
mode = "blocklist"
block = ["porn", "gambling", "games"]
allow_during = { social = "lunch" }
block_ip_literals = true
[groups.staff]
mode = "blocklist"
block = ["porn"]
"#;

fn snapshot() -> (tempfile::TempDir, Snapshot) {
    let dir = tree(&[
        ("policy.toml", POLICY),
        ("lists/csam/domains", "csam.example\n"),
        ("lists/csam/urls", "mixed.example/bad/\n"),
        ("lists/porn/domains", "porn.example\nboth.example\n"),
        (
            "lists/gambling/domains",
            "casino.example\ncasino-history.example\n",
        ),
        ("lists/games/domains", "games.example\nboth.example\n"),
        ("lists/social/domains", "social.example\n"),
        ("lists/learning/domains", "learn.example\n"),
    ]);
    let snap =
        snapshot::load(&dir.path().join("policy.toml"), CacheMode::Off).expect("test policy loads");
    (dir, snap)
}

fn grant(
    snap: &Snapshot,
    id: &str,
    groups: &[&str],
    sites: &[&str],
    categories: &[&str],
    starts: DateTime<Utc>,
    hours: i64,
) -> Result<Grant, GrantError> {
    let p = &snap.policy;
    Grant::new(
        GrantRequest {
            id: id.to_string(),
            kind: GrantKind::Ticketed,
            ticket: format!("HD-{}", 4400 + id.len()),
            classrooms: vec![],
            issued_by: "j.smith".into(),
            reason: "GCSE RE unit on extremism".into(),
            scope: GrantScope {
                groups: groups
                    .iter()
                    .map(|g| p.group_id(g).expect("group"))
                    .collect(),
                ..GrantScope::default()
            },
            sites: sites.iter().map(|s| s.to_string()).collect(),
            categories: categories
                .iter()
                .map(|c| p.category_id(c).expect("category"))
                .collect::<CategorySet>(),
            starts,
            expires: starts + Duration::hours(hours),
        },
        p,
        &snap.lists,
    )
}

#[test]
fn precedence_table() {
    let (_dir, snap) = snapshot();
    let p = &snap.policy;
    let monday_lesson = utc("2026-01-12T10:00:00Z");
    let monday_lunch = utc("2026-01-12T12:30:00Z");
    let grants = vec![
        grant(
            &snap,
            "g-site",
            &["ks4"],
            &["games.example"],
            &[],
            utc("2026-01-12T09:00:00Z"),
            4,
        )
        .expect("valid"),
        grant(
            &snap,
            "g-cat",
            &["ks2"],
            &[],
            &["gambling"],
            utc("2026-01-12T09:00:00Z"),
            4,
        )
        .expect("valid"),
        grant(
            &snap,
            "g-future",
            &["ks2"],
            &["social.example"],
            &[],
            utc("2026-02-01T00:00:00Z"),
            4,
        )
        .expect("valid"),
        grant(
            &snap,
            "g-expired",
            &["ks2"],
            &["games.example"],
            &[],
            utc("2026-01-01T00:00:00Z"),
            4,
        )
        .expect("valid"),
        grant(
            &snap,
            "g-mixed",
            &["ks2"],
            &[],
            &["games"],
            utc("2026-01-12T09:00:00Z"),
            4,
        )
        .expect("valid"),
    ];
    // (group, URL, time, expected action, expected reason code, expected grant id)
    type Row<'a> = (
        &'a str,
        &'a str,
        DateTime<Utc>,
        Action,
        &'a str,
        Option<&'a str>,
    );
    let rows: &[Row] = &[
        // 1. illegal beats everything, including allow_sites and grants
        (
            "staff",
            "http://csam.example/",
            monday_lesson,
            Action::Block,
            "illegal",
            None,
        ),
        (
            "early",
            "http://mixed.example/bad/x",
            monday_lesson,
            Action::Block,
            "illegal",
            None,
        ),
        (
            "early",
            "http://mixed.example/kids/x",
            monday_lesson,
            Action::Allow,
            "allow_sites",
            None,
        ),
        // 2. grants: scope, target, time window
        (
            "ks4",
            "http://games.example/",
            monday_lesson,
            Action::Allow,
            "grant",
            Some("g-site"),
        ),
        (
            "ks4",
            "http://www.games.example/x",
            monday_lesson,
            Action::Allow,
            "grant",
            Some("g-site"),
        ),
        (
            "ks2",
            "http://games.example/",
            monday_lesson,
            Action::Allow,
            "grant",
            Some("g-mixed"),
        ),
        (
            "ks4",
            "http://games.example/",
            utc("2026-01-12T13:00:00Z"),
            Action::Block,
            "category",
            None,
        ),
        (
            "ks2",
            "http://casino.example/",
            monday_lesson,
            Action::Allow,
            "grant",
            Some("g-cat"),
        ),
        (
            "ks4",
            "http://casino.example/",
            monday_lesson,
            Action::Block,
            "category",
            None,
        ),
        (
            "ks2",
            "http://social.example/",
            monday_lesson,
            Action::Block,
            "category",
            None,
        ),
        // a category grant does not open a site that is also in another blocked category
        (
            "ks2",
            "http://both.example/",
            monday_lesson,
            Action::Block,
            "category",
            None,
        ),
        // 3. the group's own site lists, then IP literals
        (
            "ks2",
            "http://blocked-for-ks2.example/",
            monday_lesson,
            Action::Block,
            "block_sites",
            None,
        ),
        (
            "ks2",
            "http://www.casino-history.example/",
            monday_lesson,
            Action::Allow,
            "grant",
            Some("g-cat"),
        ),
        (
            "ks2",
            "http://www.casino-history.example/",
            utc("2026-01-12T20:00:00Z"),
            Action::Allow,
            "allow_sites",
            None,
        ),
        (
            "ks2",
            "http://casino-history.example/",
            utc("2026-01-12T20:00:00Z"),
            Action::Block,
            "category",
            None,
        ),
        (
            "ks2",
            "http://192.0.2.1/",
            monday_lesson,
            Action::Block,
            "ip_literal",
            None,
        ),
        (
            "staff",
            "http://192.0.2.1/",
            monday_lesson,
            Action::Allow,
            "mode",
            None,
        ),
        // 4. categories, most severe named; schedules
        (
            "ks4",
            "http://social.example/",
            monday_lesson,
            Action::Block,
            "category",
            None,
        ),
        (
            "ks4",
            "http://social.example/",
            monday_lunch,
            Action::Allow,
            "allow_during",
            None,
        ),
        (
            "staff",
            "http://both.example/",
            monday_lesson,
            Action::Block,
            "category",
            None,
        ),
        // 5. mode
        (
            "ks2",
            "http://wikipedia.example/",
            monday_lesson,
            Action::Allow,
            "mode",
            None,
        ),
        (
            "early",
            "http://wikipedia.example/",
            monday_lesson,
            Action::Block,
            "mode",
            None,
        ),
        (
            "early",
            "http://learn.example/",
            monday_lesson,
            Action::Allow,
            "allowed_category",
            None,
        ),
        (
            "early",
            "http://www.garden.example/",
            monday_lesson,
            Action::Allow,
            "allow_sites",
            None,
        ),
        (
            "early",
            "http://mixed.example/other",
            monday_lesson,
            Action::Block,
            "mode",
            None,
        ),
    ];
    let mut explanations = Vec::new();
    for (group, url, at, action, reason, grant_id) in rows {
        let target = Target::parse(url).expect("URL");
        let c = snap.classify(&target);
        let requester = Requester {
            group: p.group_id(group).expect("group"),
            user: None,
            client: None,
        };
        let v = p.decide(&requester, &target, &c, &grants, *at);
        let got = (
            v.action,
            v.reason.code().as_str(),
            v.grant.as_ref().map(|g| g.id.to_string()),
        );
        let want = (*action, *reason, grant_id.map(str::to_string));
        let explanation = p.explain(&v);
        assert_eq!(got, want, "{group} {url} at {at}: {explanation}");
        explanations.push(explanation);
    }
    // The technician's one-line reason for each row, word for word: it goes into the
    // decision log and `gatehouse classify`, so a change to its wording is deliberate.
    let want_explanations = [
        "illegal category csam (illegal): blocked for every group, always",
        "illegal category csam (illegal): blocked for every group, always",
        "group early allows site \"mixed.example/kids/\" (allow_sites)",
        "allowed by grant g-site (ticket HD-4406)",
        "allowed by grant g-site (ticket HD-4406)",
        "allowed by grant g-mixed (ticket HD-4407)",
        "category games (productivity) is blocked for group ks4",
        "allowed by grant g-cat (ticket HD-4405)",
        "category gambling (inappropriate) is blocked for group ks4",
        "category social (productivity) is blocked for group ks2",
        "category porn (safeguarding) is blocked for group ks2",
        "group ks2 blocks site \"blocked-for-ks2.example\" (block_sites)",
        "allowed by grant g-cat (ticket HD-4405)",
        "group ks2 allows site \"www.casino-history.example\" (allow_sites)",
        "category gambling (inappropriate) is blocked for group ks2",
        "group ks2 blocks IP-address hosts (block_ip_literals)",
        "no category blocked for group staff matched",
        "category social (productivity) is blocked for group ks4 outside schedule lunch",
        "category social (productivity) is allowed for group ks4 during schedule lunch",
        "category porn (safeguarding) is blocked for group staff",
        "no category blocked for group ks2 matched",
        "group early is in allowlist mode and this site is not on its allow list",
        "category learning (productivity) is allowed for group early (allowlist mode)",
        "group early allows site \"garden.example\" (allow_sites)",
        "group early is in allowlist mode and this site is not on its allow list",
    ];
    assert_eq!(explanations, want_explanations);

    // The most severe category is the one named.
    let target = Target::parse("http://both.example/").expect("URL");
    let c = snap.classify(&target);
    let v = p.decide(
        &Requester {
            group: p.group_id("ks2").expect("group"),
            user: None,
            client: None,
        },
        &target,
        &c,
        &[],
        monday_lesson,
    );
    assert!(
        p.explain(&v).contains("porn (safeguarding)"),
        "{}",
        p.explain(&v)
    );
    assert_eq!(p.category_names(v.categories), vec!["porn", "games"]);
}

#[test]
fn grants_scoped_to_users_and_subnets() {
    let (_dir, snap) = snapshot();
    let p = &snap.policy;
    let at = utc("2026-01-12T10:00:00Z");
    let g = Grant::new(
        GrantRequest {
            id: "g-user".into(),
            kind: GrantKind::Ticketed,
            ticket: "HD-4411".into(),
            classrooms: vec![],
            issued_by: "tech".into(),
            reason: "Media studies coursework".into(),
            scope: GrantScope {
                users: vec!["a.pupil".into()],
                subnets: vec!["10.31.4.0/24".parse().expect("net")],
                ..GrantScope::default()
            },
            sites: vec!["social.example".into()],
            categories: CategorySet::EMPTY,
            starts: at - Duration::hours(1),
            expires: at + Duration::hours(1),
        },
        p,
        &snap.lists,
    )
    .expect("valid");
    let target = Target::parse("http://social.example/").expect("URL");
    let c = snap.classify(&target);
    let ks2 = p.group_id("ks2").expect("group");
    let decide = |user, client: Option<&str>| {
        let requester = Requester {
            group: ks2,
            user,
            client: client.map(|c| c.parse().expect("ip")),
        };
        p.decide(&requester, &target, &c, std::slice::from_ref(&g), at)
            .action
    };
    assert_eq!(decide(Some("a.pupil"), None), Action::Allow);
    assert_eq!(decide(Some("someone.else"), None), Action::Block);
    assert_eq!(decide(None, Some("10.31.4.20")), Action::Allow);
    assert_eq!(decide(None, Some("10.31.5.20")), Action::Block);
}

#[test]
fn grants_that_reach_illegal_content_are_refused() {
    let (_dir, snap) = snapshot();
    let start = utc("2026-01-12T09:00:00Z");
    let rows: &[(&[&str], &[&str], &str)] = &[
        (&[], &["csam"], "category csam"),
        (&["csam.example"], &[], "csam.example"),
        (&["www.csam.example"], &[], "www.csam.example"),
        (&["mixed.example/bad/page"], &[], "mixed.example/bad/page"),
    ];
    for (sites, categories, what) in rows {
        match grant(&snap, "g", &["staff"], sites, categories, start, 1) {
            Err(GrantError::Illegal(entry, _)) => assert!(entry.contains(what), "{entry}"),
            other => panic!("{sites:?} {categories:?}: expected refusal, got {other:?}"),
        }
    }
    // The rest of mixed.example is not illegal and may be granted.
    assert!(grant(
        &snap,
        "g",
        &["staff"],
        &["mixed.example/kids/"],
        &[],
        start,
        1
    )
    .is_ok());
}

#[test]
fn grant_validation_table() {
    let (_dir, snap) = snapshot();
    let p = &snap.policy;
    let at = utc("2026-01-12T09:00:00Z");
    let base = || GrantRequest {
        id: "g1".into(),
        kind: GrantKind::Ticketed,
        ticket: "HD-4411".into(),
        classrooms: vec![],
        issued_by: "j.smith".into(),
        reason: "GCSE RE unit on extremism".into(),
        scope: GrantScope {
            groups: vec![p.group_id("ks4").expect("group")],
            ..GrantScope::default()
        },
        sites: vec!["games.example".into()],
        categories: CategorySet::EMPTY,
        starts: at,
        expires: at + Duration::days(14),
    };
    type Edit = fn(&mut GrantRequest);
    let rows: &[(Edit, Option<&str>)] = &[
        (|_| {}, None),
        (|g| g.ticket = String::new(), Some("ticket")),
        (|g| g.ticket = "4411".into(), Some("ticket")),
        (|g| g.reason = "  ".into(), Some("reason")),
        (|g| g.reason = "TBC".into(), Some("reason")),
        (|g| g.issued_by = String::new(), Some("issued")),
        (
            |g| g.scope = GrantScope::default(),
            Some("group, user or subnet"),
        ),
        (|g| g.sites.clear(), Some("site, URL or category")),
        (|g| g.expires = g.starts, Some("expire after")),
        (|g| g.sites = vec!["bad host!".into()], Some("site")),
        (
            |g| g.classrooms = vec!["room-1".into()],
            Some("classrooms are for lesson overrides"),
        ),
    ];
    for (edit, want) in rows {
        let mut req = base();
        edit(&mut req);
        let result = Grant::new(req, p, &snap.lists);
        match (result, want) {
            (Ok(_), None) => {}
            (Err(e), Some(w)) => assert!(e.to_string().contains(w), "{e} should mention {w}"),
            (r, w) => panic!("expected {w:?}, got {r:?}"),
        }
    }
}

/// A teacher's lesson override, for `classrooms` and `groups`.
#[allow(clippy::too_many_arguments)]
fn lesson(
    snap: &Snapshot,
    id: &str,
    effect: Effect,
    classrooms: &[&str],
    groups: &[&str],
    sites: &[&str],
    categories: &[&str],
    starts: DateTime<Utc>,
    minutes: i64,
) -> Result<Grant, GrantError> {
    let p = &snap.policy;
    Grant::new(
        GrantRequest {
            id: id.to_string(),
            kind: GrantKind::Lesson(effect),
            ticket: String::new(),
            classrooms: classrooms.iter().map(|c| c.to_string()).collect(),
            issued_by: "mrs.patel".into(),
            reason: "Year 10 revision lesson".into(),
            scope: GrantScope {
                groups: groups
                    .iter()
                    .map(|g| p.group_id(g).expect("group"))
                    .collect(),
                ..GrantScope::default()
            },
            sites: sites.iter().map(|s| s.to_string()).collect(),
            categories: categories
                .iter()
                .map(|c| p.category_id(c).expect("category"))
                .collect::<CategorySet>(),
            starts,
            expires: starts + Duration::minutes(minutes),
        },
        p,
        &snap.lists,
    )
}

/// Lesson overrides in the precedence: illegal first; a lesson block before every grant
/// (a technician's ticketed one included) and the group's allow_sites; a lesson allow
/// like a grant; each only for its classroom's networks or its class, and only while
/// it lasts.
#[test]
fn lesson_overrides_in_the_precedence_table() {
    let (_dir, snap) = snapshot();
    let p = &snap.policy;
    let start = utc("2026-01-12T10:00:00Z");
    let during = utc("2026-01-12T10:10:00Z");
    let after = utc("2026-01-12T10:31:00Z");
    let grants = vec![
        // The technician's ticketed grant opens games for ks4 for the day.
        grant(&snap, "g-tech", &["ks4"], &["games.example"], &[], start, 8).expect("valid"),
        lesson(
            &snap,
            "g-block-room1",
            Effect::Block,
            &["room-1"],
            &[],
            &["games.example", "learn.example"],
            &[],
            start,
            30,
        )
        .expect("valid"),
        lesson(
            &snap,
            "g-block-ks2",
            Effect::Block,
            &[],
            &["ks2"],
            &[],
            &["social"],
            start,
            30,
        )
        .expect("valid"),
        lesson(
            &snap,
            "g-allow-room2",
            Effect::Allow,
            &["room-2"],
            &[],
            &[],
            &["gambling"],
            start,
            30,
        )
        .expect("valid"),
    ];
    // (group, client, URL, time, action, reason code, grant id)
    type Row<'a> = (
        &'a str,
        &'a str,
        &'a str,
        DateTime<Utc>,
        Action,
        &'a str,
        Option<&'a str>,
    );
    let rows: &[Row] = &[
        // The lesson block beats the technician's grant, in room 1 only.
        (
            "ks4",
            "10.31.1.5",
            "http://games.example/",
            during,
            Action::Block,
            "lesson_block",
            Some("g-block-room1"),
        ),
        (
            "ks4",
            "10.31.9.5",
            "http://games.example/",
            during,
            Action::Allow,
            "grant",
            Some("g-tech"),
        ),
        // It blocks what the group allows, and ends when it ends.
        (
            "ks4",
            "10.31.1.5",
            "http://learn.example/",
            during,
            Action::Block,
            "lesson_block",
            Some("g-block-room1"),
        ),
        (
            "ks4",
            "10.31.1.5",
            "http://learn.example/",
            after,
            Action::Allow,
            "mode",
            None,
        ),
        (
            "ks4",
            "10.31.1.5",
            "http://games.example/",
            after,
            Action::Allow,
            "grant",
            Some("g-tech"),
        ),
        // A category block for a class (group), wherever they sit.
        (
            "ks2",
            "10.99.0.1",
            "http://social.example/",
            during,
            Action::Block,
            "lesson_block",
            Some("g-block-ks2"),
        ),
        (
            "ks4",
            "10.99.0.1",
            "http://social.example/",
            utc("2026-01-12T12:30:00Z"),
            Action::Allow,
            "allow_during",
            None,
        ),
        // A lesson allow opens the category for room 2's networks (both of them) only.
        (
            "ks4",
            "10.31.2.40",
            "http://casino.example/",
            during,
            Action::Allow,
            "lesson_allow",
            Some("g-allow-room2"),
        ),
        (
            "ks4",
            "10.31.3.7",
            "http://casino.example/",
            during,
            Action::Allow,
            "lesson_allow",
            Some("g-allow-room2"),
        ),
        (
            "ks4",
            "10.31.3.8",
            "http://casino.example/",
            during,
            Action::Block,
            "category",
            None,
        ),
        (
            "ks4",
            "10.31.2.40",
            "http://casino.example/",
            after,
            Action::Block,
            "category",
            None,
        ),
        // Illegal content stays blocked whatever a lesson says.
        (
            "ks4",
            "10.31.2.40",
            "http://csam.example/",
            during,
            Action::Block,
            "illegal",
            None,
        ),
    ];
    for (group, client, url, at, action, code, grant_id) in rows {
        let target = Target::parse(url).expect("URL");
        let c = snap.classify(&target);
        let requester = Requester {
            group: p.group_id(group).expect("group"),
            user: None,
            client: Some(client.parse().expect("ip")),
        };
        let v = p.decide(&requester, &target, &c, &grants, *at);
        assert_eq!(
            (
                v.action,
                v.reason.code().as_str(),
                v.grant.as_ref().map(|g| &*g.id)
            ),
            (*action, *code, *grant_id),
            "{group} {client} {url} at {at}"
        );
        if let Some(g) = &v.grant {
            if g.id.starts_with("g-block") || g.id.starts_with("g-allow") {
                assert_eq!(&*g.ticket, format!("lesson:{}", g.id), "stand-in ticket");
                assert!(
                    p.explain(&v).contains("teacher's override"),
                    "{}",
                    p.explain(&v)
                );
            }
        }
    }
}

#[test]
fn lesson_override_validation_table() {
    let (_dir, snap) = snapshot();
    let start = utc("2026-01-12T10:00:00Z");
    // (effect, classrooms, sites, categories, minutes, expected error text or None)
    type Row<'a> = (
        Effect,
        &'a [&'a str],
        &'a [&'a str],
        &'a [&'a str],
        i64,
        Option<&'a str>,
    );
    let rows: &[Row] = &[
        (
            Effect::Block,
            &["room-1"],
            &["games.example"],
            &[],
            30,
            None,
        ),
        (Effect::Allow, &["room-1"], &[], &["games"], 90, None),
        // Locked and illegal categories, named or reached by a site, either way.
        (
            Effect::Allow,
            &["room-1"],
            &[],
            &["porn"],
            30,
            Some("porn is a locked category; teachers cannot override it"),
        ),
        (
            Effect::Block,
            &["room-1"],
            &[],
            &["porn"],
            30,
            Some("porn is a locked category"),
        ),
        (
            Effect::Allow,
            &["room-1"],
            &["porn.example"],
            &[],
            30,
            Some("porn.example: porn is a locked category"),
        ),
        (
            Effect::Allow,
            &["room-1"],
            &["both.example"],
            &[],
            30,
            Some("both.example: porn is a locked category"),
        ),
        (
            Effect::Allow,
            &["room-1"],
            &[],
            &["csam"],
            30,
            Some("csam is an illegal category, blocked for everyone, always"),
        ),
        (
            Effect::Block,
            &["room-1"],
            &[],
            &["csam"],
            30,
            Some("illegal category"),
        ),
        (
            Effect::Allow,
            &["room-1"],
            &["mixed.example/bad/x"],
            &[],
            30,
            Some("illegal category"),
        ),
        // Closing a site that is in a locked category is harmless.
        (Effect::Block, &["room-1"], &["porn.example"], &[], 30, None),
        // Longer than max_minutes, an unknown room, nobody to apply to.
        (
            Effect::Block,
            &["room-1"],
            &["games.example"],
            &[],
            91,
            Some("at most 90 minutes"),
        ),
        (
            Effect::Block,
            &["room-9"],
            &["games.example"],
            &[],
            30,
            Some("no classroom \"room-9\""),
        ),
        (
            Effect::Block,
            &[],
            &["games.example"],
            &[],
            30,
            Some("at least one group"),
        ),
    ];
    for (effect, rooms, sites, categories, minutes, want) in rows {
        let got = lesson(
            &snap,
            "g1",
            *effect,
            rooms,
            &[],
            sites,
            categories,
            start,
            *minutes,
        );
        match (got, want) {
            (Ok(_), None) => {}
            (Err(e), Some(w)) => assert!(e.to_string().contains(w), "{e} should say {w}"),
            (r, w) => {
                panic!("{effect:?} {rooms:?} {sites:?} {categories:?}: expected {w:?}, got {r:?}")
            }
        }
    }
}

#[test]
fn a_lesson_override_ends_with_the_lesson_or_at_most_max_minutes() {
    let (_dir, snap) = snapshot();
    let p = &snap.policy;
    // (now, minutes asked, expected end or error)
    let rows: &[(&str, Option<u32>, Result<&str, &str>)] = &[
        // 10:00 in the 09:00-10:30 lesson: to its end.
        ("2026-01-12T10:00:00Z", None, Ok("2026-01-12T10:30:00Z")),
        ("2026-01-12T10:00:00Z", Some(10), Ok("2026-01-12T10:10:00Z")),
        ("2026-01-12T10:00:00Z", Some(90), Ok("2026-01-12T10:30:00Z")),
        // 09:00: the lesson is longer than max_minutes (90).
        ("2026-01-12T09:00:00Z", None, Ok("2026-01-12T10:30:00Z")),
        ("2026-01-12T08:50:00Z", None, Ok("2026-01-12T10:20:00Z")),
        // At break, no lesson: the minutes asked, at most max_minutes.
        ("2026-01-12T10:35:00Z", Some(20), Ok("2026-01-12T10:55:00Z")),
        ("2026-01-12T10:35:00Z", Some(91), Err("at most 90 minutes")),
        ("2026-01-12T10:35:00Z", Some(0), Err("expire after")),
    ];
    for (now, minutes, want) in rows {
        let got = lesson_expiry(p, utc(now), *minutes);
        match (got, want) {
            (Ok(t), Ok(w)) => assert_eq!(t, utc(w), "{now} {minutes:?}"),
            (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{e}"),
            (g, w) => panic!("{now} {minutes:?}: expected {w:?}, got {g:?}"),
        }
    }
}

#[test]
fn a_teacher_acts_only_for_their_own_rooms_and_classes() {
    let scope = TeacherScope {
        classrooms: vec!["room-1".into()],
        groups: vec!["ks4".into()],
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert!(scope.permits(&s(&["room-1"]), &s(&[])).is_ok());
    assert!(scope.permits(&s(&["room-1"]), &s(&["ks4"])).is_ok());
    let other_room = scope
        .permits(&s(&["room-2"]), &s(&[]))
        .expect_err("not theirs");
    assert!(
        other_room.contains("classroom \"room-2\" is not one of yours"),
        "{other_room}"
    );
    assert!(scope.permits(&s(&["room-1"]), &s(&["ks2"])).is_err());
    assert!(scope.permits(&s(&[]), &s(&[])).is_err());
}
