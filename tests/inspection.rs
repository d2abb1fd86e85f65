//! TLS inspection as a pupil's device sees it: `gatehouse run` with a school CA, real
//! TLS origins on loopback (their own test CA, trusted through `[inspection]
//! extra_roots`; real names pointed at loopback by `[server.resolve]`), and curl,
//! rustls and headless Chromium trusting the school CA.
//!
//! Groups by source address: 127.0.0.1 pupils (`inspect_tls`), 127.0.0.2 staff (not
//! inspected).

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests are shell

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::servers::{curl, CurlResult, Gatehouse, Origin, TestCa};

const PUPIL: &str = "127.0.0.1";
const STAFF: &str = "127.0.0.2";

/// The names the good origin has a certificate for.
const NAMES: &[&str] = &[
    "www.allowed.test",
    "bank.test",
    "www.google.com",
    "accounts.google.com",
    "www.youtube.com",
    "login.microsoftonline.com",
];

struct Setup {
    g: Gatehouse,
    /// The good origin's port (every name in [`NAMES`]).
    port: u16,
    /// A TLS origin whose certificate no one trusts (`badcert.test`).
    bad_port: u16,
    /// The school CA, PEM file (what devices install).
    school_pem: PathBuf,
    /// The origins' own CA, PEM file.
    origin_pem: PathBuf,
    _origins: (Origin, Origin),
    _files: tempfile::TempDir,
}

fn policy(port: u16, bad_port: u16) -> String {
    format!(
        r#"[school]
name = "Test Academy"
[lists]
dir = "lists"
[categories.csam]
severity = "illegal"
block_message = "This page is on the Internet Watch Foundation's list (test splash)."
[categories.gambling]
severity = "inappropriate"
[categories.self-harm]
severity = "safeguarding"
[categories.private]
severity = "productivity"
[identity]
default_group = "pupils"
[[identity.subnets]]
cidr = "127.0.0.2/32"
group = "staff"
[groups.pupils]
mode = "blocklist"
block = ["gambling"]
inspect_tls = true
microsoft_tenants = ["school.example", "partner.example"]
microsoft_tenant_context = "00000000-1111-2222-3333-444444444444"
google_allowed_domains = ["school.example"]
[groups.staff]
mode = "blocklist"
block = ["gambling"]
safe_search = false
youtube_restrict = "off"
[inspection]
ca_cert = "ca/ca.crt"
ca_key = "ca/ca.key"
extra_roots = ["origin-ca.pem"]
never_inspect_sites = ["bank.test"]
never_inspect_categories = ["private"]
[log]
dir = "log"
[admin]
listen = "127.0.0.1:0"
[server]
listen = "127.0.0.1:0"
allow_internal_destinations = ["127.0.0.1/32"]
tunnel_ports = [443, {port}, {bad_port}]
upstream_timeout_secs = 5
[server.resolve]
"www.allowed.test" = "127.0.0.1"
"bank.test" = "127.0.0.1"
"badcert.test" = "127.0.0.1"
"www.google.com" = "127.0.0.1"
"accounts.google.com" = "127.0.0.1"
"forcesafesearch.google.com" = "127.0.0.1"
"www.youtube.com" = "127.0.0.1"
"restrict.youtube.com" = "127.0.0.1"
"login.microsoftonline.com" = "127.0.0.1"
"#
    )
}

fn setup() -> Setup {
    let school = TestCa::new();
    let origin_ca = TestCa::new();
    let rogue = TestCa::new();
    let good = Origin::https(&origin_ca, NAMES);
    let bad = Origin::https(&rogue, &["badcert.test"]);
    let policy = policy(good.port, bad.port);
    let key = school.key_pem();
    let g = Gatehouse::start(&[
        ("policy.toml", policy.as_str()),
        ("ca/ca.crt", school.pem.as_str()),
        ("ca/ca.key", key.as_str()),
        ("origin-ca.pem", origin_ca.pem.as_str()),
        ("lists/csam/urls", "www.allowed.test/abuse/\n"),
        ("lists/gambling/urls", "www.allowed.test/casino\n"),
        ("lists/self-harm/search_terms", "hurt myself\n"),
        ("lists/private/domains", "private.test\n"),
    ]);
    let files = tempfile::tempdir().expect("dir");
    let school_pem = files.path().join("school.pem");
    std::fs::write(&school_pem, &school.pem).expect("write");
    let origin_pem = files.path().join("origin.pem");
    std::fs::write(&origin_pem, &origin_ca.pem).expect("write");
    Setup {
        port: good.port,
        bad_port: bad.port,
        g,
        school_pem,
        origin_pem,
        _origins: (good, bad),
        _files: files,
    }
}

