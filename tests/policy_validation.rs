//! A bad policy is refused with every problem named by file and line, and nothing loads.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests are shell: they read files and clocks

mod common;

use common::tree;
use gatehouse::lists::CacheMode;
use gatehouse::snapshot;

/// A small valid policy; each row below breaks it in one place.
const BASE: &str = r#"[school]
name = "Test School"

[lists]
dir = "lists"

[categories.csam]
severity = "illegal"

[categories.games]
severity = "productivity"

[categories.social]
severity = "productivity"

[schedules.breaks]
windows = ["Mon-Fri 10:30-10:45"]

[identity]
default_group = "pupils"

[[identity.subnets]]
cidr = "10.0.0.0/8"
group = "staff"

[groups.pupils]
mode = "blocklist"
block = ["games"]
allow_during = { social = "breaks" }

[groups.staff]
mode = "blocklist"
"#;

fn errors_for(policy: &str) -> Vec<String> {
    let dir = tree(&[
        ("policy.toml", policy),
        ("lists/csam/domains", "illegal.example\n"),
        ("lists/games/domains", "games.example\n"),
        ("lists/social/domains", "social.example\n"),
    ]);
    match snapshot::load(&dir.path().join("policy.toml"), CacheMode::Off) {
        Ok(_) => vec![],
        Err(e) => {
            e.0.iter()
                // Paths differ per run: keep "policy.toml:LINE: message".
                .map(|e| {
                    e.to_string()
                        .replace(&format!("{}/", dir.path().display()), "")
                })
                .collect()
        }
    }
}

#[test]
fn base_policy_is_valid() {
    assert_eq!(errors_for(BASE), Vec::<String>::new());
}

