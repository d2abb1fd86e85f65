//! Safeguarding alerts end to end: `gatehouse run` as a real process, driven by curl,
//! with a real SMTP sink (Debian's `python3-aiosmtpd`, storing each message in a
//! directory) and a webhook receiver (hyper, in the test) on loopback. Checks that an
//! attempt on a safeguarding category sends one email and one signed webhook within
//! 10 s, that a burst collapses into one alert, that an illegal category's alert shows
//! the host only, and that an alert owed while the mail server is down arrives once it
//! is up — across a `kill -9` too.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests are shell: they read files and clocks

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use common::servers::{curl, Gatehouse, TestCa};

const SECRET: &str = "test-webhook-secret";

/// A port nothing listens on now (the SMTP sink may take it later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The SMTP sink: aiosmtpd with a handler that writes each message to `dir`.
struct SmtpSink {
    child: Child,
    dir: PathBuf,
}

const SINK: &str = r#"
import asyncio, os, sys, time
from aiosmtpd.controller import Controller

class Store:
    async def handle_DATA(self, server, session, envelope):
        name = os.path.join(sys.argv[2], "%d.eml" % time.time_ns())
        with open(name + ".tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(name + ".tmp", name)
        return "250 OK"

tls = {}
if len(sys.argv) > 4:
    import ssl
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(sys.argv[3], sys.argv[4])
    tls = {"tls_context": context, "require_starttls": True}
controller = Controller(Store(), hostname="127.0.0.1", port=int(sys.argv[1]), **tls)
controller.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"#;

impl SmtpSink {
    fn start(port: u16, dir: &Path) -> SmtpSink {
        SmtpSink::start_tls(port, dir, None)
    }

    /// As [`SmtpSink::start`], requiring STARTTLS with this certificate and key (PEM
    /// files).
    fn start_tls(port: u16, dir: &Path, tls: Option<(&Path, &Path)>) -> SmtpSink {
        std::fs::create_dir_all(dir).expect("mail dir");
        let script = dir.join("../sink.py");
        std::fs::write(&script, SINK).expect("sink script");
        // Debian's python3, where python3-aiosmtpd is installed (.ci/run installs it).
        let python = if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        let mut child = Command::new(python)
            .arg(&script)
            .arg(port.to_string())
            .arg(dir)
            .args(tls.map(|(cert, key)| [cert, key]).into_iter().flatten())
            .stdout(Stdio::piped())
            // Its complaints (a refused handshake) go to a file beside the mail.
            .stderr(
                std::fs::File::create(dir.join("../sink.log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .expect("python3 starts");
        let mut line = String::new();
        use std::io::BufRead;
        let mut out = std::io::BufReader::new(child.stdout.take().expect("piped"));
        out.read_line(&mut line).expect("sink says ready");
        assert_eq!(
            line.trim(),
            "ready",
            "the SMTP sink did not start (apt-get install python3-aiosmtpd)"
        );
        SmtpSink {
            child,
            dir: dir.to_path_buf(),
        }
    }

    fn messages(&self) -> Vec<String> {
        messages(&self.dir)
    }
}

fn messages(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|m| unfold(&m))
        .collect()
}

/// The message with quoted-printable soft breaks and `=XX` escapes undone, enough to
/// search its text.
fn unfold(message: &str) -> String {
    let joined = message.replace("=\r\n", "").replace("=\n", "");
    let mut out = Vec::new();
    let bytes = joined.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request the webhook receiver got.
#[derive(Debug, Clone)]
struct Hook {
    headers: http::HeaderMap,
    body: Vec<u8>,
}

/// The webhook receiver: a hyper server that keeps every request.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Hook>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    fn start() -> Receiver {
        Receiver::start_on(0)
    }

    fn start_on(port: u16) -> Receiver {
        Receiver::start_with(port, None)
    }

    /// A receiver on `port`, over TLS with `tls` when given.
    fn start_with(port: u16, tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let got = Arc::new(Mutex::new(Vec::new()));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let store = got.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let store = store.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let store = store.clone();
                        async move {
                            let headers = req.headers().clone();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes().to_vec())
                                .unwrap_or_default();
                            store.lock().expect("lock").push(Hook { headers, body });
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from_static(b"ok"),
                            )))
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        Receiver {
            port,
            got,
            _runtime: runtime,
        }
    }

    fn hooks(&self) -> Vec<Hook> {
        self.got.lock().expect("lock").clone()
    }
}

