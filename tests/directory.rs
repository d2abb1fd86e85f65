//! Sign-in against a real OpenLDAP `slapd` (started by the test, StartTLS with a test
//! CA) through the real proxy, driven by curl `--proxy-user`: the mapped group's policy,
//! wrong and empty passwords, a name that tries to inject into the search filter, a
//! group change picked up by the sync, and the directory going down. Also
//! `gatehouse identity test` and `gatehouse check` against it.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests are shell

mod common;

use std::time::{Duration, Instant};

use common::servers::{curl, CurlResult, Gatehouse, Origin};
use common::slapd::{Slapd, SERVICE_DN, SERVICE_PASSWORD};

fn policy(slapd: &Slapd, extra_directory: &str) -> String {
    format!(
        r#"[school]
name = "Test Academy"
[lists]
dir = "lists"
[categories.gambling]
severity = "inappropriate"
[categories.social]
severity = "productivity"
[identity]
default_group = "visitors"
users_file = "users.toml"
[identity.directory]
url = "{url}"
starttls = true
ca_file = "{ca}"
bind_dn = "{SERVICE_DN}"
bind_password_file = "service.password"
base_dn = "dc=school,dc=test"
user_filter = "(&(objectClass=inetOrgPerson)(uid={{user}}))"
cache_ttl_secs = 120
sync_interval_secs = 1
timeout_secs = 2
connect_timeout_secs = 2
unmapped = "refuse"
{extra_directory}
# Staff first: a teacher who is also in a pupil group gets staff.
[[identity.directory.groups]]
directory = "cn=Staff,ou=groups,dc=school,dc=test"
group = "staff"
[[identity.directory.groups]]
directory = "KS3 Pupils"
group = "ks3"
[[identity.directory.groups]]
directory = "KS4 Pupils"
group = "ks4"
[groups.visitors]
mode = "blocklist"
block = ["gambling", "social"]
[groups.ks3]
mode = "blocklist"
block = ["gambling", "social"]
[groups.ks4]
mode = "blocklist"
block = ["gambling", "social"]
[groups.staff]
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
"social.test" = "127.0.0.1"
"#,
        url = slapd.url(),
        ca = slapd.ca_file.display(),
    )
}

fn start(slapd: &Slapd) -> Gatehouse {
    start_with(&policy(slapd, ""))
}

/// A proxy on `policy`, with the lists, users file and service password the tests use.
fn start_with(policy: &str) -> Gatehouse {
    Gatehouse::start(&[
        ("policy.toml", policy),
        ("users.toml", ""),
        ("service.password", &format!("{SERVICE_PASSWORD}\n")),
        ("lists/gambling/domains", "bet.test\n"),
        ("lists/social/domains", "social.test\n"),
    ])
}

fn get(g: &Gatehouse, user: &str, url: &str) -> CurlResult {
    curl(&["-x", &g.url(), "--proxy-user", user, url])
}

fn metrics(g: &Gatehouse) -> String {
    curl(&[&format!("http://127.0.0.1:{}/metrics", g.admin_port)]).body
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(-1.0)
}