#[test]
fn each_error_names_file_line_and_problem() {
    // (what to replace, replacement, expected "file:line: message" prefix)
    const STAFF: &str = "[groups.staff]\nmode = \"blocklist\"\n";
    let rows: &[(&str, &str, &str)] = &[
        ("block = [\"games\"]", "block = [\"gamez\"]", "policy.toml:28: unknown category \"gamez\""),
        ("{ social = \"breaks\" }", "{ social = \"lunch\" }", "policy.toml:29: unknown schedule \"lunch\""),
        ("{ social = \"breaks\" }", "{ csam = \"breaks\" }", "policy.toml:29: group \"pupils\" allows \"csam\" during \"breaks\", but it is an illegal category"),
        ("block = [\"games\"]", "block = [\"games\"]\nallow = [\"csam\"]", "policy.toml:29: group \"pupils\" allows \"csam\", an illegal category"),
        ("block = [\"games\"]", "block = [\"games\", \"games\"]", "policy.toml:28: group \"pupils\": category \"games\" is listed twice in block"),
        ("block = [\"games\"]", "block = [\"games\", \"social\"]", "policy.toml:29: group \"pupils\": category \"social\" is in both block and allow_during"),
        ("block = [\"games\"]", "block = [\"games\"]\nallow_sites = [\"x.example\"]\nblock_sites = [\"x.example\"]", "policy.toml:29: group \"pupils\": \"x.example\" is in both allow_sites and block_sites"),
        ("block = [\"games\"]", "block = [\"games\"]\nallow_sites = [\"www.illegal.example\"]", "policy.toml:29: group \"pupils\": allow_sites entry \"www.illegal.example\" is on the list of \"csam\", an illegal category"),
        ("block = [\"games\"]", "block = [\"games\"]\nallow_sites = [\"bad host!\"]", "policy.toml:29: group \"pupils\": allow_sites entry \"bad host!\""),
        ("mode = \"blocklist\"\nblock", "mode = \"walled\"\nblock", "policy.toml:27: group \"pupils\": mode \"walled\" is not"),
        ("severity = \"illegal\"", "severity = \"awful\"", "policy.toml:8: severity \"awful\" of category \"csam\""),
        ("default_group = \"pupils\"", "default_group = \"everyone\"", "policy.toml:20: unknown group \"everyone\""),
        ("group = \"staff\"", "group = \"teachers\"", "policy.toml:24: unknown group \"teachers\""),
        ("cidr = \"10.0.0.0/8\"", "cidr = \"10.0.0.0/33\"", "policy.toml:23: subnet \"10.0.0.0/33\" is not a network"),
        ("group = \"staff\"\n", "group = \"staff\"\n\n[[identity.subnets]]\ncidr = \"10.0.0.0/8\"\ngroup = \"pupils\"\n", "policy.toml:27: subnet 10.0.0.0/8 is already defined on line 23"),
        ("\"Mon-Fri 10:30-10:45\"", "\"Mon-Fri 10:45-10:30\"", "policy.toml:17: schedule \"breaks\": window \"Mon-Fri 10:45-10:30\" crosses midnight"),
        ("\"Mon-Fri 10:30-10:45\"", "\"Someday 10:30-10:45\"", "policy.toml:17: schedule \"breaks\": \"Someday\" is not a day"),
        ("name = \"Test School\"", "name = \"Test School\"\ntimezone = \"Europe/Londn\"", "policy.toml:3: unknown time zone \"Europe/Londn\""),
        ("[groups.staff]", "[groups.pupils]", "policy.toml:31: invalid table header: duplicate key `pupils`"),
        ("[groups.staff]\nmode = \"blocklist\"\n", "[groups.staff]\nmode = \"blocklist\"\ncolour = \"red\"\n", "policy.toml:33: unknown field `colour`"),
        ("block = [\"games\"]", "block = \"games\"", "policy.toml:28: invalid type: string \"games\", expected a sequence"),
        // Safe search: group settings and the engine table.
        ("block = [\"games\"]", "block = [\"games\"]\nyoutube_restrict = \"lenient\"", "policy.toml:29: group \"pupils\": youtube_restrict \"lenient\" is not \"strict\", \"moderate\" or \"off\""),
        (STAFF, &format!("{STAFF}\n[safe_search.engines.ecosia]\nhosts = [\"www.ecosia.org\"]\n"), "policy.toml:34: safe-search engine \"ecosia\" is not a shipped one (google, youtube, bing, duckduckgo), so it needs setting, strict"),
        (STAFF, &format!("{STAFF}\n[safe_search.engines.bing]\nstrict = \"204.79.197.220\"\n"), "policy.toml:35: safe-search engine \"bing\": strict: \"204.79.197.220\" is an IP address"),
        (STAFF, &format!("{STAFF}\n[safe_search.engines.bing]\nhosts = [\"*.bing.com\"]\n"), "policy.toml:35: safe-search engine \"bing\": host \"*.bing.com\" is not a host name"),
        (STAFF, &format!("{STAFF}\n[safe_search.engines.google]\nmoderate = \"moderate.example\"\n"), "policy.toml:35: safe-search engine \"google\": only youtube_restrict engines have a moderate address"),
        (STAFF, &format!("{STAFF}\n[safe_search.engines.youtube]\nsetting = \"video\"\n"), "policy.toml:35: safe-search engine \"youtube\": setting \"video\" is not \"safe_search\" or \"youtube_restrict\""),
        (STAFF, &format!("{STAFF}\n[safe_search.engines.mine]\nsetting = \"safe_search\"\nhosts = [\"www.google.de\"]\nstrict = \"safe.mine.example\"\n"), "policy.toml:36: safe-search engines \"google\" (www.google.*) and \"mine\" (www.google.de) both claim the same host"),
        // TLS inspection: the group controls and [inspection].
        ("block = [\"games\"]", "block = [\"games\"]\nmicrosoft_tenants = [\"school.example\"]", "policy.toml:29: group \"pupils\": microsoft_tenants needs microsoft_tenant_context"),
        ("block = [\"games\"]", "block = [\"games\"]\ngoogle_allowed_domains = [\"a.example, b.example\"]", "policy.toml:29: group \"pupils\": google_allowed_domains entry \"a.example, b.example\" is not a domain or id"),
        ("[lists]", "[inspection]\nnever_inspect_categories = [\"csam\"]\n\n[lists]", "policy.toml:5: [inspection] never_inspect_categories: \"csam\" is an illegal category"),
        ("[lists]", "[inspection]\nnever_inspect_categories = [\"banks\"]\n\n[lists]", "policy.toml:5: unknown category \"banks\""),
        ("[lists]", "[inspection]\nnever_inspect_sites = [\"bad host!\"]\n\n[lists]", "policy.toml:5: [inspection] never_inspect_sites entry \"bad host!\""),
        ("[lists]", "[inspection]\nleaf_validity_hours = 0\n\n[lists]", "policy.toml:5: [inspection] leaf_validity_hours 0 is not between 1 and 2160"),
        ("block = [\"games\"]", "block = [\"games\"]\ninspect_tls = true", "../var/ca/ca.crt: no school CA certificate here, and group \"pupils\" has inspect_tls on"),
        // The shell's settings ([server], [admin]) share the file and the pass.
        ("[lists]", "[server]\nlisten = \"port 3128\"\n\n[lists]", "policy.toml:5: listen \"port 3128\" is not an address:port"),
        ("[lists]", "[server]\nresolve = { \"a.example\" = \"nowhere\" }\n\n[lists]", "policy.toml:5: resolve \"a.example\" = \"nowhere\": expected a host name and an IP address"),
        ("[lists]", "[admin]\nlisten = \"everywhere\"\n\n[lists]", "policy.toml:5: admin listen \"everywhere\" is not an address:port"),
    ];
    for (from, to, want) in rows {
        assert!(
            BASE.contains(from),
            "row pattern {from:?} is in the base policy"
        );
        let policy = BASE.replacen(from, to, 1);
        let errors = errors_for(&policy);
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "replacing {from:?} with {to:?}: expected an error starting {want:?}, got {errors:#?}"
        );
    }
}

