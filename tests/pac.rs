//! The proxy auto-configuration script as browsers get it: fetched with curl from the
//! proxy listener and the enrolment listener of a running `gatehouse run`, then
//! evaluated by a real PAC engine (Debian's python3-pacparser, the SpiderMonkey-based
//! engine behind `pactester`) for a table of URLs; and `gatehouse check`'s account of it.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests are shell: they read files and clocks

mod common;

use std::path::Path;
use std::process::Command;

use common::servers::{curl, Gatehouse};
use common::{gatehouse, tree};

fn policy(pac: &str, inspection: &str) -> String {
    format!(
        r#"[school]
name = "Test Academy"
[lists]
dir = "lists"
[categories.gambling]
severity = "inappropriate"
[identity]
default_group = "pupils"
[groups.pupils]
mode = "blocklist"
block = ["gambling"]
[log]
dir = "log"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[inspection]
ca_cert = "ca/ca.crt"
ca_key = "ca/ca.key"
{inspection}
{pac}
"#
    )
}

const PAC: &str = r#"[pac]
proxies = ["gatehouse.school.internal:3128", "gatehouse2.school.internal:3128"]
direct_domains = ["school.internal", ".lea.example"]
direct_networks = ["10.20.0.0/16", "192.168.1.0/24"]
"#;

/// `FindProxyForURL(url, host)` for each row, by pacparser, as one line each.
fn evaluate(script: &Path, urls: &[&str]) -> Vec<String> {
    let program = r#"
import sys, pacparser
pacparser.init()
pacparser.parse_pac_file(sys.argv[1])
for url in sys.argv[2:]:
    print(pacparser.find_proxy(url))
pacparser.cleanup()
"#;
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(program)
        .arg(script)
        .args(urls)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "pacparser failed (apt-get install python3-pacparser): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn browsers_get_the_pac_file_from_the_policy_and_a_pac_engine_follows_it() {
    // No CA exists: with [pac] set the enrolment listener still starts, for WPAD.
    let g = Gatehouse::start(&[
        (
            "policy.toml",
            &policy(PAC, "enrol_listen = \"127.0.0.1:0\""),
        ),
        ("lists/gambling/domains", "bet.test\n"),
    ]);
    let from_proxy = curl(&[&format!("http://127.0.0.1:{}/proxy.pac", g.port)]);
    assert_eq!(from_proxy.status, 200, "{}", from_proxy.body);
    assert!(
        from_proxy
            .headers
            .to_ascii_lowercase()
            .contains("content-type: application/x-ns-proxy-autoconfig"),
        "{}",
        from_proxy.headers
    );
    let base = format!("http://127.0.0.1:{}", g.enrol_port());
    let wpad = curl(&[&format!("{base}/wpad.dat")]);
    assert_eq!(wpad.status, 200, "{}", wpad.body);
    assert_eq!(wpad.body, from_proxy.body, "one script on both listeners");
    // The certificate routes have nothing to serve yet, and say so.
    assert_eq!(curl(&[&format!("{base}/ca.crt")]).status, 503);
    // Only GET and HEAD.
    let post = curl(&[
        "-X",
        "POST",
        &format!("http://127.0.0.1:{}/proxy.pac", g.port),
    ]);
    assert_eq!(post.status, 405);
    let head = curl(&["-I", &format!("{base}/proxy.pac")]);
    assert_eq!(head.status, 200);

    let script = g.dir.path().join("fetched.pac");
    std::fs::write(&script, &from_proxy.body).expect("write the script");
    let proxied = "PROXY gatehouse.school.internal:3128; PROXY gatehouse2.school.internal:3128";
    let rows = [
        ("https://www.bbc.co.uk/news", proxied),
        ("http://bet.test/", proxied),
        ("https://SCHOOL.INTERNAL/", "DIRECT"),
        ("https://mis.school.internal/login", "DIRECT"),
        ("https://school.internal.evil.example/", proxied),
        ("https://notschool.internal/", proxied),
        ("https://portal.lea.example/", "DIRECT"),
        ("http://intranet/", "DIRECT"),
        ("http://localhost:8080/", "DIRECT"),
        ("http://127.0.0.1/", "DIRECT"),
        ("http://10.20.3.4/printer", "DIRECT"),
        ("http://10.21.3.4/", proxied),
        ("http://192.168.1.200/", "DIRECT"),
        ("http://192.168.2.1/", proxied),
        ("http://8.8.8.8/", proxied),
    ];
    let urls: Vec<&str> = rows.iter().map(|(u, _)| *u).collect();
    let got = evaluate(&script, &urls);
    assert_eq!(got.len(), rows.len(), "{got:?}");
    for ((url, want), got) in rows.iter().zip(&got) {
        assert_eq!(got, want, "{url}");
    }
}

#[test]
fn without_a_pac_section_the_proxy_serves_no_pac_file() {
    let g = Gatehouse::start(&[
        ("policy.toml", &policy("", "")),
        ("lists/gambling/domains", "bet.test\n"),
    ]);
    let r = curl(&[&format!("http://127.0.0.1:{}/proxy.pac", g.port)]);
    assert_eq!(r.status, 400, "{}", r.body);
}

#[test]
fn check_says_where_the_pac_file_is_and_refuses_a_bad_section_by_line() {
    let dir = tree(&[
        (
            "policy.toml",
            &policy(PAC, "enrol_listen = \"127.0.0.1:80\""),
        ),
        ("lists/gambling/domains", "bet.test\n"),
    ]);
    let out = gatehouse()
        .args(["check", "--config"])
        .arg(dir.path().join("policy.toml"))
        .output()
        .expect("gatehouse runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("proxy auto-configuration: http://127.0.0.1:0/proxy.pac"),
        "{stdout}"
    );
    assert!(
        stdout.contains("http://127.0.0.1:80/wpad.dat; WPAD's http://wpad.<domain>/wpad.dat"),
        "{stdout}"
    );
    assert!(stdout.contains("school.internal and under"), "{stdout}");

    let bad = policy(
        "[pac]\nproxies = [\"gatehouse.school.internal\"]\ndirect_networks = [\"fd00::/8\"]\n",
        "",
    );
    let line = |needle: &str| bad.lines().position(|l| l.contains(needle)).map(|i| i + 1);
    let dir = tree(&[
        ("policy.toml", &bad),
        ("lists/gambling/domains", "bet.test\n"),
    ]);
    let out = gatehouse()
        .args(["check", "--config"])
        .arg(dir.path().join("policy.toml"))
        .output()
        .expect("gatehouse runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "policy.toml:{}: ",
            line("proxies =").expect("line")
        )) && stderr.contains("is not host:port"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "policy.toml:{}: ",
            line("direct_networks").expect("line")
        )) && stderr.contains("IPv6"),
        "{stderr}"
    );
}