#[test]
fn directory_sign_in_groups_sync_and_outage() {
    let mut slapd = Slapd::start();
    let origin = Origin::http();
    let g = start(&slapd);
    let social = format!("http://social.test:{}/", origin.port);
    let plain = format!("http://origin.test:{}/", origin.port);

    // A Year 7 pupil: Year 7 is inside KS3 Pupils, so ks3, which blocks social media.
    let r = get(&g, "ann:ann-password", &social);
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.contains("ks3"), "{}", r.body);
    let r = get(&g, "ann:ann-password", &plain);
    assert_eq!(r.status, 200, "{r:?}");
    // The name as a Windows user types it, and as a UPN, in any case: the same account.
    for typed in ["SCHOOL\\Ann:ann-password", "ANN@school.test:ann-password"] {
        let r = get(&g, typed, &social);
        assert_eq!(r.status, 403, "{typed}: {r:?}");
        assert!(r.body.contains("ks3"), "{typed}: {}", r.body);
    }
    // A teacher also in Year 7: the staff rule comes first.
    let r = get(&g, "tom:tom-password", &social);
    assert_eq!(r.status, 200, "{r:?}");
    // Year 10 is inside KS4 Pupils.
    let r = get(&g, "bob:bob-password", &social);
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.contains("ks4"), "{}", r.body);

    // A browser opening several connections at once with new credentials: one bind
    // answers them all.
    let binds = metric(
        &metrics(&g),
        "gatehouse_directory_binds_total{result=\"ok\"}",
    );
    let parallel: Vec<_> = (0..6)
        .map(|_| {
            let (proxy, url) = (g.url(), plain.clone());
            std::thread::spawn(move || {
                curl(&["-x", &proxy, "--proxy-user", "carl:carl-password", &url]).status
            })
        })
        .collect();
    for t in parallel {
        assert_eq!(t.join().expect("curl thread"), 200);
    }
    assert_eq!(
        metric(
            &metrics(&g),
            "gatehouse_directory_binds_total{result=\"ok\"}"
        ),
        binds + 1.0
    );

    // Refusals: a wrong password, an empty one (an anonymous bind to LDAP), a filter
    // injection, an unknown user, a user in no mapped group (unmapped = "refuse").
    for creds in [
        "ann:wrong",
        "ann:",
        "*:ann-password",
        "*)(uid=*:ann-password",
        "nobody:ann-password",
        "eve:eve-password",
    ] {
        let r = get(&g, creds, &plain);
        assert_eq!(r.status, 407, "{creds}: {r:?}");
        assert!(
            r.headers
                .to_ascii_lowercase()
                .contains("proxy-authenticate: basic"),
            "{creds}: {}",
            r.headers
        );
    }

    // A browser resending a wrong saved password: refused again without another bind
    // (Active Directory would lock the account after a few failed binds).
    let refused = metric(
        &metrics(&g),
        "gatehouse_directory_binds_total{result=\"refused\"}",
    );
    assert!(refused >= 4.0, "{refused}");
    for _ in 0..3 {
        let r = get(&g, "ann:wrong", &plain);
        assert_eq!(r.status, 407, "{r:?}");
    }
    assert_eq!(
        metric(
            &metrics(&g),
            "gatehouse_directory_binds_total{result=\"refused\"}"
        ),
        refused
    );

    // How a user resolves, without a password; and `check` reaches the directory.
    let config = g.dir.path().join("policy.toml");
    let out = common::gatehouse()
        .args(["identity", "test", "--config"])
        .arg(&config)
        .arg("SCHOOL\\ann")
        .output()
        .expect("identity test runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "dn: uid=ann,ou=people,dc=school,dc=test",
        "cn=Year 7,ou=groups,dc=school,dc=test",
        "cn=KS3 Pupils,ou=groups,dc=school,dc=test",
        "group: ks3 (rule 2 of 3",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    let out = common::gatehouse()
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("check runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("StartTLS"), "{text}");
    assert!(text.contains("reached: bound as cn=gatehouse"), "{text}");

    // The same directory over LDAPS, trusted through ca_file; and without the CA, the
    // certificate is refused (the system's roots do not hold the test CA).
    let ldaps = std::fs::read_to_string(&config)
        .expect("policy")
        .replace(
            &slapd.url(),
            &format!("ldaps://127.0.0.1:{}", slapd.ldaps_port),
        )
        .replace("starttls = true\n", "");
    let ldaps_config = g.dir.path().join("ldaps.toml");
    std::fs::write(&ldaps_config, &ldaps).expect("write");
    let out = common::gatehouse()
        .args(["identity", "test", "--config"])
        .arg(&ldaps_config)
        .arg("bob")
        .output()
        .expect("identity test runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("group: ks4"), "{text}");
    let out = common::gatehouse()
        .args(["check", "--config"])
        .arg(&ldaps_config)
        .output()
        .expect("check runs");
    let checked = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{checked}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(checked.contains("(LDAPS)"), "{checked}");
    assert!(
        checked.contains("reached: bound as cn=gatehouse"),
        "{checked}"
    );
    assert!(
        text.contains("cn=KS4 Pupils,ou=groups,dc=school,dc=test"),
        "{text}"
    );
    let no_ca = ldaps
        .lines()
        .filter(|l| !l.starts_with("ca_file"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&ldaps_config, no_ca).expect("write");
    let out = common::gatehouse()
        .args(["check", "--config"])
        .arg(&ldaps_config)
        .output()
        .expect("check runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the directory"), "{err}");

    // `identity test` of a name the directory does not have says so; `check` with a
    // wrong service password names the service account.
    let out = common::gatehouse()
        .args(["identity", "test", "--config"])
        .arg(&config)
        .arg("nobody")
        .output()
        .expect("identity test runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no directory account \"nobody\""), "{err}");
    let password_file = g.dir.path().join("service.password");
    std::fs::write(&password_file, "not-the-password\n").expect("write");
    let out = common::gatehouse()
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("check runs");
    std::fs::write(&password_file, format!("{SERVICE_PASSWORD}\n")).expect("write");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the directory refused the service account cn=gatehouse"),
        "{err}"
    );

    // The decision log names the account and its group, and records refused sign-ins.
    let tail = common::log_tail(&g.dir.path().join("log"));
    assert!(
        tail.lines()
            .any(|l| l.contains("  ann  ks3  BLOCK  GET http://social.test")),
        "{tail}"
    );
    assert!(
        tail.lines().any(|l| l.contains("  tom  staff  ALLOW")),
        "{tail}"
    );
    assert!(
        tail.lines()
            .filter(|l| l.contains("  -  visitors  BLOCK") && l.contains("auth_failed"))
            .count()
            >= 6,
        "{tail}"
    );

    // A group change: ann joins Staff. The sync (every second here) picks it up while
    // her sign-in is still remembered, without a new bind.
    let binds_before = metric(
        &metrics(&g),
        "gatehouse_directory_binds_total{result=\"ok\"}",
    );
    slapd.modify(
        "dn: cn=Staff,ou=groups,dc=school,dc=test\nchangetype: modify\nadd: member\nmember: uid=ann,ou=people,dc=school,dc=test\n",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&g, "ann:ann-password", &social);
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "group change not picked up: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let m = metrics(&g);
    assert_eq!(
        metric(&m, "gatehouse_directory_binds_total{result=\"ok\"}"),
        binds_before,
        "the change came by the sync, not a new sign-in"
    );
    assert!(
        metric(&m, "gatehouse_directory_cache_hits_total") > 0.0,
        "{m}"
    );
    // The gauge is set when a sync round ends, just after the account it updated.
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&metrics(&g), "gatehouse_directory_up") != 1.0 {
        assert!(Instant::now() < deadline, "{}", metrics(&g));
        std::thread::sleep(Duration::from_millis(100));
    }

    // The directory goes down: the remembered sign-in keeps working; a new one (dan is
    // in the directory, but has not signed in) gets a clear 503 page, and the gauge
    // says so.
    slapd.stop();
    let r = get(&g, "ann:ann-password", &social);
    assert_eq!(r.status, 200, "{r:?}");
    let r = get(&g, "dan:dan-password", &plain);
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("directory cannot be reached"), "{}", r.body);
    let m = metrics(&g);
    assert_eq!(metric(&m, "gatehouse_directory_up"), 0.0, "{m}");
    assert!(
        metric(
            &m,
            "gatehouse_directory_binds_total{result=\"unavailable\"}"
        ) >= 1.0,
        "{m}"
    );
    let out = common::gatehouse()
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("check runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the directory"), "{err}");
}