fn policy(smtp_port: u16, webhook_port: Option<u16>, gather: u64) -> String {
    let webhook = webhook_port
        .map(|p| {
            format!(
                "[alerts.webhook]\nurl = \"http://127.0.0.1:{p}/gatehouse\"\nsecret_file = \"webhook.key\"\n"
            )
        })
        .unwrap_or_default();
    format!(
        r#"[school]
name = "Test Academy"
[lists]
dir = "lists"
[categories.csam]
severity = "illegal"
[categories.self-harm]
severity = "safeguarding"
[categories.games]
severity = "productivity"
[identity]
default_group = "pupils"
[groups.pupils]
mode = "blocklist"
block = ["self-harm", "games"]
[log]
dir = "log"
[admin]
listen = "127.0.0.1:0"
[server]
listen = "127.0.0.1:0"
[alerts]
outbox = "outbox"
gather_secs = {gather}
retry_initial_secs = 1
retry_max_secs = 2
[alerts.email]
server = "127.0.0.1"
port = {smtp_port}
tls = "none"
from = "Gatehouse <gatehouse@school.test>"
to = ["dsl@school.test"]
{webhook}"#
    )
}

fn start(smtp_port: u16, webhook_port: Option<u16>, gather: u64) -> Gatehouse {
    let policy = policy(smtp_port, webhook_port, gather);
    Gatehouse::start(&[
        ("policy.toml", &policy),
        ("webhook.key", SECRET),
        ("lists/csam/urls", "csam.test/secret/\n"),
        ("lists/self-harm/domains", "selfharm.test\n"),
        ("lists/games/domains", "games.test\n"),
    ])
}

/// Waits until `f` returns `Some`, or `within` passes.
fn wait_for<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn attempt(gh: &Gatehouse, from: &str, url: &str) -> u16 {
    curl(&["-x", &gh.url(), "--interface", from, url]).status
}

fn signature_ok(hook: &Hook) -> bool {
    let Some(sig) = hook
        .headers
        .get("x-gatehouse-signature")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="))
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(&hook.body);
    mac.verify_slice(&sig).is_ok()
}

