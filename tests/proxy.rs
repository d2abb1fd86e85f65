//! `gatehouse run` as a real process, driven by curl and raw sockets, in front of real
//! origin servers on loopback (plain HTTP, and TLS with a CA minted for the test).
//! Groups are told apart by source address: `curl --interface 127.0.0.N` against subnets
//! `127.0.0.N/32` in the test policy.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests are shell: they read files and clocks

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::servers::{curl, raw_exchange, Gatehouse, Origin, TestCa};

const PUPIL: &str = "127.0.0.1"; // default group: pupils
const STAFF: &str = "127.0.0.2";
const LIBRARY: &str = "127.0.0.3"; // authentication required

fn policy(tls_port: u16, extra_server: &str) -> String {
    format!(
        r#"[school]
name = "Test Academy"
[lists]
dir = "lists"
[categories.csam]
severity = "illegal"
[categories.gambling]
severity = "inappropriate"
[categories.social]
severity = "productivity"
[identity]
default_group = "pupils"
users_file = "users.toml"
[[identity.subnets]]
cidr = "127.0.0.2/32"
group = "staff"
[[identity.subnets]]
cidr = "127.0.0.3/32"
group = "pupils"
auth = "required"
[groups.pupils]
mode = "blocklist"
block = ["gambling", "social"]
block_ip_literals = true
[groups.staff]
mode = "blocklist"
block = ["gambling"]
require_sni = false
block_ech = false
on_log_failure = "allow"
[log]
dir = "log"
[admin]
listen = "127.0.0.1:0"
[server]
listen = "127.0.0.1:0"
allow_internal_destinations = ["127.0.0.1/32"]
tunnel_ports = [443, {tls_port}]
head_timeout_secs = 1
upstream_timeout_secs = 2
{extra_server}
[server.resolve]
"origin.test" = "127.0.0.1"
"bet.test" = "127.0.0.1"
"social.test" = "127.0.0.1"
"csam.test" = "127.0.0.1"
"intranet.test" = "10.1.2.3"
"sneaky.test" = "127.0.0.9"
"#
    )
}

fn start(tls_port: u16, extra_server: &str, users: &str) -> Gatehouse {
    start_on(0, tls_port, extra_server, users)
}

/// As [`start`], on `threads` threads: the tests of forwarding, tunnels, reload and draining run
/// on the single-threaded scheduler (what a one-CPU machine gets), the rest on one
/// thread per CPU.
fn start_on(threads: usize, tls_port: u16, extra_server: &str, users: &str) -> Gatehouse {
    let policy = policy(tls_port, extra_server);
    Gatehouse::start_threads(
        &[
            ("policy.toml", policy.as_str()),
            ("users.toml", users),
            ("lists/csam/domains", "csam.test\n"),
            ("lists/gambling/domains", "bet.test\n"),
            ("lists/social/domains", "social.test\n"),
        ],
        threads,
    )
}

fn proxy_addr(g: &Gatehouse) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], g.port))
}

#[test]
fn plain_http_allowed_blocked_and_per_group() {
    let origin = Origin::http();
    let g = start_on(1, 1, "", "");
    let url = |host: &str, path: &str| format!("http://{host}:{}{path}", origin.port);

    let r = curl(&["-x", &g.url(), &url("origin.test", "/")]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "hello from origin"),
        "{r:?}"
    );

    let r = curl(&["-x", &g.url(), &url("www.bet.test", "/odds")]);
    assert_eq!(r.status, 403, "{r:?}");
    for needle in [
        "This page is blocked",
        "gambling",
        "pupils",
        "Test Academy",
        "helpdesk ticket quoting reference",
    ] {
        assert!(
            r.body.contains(needle),
            "block page lacks {needle:?}: {}",
            r.body
        );
    }
    let reference = r
        .headers
        .lines()
        .find_map(|l| l.strip_prefix("x-gatehouse-reference: "))
        .expect("reference header")
        .trim()
        .to_string();
    assert!(r.body.contains(&reference));
    assert!(
        g.wait_for_log(&format!("reference={reference}"), Duration::from_secs(2)),
        "the reference finds the decision"
    );

    // Staff may reach social media; pupils may not. Nobody reaches gambling.
    let r = curl(&[
        "-x",
        &g.url(),
        "--interface",
        STAFF,
        &url("social.test", "/"),
    ]);
    assert_eq!(r.status, 200, "{r:?}");
    let r = curl(&[
        "-x",
        &g.url(),
        "--interface",
        PUPIL,
        &url("social.test", "/"),
    ]);
    assert_eq!(r.status, 403, "{r:?}");
    let r = curl(&["-x", &g.url(), "--interface", STAFF, &url("bet.test", "/")]);
    assert_eq!(r.status, 403, "{r:?}");

    // IP literals: blocked for pupils in every spelling, allowed for staff.
    for host in ["127.0.0.1", "2130706433", "0x7f.1"] {
        let r = curl(&["-x", &g.url(), &url(host, "/")]);
        assert_eq!(r.status, 403, "{host}: {r:?}");
    }
    let r = curl(&["-x", &g.url(), "--interface", STAFF, &url("127.0.0.1", "/")]);
    assert_eq!(r.status, 200, "{r:?}");

    // Spoofed identity headers change nothing.
    let r = curl(&[
        "-x",
        &g.url(),
        "-H",
        "X-Forwarded-For: 127.0.0.2",
        "-H",
        "X-Real-IP: 127.0.0.2",
        "-H",
        "Forwarded: for=127.0.0.2",
        &url("social.test", "/"),
    ]);
    assert_eq!(r.status, 403, "{r:?}");
}