/// One kept-alive client connection through the proxy, as a browser holds one: the
/// same `Proxy-Authorization` on each request.
struct KeptAlive {
    stream: std::io::BufReader<std::net::TcpStream>,
}

impl KeptAlive {
    fn open(g: &Gatehouse) -> KeptAlive {
        let stream = std::net::TcpStream::connect(("127.0.0.1", g.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        KeptAlive {
            stream: std::io::BufReader::new(stream),
        }
    }

    /// Status and body of a GET of `url` signed in as `user:password`.
    fn get(&mut self, credentials: &str, url: &str) -> (u16, String) {
        use base64::Engine;
        use std::io::{BufRead, Read, Write};
        let host = url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default();
        let auth = base64::engine::general_purpose::STANDARD.encode(credentials);
        write!(
            self.stream.get_mut(),
            "GET {url} HTTP/1.1\r\nHost: {host}\r\nProxy-Authorization: Basic {auth}\r\n\r\n"
        )
        .expect("request written");
        let mut status_line = String::new();
        self.stream
            .read_line(&mut status_line)
            .expect("status line");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {status_line:?}: the connection closed"));
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).expect("header line");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            assert!(
                !lower.starts_with("connection: close"),
                "the proxy closed a kept-alive connection: {status_line}"
            );
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().expect("content-length");
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// A browser sends its `Basic` header on every request of a connection; the proxy
/// answers repeats from the connection's last sign-in. That must never outlive what it
/// rests on: a group change from the sync, a policy reload, other credentials on the
/// same connection, the sign-in cache's TTL with the directory down.
#[test]
fn a_kept_alive_connection_keeps_its_sign_in_only_while_it_holds() {
    let mut slapd = Slapd::start();
    let origin = Origin::http();
    let g = start(&slapd);
    // The same policy with a 3 s sign-in cache, for the TTL with the directory down.
    let short =
        start_with(&policy(&slapd, "").replace("cache_ttl_secs = 120", "cache_ttl_secs = 3"));
    let social = format!("http://social.test:{}/", origin.port);
    let plain = format!("http://origin.test:{}/", origin.port);
    let ok_binds = |g: &Gatehouse| {
        metric(
            &metrics(g),
            "gatehouse_directory_binds_total{result=\"ok\"}",
        )
    };

    // One bind, then the same header five times more: the same user and group, counted
    // as cache hits, no new bind.
    let mut conn = KeptAlive::open(&g);
    let (status, body) = conn.get("ann:ann-password", &social);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("ks3"), "{body}");
    let binds = ok_binds(&g);
    let hits = metric(&metrics(&g), "gatehouse_directory_cache_hits_total");
    for _ in 0..5 {
        let (status, body) = conn.get("ann:ann-password", &social);
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("ks3"), "{body}");
    }
    assert_eq!(ok_binds(&g), binds);
    assert_eq!(
        metric(&metrics(&g), "gatehouse_directory_cache_hits_total"),
        hits + 5.0
    );

    // Other credentials on the same connection are read as themselves: a wrong password
    // is refused, another pupil is that pupil, and the first again is the first.
    let (status, _) = conn.get("ann:wrong", &plain);
    assert_eq!(status, 407);
    let (status, body) = conn.get("bob:bob-password", &social);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("ks4"), "{body}");
    let (status, body) = conn.get("ann:ann-password", &social);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("ks3"), "{body}");

    // A group change picked up by the sync reaches the connection that is already
    // signed in: ann joins Staff, which may use social media.
    slapd.modify(
        "dn: cn=Staff,ou=groups,dc=school,dc=test\nchangetype: modify\nadd: member\nmember: uid=ann,ou=people,dc=school,dc=test\n",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = conn.get("ann:ann-password", &social);
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "group change not picked up on a kept-alive connection: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // A policy reload that maps Staff to ks4 applies to the next request on it.
    let config = g.dir.path().join("policy.toml");
    let text = std::fs::read_to_string(&config).expect("policy");
    let remapped = text.replacen(
        "directory = \"cn=Staff,ou=groups,dc=school,dc=test\"\ngroup = \"staff\"",
        "directory = \"cn=Staff,ou=groups,dc=school,dc=test\"\ngroup = \"ks4\"",
        1,
    );
    assert_ne!(remapped, text);
    std::fs::write(&config, remapped).expect("write policy");
    g.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = conn.get("ann:ann-password", &social);
        if status == 403 && body.contains("ks4") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "policy reload not applied on a kept-alive connection: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // With the directory down, a kept-alive connection's sign-in lasts as long as the
    // cache's (3 s here), and then the next request is a new sign-in, refused clearly.
    // (bob: ann is staff now, so social media would not tell the groups apart.)
    let mut conn = KeptAlive::open(&short);
    let signed_in = Instant::now();
    let (status, body) = conn.get("bob:bob-password", &social);
    assert_eq!(status, 403, "{body}");
    slapd.stop();
    let (status, body) = conn.get("bob:bob-password", &social);
    assert_eq!(status, 403, "{body}");
    loop {
        let (status, body) = conn.get("bob:bob-password", &plain);
        if status == 503 {
            assert!(body.contains("directory cannot be reached"), "{body}");
            break;
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            signed_in.elapsed() < Duration::from_secs(6),
            "the sign-in outlived the cache's 3 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        signed_in.elapsed() >= Duration::from_secs(3),
        "refused before the cache's 3 s: {:?}",
        signed_in.elapsed()
    );
}

/// A policy with a directory, for the validation table (no directory is contacted).
const VALIDATION_BASE: &str = r#"[school]
name = "Test School"
[lists]
dir = "lists"
[identity]
default_group = "pupils"
[identity.directory]
url = "ldaps://dc1.school.local"
bind_dn = "CN=gatehouse,OU=Service,DC=school,DC=local"
bind_password_file = "directory.password"
base_dn = "DC=school,DC=local"
[[identity.directory.groups]]
directory = "CN=Staff,OU=Groups,DC=school,DC=local"
group = "staff"
[[identity.directory.groups]]
directory = "Year 7"
group = "pupils"
[groups.pupils]
mode = "blocklist"
[groups.staff]
mode = "blocklist"
"#;

fn validation_errors(policy: &str) -> Vec<String> {
    let dir = common::tree(&[("policy.toml", policy)]);
    match gatehouse::snapshot::load(
        &dir.path().join("policy.toml"),
        gatehouse::lists::CacheMode::Off,
    ) {
        Ok(_) => vec![],
        Err(e) => {
            e.0.iter()
                .map(|e| {
                    e.to_string()
                        .replace(&format!("{}/", dir.path().display()), "")
                })
                .collect()
        }
    }
}

#[test]
fn directory_settings_and_rules_are_checked_with_file_and_line() {
    assert_eq!(validation_errors(VALIDATION_BASE), Vec::<String>::new());
    let url = "url = \"ldaps://dc1.school.local\"";
    let rows: &[(&str, &str, &str)] = &[
        (url, "url = \"ldap://dc1.school.local\"", "policy.toml:8: [identity.directory] url \"ldap://dc1.school.local\" would send passwords in clear"),
        (url, "url = \"ldaps://dc1.school.local\"\nstarttls = true", "policy.toml:8: [identity.directory] starttls is for ldap:// URLs"),
        (url, "url = \"http://dc1.school.local\"", "policy.toml:8: [identity.directory] url \"http://dc1.school.local\" is not ldaps://HOST"),
        (url, "url = \"ldaps://dc1\"\nuser_filter = \"uid=x\"", "policy.toml:9: [identity.directory] user_filter \"uid=x\" must be a filter in parentheses holding {user}"),
        (url, "url = \"ldaps://dc1\"\nnested_groups = \"deep\"", "policy.toml:9: [identity.directory] nested_groups \"deep\" is not \"walk\" or \"ad-chain\""),
        (url, "url = \"ldaps://dc1\"\nunmapped = \"guest\"", "policy.toml:9: unmapped \"guest\" is not \"default\" or \"refuse\""),
        (url, "url = \"ldaps://dc1\"\nbind_password = \"hunter2\"", "policy.toml:9: unknown field `bind_password`"),
        ("base_dn = \"DC=school,DC=local\"", "base_dn = \"school.local\"", "policy.toml:11: [identity.directory] base_dn \"school.local\" is not a DN"),
        ("group = \"staff\"", "group = \"teachers\"", "policy.toml:14: unknown group \"teachers\""),
        ("directory = \"Year 7\"", "directory = \"cn=staff, ou=groups,dc=school,dc=local\"", "policy.toml:16: directory group \"cn=staff, ou=groups,dc=school,dc=local\" is already mapped on line 13"),
        ("directory = \"Year 7\"", "directory = \" \"", "policy.toml:16: directory group is empty"),
    ];
    for (from, to, want) in rows {
        assert!(VALIDATION_BASE.contains(from), "{from:?}");
        let errors = validation_errors(&VALIDATION_BASE.replacen(from, to, 1));
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "replacing {from:?} with {to:?}: expected {want:?}, got {errors:#?}"
        );
    }
    // Without a directory, the users file and subnets work exactly as before: the
    // directory part of the policy is optional.
    let start = VALIDATION_BASE
        .find("[identity.directory]")
        .expect("section");
    let end = VALIDATION_BASE.find("[groups.pupils]").expect("groups");
    let without = format!("{}{}", &VALIDATION_BASE[..start], &VALIDATION_BASE[end..]);
    assert_eq!(validation_errors(&without), Vec::<String>::new());
}