#[test]
fn a_safeguarding_attempt_sends_one_email_and_one_signed_webhook() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let smtp_port = free_port();
    let sink = SmtpSink::start(smtp_port, &tmp.path().join("mail"));
    let receiver = Receiver::start();
    let gh = start(smtp_port, Some(receiver.port), 2);

    let started = Instant::now();
    assert_eq!(
        attempt(&gh, "127.0.0.1", "http://selfharm.test/how?q=x"),
        403
    );
    let mail = wait_for(Duration::from_secs(10), || {
        sink.messages().into_iter().next()
    })
    .expect("an email within 10 s");
    let hook = wait_for(Duration::from_secs(10) - started.elapsed(), || {
        receiver.hooks().into_iter().next()
    })
    .expect("a webhook within 10 s");
    assert!(started.elapsed() < Duration::from_secs(10));
    for want in [
        "Subject: [Gatehouse] safeguarding alert: self-harm",
        "To: dsl@school.test",
        "Person        -",
        "Group         pupils",
        "Device        127.0.0.1",
        "UTC)",
        "Site          http://selfharm.test/how?q=x",
        "Category      self-harm (safeguarding)",
        "Action        block",
        "Reference     ",
    ] {
        assert!(mail.contains(want), "{want:?} in\n{mail}");
    }
    assert!(signature_ok(&hook), "the signature checks: {hook:?}");
    let json: serde_json::Value = serde_json::from_slice(&hook.body).expect("JSON body");
    let now = chrono::Utc::now().timestamp();
    let ts = json["timestamp"].as_i64().expect("timestamp");
    assert!((now - ts).abs() < 30, "fresh timestamp {ts}");
    assert_eq!(
        hook.headers["x-gatehouse-timestamp"].to_str().ok(),
        Some(ts.to_string().as_str())
    );
    let alert = &json["alert"];
    assert_eq!(alert["category"], "self-harm");
    assert_eq!(alert["severity"], "safeguarding");
    assert_eq!(alert["group"], "pupils");
    assert_eq!(alert["client"], "127.0.0.1");
    assert_eq!(alert["url"], "http://selfharm.test/how?q=x");
    assert_eq!(alert["action"], "block");
    assert_eq!(alert["attempts"], 1);
    // The reference is the block page's.
    let reference = alert["reference"].as_str().expect("reference").to_string();
    assert!(
        mail.contains(&format!("Reference     {reference}")),
        "{mail}"
    );
    // A tampered body fails the check.
    let mut forged = hook.clone();
    forged.body = forged.body.replace_ascii("pupils", "staffs");
    assert!(!signature_ok(&forged));
    // A productivity category does not alert by default.
    assert_eq!(attempt(&gh, "127.0.0.1", "http://games.test/"), 403);

    // Twenty attempts in a burst by another device: one alert saying 20.
    for _ in 0..20 {
        assert_eq!(attempt(&gh, "127.0.0.5", "http://selfharm.test/again"), 403);
    }
    let burst = wait_for(Duration::from_secs(10), || {
        sink.messages()
            .into_iter()
            .find(|m| m.contains("Device        127.0.0.5"))
    })
    .expect("the burst's alert");
    assert!(burst.contains("(20 attempts)"), "{burst}");
    assert!(burst.contains("Attempts      20"), "{burst}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        sink.messages().len(),
        2,
        "one alert each, nothing for games"
    );
    assert_eq!(receiver.hooks().len(), 2);

    // Each delivery is in the decision log, and counted.
    let tail = common::log_tail(&gh.dir.path().join("log"));
    assert_eq!(tail.matches(" email SENT ").count(), 2, "{tail}");
    assert_eq!(tail.matches(" webhook SENT ").count(), 2, "{tail}");
    let metrics = curl(&[&format!("http://127.0.0.1:{}/metrics", gh.admin_port)]).body;
    assert!(
        metrics.contains("gatehouse_alerts_sent_total{channel=\"email\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("gatehouse_alerts_outbox 0"), "{metrics}");
    // The log with alert entries still verifies end to end, exports its decisions, and
    // `log show` prints an alert entry by its number.
    let log_dir = gh.dir.path().join("log");
    let verify = common::gatehouse()
        .args(["log", "verify"])
        .arg(&log_dir)
        .output()
        .expect("verify runs");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let export = common::gatehouse()
        .args(["log", "export", "--dir"])
        .arg(&log_dir)
        .output()
        .expect("export runs");
    assert!(export.status.success());
    let exported = String::from_utf8_lossy(&export.stdout);
    assert_eq!(
        exported.lines().count(),
        22,
        "the decisions, not the alerts: {exported}"
    );
    let seq = tail
        .lines()
        .find(|l| l.contains(" email SENT "))
        .and_then(|l| l.split("  #").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .expect("an alert entry's number");
    let show = common::gatehouse()
        .args(["log", "show", &format!("#{seq}"), "--config"])
        .arg(gh.dir.path().join("policy.toml"))
        .output()
        .expect("show runs");
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(
        shown.contains("alert") && shown.contains("email SENT"),
        "{shown}"
    );
    // The decision's own page says the DSL was alerted, on which channels.
    let show = common::gatehouse()
        .args(["log", "show", &reference, "--config"])
        .arg(gh.dir.path().join("policy.toml"))
        .output()
        .expect("show runs");
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(shown.contains("  alerted   "), "{shown}");
    assert!(shown.contains("email SENT (attempt 1)"), "{shown}");
    assert!(shown.contains("webhook SENT (attempt 1)"), "{shown}");
}

/// `bytes::Bytes`-free replace on the raw body, for the forged copy.
trait ReplaceAscii {
    fn replace_ascii(&self, from: &str, to: &str) -> Vec<u8>;
}

impl ReplaceAscii for Vec<u8> {
    fn replace_ascii(&self, from: &str, to: &str) -> Vec<u8> {
        String::from_utf8_lossy(self).replace(from, to).into_bytes()
    }
}

#[test]
fn an_illegal_category_alert_shows_the_host_only() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let smtp_port = free_port();
    let sink = SmtpSink::start(smtp_port, &tmp.path().join("mail"));
    let receiver = Receiver::start();
    let gh = start(smtp_port, Some(receiver.port), 1);
    assert_eq!(
        attempt(&gh, "127.0.0.1", "http://csam.test/secret/image.jpg?id=7"),
        403
    );
    let mail = wait_for(Duration::from_secs(10), || {
        sink.messages().into_iter().next()
    })
    .expect("an email");
    let hook = wait_for(Duration::from_secs(10), || {
        receiver.hooks().into_iter().next()
    })
    .expect("a webhook");
    assert!(
        mail.contains("Site          csam.test\n") || mail.contains("Site          csam.test\r\n"),
        "{mail}"
    );
    assert!(mail.contains("illegal alert: csam"), "{mail}");
    let body = String::from_utf8_lossy(&hook.body);
    for text in [&mail[..], &body[..]] {
        assert!(!text.contains("secret"), "no path: {text}");
        assert!(!text.contains("image.jpg"), "no path: {text}");
    }
    let json: serde_json::Value = serde_json::from_slice(&hook.body).expect("JSON");
    assert_eq!(json["alert"]["url"], "csam.test");
}

#[test]
fn an_alert_owed_while_smtp_is_down_arrives_after_kill_9_and_restart() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let smtp_port = free_port();
    let gh = start(smtp_port, None, 0);
    assert_eq!(attempt(&gh, "127.0.0.1", "http://selfharm.test/down"), 403);
    assert!(
        gh.wait_for_log("alert not delivered, will retry", Duration::from_secs(10)),
        "{}",
        gh.log()
    );
    let dir = gh.kill9();
    let owed: Vec<_> = std::fs::read_dir(dir.path().join("outbox"))
        .expect("outbox")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(owed.len(), 1, "the alert waits in the outbox");

    let sink = SmtpSink::start(smtp_port, &tmp.path().join("mail"));
    let gh = Gatehouse::start_in(dir);
    let mail = wait_for(Duration::from_secs(15), || {
        sink.messages().into_iter().next()
    })
    .expect("the owed alert arrives");
    assert!(
        mail.contains("Site          http://selfharm.test/down"),
        "{mail}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sink.messages().len(), 1, "sent once");
    let tail = common::log_tail(&gh.dir.path().join("log"));
    assert!(tail.contains(" email FAILED (attempt 1)"), "{tail}");
    assert_eq!(tail.matches(" email SENT ").count(), 1, "{tail}");
    let left = std::fs::read_dir(gh.dir.path().join("outbox"))
        .expect("outbox")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .count();
    assert_eq!(left, 0, "delivered alerts leave the outbox");
    // The weekly report counts the notifications sent and the attempts that failed.
    let now = chrono::Utc::now();
    let report = common::gatehouse()
        .args(["report", "--format", "json", "--config"])
        .arg(gh.dir.path().join("policy.toml"))
        .args(["--from", &(now - chrono::Duration::hours(1)).to_rfc3339()])
        .args(["--to", &(now + chrono::Duration::hours(1)).to_rfc3339()])
        .output()
        .expect("report runs");
    let json: serde_json::Value = serde_json::from_slice(&report.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&report.stderr)));
    assert_eq!(json["totals"]["alerts_sent"], 1, "{}", json["totals"]);
    assert!(
        json["totals"]["alerts_failed"].as_u64() >= Some(1),
        "{}",
        json["totals"]
    );
}

