//! Kerberos single sign-on against a real MIT KDC (started by the test with its own
//! realm on a loopback port) and a real slapd: `curl --proxy-negotiate` with a ticket
//! from kinit signs in silently as the principal, whose group comes from the users file
//! (a technician) or the directory (a pupil); a client without a ticket is offered
//! Basic and signs in with it; a forged or garbled token gets `407`.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests are shell

mod common;

use std::path::Path;
use std::process::Command;

use common::kdc::{Kdc, PROXY_HOST, REALM};
use common::servers::{curl, CurlResult, Gatehouse, Origin};
use common::slapd::{Slapd, SERVICE_DN, SERVICE_PASSWORD};

fn policy(slapd: &Slapd) -> String {
    format!(
        r#"[school]
name = "Test Academy"
[lists]
dir = "lists"
[categories.social]
severity = "productivity"
[identity]
default_group = "visitors"
users_file = "users.toml"
[[identity.subnets]]
cidr = "127.0.0.0/8"
group = "visitors"
auth = "required"
[identity.kerberos]
keytab = "http.keytab"
service_principal = "HTTP/{PROXY_HOST}@{REALM}"
[identity.directory]
url = "{url}"
starttls = true
ca_file = "{ca}"
bind_dn = "{SERVICE_DN}"
bind_password_file = "service.password"
base_dn = "dc=school,dc=test"
user_filter = "(&(objectClass=inetOrgPerson)(uid={{user}}))"
[[identity.directory.groups]]
directory = "KS3 Pupils"
group = "ks3"
[groups.visitors]
mode = "blocklist"
block = ["social"]
[groups.ks3]
mode = "blocklist"
block = ["social"]
[groups.staff]
mode = "blocklist"
[log]
dir = "log"
[admin]
listen = "127.0.0.1:0"
[server]
listen = "127.0.0.1:0"
allow_internal_destinations = ["127.0.0.1/32"]
[server.resolve]
"social.test" = "127.0.0.1"
"#,
        url = slapd.url(),
        ca = slapd.ca_file.display(),
    )
}

/// curl through the proxy dialled as `proxy.school.test` (the name its service
/// principal is for), with `ccache` as the Kerberos credential cache.
fn curl_as(g: &Gatehouse, kdc: &Kdc, ccache: &Path, extra: &[&str], url: &str) -> CurlResult {
    let proxy = format!("http://{PROXY_HOST}:{}", g.port);
    let resolve = format!("{PROXY_HOST}:{}:127.0.0.1", g.port);
    let mut args = vec!["-x", &proxy, "--resolve", &resolve];
    args.extend_from_slice(extra);
    args.push(url);
    // curl reads the Kerberos settings from its environment.
    std::env::set_var("KRB5_CONFIG", &kdc.krb5_conf);
    std::env::set_var("KRB5CCNAME", format!("FILE:{}", ccache.display()));
    curl(&args)
}

