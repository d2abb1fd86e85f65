//! `gatehouse lists update` against a real HTTPS feed server on loopback (a test CA in
//! `[inspection] extra_roots`): the first fetch, a `304` on the next, a bad pin refused,
//! a shrunk list refused and then taken with the logged override, an illegal category's
//! shrink refused even with it, a corrupt archive refused with the old lists kept, and
//! the running proxy taking good updates through `POST /api/lists/update` while a load
//! loop of real requests runs, none of which fails.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests are shell: they read files and clocks

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};

use common::servers::{curl, Gatehouse, Origin, TestCa};
use common::{gatehouse, log_tail, tree};

/// Files the feed server serves, by path: body and ETag.
type Files = Arc<Mutex<HashMap<String, (Vec<u8>, String)>>>;

/// An HTTPS server for list feeds on loopback, with `ETag` / `If-None-Match`.
struct FeedServer {
    port: u16,
    files: Files,
    /// `304` answers given.
    not_modified: Arc<AtomicU64>,
    _runtime: tokio::runtime::Runtime,
}

impl FeedServer {
    fn start(ca: &TestCa) -> FeedServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let files: Files = Arc::default();
        let not_modified = Arc::new(AtomicU64::new(0));
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(&["localhost"]));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(SocketAddr::from((
                [127, 0, 0, 1],
                0,
            ))))
            .expect("binds");
        let port = listener.local_addr().expect("addr").port();
        let (f, nm) = (files.clone(), not_modified.clone());
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, files, nm) = (acceptor.clone(), f.clone(), nm.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (files, nm) = (files.clone(), nm.clone());
                        async move {
                            let file = files
                                .lock()
                                .expect("files lock")
                                .get(req.uri().path())
                                .cloned();
                            let mut resp = Response::new(Full::new(Bytes::new()));
                            match file {
                                None => *resp.status_mut() = hyper::StatusCode::NOT_FOUND,
                                Some((body, etag)) => {
                                    let seen = req
                                        .headers()
                                        .get(hyper::header::IF_NONE_MATCH)
                                        .and_then(|v| v.to_str().ok());
                                    resp.headers_mut().insert(
                                        hyper::header::ETAG,
                                        etag.parse().expect("etag header"),
                                    );
                                    if seen == Some(etag.as_str()) {
                                        nm.fetch_add(1, Ordering::Relaxed);
                                        *resp.status_mut() = hyper::StatusCode::NOT_MODIFIED;
                                    } else {
                                        *resp.body_mut() = Full::new(Bytes::from(body));
                                    }
                                }
                            }
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        FeedServer {
            port,
            files,
            not_modified,
            _runtime: runtime,
        }
    }

    /// Serves `body` at `path`, with an ETag of its hash.
    fn put(&self, path: &str, body: Vec<u8>) {
        let etag = format!("\"{}\"", &hex(&Sha256::digest(&body))[..16]);
        self.files
            .lock()
            .expect("files lock")
            .insert(path.to_string(), (body, etag));
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A hosts file listing `n` gambling sites, `bet0.test` …
fn hosts_file(n: usize) -> Vec<u8> {
    let mut text = String::from("# a hosts-format feed\n127.0.0.1 localhost\n");
    for i in 0..n {
        text.push_str(&format!("0.0.0.0 bet{i}.test\n"));
    }
    text.into_bytes()
}

/// A UT1-layout `.tar.gz` with an `adult` category of `n` domains.
fn ut1_tarball(n: usize) -> Vec<u8> {
    let mut domains = String::new();
    for i in 0..n {
        domains.push_str(&format!("adult{i}.test\n"));
    }
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut header = tar::Header::new_gnu();
    header.set_size(domains.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, "blacklists/adult/domains", domains.as_bytes())
        .expect("tar entry");
    builder.into_inner().expect("tar").finish().expect("gzip")
}

const TECH: &str = "lists-tech-token-0123456789";

fn policy(feed: &FeedServer, extra: &str) -> String {
    format!(
        r#"[school]
name = "Feeds School"
[lists]
dir = "lists"
[[lists.sources]]
name = "hosts"
url = "{hosts}"
format = "hosts"
category = "gambling"
[[lists.sources]]
name = "ut1"
url = "{ut1}"
format = "ut1"
map = "ut1-map.toml"
[[lists.sources]]
name = "iwf"
url = "{iwf}"
format = "plain"
category = "csam"
[[lists.sources]]
name = "pinned"
url = "{pinned}"
format = "plain"
category = "gambling"
sha256 = "{zeros}"
[categories.csam]
severity = "illegal"
[categories.gambling]
severity = "inappropriate"
[categories.pornography]
severity = "safeguarding"
[identity]
default_group = "pupils"
[groups.pupils]
mode = "blocklist"
block = ["gambling", "pornography"]
[inspection]
extra_roots = ["feed-ca.pem"]
[log]
dir = "log"
[admin]
listen = "127.0.0.1:0"
[[admin.tokens]]
name = "helpdesk"
role = "technician"
sha256 = "{tech}"
[server]
listen = "127.0.0.1:0"
allow_internal_destinations = ["127.0.0.1/32"]
[server.resolve]
"allowed.test" = "127.0.0.1"
"bet0.test" = "127.0.0.1"
"bet7.test" = "127.0.0.1"
"bet14.test" = "127.0.0.1"
{extra}"#,
        hosts = feed.url("/hosts.txt"),
        ut1 = feed.url("/ut1/blacklists.tar.gz"),
        iwf = feed.url("/iwf.txt"),
        pinned = feed.url("/pinned.txt"),
        zeros = "0".repeat(64),
        tech = hex(&Sha256::digest(TECH.as_bytes())),
    )
}

fn files<'a>(ca: &'a TestCa, policy: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("policy.toml", policy),
        ("feed-ca.pem", ca.pem.as_str()),
        ("ut1-map.toml", "adult = \"pornography\"\n"),
        ("lists/csam/domains", "csam-canary.test\n"),
        ("lists/gambling/domains", "curated-bet.test\n"),
        ("lists/pornography/domains", ""),
    ]
}