#[test]
fn the_shipped_directory_example_compiles_when_uncommented() {
    let shipped = std::fs::read_to_string(common::example_policy()).expect("shipped policy");
    let setting = regex::Regex::new(r"^# (\[\[?identity\.directory|[a-z_]+ = )").expect("regex");
    let mut uncommented = 0;
    let mut inside = false;
    let text: String = shipped
        .lines()
        .map(|line| {
            // The directory's block: from its table to the groups section.
            if line == "# [identity.directory]" {
                inside = true;
            } else if line.starts_with("# Groups: filtering levels") {
                inside = false;
            }
            if inside && setting.is_match(line) {
                uncommented += 1;
                format!("{}\n", &line[2..])
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    assert!(uncommented > 20, "{uncommented}");
    let path = common::root().join("policy/directory-example.toml.tmp");
    std::fs::write(&path, &text).expect("write");
    let loaded = gatehouse::snapshot::load(&path, gatehouse::lists::CacheMode::Off);
    let _ = std::fs::remove_file(&path);
    let snap = loaded.unwrap_or_else(|e| panic!("{e}"));
    let d = snap
        .settings
        .directory
        .as_ref()
        .expect("directory settings");
    assert_eq!(d.url, "ldaps://dc1.school.local");
    assert_eq!(d.tls, gatehouse::settings::DirectoryTls::Ldaps);
    assert_eq!(d.cache_ttl, Duration::from_secs(300));
    let mapping = snap.policy.identity.directory().expect("mapping");
    let names: Vec<&str> = mapping
        .rules
        .iter()
        .map(|r| snap.policy.group(r.group).name.as_str())
        .collect();
    assert_eq!(names, ["staff", "sixth-form", "ks4", "ks3"]);
    // A teacher in a pupil group gets staff, as the example's comment says.
    let got = mapping.map(&[
        "CN=KS3 Pupils,OU=Pupils,DC=school,DC=local",
        "CN=Staff,OU=Groups,DC=school,DC=local",
    ]);
    assert!(
        matches!(
            got,
            gatehouse::core::directory::Mapped::Group { rule: 0, .. }
        ),
        "{got:?}"
    );
}

/// A teacher signs in to the lessons API with their directory account, when the policy
/// maps a directory group to teachers: their lesson block takes effect for their room;
/// a pupil, a wrong password and another room are refused.
#[test]
fn a_teacher_in_a_mapped_directory_group_makes_lesson_overrides_with_their_account() {
    let slapd = Slapd::start();
    let origin = Origin::http();
    let policy = format!(
        "{}\n[teachers]\n[teachers.classrooms.room-1]\nsubnets = [\"127.0.0.2/32\"]\n[teachers.classrooms.room-2]\nsubnets = [\"127.0.0.3/32\"]\n[[teachers.directory]]\ndirectory = \"Staff\"\nclassrooms = [\"room-1\"]\n",
        policy(&slapd, "")
    );
    let g = start_with(&policy);
    let lesson = |user: &str, room: &str| {
        let body = format!(
            r#"{{"effect": "block", "sites": ["origin.test"], "classrooms": ["{room}"], "reason": "Eyes on the board"}}"#
        );
        curl(&[
            "-u",
            user,
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body,
            &format!("http://127.0.0.1:{}/api/lessons", g.admin_port),
        ])
    };
    let plain = format!("http://origin.test:{}/", origin.port);
    let visit = |room: &str| curl(&["-x", &g.url(), "--interface", room, &plain]).status;
    assert_eq!(visit("127.0.0.2"), 200);
    // A pupil is in no teachers' group; a wrong password is a wrong password.
    assert_eq!(lesson("ann:ann-password", "room-1").status, 401);
    assert_eq!(lesson("tom:not-his-password", "room-1").status, 401);
    // Tom (Staff) for another room: not his.
    let r = lesson("tom:tom-password", "room-2");
    assert_eq!(r.status, 403, "{r:?}");
    // For his room: made in his name, and in force.
    let r = lesson("tom:tom-password", "room-1");
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(visit("127.0.0.2"), 403);
    assert_eq!(visit("127.0.0.3"), 200);
    let tail = common::log_tail(&g.dir.path().join("log"));
    assert!(
        tail.contains("ticket lesson:g-1 by tom: lesson block: Eyes on the board"),
        "{tail}"
    );
}
