//! The shipped example policy, decided for every group × category, inside and outside
//! `breaks`, in winter (GMT) and summer (BST). One row per category: the expected action
//! for each group, read straight from the Online Safety Policy's table in the issue.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests are shell: they read files and clocks

mod common;

use common::{example_policy, utc};
use gatehouse::core::host::Target;
use gatehouse::core::verdict::{Action, Reason, Requester};
use gatehouse::lists::CacheMode;
use gatehouse::snapshot::{self, Snapshot};

const GROUPS: [&str; 8] = [
    "eyfs",
    "ks1",
    "ks2",
    "ks3",
    "ks4",
    "sixth-form",
    "staff",
    "guest",
];

/// B = block, A = allow, K = allowed only during breaks (blocked outside them).
const MATRIX: &[(&str, &str)] = &[
    //                     eyfs ks1 ks2 ks3 ks4 6th staff guest
    ("child-abuse", "BBBBBBBB"),
    ("terrorism", "BBBBBBBB"),
    ("pornography", "BBBBBBBB"),
    ("self-harm", "BBBBBBBB"),
    ("extremism", "BBBBBBBB"),
    ("discrimination", "BBBBBBBB"),
    ("violence", "BBBBBBBB"),
    ("drugs", "BBBBBBBB"),
    ("gambling", "BBBBBBBB"),
    ("dating", "BBBBBBBB"),
    ("malware", "BBBBBBBB"),
    ("piracy", "BBBBBBBB"),
    ("circumvention", "BBBBBBBB"),
    ("games", "BBBBBKAB"),
    ("social-media", "BBBBBKAA"),
    ("messaging", "BBBBBKAA"),
    ("video", "BBBAAAAA"),
    ("shopping", "BBBBBBAA"),
    ("file-sharing", "BBBBBBAB"),
    ("educational-games", "AAAAAAAA"),
    ("hate-speech", "BBBBBBBB"),
    ("misinformation", "BBBBBBAB"),
    ("ai-chat", "BBBBBAAB"),
];

/// (instant, inside breaks?): Tuesday 13 January 2026 (GMT) and Tuesday 16 June 2026
/// (BST, so 10:35 local is 09:35 UTC).
const TIMES: &[(&str, bool)] = &[
    ("2026-01-13T10:35:00Z", true),
    ("2026-01-13T12:30:00Z", true),
    ("2026-01-13T11:00:00Z", false),
    ("2026-01-13T16:00:00Z", false),
    ("2026-06-16T09:35:00Z", true),
    ("2026-06-16T11:30:00Z", true),
    ("2026-06-16T10:35:00Z", false), // 11:35 BST: a lesson, though 10:35 in UTC
    ("2026-06-16T12:20:00Z", false), // 13:20 BST: after lunch
];

fn load() -> Snapshot {
    snapshot::load(&example_policy(), CacheMode::Off).expect("the shipped policy loads")
}

