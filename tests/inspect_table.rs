//! Whether a tunnel is inspected, and which header and parameter controls apply, by
//! table: one row per case, the answer beside the input (`Policy::inspect`,
//! `Policy::controls`, pure).

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests are shell

mod common;

use common::servers::TestCa;
use common::tree;
use gatehouse::core::classify::Classification;
use gatehouse::core::host::Target;
use gatehouse::core::inspect::Inspection;
use gatehouse::lists::CacheMode;
use gatehouse::snapshot::{self, Snapshot};

const POLICY: &str = r#"[school]
name = "Inspect School"
[lists]
dir = "lists"
[categories.csam]
severity = "illegal"
[categories.banks]
severity = "productivity"
[categories.games]
severity = "productivity"
[identity]
default_group = "pupils"
[[identity.subnets]]
cidr = "10.0.0.0/8"
group = "staff"
[[identity.subnets]]
cidr = "10.9.0.0/16"
group = "sixth"
[groups.pupils]
mode = "blocklist"
block = ["games"]
inspect_tls = true
microsoft_tenants = ["school.example"]
microsoft_tenant_context = "tenant-id"
google_allowed_domains = ["school.example", "trust.example"]
[groups.sixth]
mode = "blocklist"
inspect_tls = true
youtube_restrict = "moderate"
google_safe_active = false
[groups.staff]
mode = "blocklist"
safe_search = false
youtube_restrict = "off"
[inspection]
ca_cert = "ca.crt"
ca_key = "ca.key"
never_inspect_categories = ["banks"]
never_inspect_sites = ["helpline.example", "mixed.example/private/"]
"#;

fn snapshot() -> (tempfile::TempDir, Snapshot) {
    let ca = TestCa::new();
    let key = ca.key_pem();
    let dir = tree(&[
        ("policy.toml", POLICY),
        ("ca.crt", ca.pem.as_str()),
        ("ca.key", key.as_str()),
        ("lists/csam/urls", "mixed.example/abuse/\n"),
        ("lists/banks/domains", "bank.example\n"),
        ("lists/games/domains", "games.example\n"),
    ]);
    let snap = snapshot::load(&dir.path().join("policy.toml"), CacheMode::Off).expect("loads");
    (dir, snap)
}

#[test]
fn inspection_table() {
    let (_dir, snap) = snapshot();
    let p = &snap.policy;
    let group = |name: &str| p.group_id(name).expect("group");
    // (group, CONNECT host, CA there, answer)
    let rows: &[(&str, &str, bool, Inspection)] = &[
        ("pupils", "www.example.org", true, Inspection::Group),
        ("pupils", "www.example.org", false, Inspection::NoCa),
        ("staff", "www.example.org", true, Inspection::GroupOff),
        // never_inspect_categories and never_inspect_sites (and their subdomains)
        (
            "pupils",
            "www.bank.example",
            true,
            Inspection::NeverCategory(p.category_id("banks").expect("id")),
        ),
        ("pupils", "helpline.example", true, Inspection::NeverSite),
        (
            "pupils",
            "chat.helpline.example",
            true,
            Inspection::NeverSite,
        ),
        // A host with pages on an illegal list: inspected for every group, before any
        // exemption; not without the CA.
        (
            "staff",
            "mixed.example",
            true,
            Inspection::IllegalPages(p.category_id("csam").expect("id")),
        ),
        (
            "pupils",
            "mixed.example",
            true,
            Inspection::IllegalPages(p.category_id("csam").expect("id")),
        ),
        ("staff", "mixed.example", false, Inspection::NoCa),
        // An IP-literal tunnel follows the group.
        ("pupils", "192.0.2.7", true, Inspection::Group),
    ];
    for (g, host, ca, want) in rows {
        let target = Target::from_authority(&format!("{host}:443")).expect("target");
        let classification: Classification = snap.classify(&target);
        let got = p.inspect(group(g), &target, &classification, &snap.lists, *ca);
        assert_eq!(got, *want, "{g} {host} ca={ca}");
        assert_eq!(
            got.inspected(),
            matches!(want, Inspection::Group | Inspection::IllegalPages(_))
        );
    }
}

#[test]
fn controls_table() {
    let (_dir, snap) = snapshot();
    let p = &snap.policy;
    // (group, URL, query sent upstream, headers set, recorded)
    type Row<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        &'a [(&'a str, &'a str)],
        &'a [&'a str],
    );
    let rows: &[Row] = &[
        (
            "pupils",
            "https://www.google.co.uk/search?q=cats&safe=off",
            Some("q=cats&safe=active"),
            &[],
            &["safe=active"],
        ),
        // Not a search: only the Workspace header (www.google.com is a google.com name).
        (
            "pupils",
            "https://www.google.com/maps?q=cats",
            None,
            &[("x-googapps-allowed-domains", "school.example,trust.example")],
            &["X-GoogApps-Allowed-Domains: school.example,trust.example"],
        ),
        (
            "sixth",
            "https://www.google.com/search?q=cats",
            None,
            &[],
            &[],
        ),
        (
            "staff",
            "https://www.google.com/search?q=cats",
            None,
            &[],
            &[],
        ),
        (
            "pupils",
            "https://www.youtube.com/watch?v=x",
            None,
            &[("youtube-restrict", "Strict")],
            &["YouTube-Restrict: Strict"],
        ),
        (
            "sixth",
            "https://m.youtube.com/",
            None,
            &[("youtube-restrict", "Moderate")],
            &["YouTube-Restrict: Moderate"],
        ),
        ("staff", "https://www.youtube.com/", None, &[], &[]),
        (
            "pupils",
            "https://login.microsoftonline.com/common/oauth2",
            None,
            &[
                ("restrict-access-to-tenants", "school.example"),
                ("restrict-access-context", "tenant-id"),
            ],
            &["Restrict-Access-To-Tenants: school.example"],
        ),
        (
            "pupils",
            "https://login.windows.net/",
            None,
            &[
                ("restrict-access-to-tenants", "school.example"),
                ("restrict-access-context", "tenant-id"),
            ],
            &["Restrict-Access-To-Tenants: school.example"],
        ),
        (
            "sixth",
            "https://login.microsoftonline.com/",
            None,
            &[],
            &[],
        ),
        (
            "pupils",
            "https://login.microsoftonline.com.evil.example/",
            None,
            &[],
            &[],
        ),
        (
            "pupils",
            "https://accounts.google.com/signin",
            None,
            &[("x-googapps-allowed-domains", "school.example,trust.example")],
            &["X-GoogApps-Allowed-Domains: school.example,trust.example"],
        ),
        ("pupils", "https://google.com.evil.example/", None, &[], &[]),
        ("pupils", "http://www.example.org/", None, &[], &[]),
    ];
    for (g, url, query, headers, recorded) in rows {
        let target = Target::parse(url).expect("url");
        let e = p.controls(p.group_id(g).expect("group"), &target);
        assert_eq!(e.query.as_deref(), *query, "{g} {url}");
        let got: Vec<(&str, &str)> = e.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        assert_eq!(got, *headers, "{g} {url}");
        assert_eq!(e.enforced, *recorded, "{g} {url}");
    }
}