impl Setup {
    /// curl through the proxy from `source`, trusting `ca`.
    fn curl(&self, source: &str, ca: &Path, extra: &[&str], url: &str) -> CurlResult {
        let proxy = self.g.url();
        let mut args = vec!["-x", proxy.as_str(), "--interface", source, "--cacert"];
        let ca = ca.to_str().expect("path");
        args.push(ca);
        args.extend_from_slice(extra);
        args.push(url);
        curl(&args)
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.port)
    }

    fn tail(&self) -> String {
        common::log_tail(&self.g.dir.path().join("log"))
    }
}

/// An inspected pupil gets the school's block page over HTTPS for a blocked path on an
/// allowed host, and the page itself for the rest of the host; HTTP/2 as well.
#[test]
fn inspected_requests_are_decided_on_their_full_url() {
    let s = setup();
    let school = s.school_pem.clone();
    let r = s.curl(PUPIL, &school, &[], &s.url("www.allowed.test", "/"));
    assert_eq!(
        (r.exit, r.status, r.body.as_str()),
        (0, 200, "hello from origin"),
        "{r:?}"
    );

    let r = s.curl(
        PUPIL,
        &school,
        &[],
        &s.url("www.allowed.test", "/casino?x=1"),
    );
    assert_eq!((r.exit, r.status), (0, 403), "{r:?}");
    assert!(r.body.contains("This page is blocked"), "{}", r.body);
    assert!(r.body.contains("gambling"), "{}", r.body);
    assert!(r.headers.contains("x-gatehouse-reference"), "{}", r.headers);

    // HTTP/2 towards the client (ALPN h2), for an allowed and a blocked page.
    let r = s.curl(
        PUPIL,
        &school,
        &["--http2", "-v"],
        &s.url("www.allowed.test", "/"),
    );
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "hello from origin"),
        "{r:?}"
    );
    assert!(r.headers.contains("\r\nHTTP/2 200"), "{}", r.headers);
    let r = s.curl(
        PUPIL,
        &school,
        &["--http2"],
        &s.url("www.allowed.test", "/casino"),
    );
    assert!(r.headers.contains("\r\nHTTP/2 403"), "{}", r.headers);
    assert!(r.body.contains("This page is blocked"), "{}", r.body);

    // Each request has its own record with its full URL; the tunnel's says inspected.
    let tail = s.tail();
    let casino = format!("https://www.allowed.test:{}/casino?x=1", s.port);
    assert!(
        tail.lines()
            .any(|l| l.contains(&casino) && l.contains("BLOCK") && l.contains("[gambling]")),
        "{tail}"
    );
    assert!(
        tail.lines()
            .any(|l| l.contains("CONNECT") && l.contains("enforced tls-inspected: ")),
        "{tail}"
    );

    // A request inside naming another host is misdirected, not forwarded.
    let r = s.curl(
        PUPIL,
        &school,
        &["-H", "Host: bank.test"],
        &s.url("www.allowed.test", "/who"),
    );
    assert_eq!(r.status, 421, "{r:?}");
    // … and recorded, as a way round the decision the tunnel's own site had.
    let tail = s.tail();
    assert!(
        tail.lines().any(|l| l.contains("https://bank.test/who")
            && l.contains("BLOCK")
            && l.ends_with("misdirected")),
        "{tail}"
    );

    // The leaf cache: one leaf minted for www.allowed.test, then hits.
    let metrics = curl(&[&format!("http://127.0.0.1:{}/metrics", s.g.admin_port)]).body;
    let count = |result: &str| -> u64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "gatehouse_inspection_leaf_cache_total{{result=\"{result}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert!(count("miss") >= 1 && count("hit") >= 3, "{metrics}");
}