#[test]
fn forwarding_rewrites_headers_and_streams_bodies() {
    let origin = Origin::http();
    let g = start_on(1, 1, "", "");
    let url = format!("http://origin.test:{}/echo", origin.port);
    let r = curl(&[
        "-x",
        &g.url(),
        "-H",
        "Connection: X-Secret",
        "-H",
        "X-Secret: hop",
        "-H",
        "Keep-Alive: timeout=5",
        "-H",
        "X-Kept: end-to-end",
        "-H",
        "Host: elsewhere.test",
        "--data-binary",
        "posted body",
        &url,
    ]);
    assert_eq!(r.status, 200, "{r:?}");
    let echo = r.body.to_ascii_lowercase();
    assert!(echo.starts_with("post /echo"), "{echo}");
    assert!(
        echo.contains(&format!("host: origin.test:{}", origin.port)),
        "Host rewritten from the target: {echo}"
    );
    assert!(echo.contains("via: 1.1 gatehouse"), "{echo}");
    assert!(echo.contains("x-kept: end-to-end"), "{echo}");
    for gone in ["x-secret", "keep-alive"] {
        assert!(
            !echo.contains(gone),
            "{gone} must not reach the origin: {echo}"
        );
    }
    assert!(echo.contains("body: posted body"), "{echo}");
    assert!(r
        .headers
        .to_ascii_lowercase()
        .contains("via: 1.1 gatehouse"));

    // A chunked upload and a 1 MiB download pass through whole.
    let r = curl(&[
        "-x",
        &g.url(),
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        "chunky",
        &url,
    ]);
    assert!(r.body.contains("body: chunky"), "{r:?}");
    let r = curl(&[
        "-x",
        &g.url(),
        &format!("http://origin.test:{}/big", origin.port),
    ]);
    assert_eq!((r.status, r.body.len()), (200, 1 << 20));
    assert!(
        g.wait_for_log(
            "Host header \"elsewhere.test\" rewritten to origin.test",
            Duration::from_secs(2)
        ),
        "{}",
        g.log()
    );
}

#[test]
fn https_through_connect_with_sni_checks() {
    let ca = TestCa::new();
    let tls = Origin::https(&ca, &["origin.test", "bet.test"]);
    let g = start_on(1, tls.port, "", "");
    let dir = tempfile::tempdir().expect("dir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).expect("write CA");
    let ca_arg = ca_file.to_str().expect("path");

    let r = curl(&[
        "-x",
        &g.url(),
        "--cacert",
        ca_arg,
        &format!("https://origin.test:{}/", tls.port),
    ]);
    assert_eq!(
        (r.exit, r.status, r.body.as_str()),
        (0, 200, "hello from origin"),
        "{r:?}"
    );

    // Blocked on the CONNECT line: 403 with the block text, no tunnel.
    let r = curl(&[
        "-x",
        &g.url(),
        "--cacert",
        ca_arg,
        &format!("https://bet.test:{}/", tls.port),
    ]);
    assert_ne!(r.exit, 0);
    assert!(r.headers.contains("403"), "{r:?}");

    // A port that may not be tunnelled.
    let raw = raw_exchange(
        proxy_addr(&g),
        b"CONNECT origin.test:22 HTTP/1.1\r\nHost: origin.test:22\r\n\r\n",
        Duration::from_secs(3),
    );
    assert!(raw.starts_with("HTTP/1.1 403"), "{raw}");

    // (CONNECT target, SNI, source, tunnel works?) — the SNI is decided as well as the
    // CONNECT line: domain fronting and IP-literal tunnels with a blocked SNI are closed.
    let named = format!("origin.test:{}", tls.port);
    let bare = format!("127.0.0.1:{}", tls.port);
    let rows: &[(&str, &str, Option<&str>, bool)] = &[
        (&named, "bet.test", None, false), // fronting: allowed CONNECT, blocked SNI
        (&named, "origin.test", None, true), // the same with an allowed SNI
        (&bare, "origin.test", Some(STAFF), true), // staff may tunnel to an address...
        (&bare, "bet.test", Some(STAFF), false), // ...but not with a blocked SNI
        (&bare, "origin.test", None, false), // pupils may not tunnel to addresses
    ];
    for (authority, sni, source, works) in rows {
        let result = tunnel_handshake(&g, authority, sni, *source, &ca);
        assert_eq!(
            result.is_ok(),
            *works,
            "CONNECT {authority} SNI {sni} from {source:?}: {result:?}"
        );
    }
    assert!(
        g.wait_for_log(
            "the ClientHello names bet.test, not origin.test",
            Duration::from_secs(2)
        ),
        "{}",
        g.log()
    );

    // Something that is not TLS (an SSH client) is refused on a TLS port.
    let mut s = connect_tunnel(&g, &format!("origin.test:{}", tls.port), None);
    s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").expect("write");
    let mut rest = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = s.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "nothing comes back through a refused tunnel"
    );
    assert!(g.wait_for_log("not_tls", Duration::from_secs(2)));
}

/// The IWF list is per URL. Over plain HTTP only the listed pages are refused, with the
/// category's own splash text and no invitation to ask for an unblock; over HTTPS the
/// path cannot be seen, so a host with listed pages is refused whole, on the CONNECT line
/// and on the SNI, and the record says why.
#[test]
fn illegal_url_entries_block_the_whole_host_over_https() {
    let ca = TestCa::new();
    let tls = Origin::https(&ca, &["mixed.test", "origin.test"]);
    let http = Origin::http();
    let splash = "Refused: on the Internet Watch Foundation list.";
    let policy = policy(tls.port, "")
        .replace(
            "[categories.csam]\nseverity = \"illegal\"\n",
            &format!("[categories.csam]\nseverity = \"illegal\"\nblock_message = \"{splash}\"\n"),
        )
        .replace(
            "[server.resolve]\n",
            "[server.resolve]\n\"mixed.test\" = \"127.0.0.1\"\n",
        );
    let g = Gatehouse::start_threads(
        &[
            ("policy.toml", policy.as_str()),
            ("users.toml", ""),
            ("lists/csam/domains", "csam.test\n"),
            ("lists/csam/urls", "mixed.test/listed/\n"),
            ("lists/gambling/domains", "bet.test\n"),
            ("lists/social/domains", "social.test\n"),
        ],
        1,
    );
    // Plain HTTP: the rest of the site opens; the listed page gets the splash, with its
    // reference, and nothing that suggests it could be unblocked.
    let r = curl(&[
        "-x",
        &g.url(),
        &format!("http://mixed.test:{}/other", http.port),
    ]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "hello from origin"),
        "{r:?}"
    );
    let r = curl(&[
        "-x",
        &g.url(),
        &format!("http://mixed.test:{}/listed/1.jpg", http.port),
    ]);
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.contains(splash), "{}", r.body);
    assert!(r.body.contains("Reference"), "{}", r.body);
    assert!(!r.body.contains("helpdesk ticket"), "{}", r.body);
    // HTTPS: the whole host, by the CONNECT line...
    let dir = tempfile::tempdir().expect("dir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).expect("write CA");
    let r = curl(&[
        "-x",
        &g.url(),
        "--cacert",
        ca_file.to_str().expect("path"),
        &format!("https://mixed.test:{}/other", tls.port),
    ]);
    assert_ne!(r.exit, 0, "{r:?}");
    assert!(r.headers.contains("403"), "{r:?}");
    // ...and by the SNI behind an allowed CONNECT line.
    let result = tunnel_handshake(
        &g,
        &format!("origin.test:{}", tls.port),
        "mixed.test",
        None,
        &ca,
    );
    assert!(result.is_err(), "fronting to a listed host is refused");
    assert!(
        g.wait_for_log("the whole site is refused", Duration::from_secs(2)),
        "the explanation says why: {}",
        g.log()
    );
    let dir = g.stop();
    let tail = common::log_tail(&dir.path().join("log"));
    let whole = tail
        .lines()
        .filter(|l| l.contains("BLOCK  CONNECT") && l.ends_with("[csam]  illegal"))
        .count();
    assert_eq!(whole, 2, "{tail}");
}