#[test]
fn every_error_is_reported_in_one_pass() {
    let policy = BASE
        .replacen("block = [\"games\"]", "block = [\"gamez\"]", 1)
        .replacen(
            "default_group = \"pupils\"",
            "default_group = \"nobody\"",
            1,
        )
        .replacen("{ social = \"breaks\" }", "{ social = \"lunch\" }", 1);
    let errors = errors_for(&policy);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    // Sorted by line.
    assert!(errors[0].starts_with("policy.toml:20:"), "{errors:#?}");
    assert!(errors[1].starts_with("policy.toml:28:"), "{errors:#?}");
    assert!(errors[2].starts_with("policy.toml:29:"), "{errors:#?}");
}

#[test]
fn settings_and_policy_errors_are_reported_together() {
    let policy = BASE
        .replacen("[lists]", "[server]\nlisten = \"port 3128\"\n\n[lists]", 1)
        .replacen("block = [\"games\"]", "block = [\"gamez\"]", 1);
    let errors = errors_for(&policy);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].starts_with("policy.toml:5: listen"),
        "{errors:#?}"
    );
    assert!(
        errors[1].starts_with("policy.toml:31: unknown category"),
        "{errors:#?}"
    );
}

#[test]
fn bad_expression_names_list_file_and_line() {
    let dir = tree(&[
        ("policy.toml", BASE),
        ("lists/csam/domains", "illegal.example\n"),
        (
            "lists/games/expressions",
            "# comment\n(ok|fine)\n(unclosed\n",
        ),
    ]);
    let err = snapshot::load(&dir.path().join("policy.toml"), CacheMode::Off)
        .err()
        .expect("a bad expression is an error");
    let text = err.to_string();
    assert!(
        text.contains("lists/games/expressions:3: invalid expression \"(unclosed\""),
        "{text}"
    );
}

#[test]
fn malformed_domain_lines_are_skipped_with_warnings() {
    let dir = tree(&[
        ("policy.toml", BASE),
        ("lists/games/domains", "# games\ngood.example\n*.wild.example\n.dot.example\nGOOD2.Example.\n  spaced.example  \n"),
        ("lists/csam/domains", "csam.canary.gatehouse.invalid\n"),
    ]);
    let snap = snapshot::load(&dir.path().join("policy.toml"), CacheMode::Off).expect("loads");
    assert_eq!(
        snap.report.skipped, 0,
        "{:?}: wildcards, leading dots, case and spaces are normalised",
        snap.report.warnings
    );
    let games = snap.policy.category_id("games").expect("category");
    assert_eq!(snap.report.counts[games.index()].domains, 5);

    let dir = tree(&[
        ("policy.toml", BASE),
        (
            "lists/games/domains",
            "good.example\nbad!host.example\nfoo.123\n0.0.0.0 hosts-format.example\n",
        ),
        ("lists/csam/domains", "csam.canary.gatehouse.invalid\n"),
    ]);
    let snap = snapshot::load(&dir.path().join("policy.toml"), CacheMode::Off).expect("loads");
    assert_eq!(snap.report.skipped, 3);
    assert_eq!(snap.report.warnings[0].line, 2);
    assert!(snap.report.warnings[0]
        .file
        .ends_with("lists/games/domains"));
}