#[test]
fn alerts_test_reports_each_channel() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let smtp_port = free_port();
    let sink = SmtpSink::start(smtp_port, &tmp.path().join("mail"));
    let dead = free_port();
    let dir = common::tree(&[
        ("policy.toml", &policy(smtp_port, Some(dead), 1)),
        ("webhook.key", SECRET),
        ("lists/csam/urls", "csam.test/secret/\n"),
        ("lists/self-harm/domains", "selfharm.test\n"),
    ]);
    let out = common::gatehouse()
        .args(["alerts", "test", "--config"])
        .arg(dir.path().join("policy.toml"))
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("email: sent (127.0.0.1:"), "{stdout}");
    assert!(
        stdout.contains("webhook: FAILED (http://127.0.0.1:"),
        "{stdout}"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed channel fails the command"
    );
    let mail = sink.messages().into_iter().next().expect("the test email");
    assert!(mail.contains("TEST alert"), "{mail}");
    // `gatehouse check` says where alerts go and which categories send them.
    let out = common::gatehouse()
        .args(["check", "--config"])
        .arg(dir.path().join("policy.toml"))
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for want in [
        format!("alerts: email to dsl@school.test via 127.0.0.1:{smtp_port} (NO ENCRYPTION); webhook http://127.0.0.1:{dead}/gatehouse (signed); digest daily"),
        "  immediate  csam self-harm".to_string(),
    ] {
        assert!(stdout.contains(&want), "{want:?} in\n{stdout}");
    }
}