/// `gatehouse lists update --offline ARGS…`: exit success, and what it printed.
fn update_offline(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = gatehouse()
        .args(["lists", "update", "--offline", "--config"])
        .arg(dir.join("policy.toml"))
        .args(args)
        .output()
        .expect("gatehouse lists update runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn line_for<'a>(out: &'a str, source: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("{source}: ")))
        .unwrap_or_else(|| panic!("no line for {source} in {out}"))
}

fn entries(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .count()
}

#[test]
fn fetch_304_pin_shrink_override_illegal_and_corrupt() {
    let ca = TestCa::new();
    let feed = FeedServer::start(&ca);
    feed.put("/hosts.txt", hosts_file(20));
    feed.put("/ut1/blacklists.tar.gz", ut1_tarball(30));
    feed.put(
        "/iwf.txt",
        b"csam1.test\ncsam2.test\ncsam3.test\ncsam4.test\ncsam5.test\n".to_vec(),
    );
    feed.put("/pinned.txt", b"pinned-bet.test\n".to_vec());
    let text = policy(&feed, "");
    let dir = tree(&files(&ca, &text));
    let d = dir.path();
    let gambling = d.join("lists/gambling/domains.hosts");
    let porn = d.join("lists/pornography/domains.ut1");
    let csam = d.join("lists/csam/domains.iwf");

    // First fetch: three feeds taken, the pinned one refused (its file is not the pin).
    let (ok, out) = update_offline(d, &[]);
    assert!(!ok, "a refused source makes the run fail: {out}");
    assert!(
        line_for(&out, "hosts").starts_with("hosts: updated: 20 entries"),
        "{out}"
    );
    assert!(
        line_for(&out, "ut1").contains("updated: 30 entries: pornography 30"),
        "{out}"
    );
    assert!(line_for(&out, "iwf").contains("updated"), "{out}");
    let pinned = line_for(&out, "pinned");
    assert!(
        pinned.contains("refused") && pinned.contains("not the pinned"),
        "{out}"
    );
    assert!(!d.join("lists/gambling/domains.pinned").exists());
    assert_eq!(
        (entries(&gambling), entries(&porn), entries(&csam)),
        (20, 30, 5)
    );
    let header = std::fs::read_to_string(&gambling).expect("list written");
    assert!(
        header.contains(&format!(
            "`gatehouse lists update` (source hosts, hosts from {})",
            feed.url("/hosts.txt")
        )),
        "{header}"
    );
    // The lists load and classify as the policy says.
    let classify = gatehouse()
        .args(["classify", "--group", "pupils", "--config"])
        .arg(d.join("policy.toml"))
        .args([
            "http://bet7.test/",
            "http://adult3.test/",
            "http://csam2.test/",
        ])
        .output()
        .expect("classify runs");
    let said = String::from_utf8_lossy(&classify.stdout);
    assert_eq!(said.matches("BLOCK").count(), 3, "{said}");

    // Second fetch: nothing changed, so 304s and nothing rewritten.
    let before = std::fs::metadata(&gambling)
        .and_then(|m| m.modified())
        .expect("mtime");
    let (ok, out) = update_offline(d, &["--source", "hosts"]);
    assert!(ok, "{out}");
    assert!(line_for(&out, "hosts").contains("not_modified"), "{out}");
    let (ok, out) = update_offline(d, &["--source", "ut1"]);
    assert!(
        ok && line_for(&out, "ut1").contains("not_modified"),
        "{out}"
    );
    assert_eq!(feed.not_modified.load(Ordering::Relaxed), 2);
    assert_eq!(
        std::fs::metadata(&gambling)
            .and_then(|m| m.modified())
            .expect("mtime"),
        before
    );

    // A feed that lost half its entries: refused by the shrink guard, the old list kept.
    feed.put("/hosts.txt", hosts_file(10));
    let (ok, out) = update_offline(d, &["--source", "hosts"]);
    assert!(!ok, "{out}");
    let line = line_for(&out, "hosts");
    assert!(
        line.contains("refused: shrink guard: gambling 20 → 10"),
        "{out}"
    );
    assert_eq!(entries(&gambling), 20);
    // Taken with the override; the reason is in the decision log with who took it.
    let (ok, out) = update_offline(
        d,
        &[
            "--source",
            "hosts",
            "--allow-shrink",
            "--reason",
            "HD-5120 provider pruned dead casinos",
        ],
    );
    assert!(ok, "{out}");
    assert!(
        line_for(&out, "hosts").contains("updated: 10 entries"),
        "{out}"
    );
    assert_eq!(entries(&gambling), 10);

    // An illegal category's list: no override takes a shrink of it.
    feed.put("/iwf.txt", b"csam1.test\n".to_vec());
    let (ok, out) = update_offline(
        d,
        &[
            "--source",
            "iwf",
            "--allow-shrink",
            "--reason",
            "trying to override",
        ],
    );
    assert!(!ok, "{out}");
    let line = line_for(&out, "iwf");
    assert!(
        line.contains("refused") && line.contains("csam illegal, so no override"),
        "{out}"
    );
    assert_eq!(entries(&csam), 5);

    // A corrupt archive: refused, the old lists stay.
    let mut corrupt = ut1_tarball(40);
    corrupt.truncate(corrupt.len() / 2);
    corrupt.extend_from_slice(b"garbage");
    feed.put("/ut1/blacklists.tar.gz", corrupt);
    let (ok, out) = update_offline(d, &["--source", "ut1"]);
    assert!(!ok, "{out}");
    assert!(line_for(&out, "ut1").contains("refused"), "{out}");
    assert!(
        line_for(&out, "ut1").contains("the lists in force stay"),
        "{out}"
    );
    assert_eq!(entries(&porn), 30);

    // Every update, 304 and refusal is in the decision log.
    let log = log_tail(&d.join("log"));
    for want in [
        "reload lists: ok  source hosts: updated: 20 entries",
        "reload lists: REFUSED  source pinned: refused",
        "reload lists: ok  source hosts: not_modified",
        "reload lists: REFUSED  source hosts: refused: shrink guard",
        "shrink guard overridden by",
        "HD-5120 provider pruned dead casinos",
        "reload lists: REFUSED  source iwf: refused",
        "reload lists: REFUSED  source ut1: refused",
    ] {
        assert!(
            log.contains(want),
            "{want:?} not in the decision log:\n{log}"
        );
    }
    let verify = gatehouse()
        .args(["log", "verify"])
        .arg(d.join("log"))
        .output()
        .expect("log verify runs");
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[test]
fn the_running_proxy_takes_updates_under_load_without_a_failed_request() {
    let ca = TestCa::new();
    let feed = FeedServer::start(&ca);
    feed.put("/hosts.txt", hosts_file(5));
    feed.put("/ut1/blacklists.tar.gz", ut1_tarball(3));
    feed.put("/iwf.txt", b"csam1.test\n".to_vec());
    feed.put("/pinned.txt", b"x.test\n".to_vec());
    let origin = Origin::http();
    let text = policy(&feed, "");
    let g = Gatehouse::start(&files(&ca, &text));
    let proxy = g.url();
    let allowed = format!("http://allowed.test:{}/", origin.port);
    let bet7 = format!("http://bet7.test:{}/", origin.port);
    let bet14 = format!("http://bet14.test:{}/", origin.port);
    let bet0 = format!("http://bet0.test:{}/", origin.port);
    assert_eq!(curl(&["-x", &proxy, &bet7]).status, 200, "not listed yet");

    let api = |body: &str| {
        let r = curl(&[
            "-sS",
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {TECH}"),
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
            &format!("http://127.0.0.1:{}/api/lists/update", g.admin_port),
        ]);
        (r.status, r.body)
    };
    // The CLI's default path: ask the running proxy through its admin API.
    let out = gatehouse()
        .args(["lists", "update", "--source", "hosts", "--admin"])
        .arg(format!("127.0.0.1:{}", g.admin_port))
        .arg("--config")
        .arg(g.dir.path().join("policy.toml"))
        .env("GATEHOUSE_ADMIN_TOKEN", TECH)
        .output()
        .expect("lists update runs");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("hosts: updated: 5 entries"), "{said}");
    assert_eq!(curl(&["-x", &proxy, &bet0]).status, 403);

    // The load: two clients, each request a new connection through the proxy; every
    // answer must be the origin's 200 (allowed.test) or the block page's 403 (bet0.test,
    // listed by every version of the feed from now on).
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let done = Arc::new(AtomicU64::new(0));
    let loaders: Vec<_> = (0..2)
        .map(|i| {
            let (stop, failures, done) = (stop.clone(), failures.clone(), done.clone());
            let (proxy, allowed, bet0) = (proxy.clone(), allowed.clone(), bet0.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) || n < 20 {
                    let (url, want) = if (n + i).is_multiple_of(3) {
                        (&bet0, 403)
                    } else {
                        (&allowed, 200)
                    };
                    let r = curl(&["-x", &proxy, url]);
                    if r.status != want {
                        failures
                            .lock()
                            .expect("lock")
                            .push(format!("{url}: {} (curl {})", r.status, r.exit));
                    }
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // Grow the feed and swap again, several times, under the load.
    let before = done.load(Ordering::Relaxed);
    for round in 1..=4 {
        feed.put("/hosts.txt", hosts_file(5 + round * 3));
        let (status, body) = api(r#"{"source": "hosts"}"#);
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"result\":\"updated\""), "{body}");
    }
    assert_eq!(
        curl(&["-x", &proxy, &bet14]).status,
        403,
        "the last update is in force"
    );
    assert!(
        done.load(Ordering::Relaxed) > before,
        "requests ran while the lists were swapped"
    );
    // A refused update (the shrink guard) changes nothing in force.
    feed.put("/hosts.txt", hosts_file(3));
    let (status, body) = api(r#"{"source": "hosts"}"#);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"result\":\"refused\""), "{body}");
    assert_eq!(
        curl(&["-x", &proxy, &bet14]).status,
        403,
        "the old lists stay"
    );
    // An override without a reason is refused.
    let (status, _) = api(r#"{"source": "hosts", "allow_shrink": true}"#);
    assert_eq!(status, 400);

    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        l.join().expect("load thread");
    }
    let failures = failures.lock().expect("lock");
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        done.load(Ordering::Relaxed),
        &failures[..failures.len().min(10)]
    );
    assert!(done.load(Ordering::Relaxed) >= 40);

    // The sources' state, and the metrics the staleness alert reads.
    let sources = curl(&[
        "-sS",
        "-H",
        &format!("Authorization: Bearer {TECH}"),
        &format!("http://127.0.0.1:{}/api/lists/sources", g.admin_port),
    ]);
    assert_eq!(sources.status, 200);
    assert!(
        sources.body.contains("\"last_result\":\"refused\""),
        "{}",
        sources.body
    );
    let metrics = curl(&[&format!("http://127.0.0.1:{}/metrics", g.admin_port)]).body;
    assert!(
        metrics.contains("gatehouse_list_updates_total{result=\"updated\",source=\"hosts\"} 5"),
        "{metrics}"
    );
    assert!(metrics.contains("gatehouse_list_updates_total{result=\"refused\",source=\"hosts\"} 1"));
    let last = metrics
        .lines()
        .find(|l| {
            l.starts_with("gatehouse_list_source_last_success_timestamp_seconds{source=\"hosts\"}")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<i64>().ok())
        .expect("last success gauge");
    assert!(last > 1_700_000_000, "{last}");
    let never = metrics
        .lines()
        .find(|l| {
            l.starts_with("gatehouse_list_source_last_success_timestamp_seconds{source=\"ut1\"}")
        })
        .expect("a never-updated source has the gauge at 0");
    assert!(never.ends_with(" 0"), "{never}");
    let _ = std::io::stdout().flush();
}

#[test]
fn the_in_process_schedule_fetches_a_source_never_fetched_soon_after_start() {
    let ca = TestCa::new();
    let feed = FeedServer::start(&ca);
    feed.put("/hosts.txt", hosts_file(8));
    let origin = Origin::http();
    let text = policy(&feed, "").replace(
        "[lists]\ndir = \"lists\"\n",
        "[lists]\ndir = \"lists\"\nupdate_every = \"6h\"\n",
    );
    let g = Gatehouse::start(&files(&ca, &text));
    // Every source is due at start (none was ever attempted); the hosts feed is served.
    assert!(
        g.wait_for_log(
            "source hosts: updated: 8 entries",
            std::time::Duration::from_secs(30)
        ),
        "{}",
        g.log()
    );
    // by "schedule", and swapped in.
    assert!(g.log().contains("(by schedule)"), "{}", g.log());
    let bet7 = format!("http://bet7.test:{}/", origin.port);
    let mut status = 0;
    for _ in 0..50 {
        status = curl(&["-x", &g.url(), &bet7]).status;
        if status == 403 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(status, 403);
}