#[test]
fn users_file_errors_name_the_users_file() {
    let policy = BASE.replacen(
        "default_group = \"pupils\"",
        "default_group = \"pupils\"\nusers_file = \"users.toml\"",
        1,
    );
    let dir = tree(&[
        ("policy.toml", &policy),
        ("users.toml", "[[user]]\nname = \"a\"\ngroup = \"pupils\"\n\n[[user]]\nname = \"a\"\ngroup = \"staff\"\n\n[[user]]\nname = \"b\"\ngroup = \"wizards\"\n"),
    ]);
    let err = snapshot::load(&dir.path().join("policy.toml"), CacheMode::Off)
        .err()
        .expect("bad users file");
    let text = err.to_string();
    assert!(
        text.contains("users.toml:6: user \"a\" is already defined on line 2"),
        "{text}"
    );
    assert!(
        text.contains("users.toml:11: unknown group \"wizards\""),
        "{text}"
    );
}

/// A school changes a shipped engine (YouTube's moderate address), adds its own, and
/// turns safe search off for one group: the compiled table and the names dialled follow.
#[test]
fn safe_search_engines_can_be_changed_and_added() {
    use gatehouse::core::group::GroupId;
    use gatehouse::core::host::Host;
    use gatehouse::core::safe_search::Level;
    let policy = format!(
        "{}safe_search = false\nyoutube_restrict = \"moderate\"\n\n\
[safe_search.engines.youtube]\nmoderate = \"moderate.video.example\"\n\n\
[safe_search.engines.ecosia]\nsetting = \"safe_search\"\nhosts = [\"www.ecosia.org\", \"search.ecosia.*\"]\nstrict = \"strict.ecosia.example\"\n",
        BASE
    );
    let dir = tree(&[
        ("policy.toml", &policy),
        ("lists/csam/domains", "illegal.example\n"),
    ]);
    let snap = snapshot::load(&dir.path().join("policy.toml"), CacheMode::Off).expect("loads");
    let p = &snap.policy;
    let names: Vec<&str> = p
        .safe_search
        .engines()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(names, ["google", "youtube", "bing", "duckduckgo", "ecosia"]);
    let (pupils, staff) = (
        p.group_id("pupils").expect("group"),
        p.group_id("staff").expect("group"),
    );
    /// (group, host, expected (engine, level, name dialled))
    type Row<'a> = (GroupId, &'a str, Option<(&'a str, Level, &'a str)>);
    let rows: &[Row] = &[
        (
            pupils,
            "www.ecosia.org",
            Some(("ecosia", Level::Strict, "strict.ecosia.example")),
        ),
        (
            pupils,
            "search.ecosia.de",
            Some(("ecosia", Level::Strict, "strict.ecosia.example")),
        ),
        (
            pupils,
            "www.google.com",
            Some(("google", Level::Strict, "forcesafesearch.google.com")),
        ),
        (
            pupils,
            "www.youtube.com",
            Some(("youtube", Level::Strict, "restrict.youtube.com")),
        ),
        // Staff (the last group, so the settings above are theirs): search off, YouTube
        // moderate at the school's own address.
        (staff, "www.ecosia.org", None),
        (staff, "www.bing.com", None),
        (
            staff,
            "m.youtube.com",
            Some(("youtube", Level::Moderate, "moderate.video.example")),
        ),
    ];
    for (group, host, want) in rows {
        let got = p.safe_search(*group, &Host::parse(host).expect("host"));
        let got = got
            .as_ref()
            .map(|r| (r.engine.as_str(), r.level, r.dialled.as_str()));
        assert_eq!(got, *want, "{host} for {}", p.group(*group).name);
    }
}