#[test]
fn email_goes_over_starttls_to_a_relay_with_the_schools_own_ca() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new();
    let (cert, key) = ca.leaf_pem(&["127.0.0.1"]);
    let (cert_file, key_file) = (tmp.path().join("smtp.pem"), tmp.path().join("smtp.key"));
    std::fs::write(&cert_file, cert).expect("cert");
    std::fs::write(&key_file, key).expect("key");
    let smtp_port = free_port();
    let sink = SmtpSink::start_tls(
        smtp_port,
        &tmp.path().join("mail"),
        Some((&cert_file, &key_file)),
    );
    let starttls = policy(smtp_port, None, 0)
        .replace("tls = \"none\"", "tls = \"starttls\"\nca_file = \"ca.pem\"");
    let gh = Gatehouse::start(&[
        ("policy.toml", &starttls),
        ("ca.pem", &ca.pem),
        ("lists/csam/urls", "csam.test/secret/\n"),
        ("lists/self-harm/domains", "selfharm.test\n"),
    ]);
    assert_eq!(attempt(&gh, "127.0.0.1", "http://selfharm.test/tls"), 403);
    let mail = wait_for(Duration::from_secs(10), || {
        sink.messages().into_iter().next()
    })
    .unwrap_or_else(|| panic!("an email over STARTTLS: {}", gh.log()));
    assert!(
        mail.contains("Site          http://selfharm.test/tls"),
        "{mail}"
    );

    // Without the CA the relay's certificate is not trusted: nothing is sent in clear,
    // and the failure says why.
    let untrusted = policy(smtp_port, None, 0).replace("tls = \"none\"", "tls = \"starttls\"");
    let dir = common::tree(&[
        ("policy.toml", &untrusted),
        ("lists/csam/urls", "csam.test/secret/\n"),
        ("lists/self-harm/domains", "selfharm.test\n"),
    ]);
    let out = common::gatehouse()
        .args(["alerts", "test", "--config"])
        .arg(dir.path().join("policy.toml"))
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("email: FAILED"), "{stdout}");
    assert_eq!(sink.messages().len(), 1);
}