/// The extension block of the ClientHello that is the one record in `hello` (tls-parser).
fn hello_extensions(hello: &[u8]) -> &[u8] {
    let Ok((_, record)) = tls_parser::parse_tls_plaintext(hello) else {
        panic!("a TLS record ({} bytes)", hello.len());
    };
    let Some(tls_parser::TlsMessage::Handshake(tls_parser::TlsMessageHandshake::ClientHello(ch))) =
        record.msg.first()
    else {
        panic!("a ClientHello");
    };
    ch.ext.expect("extensions")
}

/// A real ClientHello (rustls, naming `sni`) as it goes on the wire, and, if `ech`, the
/// same hello carrying an `encrypted_client_hello` extension (type 0xfe0d, an outer
/// one with a made-up config, as a browser's GREASE or a real ECH client sends).
fn client_hello(sni: &str, ech: bool) -> Vec<u8> {
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).expect("name");
    let mut conn =
        rustls::ClientConnection::new(client_config(rustls::RootCertStore::empty()), name)
            .expect("client");
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).expect("hello");
    }
    if !ech {
        return hello;
    }
    // Append the extension and lengthen the extension list, the handshake message and
    // the record by as much (the hello fits one record).
    let ext = hello_extensions(&hello);
    let ext_end = ext.as_ptr() as usize - hello.as_ptr() as usize + ext.len();
    assert_eq!(ext_end, hello.len(), "the extensions end the hello");
    let mut body = vec![0u8]; // outer
    body.extend_from_slice(&[0x00, 0x01, 0x00, 0x01, 0x2a]); // HKDF-SHA256, AES-128-GCM, config 42
    body.extend_from_slice(&[0x00, 0x20]);
    body.extend_from_slice(&[7u8; 32]); // enc
    body.extend_from_slice(&[0x00, 0xb0]);
    body.extend_from_slice(&[9u8; 0xb0]); // payload
    let mut extension = vec![0xfe, 0x0d];
    extension.extend_from_slice(&(body.len() as u16).to_be_bytes());
    extension.extend_from_slice(&body);
    let grow = extension.len();
    let ext_len_at = ext_end - ext.len() - 2;
    hello.extend_from_slice(&extension);
    let add = |bytes: &mut [u8]| {
        let mut v = 0usize;
        for b in bytes.iter() {
            v = v << 8 | *b as usize;
        }
        v += grow;
        for b in bytes.iter_mut().rev() {
            *b = v as u8;
            v >>= 8;
        }
    };
    add(&mut hello[3..5]); // record length
    add(&mut hello[6..9]); // handshake length
    add(&mut hello[ext_len_at..ext_len_at + 2]); // extensions length
    hello
}