/// `[teachers]`, `locked` and teacher tokens: every problem named with its line.
#[test]
fn teacher_settings_errors_name_their_lines() {
    let hash = "a".repeat(64);
    // (what to append to the base policy, expected "file:line: message" fragment)
    let rows: Vec<(String, &str)> = vec![
        (
            "[teachers]\nlessons = \"periods\"\n".into(),
            "policy.toml:35: unknown schedule \"periods\"",
        ),
        (
            "[[teachers.directory]]\ndirectory = \"Teachers\"\nclassrooms = [\"room-9\"]\n".into(),
            "policy.toml:36: no classroom \"room-9\" in [teachers.classrooms]",
        ),
        (
            "[[teachers.directory]]\ndirectory = \"Teachers\"\n".into(),
            "policy.toml:35: [[teachers.directory]] \"Teachers\" names no classrooms or groups",
        ),
        (
            "[teachers]\nmax_minutes = 0\n".into(),
            "policy.toml:35: max_minutes 0 must be from 1 to 1440",
        ),
        (
            "[teachers.classrooms.room-1]\nsubnets = [\"10.1.2.300/24\"]\n".into(),
            "policy.toml:35: classroom \"room-1\": subnet \"10.1.2.300/24\" is not a network in CIDR form",
        ),
        (
            "[teachers.classrooms.Room1]\nsubnets = [\"10.1.2.0/24\"]\n".into(),
            "policy.toml:34: classroom name \"Room1\"",
        ),
        (
            format!("[[admin.tokens]]\nname = \"t\"\nrole = \"teacher\"\nsha256 = \"{hash}\"\n"),
            "policy.toml:35: teacher token \"t\" names no classrooms or groups",
        ),
        (
            format!("[[admin.tokens]]\nname = \"t\"\nrole = \"teacher\"\nclassrooms = [\"room-9\"]\nsha256 = \"{hash}\"\n"),
            "policy.toml:37: token \"t\": no classroom \"room-9\" in [teachers.classrooms]",
        ),
        (
            format!("[[admin.tokens]]\nname = \"t\"\nrole = \"teacher\"\ngroups = [\"year7\"]\nsha256 = \"{hash}\"\n"),
            "policy.toml:37: token \"t\": no group \"year7\" in the policy",
        ),
        (
            format!("[[admin.tokens]]\nname = \"v\"\nrole = \"viewer\"\ngroups = [\"pupils\"]\nsha256 = \"{hash}\"\n"),
            "policy.toml:35: token \"v\": classrooms and groups are for teacher tokens only",
        ),
        (
            format!("[[admin.tokens]]\nname = \"v\"\nrole = \"head\"\nsha256 = \"{hash}\"\n"),
            "policy.toml:36: token role \"head\" is not \"technician\", \"viewer\", \"teacher\" or \"dsl\"",
        ),
    ];
    for (append, want) in rows {
        let policy = format!("{BASE}\n{append}");
        let errors = errors_for(&policy);
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{want:?} not in {errors:?}\n{policy}"
        );
    }
    // A valid set: locked categories, rooms, a teacher and a DSL.
    let good = format!(
        "{}\n[teachers]\nlessons = \"breaks\"\nmax_minutes = 45\n[teachers.classrooms.room-1]\nsubnets = [\"10.1.2.0/24\", \"10.1.3.4\"]\n[[admin.tokens]]\nname = \"t\"\nrole = \"teacher\"\nclassrooms = [\"room-1\"]\ngroups = [\"pupils\"]\nsha256 = \"{hash}\"\n[[admin.tokens]]\nname = \"d\"\nrole = \"dsl\"\nsha256 = \"{}\"\n",
        BASE.replace("[categories.games]\n", "[categories.games]\nlocked = true\n"),
        "b".repeat(64)
    );
    assert_eq!(errors_for(&good), Vec::<String>::new());
}