#[test]
fn a_webhook_outage_does_not_hold_up_or_repeat_the_email() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let smtp_port = free_port();
    let sink = SmtpSink::start(smtp_port, &tmp.path().join("mail"));
    let hook_port = free_port();
    let gh = start(smtp_port, Some(hook_port), 0);
    assert_eq!(
        attempt(&gh, "127.0.0.1", "http://selfharm.test/hook-down"),
        403
    );
    wait_for(Duration::from_secs(10), || {
        sink.messages().into_iter().next()
    })
    .expect("the email goes while the webhook is down");
    assert!(
        gh.wait_for_log("alert not delivered, will retry", Duration::from_secs(10)),
        "{}",
        gh.log()
    );
    // The receiver comes up: the webhook arrives, and the email is not sent again.
    let receiver = Receiver::start_on(hook_port);
    let hook = wait_for(Duration::from_secs(15), || {
        receiver.hooks().into_iter().next()
    })
    .expect("the webhook once its receiver is up");
    assert!(signature_ok(&hook));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sink.messages().len(), 1, "the email went once");
    assert_eq!(receiver.hooks().len(), 1, "the webhook went once");
    // A retry repeats the alert's id, so a receiver can drop duplicates.
    let json: serde_json::Value = serde_json::from_slice(&hook.body).expect("JSON");
    assert_eq!(
        hook.headers["x-gatehouse-delivery"].to_str().ok(),
        Some(json["id"].to_string().as_str())
    );
    let tail = common::log_tail(&gh.dir.path().join("log"));
    assert_eq!(tail.matches(" email SENT ").count(), 1, "{tail}");
    assert!(tail.contains(" webhook FAILED (attempt 1)"), "{tail}");
    assert_eq!(tail.matches(" webhook SENT ").count(), 1, "{tail}");
}

#[test]
fn the_webhook_goes_over_https_to_a_receiver_with_the_schools_own_ca() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new();
    let receiver = Receiver::start_with(0, Some(ca.server_config(&["127.0.0.1"])));
    let smtp_port = free_port();
    let _sink = SmtpSink::start(smtp_port, &tmp.path().join("mail"));
    let https = policy(smtp_port, Some(receiver.port), 0)
        .replace("url = \"http://", "url = \"https://")
        .replace(
            "secret_file = \"webhook.key\"",
            "secret_file = \"webhook.key\"\nca_file = \"ca.pem\"",
        );
    let gh = Gatehouse::start(&[
        ("policy.toml", &https),
        ("webhook.key", SECRET),
        ("ca.pem", &ca.pem),
        ("lists/csam/urls", "csam.test/secret/\n"),
        ("lists/self-harm/domains", "selfharm.test\n"),
    ]);
    assert_eq!(attempt(&gh, "127.0.0.1", "http://selfharm.test/tls"), 403);
    let hook = wait_for(Duration::from_secs(10), || {
        receiver.hooks().into_iter().next()
    })
    .unwrap_or_else(|| panic!("a webhook over https: {}", gh.log()));
    assert!(signature_ok(&hook));
}

/// The DSL's token, and a viewer's (which may not acknowledge).
const DSL: &str = "dsl-token-0123456789abcdef";
const VIEWER: &str = "viewer-token-0123456789abcdef";

fn token_hash(token: &str) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()))
}

fn admin_api(gh: &Gatehouse, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    let url = format!("http://127.0.0.1:{}{path}", gh.admin_port);
    let auth = format!("Authorization: Bearer {token}");
    let r = curl(&[
        "-X",
        method,
        "-H",
        "Content-Type: application/json",
        "-H",
        &auth,
        "--data-binary",
        body,
        &url,
    ]);
    (r.status, r.body)
}