fn decisions(g: &Gatehouse) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["log", "export", "--format", "jsonl", "--dir"])
        .arg(g.dir.path().join("log"))
        .output()
        .expect("export runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn negotiate_signs_in_silently_and_basic_stays_the_fallback() {
    let kdc = Kdc::start();
    kdc.add_user("ann", "ann-kerberos");
    kdc.add_user("tech", "tech-kerberos");
    let slapd = Slapd::start();
    let origin = Origin::http();
    let keytab = std::fs::read(&kdc.keytab).expect("keytab");
    let hash = gatehouse::proxy::auth::hash_password("tech-basic").expect("hash");
    let users =
        format!("[[user]]\nname = \"tech\"\ngroup = \"staff\"\npassword_hash = \"{hash}\"\n");
    let policy = policy(&slapd);
    let dir = common::tree(&[
        ("policy.toml", policy.as_str()),
        ("users.toml", users.as_str()),
        ("service.password", &format!("{SERVICE_PASSWORD}\n")),
        ("lists/social/domains", "social.test\n"),
    ]);
    std::fs::write(dir.path().join("http.keytab"), keytab).expect("keytab copy");
    let g = Gatehouse::start_in(dir);
    let social = format!("http://social.test:{}/", origin.port);
    let negotiate = ["--proxy-negotiate", "-U", ":"];

    // ann's ticket: the directory puts her in KS3 Pupils (through Year 7), so ks3,
    // which blocks social media; signed in without a password prompt.
    let ann = kdc.kinit("ann", "ann-kerberos");
    let r = curl_as(&g, &kdc, &ann, &negotiate, &social);
    assert_eq!(r.status, 403, "{r:?}\n{}", g.log());
    assert!(r.body.contains("ks3"), "{}", r.body);
    // Two requests on one connection: the sign-in holds for the connection, so the
    // second (whether curl sends no token or the same one again) is ann's too.
    let r = curl_as(
        &g,
        &kdc,
        &ann,
        &[&negotiate[..], &[&social]].concat(),
        &social,
    );
    assert_eq!(r.status, 403, "the second request on the connection: {r:?}");
    assert!(r.body.contains("ks3"), "{}", r.body);
    // tech's ticket: the users file's account, staff, which allows it.
    let tech = kdc.kinit("tech", "tech-kerberos");
    let r = curl_as(&g, &kdc, &tech, &negotiate, &social);
    assert_eq!(r.status, 200, "{r:?}\n{}", g.log());

    // No ticket: the 407 offers Negotiate and Basic; Basic signs in.
    let none = kdc.empty_ccache();
    let r = curl_as(&g, &kdc, &none, &[], &social);
    assert_eq!(r.status, 407, "{r:?}");
    let offered: Vec<&str> = r
        .headers
        .lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("proxy-authenticate")
                .then(|| value.trim())
        })
        .collect();
    assert_eq!(offered.len(), 2, "{}", r.headers);
    assert_eq!(offered[0], "Negotiate");
    assert!(offered[1].starts_with("Basic realm="), "{offered:?}");
    let r = curl_as(&g, &kdc, &none, &negotiate, &social);
    assert_eq!(r.status, 407, "a client without a ticket: {r:?}");
    let r = curl_as(
        &g,
        &kdc,
        &none,
        &["--proxy-user", "tech:tech-basic"],
        &social,
    );
    assert_eq!(r.status, 200, "{r:?}");

    // Forged and garbled tokens: 407, and the attempt is recorded.
    for token in [
        "Negotiate YWJjZGVmZ2g=",
        "Negotiate !!not base64!!",
        "Negotiate ",
    ] {
        let header = format!("Proxy-Authorization: {token}");
        let r = curl_as(&g, &kdc, &none, &["-H", &header], &social);
        assert_eq!(r.status, 407, "{token}: {r:?}");
    }

    let records = decisions(&g);
    let users: Vec<Option<&str>> = records.iter().map(|r| r["user"].as_str()).collect();
    assert!(users.contains(&Some("ann")), "{users:?}");
    assert!(users.contains(&Some("tech")), "{users:?}");
    let ann_row = records
        .iter()
        .find(|r| r["user"] == "ann")
        .expect("ann's decision");
    assert_eq!(ann_row["group"], "ks3");
    let refused = records
        .iter()
        .filter(|r| r["reason"] == "auth_failed")
        .count();
    assert!(refused >= 2, "{records:?}");

    // `gatehouse check` reads the keytab: a key for the service principal, or a clear
    // error naming the keytab when it holds none.
    let config = g.dir.path().join("policy.toml");
    let check = || {
        Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .expect("check runs")
    };
    let out = check();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("the keytab holds a usable key"), "{text}");
    let policy = std::fs::read_to_string(&config).expect("policy");
    std::fs::write(
        &config,
        policy.replace(&format!("HTTP/{PROXY_HOST}@"), "HTTP/other.school.test@"),
    )
    .expect("policy rewritten");
    let out = check();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("the Kerberos keytab is not usable"), "{err}");
    assert!(err.contains("HTTP/other.school.test@SCHOOL.TEST"), "{err}");
}