/// The one handshake record `hello` cut into two, the first carrying `at` bytes.
fn in_two_records(hello: &[u8], at: usize) -> Vec<u8> {
    let (header, body) = hello.split_at(5);
    let mut out = Vec::new();
    for part in [&body[..at], &body[at..]] {
        out.extend_from_slice(&header[..3]);
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// Opens a tunnel and sends `hello` through it; true when the origin answers (its
/// ServerHello comes back), false when the proxy closes the tunnel with nothing.
fn hello_gets_through(g: &Gatehouse, authority: &str, source: Option<&str>, hello: &[u8]) -> bool {
    let mut s = connect_tunnel(g, authority, source);
    s.write_all(hello).expect("write hello");
    let mut first = [0u8; 1];
    matches!(s.read(&mut first), Ok(1) if first[0] == 0x16)
}

#[test]
fn encrypted_client_hello_that_hides_the_server_is_refused() {
    let ca = TestCa::new();
    let tls = Origin::https(&ca, &["origin.test"]);
    let g = start_on(1, tls.port, "", "");
    let named = format!("origin.test:{}", tls.port);
    let bare = format!("127.0.0.1:{}", tls.port);
    // (CONNECT target, outer SNI, ECH offered, source, gets through?)
    let rows: &[(&str, &str, bool, Option<&str>, bool)] = &[
        // Browsers' GREASE ECH: the outer name is the CONNECT host, which was decided.
        (&named, "origin.test", true, None, true),
        // Real ECH: the outer name is the provider's public name, the real one hidden.
        (&named, "cloudflare-ech.com", true, None, false),
        // Without ECH the same names are both decided, and both are allowed.
        (&named, "cloudflare-ech.com", false, None, true),
        // Staff have block_ech = false.
        (&named, "cloudflare-ech.com", true, Some(STAFF), true),
        (&bare, "origin.test", true, Some(STAFF), true),
    ];
    for (authority, sni, ech, source, through) in rows {
        let hello = client_hello(sni, *ech);
        assert_eq!(
            hello_gets_through(&g, authority, *source, &hello),
            *through,
            "CONNECT {authority}, SNI {sni}, ECH {ech}, from {source:?}"
        );
    }
    // A hello may come in several records; the extension is found across them.
    for (sni, through) in [("origin.test", true), ("cloudflare-ech.com", false)] {
        let hello = in_two_records(&client_hello(sni, true), 100);
        assert_eq!(
            hello_gets_through(&g, &named, None, &hello),
            through,
            "SNI {sni}, hello in two records"
        );
    }
    assert!(
        g.wait_for_log(
            "Encrypted ClientHello, showing cloudflare-ech.com",
            Duration::from_secs(2)
        ),
        "{}",
        g.log()
    );
}

/// The technician's path from a pupil's block page: the reference it shows finds the
/// decision with `gatehouse log show`, which prints the grant command that unblocks the
/// site; run against a ticket, that command opens the site within seconds.
#[test]
fn a_block_page_reference_leads_to_the_decision_and_its_grant() {
    let origin = Origin::http();
    let g = start_on(1, 1, "", "");
    let url = format!("http://bet.test:{}/odds", origin.port);
    let r = curl(&["-x", &g.url(), &url]);
    assert_eq!(r.status, 403, "{r:?}");
    let reference = regex::Regex::new(r"quoting reference <span class=.ref.>([0-9A-F-]+)<")
        .expect("regex")
        .captures(&r.body)
        .unwrap_or_else(|| panic!("a reference on the page: {}", r.body))[1]
        .to_string();

    let config = g.dir.path().join("policy.toml");
    let show = |reference: &str| {
        common::gatehouse()
            .args(["log", "show", "--config"])
            .arg(&config)
            .arg(reference)
            .output()
            .expect("log show runs")
    };
    // As the pupil read it out: lower case, with spaces.
    let out = show(&reference.to_lowercase().replace('-', " "));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needed in [
        format!("Reference {reference} "),
        "who       127.0.0.1 (user -), group pupils".to_string(),
        format!("request   GET {url}"),
        "verdict   BLOCK (category), categories gambling".to_string(),
        "answered  403 by Gatehouse".to_string(),
    ] {
        assert!(text.contains(&needed), "{needed:?} in {text}");
    }
    let suggested = regex::Regex::new(r"gatehouse grant add (.*)")
        .expect("regex")
        .captures(&text)
        .unwrap_or_else(|| panic!("a grant command: {text}"))[1]
        .to_string();
    assert_eq!(
        suggested,
        r#"--ticket TICKET --by YOUR-NAME --reason "..." --group pupils --site bet.test --for 1d"#
    );
    let added = common::gatehouse()
        .args(["grant", "add", "--config"])
        .arg(&config)
        .args([
            "--ticket",
            "HD-4411",
            "--by",
            "technician",
            "--reason",
            "odds in maths",
            "--group",
            "pupils",
            "--site",
            "bet.test",
            "--for",
            "1d",
        ])
        .output()
        .expect("grant add runs");
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = curl(&["-x", &g.url(), &url]);
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the grant never took effect: {} {}",
            r.status,
            g.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A reference that is not in the log says so and fails; a mistyped one is an error.
    let out = show("FFFF-FFFF");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not in"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = show("12O4");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("'O' cannot be in a reference"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Headless Chromium through the proxy `g`, with its profile in `profile`, opening `url`
/// (at most a minute).
fn chromium(
    g: &Gatehouse,
    profile: &std::path::Path,
    extra: &[&str],
    url: &str,
) -> std::process::Output {
    std::process::Command::new("timeout")
        .args([
            "60",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--proxy-server={}", g.url()))
        .args(extra)
        .arg(url)
        .output()
        .expect("chromium runs (apt-get install chromium)")
}

/// The block page as a pupil's browser shows it: Chromium renders what was blocked, the
/// category, the group, the time and the reference that the log finds, and a page, not
/// a blank.
#[test]
fn the_block_page_renders_in_chromium() {
    let g = start_on(1, 443, "", "");
    let profile = tempfile::tempdir().expect("profile");
    let out = chromium(
        &g,
        profile.path(),
        &["--dump-dom"],
        "http://bet.test/games?id=7",
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    let text = regex::Regex::new("<[^>]*>")
        .expect("regex")
        .replace_all(&dom, " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let reference = regex::Regex::new(r"Reference ([0-9A-F-]+)")
        .expect("regex")
        .captures(&text)
        .unwrap_or_else(|| panic!("a reference on the page: {text}"))[1]
        .to_string();
    for needed in [
        "This page is blocked",
        "Test Academy",
        "Site http://bet.test/games?id=7",
        "Category gambling",
        "Filtering for pupils",
        &format!("raise a helpdesk ticket quoting reference {reference}"),
    ] {
        assert!(text.contains(needed), "{needed:?} in {text}");
    }
    // The reference is the decision's sequence number, and the log has it.
    let seq = u64::from_str_radix(&reference.replace('-', ""), 16).expect("hex");
    let tail = common::log_tail(&g.dir.path().join("log"));
    assert!(
        tail.lines()
            .any(|l| l.contains("bet.test/games") && l.contains(&format!("#{seq} "))),
        "decision {seq} in the log: {tail}"
    );

    let png = profile.path().join("block.png");
    let shot = format!("--screenshot={}", png.display());
    chromium(
        &g,
        profile.path(),
        &[&shot, "--window-size=800,700"],
        "http://bet.test/",
    );
    let bytes = std::fs::read(&png).expect("a screenshot");
    assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
    // A blank page compresses to a few KiB; the styled page with its text does not.
    assert!(
        bytes.len() > 20_000,
        "screenshot is {} bytes: blank?",
        bytes.len()
    );
}

/// A real browser through the proxy: Chromium sends a GREASE `encrypted_client_hello`
/// extension in every ClientHello, so a rule that refused any hello offering ECH would
/// break HTTPS for every Chromium user. Its hello, as a pupil's (`block_ech` default),
/// must reach the upstream whole, and it does carry the extension.
#[test]
fn chromium_grease_ech_gets_through_to_the_upstream() {
    let capture = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = capture.local_addr().expect("addr").port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = capture.accept() else {
            return;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        // One TLS record: its five-byte header gives its length.
        while got.len() < 5 || got.len() < 5 + (usize::from(got[3]) << 8 | usize::from(got[4])) {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = tx.send(got);
    });
    let g = start_on(1, port, "", "");
    let profile = tempfile::tempdir().expect("profile");
    let out = chromium(
        &g,
        profile.path(),
        &["--dump-dom"],
        &format!("https://origin.test:{port}/"),
    );
    let hello = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no hello reached the upstream: {}", g.log()));
    drop(out);
    let (_, extensions) = tls_parser::parse_tls_client_hello_extensions(hello_extensions(&hello))
        .expect("extensions parse");
    let ech = extensions
        .iter()
        .any(|e| matches!(e, tls_parser::TlsExtension::Unknown(kind, _) if kind.0 == 0xfe0d));
    let sni = extensions.iter().any(|e| {
        matches!(e, tls_parser::TlsExtension::SNI(names) if names.iter().any(|(_, n)| *n == b"origin.test"))
    });
    assert!(sni, "Chromium named origin.test");
    assert!(ech, "Chromium offered (GREASE) ECH");
}

/// A connection to the proxy from `source` (a loopback address), or 127.0.0.1.
fn open_from(g: &Gatehouse, source: Option<&str>) -> Result<TcpStream, String> {
    let stream = match source {
        Some(ip) => {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .map_err(|e| e.to_string())?;
            let addr: SocketAddr = format!("{ip}:0")
                .parse()
                .map_err(|e: std::net::AddrParseError| e.to_string())?;
            s.bind(&addr.into()).map_err(|e| e.to_string())?;
            s.connect(&proxy_addr(g).into())
                .map_err(|e| e.to_string())?;
            TcpStream::from(s)
        }
        None => TcpStream::connect(proxy_addr(g)).map_err(|e| e.to_string())?,
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

/// Sends `CONNECT authority` and reads the answer's head; the socket once it is `200`.
fn open_tunnel(g: &Gatehouse, authority: &str, source: Option<&str>) -> Result<TcpStream, String> {
    let mut s = open_from(g, source)?;
    write!(
        s,
        "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).map_err(|e| e.to_string())? == 0 {
            return Err("closed before the CONNECT answer".into());
        }
        head.push(byte[0]);
    }
    if head.starts_with(b"HTTP/1.1 200") {
        Ok(s)
    } else {
        Err(format!(
            "CONNECT refused: {}",
            String::from_utf8_lossy(&head)
        ))
    }
}

/// Opens a CONNECT tunnel that must be accepted.
fn connect_tunnel(g: &Gatehouse, authority: &str, source: Option<&str>) -> TcpStream {
    open_tunnel(g, authority, source).expect("tunnel opens")
}

/// CONNECTs to `authority` and runs a TLS handshake naming `sni`; Ok when an HTTP
/// request through it gets an answer.
fn tunnel_handshake(
    g: &Gatehouse,
    authority: &str,
    sni: &str,
    source: Option<&str>,
    ca: &TestCa,
) -> Result<(), String> {
    let out = tunnel_get(g, authority, sni, source, ca)?;
    if out.contains("hello from origin") {
        Ok(())
    } else {
        Err(format!("no answer through the tunnel: {out:?}"))
    }
}

/// CONNECTs to `authority`, runs a TLS handshake naming `sni` (trusting `ca`) and sends
/// `GET /` for `sni`; what came back.
fn tunnel_get(
    g: &Gatehouse,
    authority: &str,
    sni: &str,
    source: Option<&str>,
    ca: &TestCa,
) -> Result<String, String> {
    let s = open_tunnel(g, authority, source)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(&ca.pem) {
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    let name =
        rustls::pki_types::ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let conn =
        rustls::ClientConnection::new(client_config(roots), name).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, s);
    tls.write_all(format!("GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    let _ = tls.read_to_string(&mut out);
    Ok(out)
}

/// A TLS client (rustls, ring) trusting `roots`.
fn client_config(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

fn rustls_pemfile_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .collect()
}

/// A spliced tunnel closes when it has been idle for `tunnel_idle_timeout_secs` (within a
/// quarter more), and at `tunnel_max_lifetime_secs` however busy it is.
#[test]
fn tunnels_close_when_idle_and_at_their_lifetime() {
    let ca = TestCa::new();
    let tls = Origin::https(&ca, &["origin.test"]);
    let g = start_on(
        1,
        tls.port,
        "tunnel_idle_timeout_secs = 1\ntunnel_max_lifetime_secs = 3",
        "",
    );
    let open = || {
        let s = open_tunnel(&g, &format!("origin.test:{}", tls.port), None).expect("tunnel");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile_certs(&ca.pem) {
            roots.add(cert).expect("root");
        }
        let name = rustls::pki_types::ServerName::try_from("origin.test").expect("name");
        let conn = rustls::ClientConnection::new(client_config(roots), name).expect("client");
        rustls::StreamOwned::new(conn, s)
    };
    // One kept-alive request, then nothing: the tunnel closes after about a second.
    let ask = |tls: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>| {
        tls.write_all(b"GET / HTTP/1.1\r\nHost: origin.test\r\n\r\n")?;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("hello from origin") {
            let n = tls.read(&mut buf)?;
            if n == 0 {
                return Err(std::io::Error::other("closed"));
            }
            got.extend_from_slice(&buf[..n]);
        }
        Ok::<(), std::io::Error>(())
    };
    let mut idle = open();
    ask(&mut idle).expect("an answer through the tunnel");
    let quiet = Instant::now();
    let mut buf = [0u8; 64];
    let closed = matches!(idle.read(&mut buf), Ok(0) | Err(_));
    let waited = quiet.elapsed();
    assert!(closed, "the idle tunnel is closed");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(2500),
        "closed after {waited:?} idle"
    );
    // Busy all the time: closed at its lifetime all the same.
    let mut busy = open();
    let born = Instant::now();
    while ask(&mut busy).is_ok() {
        assert!(
            born.elapsed() < Duration::from_secs(6),
            "the busy tunnel outlives its lifetime"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let lived = born.elapsed();
    assert!(
        lived >= Duration::from_millis(2500),
        "closed after {lived:?}"
    );
}

#[test]
fn proxy_authentication_407_flow() {
    let origin = Origin::http();
    // A user whose hash is made by `gatehouse user add`, as a technician would.
    let g0 = start(1, "", "");
    let policy = g0.dir.path().join("policy.toml");
    let mut add = common::gatehouse()
        .args(["user", "add", "a.pupil", "--group", "staff", "--config"])
        .arg(&policy)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("user add runs");
    add.stdin
        .take()
        .expect("stdin")
        .write_all(b"correct horse battery\n")
        .expect("password");
    assert!(add.wait().expect("waits").success());
    let users = std::fs::read_to_string(g0.dir.path().join("users.toml")).expect("users file");
    assert!(
        users.contains("$argon2id$") && !users.contains("correct horse"),
        "{users}"
    );
    g0.signal("HUP");
    assert!(g0.wait_for_log("reloaded policy and lists", Duration::from_secs(5)));

    let url = format!("http://social.test:{}/", origin.port);
    let g = &g0;
    let r = curl(&["-x", &g.url(), "--interface", LIBRARY, &url]);
    assert_eq!(r.status, 407, "{r:?}");
    assert!(
        r.headers
            .to_ascii_lowercase()
            .contains("proxy-authenticate: basic realm=\"gatehouse (test academy)\""),
        "{r:?}"
    );
    // (credentials, status): wrong password, unknown user (both recorded), then the right ones — the
    // user's own group (staff) applies, so social media is allowed.
    for (credentials, want) in [
        ("a.pupil:wrong", 407),
        ("nobody:x", 407),
        ("a.pupil:correct horse battery", 200),
    ] {
        let r = curl(&[
            "-x",
            &g.url(),
            "--interface",
            LIBRARY,
            "--proxy-user",
            credentials,
            &url,
        ]);
        assert_eq!(r.status, want, "{credentials}: {r:?}");
    }
    assert!(
        g.wait_for_log("reason=auth_failed", Duration::from_secs(2)),
        "{}",
        g.log()
    );
    // The credentials are for the proxy: they never reach the origin.
    let echo = format!("http://origin.test:{}/echo", origin.port);
    let r = curl(&[
        "-x",
        &g.url(),
        "--interface",
        LIBRARY,
        "--proxy-user",
        "a.pupil:correct horse battery",
        &echo,
    ]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        !r.body.to_ascii_lowercase().contains("proxy-authorization"),
        "{}",
        r.body
    );
    // Garbage credentials are a 407, never a crash.
    let raw = raw_exchange(
        proxy_addr(g),
        format!(
            "GET {url} HTTP/1.1\r\nHost: social.test\r\nProxy-Authorization: Basic %%%\r\n\r\n"
        )
        .as_bytes(),
        Duration::from_secs(2),
    );
    assert!(raw.starts_with("HTTP/1.1 407"), "{raw}");
}

#[test]
fn upstream_failures_are_honest() {
    let origin = Origin::http();
    let g = start(1, "", "");
    // Nothing listens on this port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let r = curl(&["-x", &g.url(), &format!("http://origin.test:{closed}/")]);
    assert_eq!(r.status, 502, "{r:?}");
    assert!(r.body.contains("could not be reached"), "{r:?}");
    // The origin accepts but never answers: 504 after upstream_timeout_secs.
    let started = Instant::now();
    let r = curl(&[
        "-x",
        &g.url(),
        &format!("http://origin.test:{}/hang", origin.port),
    ]);
    assert_eq!(r.status, 504, "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // A name that does not resolve.
    let r = curl(&["-x", &g.url(), "http://does-not-exist.invalid/"]);
    assert_eq!(r.status, 502, "{r:?}");
    // No pivot into the school's network: internal addresses refused, by name or number.
    let r = curl(&["-x", &g.url(), "http://intranet.test/"]);
    assert_eq!(r.status, 403, "{r:?}");
    // The pivot attempt is recorded with the request's own method, not as a GET.
    let r = curl(&[
        "-x",
        &g.url(),
        "-X",
        "POST",
        "--data",
        "q=1",
        "http://intranet.test/form",
    ]);
    assert_eq!(r.status, 403, "{r:?}");
    // (The policy allowed it first; the refusal is the second record of the request.)
    let tail = common::log_tail(&g.dir.path().join("log"));
    let refusal = tail
        .lines()
        .find(|l| l.contains("BLOCK") && l.contains("intranet.test/form"))
        .unwrap_or_else(|| panic!("the refusal in the log: {tail}"));
    assert!(
        refusal.contains("BLOCK  POST http://intranet.test/form")
            && refusal.contains("internal_destination"),
        "{refusal}"
    );
    let r = curl(&[
        "-x",
        &g.url(),
        "--interface",
        STAFF,
        &format!("http://sneaky.test:{}/", origin.port),
    ]);
    assert_eq!(
        r.status, 403,
        "127.0.0.9 is not in allow_internal_destinations: {r:?}"
    );
    let r = curl(&[
        "-x",
        &g.url(),
        "--interface",
        STAFF,
        &format!("http://127.0.0.1:{}/", g.port),
    ]);
    assert_eq!(r.status, 403, "the proxy never dials itself: {r:?}");
}

/// An origin that counts its connections, answers each request with `ok` on a
/// keep-alive connection, and closes a connection left idle for 300 ms without saying
/// so (as servers' keep-alive timeouts do).
fn counting_origin() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            seen.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_millis(300)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return, // idle too long, or gone: close
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if stream.write_all(reply).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, count)
}

#[test]
fn upstream_connections_are_reused_and_stale_ones_replaced() {
    use std::sync::atomic::Ordering;
    let (port, connections) = counting_origin();
    let g = start(1, "", "");
    let url = format!("http://origin.test:{port}/pooled");
    // Three clients, one after another: one upstream connection serves them all.
    for _ in 0..3 {
        let r = curl(&["-x", &g.url(), &url]);
        assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{r:?}");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    // The origin drops the idle connection; the next request gets a fresh one and
    // never sees the closed one.
    std::thread::sleep(Duration::from_millis(700));
    for _ in 0..2 {
        let r = curl(&["-x", &g.url(), &url]);
        assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{r:?}");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[test]
fn malformed_and_oversized_requests() {
    let origin = Origin::http();
    let g = start(1, "", "");
    let url = format!("http://origin.test:{}/", origin.port);
    let big = format!("X-Big: {}", "a".repeat(70 * 1024));
    let r = curl(&["-x", &g.url(), "-H", &big, &url]);
    assert_eq!(r.status, 431, "{:?}", r.status);
    let mut args: Vec<String> = vec!["-x".into(), g.url()];
    for i in 0..120 {
        args.push("-H".into());
        args.push(format!("X-H{i}: v"));
    }
    args.push(url.clone());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(curl(&refs).status, 431);
    let long = format!("{url}{}", "p".repeat(9000));
    assert_eq!(curl(&["-x", &g.url(), &long]).status, 414);

    let addr = proxy_addr(&g);
    let rows: &[(&str, &str)] = &[
        ("GET / HTTP/1.1\r\nHost: origin.test\r\n\r\n", "HTTP/1.1 400"),
        ("POST URL HTTP/1.1\r\nHost: origin.test\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", "HTTP/1.1 400"),
        ("POST URL HTTP/1.1\r\nHost: origin.test\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", "HTTP/1.1 400"),
        ("POST URL HTTP/1.1\r\nHost: origin.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "HTTP/1.1 400"),
        ("POST URL HTTP/1.1\r\nHost: origin.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", "HTTP/1.1 400"),
        ("POST URL HTTP/1.1\r\nHost: origin.test\r\nTransfer-Encoding:\tchunked\r\nTransfer-Encoding: x\r\n\r\n", "HTTP/1.1 400"),
        ("POST URL HTTP/1.1\r\nHost: origin.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nbad\r\n0\r\n\r\n", "HTTP/1.1 400"),
        ("GET URL HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", "HTTP/1.1 400"),
        ("GARBAGE\r\n\r\n", "HTTP/1.1 400"),
        ("CONNECT bad..name:443 HTTP/1.1\r\nHost: bad..name:443\r\n\r\n", "HTTP/1.1 400"),
    ];
    for (request, want) in rows {
        let request = request.replace("URL", &url);
        let answer = raw_exchange(addr, request.as_bytes(), Duration::from_secs(3));
        assert!(answer.starts_with(want), "{request:?} → {answer:?}");
    }
    // The proxy is still serving.
    assert_eq!(curl(&["-x", &g.url(), &url]).status, 200);
    // A request that reached Gatehouse but named no whole address is recorded, with
    // the reason bad_request (those hyper refused before Gatehouse saw one cannot be).
    let tail = common::log_tail(&g.dir.path().join("log"));
    assert!(
        tail.lines()
            .any(|l| l.contains("BLOCK") && l.contains("GET /") && l.ends_with("bad_request")),
        "{tail}"
    );
    assert!(
        tail.lines()
            .any(|l| l.contains("CONNECT bad..name:443") && l.ends_with("bad_request")),
        "{tail}"
    );
}

#[test]
fn slow_clients_are_cut_off() {
    let g = start(1, "", "");
    // A client that never finishes its head gets 408 after head_timeout_secs (1 s).
    let started = Instant::now();
    let answer = raw_exchange(
        proxy_addr(&g),
        b"GET http://origin.test/ HTTP/1.1\r\nHost: origin",
        Duration::from_secs(5),
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn sighup_with_a_broken_policy_keeps_the_old_one() {
    let origin = Origin::http();
    let g = start_on(1, 1, "", "");
    let url = format!("http://social.test:{}/", origin.port);
    assert_eq!(curl(&["-x", &g.url(), &url]).status, 403);
    let path = g.dir.path().join("policy.toml");
    let good = std::fs::read_to_string(&path).expect("policy");
    std::fs::write(
        &path,
        good.replace(
            "block = [\"gambling\", \"social\"]",
            "block = [\"gambling\", \"sociall\"]",
        ),
    )
    .expect("break it");
    g.signal("HUP");
    assert!(
        g.wait_for_log(
            "reload refused; the previous policy stays in force",
            Duration::from_secs(5)
        ),
        "{}",
        g.log()
    );
    assert!(
        g.log().contains("unknown category \"sociall\""),
        "{}",
        g.log()
    );
    assert_eq!(
        curl(&["-x", &g.url(), &url]).status,
        403,
        "old policy still in force"
    );
    // The refusal is in the decision log too, with the problem.
    let log = g.dir.path().join("log");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let tail = common::log_tail(&log);
        if tail.lines().any(|l| {
            l.contains("reload policy: REFUSED") && l.contains("unknown category \"sociall\"")
        }) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{tail}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A good change applies.
    std::fs::write(
        &path,
        good.replace(
            "block = [\"gambling\", \"social\"]",
            "block = [\"gambling\"]",
        ),
    )
    .expect("fix it");
    g.signal("HUP");
    assert!(g.wait_for_log("reloaded policy and lists", Duration::from_secs(5)));
    assert_eq!(curl(&["-x", &g.url(), &url]).status, 200);
}

#[test]
fn sigterm_drains_requests_in_flight() {
    let origin = Origin::http();
    let mut g = start_on(1, 1, "", "");
    let url = format!("http://origin.test:{}/slow/1500", origin.port);
    let proxy = g.url();
    let slow = std::thread::spawn(move || curl(&["-x", &proxy, &url]));
    std::thread::sleep(Duration::from_millis(400));
    g.signal("TERM");
    let r = slow.join().expect("curl thread");
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "slow response"),
        "the request in flight finished"
    );
    assert_eq!(g.wait_exit(Duration::from_secs(10)), Some(0));
    // New connections are no longer accepted.
    assert!(TcpStream::connect(proxy_addr(&g)).is_err());
}

/// A group with YouTube's Restricted Mode moderate (search strict, the default).
const SENIOR: &str = "127.0.0.4";

/// Safe search: pupils get the defaults (search on, YouTube strict), seniors YouTube
/// moderate, staff neither. The engines' own names resolve to the origins at 127.0.0.1;
/// their safe-search addresses to three others, on the same port.
fn safe_search_policy(port: u16) -> String {
    format!(
        r#"[school]
name = "Test Academy"
[lists]
dir = "lists"
[identity]
default_group = "pupils"
[[identity.subnets]]
cidr = "127.0.0.2/32"
group = "staff"
[[identity.subnets]]
cidr = "127.0.0.4/32"
group = "seniors"
[groups.pupils]
mode = "blocklist"
[groups.seniors]
mode = "blocklist"
youtube_restrict = "moderate"
[groups.staff]
mode = "blocklist"
safe_search = false
youtube_restrict = "off"
[log]
dir = "log"
[admin]
listen = "127.0.0.1:0"
[server]
listen = "127.0.0.1:0"
allow_internal_destinations = ["127.0.0.1/32", "127.0.0.5/32", "127.0.0.6/32", "127.0.0.7/32"]
tunnel_ports = [443, {port}]
[server.resolve]
"www.google.com" = "127.0.0.1"
"www.google.co.uk" = "127.0.0.1"
"www.youtube.com" = "127.0.0.1"
"origin.test" = "127.0.0.1"
"forcesafesearch.google.com" = "127.0.0.5"
"restrict.youtube.com" = "127.0.0.6"
"restrictmoderate.youtube.com" = "127.0.0.7"
"#
    )
}

/// The origins of [`safe_search_policy`]: each answers with its label.
const SAFE_SEARCH_ORIGINS: [([u8; 4], &str); 4] = [
    ([127, 0, 0, 1], "engine"),
    ([127, 0, 0, 5], "forcesafesearch"),
    ([127, 0, 0, 6], "restrict"),
    ([127, 0, 0, 7], "restrictmoderate"),
];

/// `gatehouse log export --format jsonl` of a running proxy's log.
fn exported(g: &Gatehouse) -> Vec<serde_json::Value> {
    let out = common::gatehouse()
        .args(["log", "export", "--format", "jsonl", "--dir"])
        .arg(g.dir.path().join("log"))
        .output()
        .expect("log export runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The first exported decision on `url` by `group`.
fn record_of<'a>(rows: &'a [serde_json::Value], url: &str, group: &str) -> &'a serde_json::Value {
    rows.iter()
        .find(|r| r["url"] == url && r["group"] == group)
        .unwrap_or_else(|| panic!("a record of {url} for {group}: {rows:#?}"))
}

/// A pupil's HTTPS to Google or YouTube is dialled to the engine's safe-search address
/// with the pupil's TLS passed through (the certificate is for the name asked for, and
/// curl checks it); staff's is not; YouTube strict or moderate by group; a ClientHello
/// that names a search engine behind another host or an address is dialled to the safe
/// address too. Every such decision records it, and the metric counts it per engine.
#[test]
fn safe_search_dials_the_engines_safe_address_without_interception() {
    let ca = TestCa::new();
    let names = [
        "www.google.com",
        "www.google.co.uk",
        "www.youtube.com",
        "origin.test",
    ];
    let (port, _origins) = Origin::labelled(Some(&ca), &names, &SAFE_SEARCH_ORIGINS);
    let policy = safe_search_policy(port);
    let g = Gatehouse::start_threads(&[("policy.toml", policy.as_str())], 1);
    let dir = tempfile::tempdir().expect("dir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).expect("write CA");
    let ca_arg = ca_file.to_str().expect("path");

    // (source, host, origin that answers)
    let rows: &[(&str, &str, &str)] = &[
        (PUPIL, "www.google.com", "forcesafesearch"),
        (PUPIL, "www.google.co.uk", "forcesafesearch"),
        (PUPIL, "www.youtube.com", "restrict"),
        (PUPIL, "origin.test", "engine"),
        (SENIOR, "www.google.com", "forcesafesearch"),
        (SENIOR, "www.youtube.com", "restrictmoderate"),
        (STAFF, "www.google.com", "engine"),
        (STAFF, "www.youtube.com", "engine"),
    ];
    for (source, host, answers) in rows {
        let r = curl(&[
            "-x",
            &g.url(),
            "--interface",
            source,
            "--cacert",
            ca_arg,
            &format!("https://{host}:{port}/"),
        ]);
        assert_eq!(
            (r.exit, r.status, r.body.as_str()),
            (0, 200, format!("hello from {answers}").as_str()),
            "{host} from {source}: {r:?}"
        );
    }

    // Fronting: (CONNECT target, SNI, source, origin that answers).
    let named = format!("origin.test:{port}");
    let bare = format!("127.0.0.1:{port}");
    let google = format!("www.google.com:{port}");
    let fronted: &[(&str, &str, &str, &str)] = &[
        (&named, "www.google.com", PUPIL, "forcesafesearch"),
        (&bare, "www.youtube.com", SENIOR, "restrictmoderate"),
        // One engine's name behind another's: the ClientHello's counts.
        (&google, "www.youtube.com", PUPIL, "restrict"),
        (&named, "www.google.com", STAFF, "engine"),
    ];
    for (authority, sni, source, answers) in fronted {
        let out = tunnel_get(&g, authority, sni, Some(source), &ca)
            .unwrap_or_else(|e| panic!("CONNECT {authority} SNI {sni}: {e}"));
        assert!(
            out.contains(&format!("hello from {answers}")),
            "CONNECT {authority} SNI {sni} from {source}: {out:?}"
        );
    }

    // The records say what was dialled, and staff's say nothing.
    let rows = exported(&g);
    let google_strict = serde_json::json!({
        "engine": "google", "level": "strict", "dialled": "forcesafesearch.google.com"
    });
    assert_eq!(
        record_of(&rows, &google, "pupils")["safe_search"],
        google_strict
    );
    assert_eq!(
        record_of(&rows, &format!("www.youtube.com:{port}"), "seniors")["safe_search"],
        serde_json::json!({
            "engine": "youtube", "level": "moderate", "dialled": "restrictmoderate.youtube.com"
        })
    );
    assert!(record_of(&rows, &google, "staff")["safe_search"].is_null());
    assert!(record_of(&rows, &named, "staff")["safe_search"].is_null());
    let fronting = rows
        .iter()
        .find(|r| {
            r["url"] == named.as_str() && r["sni"] == "www.google.com" && r["group"] == "pupils"
        })
        .expect("the record of the fronted tunnel");
    assert_eq!(fronting["safe_search"], google_strict);
    // The honest tunnel to that host was not rewritten.
    assert!(record_of(&rows, &named, "pupils")["safe_search"].is_null());
    let behind = rows
        .iter()
        .find(|r| r["url"] == google.as_str() && r["sni"] == "www.youtube.com")
        .expect("the record of YouTube behind Google's name");
    assert_eq!(behind["safe_search"]["dialled"], "restrict.youtube.com");

    // `log show` on the reference says so in words.
    let seq = fronting["seq"].as_u64().expect("seq");
    let out = common::gatehouse()
        .args(["log", "show", "--config"])
        .arg(g.dir.path().join("policy.toml"))
        .arg(format!("#{seq}"))
        .output()
        .expect("log show runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "safe search enforced: google (strict), dialled forcesafesearch.google.com instead"
        ),
        "{text}"
    );

    // Counted per engine: Google for two pupils' names, a senior and a fronted tunnel;
    // YouTube for a pupil, a senior, and two fronted tunnels; Bing not at all.
    let metrics = curl(&[&format!("http://127.0.0.1:{}/metrics", g.admin_port)]).body;
    for line in [
        "gatehouse_safe_search_rewrites_total{engine=\"google\"} 4",
        "gatehouse_safe_search_rewrites_total{engine=\"youtube\"} 4",
        "gatehouse_safe_search_rewrites_total{engine=\"bing\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
}

/// Plain HTTP gets the same treatment: the request keeps its Host header and is sent to
/// the safe-search address; and the keep-alive pool never lends a connection dialled to
/// one name to a request that is to go to another (groups alternate on one host).
#[test]
fn safe_search_for_plain_http_keeps_the_host_and_pools_apart() {
    let (port, _origins) = Origin::labelled(None, &[], &SAFE_SEARCH_ORIGINS);
    let policy = safe_search_policy(port);
    let g = Gatehouse::start_threads(&[("policy.toml", policy.as_str())], 1);
    let google = format!("http://www.google.com:{port}/who");
    let youtube = format!("http://www.youtube.com:{port}/who");
    // (source, URL, origin that answers) — in this order, each after the other's
    // connection went back to the pool.
    let rows: &[(&str, &str, &str)] = &[
        (STAFF, &google, "engine"),
        (PUPIL, &google, "forcesafesearch"),
        (STAFF, &google, "engine"),
        (PUPIL, &google, "forcesafesearch"),
        (PUPIL, &youtube, "restrict"),
        (SENIOR, &youtube, "restrictmoderate"),
        (PUPIL, &youtube, "restrict"),
        (STAFF, &youtube, "engine"),
        (SENIOR, &youtube, "restrictmoderate"),
    ];
    for (source, url, answers) in rows {
        let r = curl(&["-x", &g.url(), "--interface", source, url]);
        let host = url.trim_start_matches("http://").trim_end_matches("/who");
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, format!("{answers} for {host}").as_str()),
            "{url} from {source}: {r:?}"
        );
    }
    let rows = exported(&g);
    assert_eq!(
        record_of(&rows, &google, "pupils")["safe_search"],
        serde_json::json!({
            "engine": "google", "level": "strict", "dialled": "forcesafesearch.google.com"
        })
    );
    assert!(record_of(&rows, &google, "staff")["safe_search"].is_null());
    assert_eq!(
        record_of(&rows, &youtube, "pupils")["safe_search"]["dialled"],
        "restrict.youtube.com"
    );
}