/// Header and parameter controls reach the origin, replacing what the client sent, and
/// the records say what was enforced; a search of concern typed into Google over HTTPS
/// is in the log and in the weekly report.
#[test]
fn controls_reach_the_origin_and_searches_reach_the_report() {
    let s = setup();
    let school = s.school_pem.clone();
    let r = s.curl(
        PUPIL,
        &school,
        &[],
        &s.url("www.google.com", "/search?q=how+to+hurt+myself&safe=off"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body
            .starts_with("GET /search?q=how+to+hurt+myself&safe=active\n"),
        "{}",
        r.body
    );
    let r = s.curl(
        PUPIL,
        &school,
        &["-H", "YouTube-Restrict: Moderate"],
        &s.url("www.youtube.com", "/echo"),
    );
    assert!(r.body.contains("youtube-restrict: Strict\n"), "{}", r.body);
    assert!(!r.body.contains("Moderate"), "{}", r.body);
    let r = s.curl(
        PUPIL,
        &school,
        &["-H", "Restrict-Access-To-Tenants: evil.example"],
        &s.url("login.microsoftonline.com", "/echo"),
    );
    assert!(
        r.body
            .contains("restrict-access-to-tenants: school.example,partner.example\n"),
        "{}",
        r.body
    );
    assert!(
        r.body
            .contains("restrict-access-context: 00000000-1111-2222-3333-444444444444\n"),
        "{}",
        r.body
    );
    assert!(!r.body.contains("evil.example"), "{}", r.body);
    let r = s.curl(PUPIL, &school, &[], &s.url("accounts.google.com", "/echo"));
    assert!(
        r.body
            .contains("x-googapps-allowed-domains: school.example\n"),
        "{}",
        r.body
    );

    let tail = s.tail();
    let search = format!(
        "https://www.google.com:{}/search?q=how+to+hurt+myself",
        s.port
    );
    let line = tail
        .lines()
        .find(|l| l.contains(&search))
        .unwrap_or_else(|| panic!("the search is recorded: {tail}"));
    assert!(line.contains("[self-harm]"), "{line}");
    assert!(line.contains("enforced safe=active"), "{line}");
    assert!(line.contains("safe search google strict"), "{line}");
    assert!(
        tail.lines()
            .any(|l| l.contains("youtube.com") && l.contains("YouTube-Restrict: Strict")),
        "{tail}"
    );

    // The weekly report of this week shows the search.
    let week = chrono::Utc::now().format("%G-W%V").to_string();
    let out = common::gatehouse()
        .args(["report", "--week", &week, "--format", "json", "--config"])
        .arg(s.g.dir.path().join("policy.toml"))
        .output()
        .expect("report runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("how to hurt myself"), "{report}");
}

/// Sites that are never inspected, and groups that do not inspect, are spliced: the
/// client sees the origin's own certificate. An upstream whose certificate does not
/// verify is refused with a page that says why.
#[test]
fn exempt_sites_are_spliced_and_bad_certificates_refused() {
    let s = setup();
    let (school, origin) = (s.school_pem.clone(), s.origin_pem.clone());
    // never_inspect_sites: the origin's own certificate, so only its CA verifies.
    let r = s.curl(PUPIL, &origin, &[], &s.url("bank.test", "/"));
    assert_eq!(
        (r.exit, r.status, r.body.as_str()),
        (0, 200, "hello from origin"),
        "{r:?} {}",
        s.tail()
    );
    let r = s.curl(PUPIL, &school, &[], &s.url("bank.test", "/"));
    assert_ne!(
        r.exit, 0,
        "the school CA did not sign bank.test's certificate: {r:?}"
    );
    // A group without inspect_tls: spliced too.
    let r = s.curl(STAFF, &origin, &[], &s.url("www.youtube.com", "/"));
    assert_eq!((r.exit, r.status), (0, 200), "{r:?}");

    // A pupil's tunnel to a site whose certificate no one trusts.
    let bad = format!("https://badcert.test:{}/", s.bad_port);
    let r = s.curl(PUPIL, &school, &[], &bad);
    assert_eq!((r.exit, r.status), (0, 502), "{r:?}");
    assert!(
        r.body.contains("security certificate is not valid"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("badcert.test did not prove who it is"),
        "{}",
        r.body
    );
    let tail = s.tail();
    assert!(
        tail.lines()
            .any(|l| l.contains("badcert.test") && l.contains("upstream_certificate")),
        "{tail}"
    );
}

/// A host with pages on an illegal list is inspected for every group when the school CA
/// is there: staff (no inspect_tls) reach the rest of the host, and the listed page
/// gets the block page with the category's splash text. `gatehouse check` says so.
#[test]
fn illegal_pages_over_https_are_inspected_for_every_group() {
    let s = setup();
    let school = s.school_pem.clone();
    let r = s.curl(STAFF, &school, &[], &s.url("www.allowed.test", "/"));
    assert_eq!((r.exit, r.status), (0, 200), "{r:?}");
    let r = s.curl(
        STAFF,
        &school,
        &[],
        &s.url("www.allowed.test", "/abuse/1.jpg"),
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.contains("test splash"), "{}", r.body);
    assert!(!r.body.contains("raise a helpdesk ticket"), "{}", r.body);
    let tail = s.tail();
    assert!(
        tail.lines()
            .any(|l| l.contains("CONNECT") && l.contains("tls-inspected: illegal_pages")),
        "{tail}"
    );
    let out = common::gatehouse()
        .args(["check", "--config"])
        .arg(s.g.dir.path().join("policy.toml"))
        .output()
        .expect("check runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("1 host(s) with URL-level entries are inspected for every group"),
        "{text}"
    );
}

/// A WebSocket upgrade inside an inspected tunnel reaches the origin and echoes.
#[test]
fn websocket_inside_an_inspected_tunnel() {
    let s = setup();
    let mut tcp =
        TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], s.g.port))).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let authority = format!("www.allowed.test:{}", s.port);
    write!(
        tcp,
        "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"
    )
    .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(tcp.read(&mut byte).expect("read"), 1, "closed");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&s.school_pem).expect("read");
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("cert")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("www.allowed.test").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET /ws HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    .expect("write");
    let mut got = Vec::new();
    while !got.ends_with(b"\r\n\r\n") {
        let n = tls.read(&mut byte).expect("read the 101");
        assert_eq!(n, 1, "closed: {}", String::from_utf8_lossy(&got));
        got.push(byte[0]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    tls.write_all(b"ping over inspected websocket")
        .expect("write");
    let mut echo = [0u8; 29];
    tls.read_exact(&mut echo).expect("echo");
    assert_eq!(&echo, b"ping over inspected websocket");
}

/// Headless Chromium trusting the school CA (by its public key's hash) shows the block
/// page over HTTPS for a blocked path on an allowed host.
#[test]
fn chromium_shows_the_block_page_over_https() {
    let s = setup();
    let pem = std::fs::read(&s.school_pem).expect("read");
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).expect("cert");
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("x509");
    let spki = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    use base64::Engine;
    let hash = base64::engine::general_purpose::STANDARD.encode(spki.as_ref());
    let profile = tempfile::tempdir().expect("profile");
    let out = std::process::Command::new("timeout")
        .args([
            "60",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--proxy-server={}", s.g.url()))
        .arg(format!("--ignore-certificate-errors-spki-list={hash}"))
        .arg(s.url("www.allowed.test", "/casino"))
        .output()
        .expect("chromium runs (apt-get install chromium)");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("This page is blocked"),
        "{dom}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dom.contains(&format!("https://www.allowed.test:{}/casino", s.port)),
        "{dom}"
    );
}