#[test]
fn the_dsl_acknowledges_an_alert_and_it_is_recorded_shown_and_counted() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let smtp_port = free_port();
    let sink = SmtpSink::start(smtp_port, &tmp.path().join("mail"));
    let receiver = Receiver::start();
    let text = format!(
        "{}\n[categories.news]\nseverity = \"safeguarding\"\nalert_on_allow = true\n[[admin.tokens]]\nname = \"dsl-office\"\nrole = \"dsl\"\nsha256 = \"{}\"\n[[admin.tokens]]\nname = \"dashboard\"\nrole = \"viewer\"\nsha256 = \"{}\"\n",
        policy(smtp_port, Some(receiver.port), 0),
        token_hash(DSL),
        token_hash(VIEWER)
    );
    let gh = Gatehouse::start(&[
        ("policy.toml", &text),
        ("webhook.key", SECRET),
        ("lists/csam/urls", "csam.test/secret/\n"),
        ("lists/self-harm/domains", "selfharm.test\n"),
        ("lists/games/domains", "games.test\n"),
        ("lists/news/domains", "news.test\n"),
    ]);
    let config = gh.dir.path().join("policy.toml");
    assert_eq!(attempt(&gh, "127.0.0.1", "http://selfharm.test/x"), 403);
    assert_eq!(attempt(&gh, "127.0.0.1", "http://games.test/"), 403);
    let hook = wait_for(Duration::from_secs(10), || {
        receiver.hooks().into_iter().next()
    })
    .expect("the alert's webhook");
    wait_for(Duration::from_secs(10), || {
        sink.messages().into_iter().next()
    })
    .expect("the email");
    let json: serde_json::Value = serde_json::from_slice(&hook.body).expect("JSON");
    let reference = json["alert"]["reference"]
        .as_str()
        .expect("reference")
        .to_string();
    let ack_path = format!("/api/alerts/{reference}/ack");
    // Not a viewer; not a decision nobody was alerted about; not a made-up reference.
    let (status, body) = admin_api(&gh, "POST", &ack_path, VIEWER, "{}");
    assert_eq!(status, 403, "{body}");
    let games_ref = common::log_tail(&gh.dir.path().join("log"))
        .lines()
        .find(|l| l.contains("games.test"))
        .and_then(|l| l.split("  ref ").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .expect("the games decision's reference")
        .to_string();
    let (status, body) = admin_api(
        &gh,
        "POST",
        &format!("/api/alerts/{games_ref}/ack"),
        DSL,
        "{}",
    );
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no alert was sent about reference"), "{body}");
    let (status, body) = admin_api(&gh, "POST", "/api/alerts/FFFF-FFFF/ack", DSL, "{}");
    assert_eq!(status, 404, "{body}");
    let (status, body) = admin_api(&gh, "POST", "/api/alerts/%21%21/ack", DSL, "{}");
    assert_eq!(status, 400, "{body}");
    let (status, body) = admin_api(&gh, "POST", &ack_path, DSL, "{not json");
    assert_eq!(status, 400, "{body}");

    // Through the API, with a shared token and the person's name (retried while the
    // delivery's record, written once its result is known, is not there yet).
    let (status, body) = wait_for(Duration::from_secs(5), || {
        let (status, body) = admin_api(
            &gh,
            "POST",
            &ack_path,
            DSL,
            r#"{"by": "J. Smith", "note": "Spoke to the pupil and their tutor"}"#,
        );
        (status != 404).then_some((status, body))
    })
    .expect("the delivery recorded within 5 s");
    assert_eq!(status, 201, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["acknowledged_by"], "J. Smith (token dsl-office)");
    assert_eq!(answer["earlier_acknowledgements"], 0);
    // Through the CLI, which asks the running proxy (it owns the log).
    std::fs::write(tmp.path().join("dsl.token"), format!("{DSL}\n")).expect("token file");
    let ack = common::gatehouse()
        .args([
            "alerts",
            "ack",
            &reference,
            "--by",
            "A. Deputy",
            "--note",
            "Parents called",
        ])
        .arg("--token-file")
        .arg(tmp.path().join("dsl.token"))
        .args(["--admin", &format!("127.0.0.1:{}", gh.admin_port)])
        .arg("--config")
        .arg(&config)
        .output()
        .expect("alerts ack runs");
    let said =
        String::from_utf8_lossy(&ack.stdout).into_owned() + &String::from_utf8_lossy(&ack.stderr);
    assert!(ack.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "acknowledged ref {reference} by A. Deputy (token dsl-office)"
        )),
        "{said}"
    );
    // A refused one says why, and exits non-zero.
    let ack = common::gatehouse()
        .args(["alerts", "ack", &games_ref, "--by", "A. Deputy"])
        .env("GATEHOUSE_ADMIN_TOKEN", DSL)
        .args(["--admin", &format!("127.0.0.1:{}", gh.admin_port)])
        .arg("--config")
        .arg(&config)
        .output()
        .expect("alerts ack runs");
    assert!(!ack.status.success());
    assert!(
        String::from_utf8_lossy(&ack.stderr).contains("no alert was sent about reference"),
        "{}",
        String::from_utf8_lossy(&ack.stderr)
    );

    // The decision log has both; log show lists them under the decision.
    let tail = common::log_tail(&gh.dir.path().join("log"));
    assert!(
        tail.contains(&format!("alert ACKNOWLEDGED about ref {reference} by J. Smith (token dsl-office): Spoke to the pupil and their tutor")),
        "{tail}"
    );
    let show = common::gatehouse()
        .args(["log", "show", &reference, "--config"])
        .arg(&config)
        .output()
        .expect("show runs");
    let shown = String::from_utf8_lossy(&show.stdout);
    assert_eq!(shown.matches("  acked     ").count(), 2, "{shown}");
    assert!(
        shown.contains("by A. Deputy (token dsl-office): Parents called"),
        "{shown}"
    );
    // The decisions API shows them to the console.
    let (status, body) = admin_api(&gh, "GET", &format!("/api/decisions/{reference}"), DSL, "");
    assert_eq!(status, 200, "{body}");
    let decision: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        decision["acknowledgements"].as_array().map(Vec::len),
        Some(2),
        "{body}"
    );
    assert_eq!(
        decision["alerts"].as_array().map(Vec::len),
        Some(2),
        "{body}"
    );
    // Metrics and the report count them.
    let metrics = curl(&[&format!("http://127.0.0.1:{}/metrics", gh.admin_port)]).body;
    assert!(
        metrics.contains("gatehouse_alerts_acknowledged_total 2"),
        "{metrics}"
    );
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let report = common::gatehouse()
        .args([
            "report", "--from", &today, "--to", &tomorrow, "--format", "json", "--config",
        ])
        .arg(&config)
        .output()
        .expect("report runs");
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).expect("JSON report");
    assert_eq!(report["totals"]["alerts_sent"], 2, "email and webhook");
    assert_eq!(report["totals"]["alerts_acknowledged"], 2);
    assert_eq!(report["totals"]["alerts_unacknowledged_after_a_day"], 0);

    // An alert on an allowed visit (alert_on_allow) comes after the request ended; it
    // can be acknowledged too.
    let allowed = curl(&[
        "-x",
        &gh.url(),
        "--interface",
        "127.0.0.1",
        "http://news.test:9/",
    ]);
    assert_ne!(allowed.status, 403, "news is allowed: {}", allowed.body);
    let hook = wait_for(Duration::from_secs(10), || {
        receiver
            .hooks()
            .into_iter()
            .find(|h| String::from_utf8_lossy(&h.body).contains("news.test"))
    })
    .expect("the allowed visit's webhook");
    let json: serde_json::Value = serde_json::from_slice(&hook.body).expect("JSON");
    assert_eq!(json["alert"]["action"], "allow");
    let news_ref = json["alert"]["reference"]
        .as_str()
        .expect("reference")
        .to_string();
    // The delivery is recorded once its result is known, a moment after the receiver
    // has it: an acknowledgement in that moment finds no alert yet (404), so retry.
    let (status, body) = wait_for(Duration::from_secs(5), || {
        let (status, body) = admin_api(
            &gh,
            "POST",
            &format!("/api/alerts/{news_ref}/ack"),
            DSL,
            r#"{"note": "Checked: coursework"}"#,
        );
        (status != 404).then_some((status, body))
    })
    .expect("the delivery recorded within 5 s");
    assert_eq!(status, 201, "{body}");
    assert!(body.contains(r#""acknowledged_by":"dsl-office""#), "{body}");
}