#[test]
fn every_group_and_category_in_winter_and_summer() {
    let snap = load();
    let p = &snap.policy;
    let mut checked = 0;
    for (category, row) in MATRIX {
        // Each category's canary entry, and a subdomain of it.
        for host in [
            format!("{category}.canary.gatehouse.invalid"),
            format!("www.{category}.canary.gatehouse.invalid"),
        ] {
            let target = Target::parse(&format!("https://{host}/page")).expect("canary URL");
            let classification = snap.classify(&target);
            let id = p.category_id(category).expect("category exists");
            assert!(
                classification.categories.contains(id),
                "{host} is in {category}"
            );
            for (g, expected) in GROUPS.iter().zip(row.chars()) {
                let group = p.group_id(g).expect("group exists");
                for (at, in_breaks) in TIMES {
                    let want = match (expected, in_breaks) {
                        ('A', _) | ('K', true) => Action::Allow,
                        _ => Action::Block,
                    };
                    let requester = Requester {
                        group,
                        user: None,
                        client: None,
                    };
                    let v = p.decide(&requester, &target, &classification, &[], utc(at));
                    assert_eq!(
                        v.action,
                        want,
                        "{category} for {g} at {at}: {}",
                        p.explain(&v)
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, MATRIX.len() * 2 * GROUPS.len() * TIMES.len());
}

#[test]
fn reasons_name_the_rule() {
    let snap = load();
    let p = &snap.policy;
    let group = |g: &str| Requester {
        group: p.group_id(g).expect("group"),
        user: None,
        client: None,
    };
    let decide = |g: &str, url: &str, at: &str| {
        let target = Target::parse(url).expect("URL");
        let c = snap.classify(&target);
        let v = p.decide(&group(g), &target, &c, &[], utc(at));
        (v.action, v.reason, p.explain(&v))
    };
    let winter_lesson = "2026-01-13T11:00:00Z";
    let winter_break = "2026-01-13T10:35:00Z";

    let (a, r, text) = decide(
        "staff",
        "http://child-abuse.canary.gatehouse.invalid/",
        winter_lesson,
    );
    assert_eq!(a, Action::Block);
    assert!(matches!(r, Reason::Illegal { .. }), "{text}");
    assert!(text.contains("illegal category child-abuse"), "{text}");

    let (a, r, text) = decide("sixth-form", "https://www.instagram.com/", winter_lesson);
    assert_eq!(a, Action::Block);
    assert!(
        matches!(
            r,
            Reason::Category {
                outside: Some(_),
                ..
            }
        ),
        "{text}"
    );
    assert!(text.contains("outside schedule breaks"), "{text}");

    let (a, r, text) = decide("sixth-form", "https://www.instagram.com/", winter_break);
    assert_eq!(a, Action::Allow);
    assert!(matches!(r, Reason::AllowedDuring { .. }), "{text}");

    let (a, r, _) = decide("ks2", "http://10.0.0.1/", winter_lesson);
    assert_eq!((a, r), (Action::Block, Reason::IpLiteral));
    let (a, _, _) = decide("staff", "http://10.0.0.1/", winter_lesson);
    assert_eq!(a, Action::Allow);

    // A pupil's IP literal in any spelling is still an IP literal.
    for url in [
        "http://2130706433/",
        "http://0x7f.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://017700000001/",
    ] {
        let (a, r, _) = decide("ks3", url, winter_lesson);
        assert_eq!((a, r), (Action::Block, Reason::IpLiteral), "{url}");
    }

    // Odd spellings of a listed host are still that host.
    for url in [
        "http://WWW.POKERSTARS.COM./",
        "http://www.pokerstars.com../",
        "http://pokerst%61rs.com/",
        "http://user@pokerstars.com/",
        "http://ｐｏｋｅｒｓｔａｒｓ.com/",
    ] {
        let (a, _, text) = decide("ks4", url, winter_lesson);
        assert_eq!(a, Action::Block, "{url}: {text}");
        assert!(text.contains("gambling"), "{url}: {text}");
    }

    // The walled garden: eyfs reaches its sites and educational games, nothing else.
    let (a, r, _) = decide("eyfs", "https://www.cbeebies.co.uk/", winter_lesson);
    assert_eq!(a, Action::Allow);
    assert!(matches!(r, Reason::AllowedSite { .. }));
    let (a, r, _) = decide(
        "eyfs",
        "https://www.topmarks.co.uk/maths-games",
        winter_lesson,
    );
    assert_eq!(a, Action::Allow);
    assert!(matches!(
        r,
        Reason::AllowedSite { .. } | Reason::AllowedCategory { .. }
    ));
    let (a, r, _) = decide("eyfs", "https://www.wikipedia.org/", winter_lesson);
    assert_eq!(
        (a, r),
        (
            Action::Block,
            Reason::Mode(gatehouse::core::group::Mode::Allowlist)
        )
    );
    // …and a URL-prefix entry: BBC Bitesize is an educational site, the BBC's news is not.
    let (a, _, _) = decide(
        "eyfs",
        "https://www.bbc.co.uk/bitesize/subjects",
        winter_lesson,
    );
    assert_eq!(a, Action::Allow);
    let (a, _, _) = decide("eyfs", "https://www.bbc.co.uk/news", winter_lesson);
    assert_eq!(a, Action::Block);

    // Ordinary sites are allowed for blocklist groups.
    let (a, r, _) = decide("ks2", "https://www.wikipedia.org/wiki/Owl", winter_lesson);
    assert_eq!(
        (a, r),
        (
            Action::Allow,
            Reason::Mode(gatehouse::core::group::Mode::Blocklist)
        )
    );
}

#[test]
fn search_terms_of_concern_are_categorised() {
    let snap = load();
    let p = &snap.policy;
    let target =
        Target::parse("https://www.google.co.uk/search?q=how+to+SELF+harm&hl=en").expect("URL");
    let c = snap.classify(&target);
    assert_eq!(c.search.as_deref(), Some("how to self harm"));
    assert_eq!(c.terms.len(), 1);
    let self_harm = p.category_id("self-harm").expect("category");
    assert!(c.categories.contains(self_harm));
    assert!(c.search_categories.contains(self_harm));
    let requester = Requester {
        group: p.group_id("staff").expect("group"),
        user: None,
        client: None,
    };
    let v = p.decide(&requester, &target, &c, &[], utc("2026-01-13T11:00:00Z"));
    assert_eq!(v.action, Action::Block);

    // A harmless search that contains a listed word inside another word is not a match.
    let target =
        Target::parse("https://www.bing.com/search?q=data+analysis+of+sussex+pornography+laws")
            .expect("URL");
    let c = snap.classify(&target);
    assert!(c.terms.is_empty() || c.terms.iter().all(|m| m.term != "anal"));
}

#[test]
fn circumvention_covers_vpns_proxies_tor_and_doh() {
    let snap = load();
    let p = &snap.policy;
    let circumvention = p.category_id("circumvention").expect("category");
    for url in [
        "https://nordvpn.com/download/",
        "https://www.croxyproxy.com/",
        "https://www.torproject.org/download/",
        "https://dns.google/dns-query",
        "https://mozilla.cloudflare-dns.com/dns-query",
        "https://dns.quad9.net/dns-query",
        "https://proton.me/vpn/free-vpn",
        "http://someproxy.example/browse.php?u=http%3A%2F%2Fpornhub.com",
    ] {
        let target = Target::parse(url).expect("URL");
        assert!(
            snap.classify(&target).categories.contains(circumvention),
            "{url}"
        );
    }
    // Proton Mail is not a VPN.
    let target = Target::parse("https://proton.me/mail").expect("URL");
    assert!(!snap.classify(&target).categories.contains(circumvention));
}

/// Safe search in the example: on for every pupil group (YouTube strict for EYFS to KS2,
/// moderate from KS3), off for staff and guests; the engine table written out in the
/// example is the built-in default, so a policy without one gets the same.
#[test]
fn safe_search_is_on_for_pupils_and_the_example_table_is_the_default() {
    use gatehouse::core::host::Host;
    use gatehouse::core::safe_search::{Engines, Level};
    let snap = load();
    let p = &snap.policy;
    assert_eq!(p.safe_search.engines(), Engines::defaults().engines());
    /// (group, dialled for www.google.co.uk, dialled for www.youtube.com)
    type Row<'a> = (&'a str, Option<&'a str>, Option<(Level, &'a str)>);
    let rows: &[Row] = &[
        (
            "eyfs",
            Some("forcesafesearch.google.com"),
            Some((Level::Strict, "restrict.youtube.com")),
        ),
        (
            "ks1",
            Some("forcesafesearch.google.com"),
            Some((Level::Strict, "restrict.youtube.com")),
        ),
        (
            "ks2",
            Some("forcesafesearch.google.com"),
            Some((Level::Strict, "restrict.youtube.com")),
        ),
        (
            "ks3",
            Some("forcesafesearch.google.com"),
            Some((Level::Moderate, "restrictmoderate.youtube.com")),
        ),
        (
            "ks4",
            Some("forcesafesearch.google.com"),
            Some((Level::Moderate, "restrictmoderate.youtube.com")),
        ),
        (
            "sixth-form",
            Some("forcesafesearch.google.com"),
            Some((Level::Moderate, "restrictmoderate.youtube.com")),
        ),
        ("staff", None, None),
        ("guest", None, None),
    ];
    let google = Host::parse("www.google.co.uk").expect("host");
    let youtube = Host::parse("www.youtube.com").expect("host");
    for (group, search, video) in rows {
        let id = p.group_id(group).expect("group");
        let got = p.safe_search(id, &google).map(|r| r.dialled);
        assert_eq!(got.as_deref(), *search, "{group} search");
        let got = p.safe_search(id, &youtube).map(|r| (r.level, r.dialled));
        assert_eq!(
            got.as_ref().map(|(l, d)| (*l, d.as_str())),
            *video,
            "{group} YouTube"
        );
    }
}