/// Lesson overrides in the grants file: `kind`, `effect` and the ticket checked with
/// their lines, like any grant.
#[test]
fn lesson_overrides_in_the_grants_file_are_validated_with_lines() {
    let policy = format!(
        "{BASE}\n[teachers]\nmax_minutes = 30\n[teachers.classrooms.room-1]\nsubnets = [\"10.1.2.0/24\"]\n"
    );
    let grant = |body: &str| {
        format!("[[grant]]\nid = \"g-1\"\nissued_by = \"t\"\nreason = \"Starter activity\"\n{body}starts = \"2026-12-04T10:00:00Z\"\n")
    };
    let rows: &[(String, &str)] = &[
        (
            grant("kind = \"lesson\"\neffect = \"block\"\nclassrooms = [\"room-1\"]\nsites = [\"games.example\"]\nexpires = \"2026-12-04T10:30:00Z\"\n"),
            "",
        ),
        (
            grant("kind = \"lesson\"\nclassrooms = [\"room-1\"]\nsites = [\"games.example\"]\nexpires = \"2026-12-04T10:30:00Z\"\n"),
            "grants.toml:2: grant \"g-1\": a lesson override needs effect = \"allow\" or \"block\"",
        ),
        (
            grant("kind = \"lesson\"\neffect = \"open\"\nclassrooms = [\"room-1\"]\nsites = [\"games.example\"]\nexpires = \"2026-12-04T10:30:00Z\"\n"),
            "grants.toml:6: grant \"g-1\": effect \"open\" is not \"allow\" or \"block\"",
        ),
        (
            grant("kind = \"lesson\"\neffect = \"allow\"\nclassrooms = [\"room-1\"]\nsites = [\"games.example\"]\nexpires = \"2026-12-04T10:31:00Z\"\n"),
            "grants.toml:9: grant \"g-1\": a lesson override may last at most 30 minutes",
        ),
        (
            grant("kind = \"lesson\"\neffect = \"allow\"\nticket = \"HD-1\"\nclassrooms = [\"room-1\"]\nsites = [\"games.example\"]\nexpires = \"2026-12-04T10:30:00Z\"\n"),
            "grants.toml:7: grant \"g-1\": a lesson override has no ticket",
        ),
        (
            grant("kind = \"lesson\"\neffect = \"allow\"\nclassrooms = [\"room-1\"]\ncategories = [\"csam\"]\nexpires = \"2026-12-04T10:30:00Z\"\n"),
            "grant \"g-1\": category csam: csam is an illegal category",
        ),
        (
            grant("groups = [\"pupils\"]\nsites = [\"games.example\"]\nexpires = \"2026-12-04T10:30:00Z\"\n"),
            "grants.toml:2: grant \"g-1\": a grant needs a helpdesk ticket",
        ),
        (
            grant("kind = \"permanent\"\ngroups = [\"pupils\"]\nsites = [\"games.example\"]\nexpires = \"2026-12-04T10:30:00Z\"\n"),
            "grants.toml:5: grant \"g-1\": kind \"permanent\" is not \"ticket\" or \"lesson\"",
        ),
    ];
    for (grants, want) in rows {
        let dir = tree(&[
            ("policy.toml", policy.as_str()),
            ("grants.toml", grants.as_str()),
            ("lists/csam/domains", "illegal.example\n"),
            ("lists/games/domains", "games.example\n"),
            ("lists/social/domains", "social.example\n"),
        ]);
        let result = snapshot::load(&dir.path().join("policy.toml"), CacheMode::Off);
        match (result, *want) {
            (Ok(_), "") => {}
            (Err(e), w) if !w.is_empty() => {
                let text = e
                    .to_string()
                    .replace(&format!("{}/", dir.path().display()), "");
                assert!(text.contains(w), "{w:?} not in {text}");
            }
            (Ok(_), w) => panic!("expected {w:?}, the file loaded:\n{grants}"),
            (Err(e), _) => panic!("expected to load, got {e}\n{grants}"),
        }
    }
}

/// An illegal category with no entries at all (a mistyped lists directory, a failed
/// mount) fails closed: nothing loads, and the error says which list and why; with only
/// its canary it loads.
#[test]
fn an_illegal_list_with_no_entries_stops_the_load() {
    let dir = tree(&[
        ("policy.toml", BASE),
        ("lists/games/domains", "good.example\n"),
    ]);
    let err = snapshot::load(&dir.path().join("policy.toml"), CacheMode::Off)
        .err()
        .expect("an illegal category without entries is an error");
    let text = err.to_string();
    assert!(
        text.contains("lists/csam: category csam is illegal and its list has no entries"),
        "{text}"
    );
    std::fs::create_dir_all(dir.path().join("lists/csam")).expect("dir");
    std::fs::write(dir.path().join("lists/csam/domains"), "# nothing yet\n").expect("empty");
    assert!(snapshot::load(&dir.path().join("policy.toml"), CacheMode::Off).is_err());
    std::fs::write(
        dir.path().join("lists/csam/domains"),
        "csam.canary.gatehouse.invalid\n",
    )
    .expect("canary");
    assert!(snapshot::load(&dir.path().join("policy.toml"), CacheMode::Off).is_ok());
}
