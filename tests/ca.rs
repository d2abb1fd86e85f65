//! The school CA as real processes: `gatehouse ca init` and `ca show` checked against
//! openssl, `gatehouse check`'s report of it, and the enrolment listener of `gatehouse
//! run` driven by curl.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests are shell: they read files and clocks

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::servers::{curl, Gatehouse};
use common::{gatehouse, tree};

/// A small policy whose CA lives in `ca/` beside it; `inspection` is appended to the
/// `[inspection]` section.
fn policy(inspection: &str) -> String {
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
"#
    )
}

fn files(policy: &str) -> tempfile::TempDir {
    tree(&[
        ("policy.toml", policy),
        ("lists/gambling/domains", "bet.test\n"),
    ])
}

/// Runs gatehouse with `args` and `--config DIR/policy.toml`: exit code, stdout, stderr.
fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = gatehouse()
        .args(args)
        .arg("--config")
        .arg(dir.join("policy.toml"))
        .output()
        .expect("gatehouse runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs openssl with `args`; its stdout, which must succeed.
fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs (install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// openssl's fingerprint of the certificate at `cert` with `digest` (`-sha256`): the
/// colon-separated hex after `=`.
fn openssl_fingerprint(cert: &Path, digest: &str) -> String {
    let path = cert.to_str().expect("utf-8 path");
    let out = openssl(&["x509", "-in", path, "-noout", "-fingerprint", digest]);
    out.trim()
        .split_once('=')
        .map(|(_, fp)| fp.to_string())
        .expect("openssl prints NAME=FINGERPRINT")
}

/// The value after `label` on the line of `text` that starts with it.
fn field<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .map(str::trim)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("file exists")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn ca_init_makes_a_p256_ca_naming_the_school_and_keeps_it() {
    let dir = files(&policy(""));
    let (cert, key) = (dir.path().join("ca/ca.crt"), dir.path().join("ca/ca.key"));

    let (code, out, err) = run(dir.path(), &["ca", "init"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("Created the school CA for Test Academy"),
        "{out}"
    );
    assert_eq!(mode(&key), 0o600, "the key is for its owner only");
    assert_eq!(mode(&dir.path().join("ca")), 0o700);

    let cert_path = cert.to_str().expect("utf-8 path");
    let text = openssl(&["x509", "-in", cert_path, "-noout", "-text"]);
    for expected in [
        "CA:TRUE, pathlen:0",
        "Certificate Sign, CRL Sign",
        "Subject: CN = Test Academy Gatehouse inspection CA, O = Test Academy",
        "Issuer: CN = Test Academy Gatehouse inspection CA, O = Test Academy",
        "ecdsa-with-SHA256",
        "prime256v1",
    ] {
        assert!(text.contains(expected), "{expected:?} not in\n{text}");
    }
    // Self-signed, and a root that verifies itself.
    let verified = openssl(&["verify", "-CAfile", cert_path, cert_path]);
    assert!(verified.contains(": OK"), "{verified}");
    let key_text = openssl(&[
        "pkey",
        "-in",
        key.to_str().expect("utf-8 path"),
        "-noout",
        "-text",
    ]);
    assert!(
        key_text.contains("prime256v1") || key_text.contains("P-256"),
        "{key_text}"
    );

    // A second init without --force changes nothing and says why.
    let (cert_before, key_before) = (
        std::fs::read(&cert).expect("cert"),
        std::fs::read(&key).expect("key"),
    );
    let (code, out, err) = run(dir.path(), &["ca", "init"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("a school CA already exists") && err.contains("--force"),
        "{err}"
    );
    assert!(err.contains("enrolled again"), "{err}");
    assert_eq!(std::fs::read(&cert).expect("cert"), cert_before);
    assert_eq!(std::fs::read(&key).expect("key"), key_before);

    // ca show: the fingerprints are openssl's, and the PEM is the file's.
    let (code, out, err) = run(dir.path(), &["ca", "show"]);
    assert_eq!(code, 0, "{err}");
    let sha256 = openssl_fingerprint(&cert, "-sha256");
    assert_eq!(field(&out, "SHA-256:"), Some(sha256.as_str()), "{out}");
    let sha1 = openssl_fingerprint(&cert, "-sha1");
    assert_eq!(field(&out, "SHA-1:"), Some(sha1.as_str()), "{out}");
    assert_eq!(
        field(&out, "Subject:"),
        Some("CN=Test Academy Gatehouse inspection CA, O=Test Academy")
    );
    let pem = String::from_utf8(cert_before.clone()).expect("PEM is text");
    assert!(out.contains(pem.trim()), "{out}");
    for platform in [
        "Trusted Root Certification Authorities",
        "certutil -addstore -f Root ca.crt",
        "Devices > Networks > Certificates",
        "Certificate Trust Settings",
        "Encryption & credentials",
    ] {
        assert!(out.contains(platform), "{platform:?} not in\n{out}");
    }
    assert!(out.contains("enrol_listen"), "no enrolment URL yet: {out}");

    // check reports it.
    let (code, out, err) = run(dir.path(), &["check"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("school CA: "), "{out}");
    assert!(out.contains(&sha256), "{out}");
    assert!(!err.contains("school CA"), "no warning for a new CA: {err}");

    // --force replaces both and warns about enrolled devices.
    let (code, _, err) = run(dir.path(), &["ca", "init", "--force"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("enrolled again"), "{err}");
    assert_ne!(openssl_fingerprint(&cert, "-sha256"), sha256);
    assert_ne!(std::fs::read(&key).expect("key"), key_before);
    assert_eq!(mode(&key), 0o600);
}

#[test]
fn check_reports_a_missing_ca_and_warns_of_expiry_and_an_open_key() {
    let dir = files(&policy(""));
    let (code, out, err) = run(dir.path(), &["check"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("school CA: none") && out.contains("gatehouse ca init"),
        "{out}"
    );

    // A CA that runs out soon or already has, with a key anyone can read.
    std::fs::create_dir_all(dir.path().join("ca")).expect("mkdir");
    use chrono::Datelike;
    let today = chrono::Utc::now().date_naive();
    for (end, warning) in [
        (
            today + chrono::Days::new(30),
            "warning: the school CA expires on",
        ),
        (
            today - chrono::Days::new(2),
            "warning: the school CA expired on",
        ),
    ] {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.not_after = rcgen::date_time_ymd(end.year(), end.month() as u8, end.day() as u8);
        let cert = params.self_signed(&key).expect("cert");
        std::fs::write(dir.path().join("ca/ca.crt"), cert.pem()).expect("write");
        std::fs::write(dir.path().join("ca/ca.key"), key.serialize_pem()).expect("write");
        std::fs::set_permissions(
            dir.path().join("ca/ca.key"),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        let (code, out, err) = run(dir.path(), &["check"]);
        assert_eq!(code, 0, "a CA problem is a warning: {err}");
        assert!(
            out.contains(&format!("expires {}", end.format("%Y-%m-%d"))),
            "{out}"
        );
        assert!(err.contains(warning), "{warning:?} not in {err}");
        assert!(err.contains("can be read by others (mode 0644)"), "{err}");
    }
}

fn der_of(pem_file: &Path) -> Vec<u8> {
    pem::parse(std::fs::read(pem_file).expect("cert"))
        .expect("PEM")
        .into_contents()
}

#[test]
fn the_enrolment_listener_serves_the_certificate_and_nothing_else() {
    let dir = files(&policy("enrol_listen = \"127.0.0.1:0\""));

    // No CA yet: run and check refuse, naming the file and the command that makes it.
    let (code, _, err) = run(dir.path(), &["check"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("ca/ca.crt") && err.contains("gatehouse ca init"),
        "{err}"
    );
    let mut child = gatehouse()
        .args(["run", "--config"])
        .arg(dir.path().join("policy.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gatehouse starts");
    let end = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("gatehouse run started without its CA");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut err)
        .expect("stderr");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("ca/ca.crt") && err.contains("gatehouse ca init"),
        "{err}"
    );

    let (code, _, err) = run(dir.path(), &["ca", "init"]);
    assert_eq!(code, 0, "{err}");
    let cert = dir.path().join("ca/ca.crt");
    let sha256 = openssl_fingerprint(&cert, "-sha256");
    let g = Gatehouse::start_in(dir);
    let base = format!("http://127.0.0.1:{}", g.enrol_port());
    let cert = g.dir.path().join("ca/ca.crt");

    let saved = g.dir.path().join("downloaded.crt");
    let r = curl(&[
        "-o",
        saved.to_str().expect("utf-8"),
        &format!("{base}/ca.crt"),
    ]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.headers
            .to_ascii_lowercase()
            .contains("content-type: application/x-x509-ca-cert"),
        "{}",
        r.headers
    );
    assert_eq!(std::fs::read(&saved).expect("downloaded"), der_of(&cert));

    let r = curl(&[&format!("{base}/ca.pem")]);
    assert_eq!(r.status, 200);
    assert!(
        r.headers
            .to_ascii_lowercase()
            .contains("content-type: application/x-pem-file"),
        "{}",
        r.headers
    );
    assert_eq!(
        r.body.trim(),
        std::fs::read_to_string(&cert).expect("cert").trim()
    );

    let r = curl(&[&format!("{base}/")]);
    assert_eq!(r.status, 200);
    assert!(
        r.headers
            .to_ascii_lowercase()
            .contains("content-type: text/html"),
        "{}",
        r.headers
    );
    assert!(r.body.contains(&sha256), "{}", r.body);
    assert!(r.body.contains("href=\"/ca.crt\""), "{}", r.body);

    let r = curl(&["-I", &format!("{base}/ca.crt")]);
    assert_eq!(r.status, 200, "HEAD works: {r:?}");

    for path in ["/ca.key", "/ca/ca.key", "/policy.toml", "/favicon.ico"] {
        let r = curl(&[&format!("{base}{path}")]);
        assert_eq!(r.status, 404, "{path}");
        assert!(!r.body.contains("PRIVATE KEY"), "{path}");
    }
    let r = curl(&["-X", "POST", "-d", "x", &format!("{base}/ca.crt")]);
    assert_eq!(r.status, 405);
    assert!(
        r.headers.to_ascii_lowercase().contains("allow: get, head"),
        "{}",
        r.headers
    );

    // A new CA is served after a reload, read once then, not per request.
    let (code, _, err) = run(g.dir.path(), &["ca", "init", "--force"]);
    assert_eq!(code, 0, "{err}");
    let new_der = der_of(&cert);
    let before_reload = curl(&[
        "-o",
        saved.to_str().expect("utf-8"),
        &format!("{base}/ca.crt"),
    ]);
    assert_eq!(before_reload.status, 200);
    assert_ne!(
        std::fs::read(&saved).expect("downloaded"),
        new_der,
        "the certificate in force until the reload"
    );
    g.signal("HUP");
    assert!(
        g.wait_for_log("reloaded policy and lists", Duration::from_secs(10)),
        "{}",
        g.log()
    );
    curl(&[
        "-o",
        saved.to_str().expect("utf-8"),
        &format!("{base}/ca.crt"),
    ]);
    assert_eq!(std::fs::read(&saved).expect("downloaded"), new_der);

    // The listener stops with the proxy.
    g.stop();
}
