//! Transparent mode end to end, as on a guest network: a "device" in a network namespace
//! of its own, joined to the host by a veth pair on a private subnet, with no proxy
//! settings at all; an nftables `redirect` on the host side of the veth sends its TCP
//! 80 and 443 (and the test origins' ports) to Gatehouse's transparent listeners; real
//! origins (plain HTTP, and TLS with a CA minted for the test) on the host's loopback;
//! curl inside the namespace connecting to an address that does not exist
//! (203.0.113.10, TEST-NET-3), which only the redirect makes reachable.
//!
//! Needs root, `ip netns` and nftables with NAT (CI runs as root); skipped with a message
//! otherwise. The namespace, the veth pair and the nft table are removed when the test
//! ends, passed or failed (a Drop guard).

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests are shell: they read files and clocks

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::servers::{Gatehouse, Origin, TestCa};

/// Where the device thinks it is connecting to.
const FAR: &str = "203.0.113.10";

/// The device's network: a namespace, a veth pair, and the host's nft table, all
/// removed on drop.
struct Lab {
    ns: String,
    host_if: String,
    table: String,
    /// The host side's address on the device's subnet (where the redirect delivers).
    host_ip: String,
    /// The device's address.
    device_ip: String,
    /// A second address of the device, on a subnet whose group's HTTPS is inspected.
    inspected_ip: String,
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"))
}

fn must(program: &str, args: &[&str]) {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lab {
    /// Why the test cannot run here, if it cannot.
    fn unavailable() -> Option<String> {
        if !nix_is_root() {
            return Some(
                "not root (network namespaces and nftables need it; CI runs as root)".into(),
            );
        }
        for (program, args) in [
            ("ip", &["netns", "list"][..]),
            ("nft", &["list", "tables"][..]),
        ] {
            match Command::new(program).args(args).output() {
                Ok(o) if o.status.success() => {}
                Ok(o) => {
                    return Some(format!(
                        "`{program} {}` fails: {}",
                        args.join(" "),
                        String::from_utf8_lossy(&o.stderr).trim()
                    ))
                }
                Err(e) => return Some(format!("{program} is not installed ({e})")),
            }
        }
        None
    }

    /// The namespace and veth pair, addressed, with the device's default route via the
    /// host. The redirect comes later, once the listeners' ports are known.
    fn new() -> Lab {
        let id = std::process::id();
        let subnet = 1 + id % 250;
        let lab = Lab {
            ns: format!("gh-transparent-{id}"),
            host_if: format!("ght{}h", id % 100_000),
            table: format!("gh_transparent_{id}"),
            host_ip: format!("10.203.{subnet}.1"),
            device_ip: format!("10.203.{subnet}.2"),
            inspected_ip: format!("10.203.{subnet}.3"),
        };
        let device_if = format!("ght{}d", id % 100_000);
        must("ip", &["netns", "add", &lab.ns]);
        must(
            "ip",
            &[
                "link",
                "add",
                &lab.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &device_if,
            ],
        );
        must("ip", &["link", "set", &device_if, "netns", &lab.ns]);
        must(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", lab.host_ip),
                "dev",
                &lab.host_if,
            ],
        );
        must("ip", &["link", "set", &lab.host_if, "up"]);
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &lab.ns, "ip"];
            all.extend_from_slice(args);
            must("ip", &all);
        };
        in_ns(&[
            "addr",
            "add",
            &format!("{}/24", lab.device_ip),
            "dev",
            &device_if,
        ]);
        in_ns(&[
            "addr",
            "add",
            &format!("{}/24", lab.inspected_ip),
            "dev",
            &device_if,
        ]);
        in_ns(&["link", "set", &device_if, "up"]);
        in_ns(&["link", "set", "lo", "up"]);
        in_ns(&["route", "add", "default", "via", &lab.host_ip]);
        lab
    }

    /// The host's redirect: TCP to `http_ports` from the device's interface to the
    /// transparent HTTP listener, to `tls_ports` to the HTTPS one.
    fn redirect(&self, http_ports: &[u16], http_to: u16, tls_ports: &[u16], tls_to: u16) {
        let set = |ports: &[u16]| {
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let rules = format!(
            "table ip {table} {{\n  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    iifname \"{dev}\" tcp dport {{ {http} }} redirect to :{http_to}\n    iifname \"{dev}\" tcp dport {{ {tls} }} redirect to :{tls_to}\n  }}\n}}\n",
            table = self.table,
            dev = self.host_if,
            http = set(http_ports),
            tls = set(tls_ports),
        );
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), rules).expect("nft rules written");
        must("nft", &["-f", &file.path().to_string_lossy()]);
    }

    /// curl run inside the device's namespace: (exit code, status, body, stderr).
    fn curl(&self, args: &[&str]) -> (i32, u16, String, String) {
        let mut all = vec![
            "netns",
            "exec",
            &self.ns,
            "curl",
            "-s",
            "-S",
            "--max-time",
            "15",
            "-w",
            "\n%{http_code}",
        ];
        all.extend_from_slice(args);
        let out = run("ip", &all);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (
            out.status.code().unwrap_or(-1),
            code.trim().parse().unwrap_or(0),
            body.to_string(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it; the host end too, in
        // case the namespace was never made.
        let _ = run("nft", &["delete", "table", "ip", &self.table]);
        let _ = run("ip", &["netns", "del", &self.ns]);
        let _ = run("ip", &["link", "del", &self.host_if]);
    }
}

fn nix_is_root() -> bool {
    run("id", &["-u"]).stdout.starts_with(b"0\n")
}

/// The port of the transparent listener named `kind` (`http`, `https`), from its log line.
fn listener_port(g: &Gatehouse, kind: &str) -> u16 {
    assert!(
        g.wait_for_log("transparent-mode listener", Duration::from_secs(5)),
        "{}",
        g.log()
    );
    g.log()
        .lines()
        .filter(|l| l.contains("transparent-mode listener"))
        .find(|l| {
            l.contains(&format!("listener=\"{kind}\"")) || l.contains(&format!("listener={kind} "))
        })
        .and_then(|l| l.split("listen=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.rsplit(':').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no {kind} transparent listener in the log: {}", g.log()))
}

/// `gatehouse log tail` until it shows `needle` (the writer syncs on an interval).
fn log_with(dir: &Path, needle: &str) -> String {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let tail = common::log_tail(dir);
        if tail.contains(needle) || Instant::now() > end {
            return tail;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_device_with_no_proxy_settings_is_filtered_by_host_and_sni() {
    if let Some(why) = Lab::unavailable() {
        eprintln!("SKIPPED transparent mode test: {why}");
        return;
    }
    let lab = Lab::new();
    let ca = TestCa::new();
    let tls = Origin::https(&ca, &["origin.test", "bet.test"]);
    let http = Origin::http();
    // The device's subnet is the guest network: its group blocks gambling and bare
    // addresses; the default group blocks nothing, so a refusal shows the subnet was
    // what identified the device.
    let policy = format!(
        r#"[school]
name = "Test Academy"
[lists]
dir = "lists"
[categories.gambling]
severity = "inappropriate"
[identity]
default_group = "everyone"
[[identity.subnets]]
cidr = "{device}/32"
group = "guests"
[groups.everyone]
mode = "blocklist"
block = []
[[identity.subnets]]
cidr = "{inspected}/32"
group = "inspected"
[groups.guests]
mode = "blocklist"
block = ["gambling"]
block_ip_literals = true
[groups.inspected]
mode = "blocklist"
block = ["gambling"]
inspect_tls = true
[inspection]
ca_cert = "ca/ca.crt"
ca_key = "ca/ca.key"
extra_roots = ["origin-ca.pem"]
[log]
dir = "log"
[admin]
listen = "127.0.0.1:0"
[server]
listen = "127.0.0.1:0"
allow_internal_destinations = ["127.0.0.1/32"]
tunnel_ports = [443, {tls_port}]
[server.resolve]
"origin.test" = "127.0.0.1"
"bet.test" = "127.0.0.1"
[transparent]
http_listen = "[::]:0"
https_listen = "{host}:0"
"#,
        device = lab.device_ip,
        inspected = lab.inspected_ip,
        host = lab.host_ip,
        tls_port = tls.port,
    );
    // The school CA, for the inspected group's devices; the origins' CA is trusted by
    // Gatehouse upstream (extra_roots) and by the guests' curl.
    let school = TestCa::new();
    let school_key = school.key_pem();
    let g = Gatehouse::start(&[
        ("policy.toml", policy.as_str()),
        ("lists/gambling/domains", "bet.test\n"),
        ("ca/ca.crt", school.pem.as_str()),
        ("ca/ca.key", school_key.as_str()),
        ("origin-ca.pem", ca.pem.as_str()),
    ]);
    // The HTTP listener is dual-stack ([::]), so the device's IPv4 connections arrive
    // IPv4-mapped: their original destination must still be read.
    let http_to = listener_port(&g, "http");
    let tls_to = listener_port(&g, "https");
    lab.redirect(&[80, http.port], http_to, &[443, tls.port], tls_to);
    let ca_file = g.dir.path().join("test-ca.pem");
    std::fs::write(&ca_file, &ca.pem).expect("CA written");
    let ca_file = ca_file.to_string_lossy().into_owned();
    let log_dir = g.dir.path().join("log");

    // HTTPS, allowed: the device reaches the origin through the redirect; Gatehouse
    // dialled the name it decided (origin.test → 127.0.0.1), not 203.0.113.10.
    let resolve = |name: &str, port: u16| format!("{name}:{port}:{FAR}");
    let (exit, status, body, err) = lab.curl(&[
        "--cacert",
        &ca_file,
        "--resolve",
        &resolve("origin.test", tls.port),
        &format!("https://origin.test:{}/", tls.port),
    ]);
    assert_eq!(
        (exit, status, body.as_str()),
        (0, 200, "hello from origin"),
        "{err}\n{}",
        g.log()
    );

    // HTTPS, blocked by its SNI: the handshake ends with a TLS alert.
    let (exit, status, _, err) = lab.curl(&[
        "--cacert",
        &ca_file,
        "--resolve",
        &resolve("bet.test", tls.port),
        &format!("https://bet.test:{}/", tls.port),
    ]);
    assert_eq!((exit, status), (35, 0), "curl's TLS handshake error: {err}");
    assert!(err.contains("access denied"), "the alert: {err}");
    let original = format!("{FAR}:{}", tls.port);
    let tail = log_with(&log_dir, &format!("bet.test:{}", tls.port));
    let line = tail
        .lines()
        .find(|l| l.contains(&format!("CONNECT bet.test:{}", tls.port)))
        .unwrap_or_else(|| panic!("the refusal is recorded: {tail}"));
    assert!(line.contains("BLOCK"), "{line}");
    assert!(line.contains("guests"), "identity by subnet: {line}");
    assert!(line.contains(&lab.device_ip), "{line}");
    assert!(
        line.contains(&format!("transparent, to {original}")),
        "the original destination: {line}"
    );

    // HTTPS with no SNI (an address in the URL): decided on the original destination,
    // a bare address, which the guests' group refuses.
    let (exit, _, _, err) = lab.curl(&["-k", &format!("https://{FAR}:{}/", tls.port)]);
    assert_eq!(exit, 35, "{err}");
    let tail = log_with(&log_dir, &format!("CONNECT {original}"));
    assert!(
        tail.lines()
            .any(|l| l.contains(&format!("CONNECT {original}")) && l.contains("BLOCK")),
        "{tail}"
    );

    // Plain HTTP, allowed: decided on the Host header and forwarded.
    let (exit, status, body, err) = lab.curl(&[
        "--resolve",
        &resolve("origin.test", http.port),
        &format!("http://origin.test:{}/", http.port),
    ]);
    assert_eq!(
        (exit, status, body.as_str()),
        (0, 200, "hello from origin"),
        "{err}"
    );

    // Plain HTTP, blocked: the block page, recorded with the original destination.
    let (_, status, body, err) = lab.curl(&[
        "--resolve",
        &resolve("bet.test", http.port),
        &format!("http://bet.test:{}/page", http.port),
    ]);
    assert_eq!(status, 403, "{err}");
    assert!(body.contains("Test Academy"), "the block page: {body}");
    let url = format!("http://bet.test:{}/page", http.port);
    let tail = log_with(&log_dir, &url);
    let line = tail
        .lines()
        .find(|l| l.contains(&url))
        .unwrap_or_else(|| panic!("the block is recorded: {tail}"));
    assert!(line.contains("BLOCK"), "{line}");
    assert!(
        line.contains(&format!("transparent, to {FAR}:{}", http.port)),
        "{line}"
    );

    // Plain HTTP with no Host header: 400 with a page.
    let (_, status, body, err) =
        lab.curl(&["-H", "Host:", &format!("http://{FAR}:{}/", http.port)]);
    assert_eq!(status, 400, "{err}");
    assert!(body.contains("no Host header"), "{body}");

    // A device whose group's HTTPS is inspected (and trusts the school CA): a site
    // refused on its SNI gets the block page over TLS; an allowed one is served, each
    // request inside decided.
    let school_file = g.dir.path().join("school-ca.pem");
    std::fs::write(&school_file, &school.pem).expect("school CA written");
    let school_file = school_file.to_string_lossy().into_owned();
    let (exit, status, body, err) = lab.curl(&[
        "--interface",
        &lab.inspected_ip,
        "--cacert",
        &school_file,
        "--resolve",
        &resolve("bet.test", tls.port),
        &format!("https://bet.test:{}/", tls.port),
    ]);
    assert_eq!((exit, status), (0, 403), "{err}");
    assert!(body.contains("Test Academy"), "the block page: {body}");
    let (exit, status, body, err) = lab.curl(&[
        "--interface",
        &lab.inspected_ip,
        "--cacert",
        &school_file,
        "--resolve",
        &resolve("origin.test", tls.port),
        &format!("https://origin.test:{}/inside", tls.port),
    ]);
    assert_eq!(
        (exit, status, body.as_str()),
        (0, 200, "hello from origin"),
        "{err}\n{}",
        g.log()
    );
    let inside = format!("https://origin.test:{}/inside", tls.port);
    let tail = log_with(&log_dir, &inside);
    assert!(
        tail.lines().any(|l| l.contains(&inside)
            && l.contains("ALLOW")
            && l.contains(&format!("transparent, to {original}"))),
        "{tail}"
    );

    // The JSONL export carries the original destination as a field of its own.
    let export = common::gatehouse()
        .args(["log", "export", "--format", "jsonl", "--dir"])
        .arg(&log_dir)
        .output()
        .expect("gatehouse log export runs");
    let export = String::from_utf8_lossy(&export.stdout);
    assert!(
        export
            .lines()
            .any(|l| l.contains(&format!("\"original_destination\":\"{original}\""))),
        "{export}"
    );

    // The connections were counted, by listener.
    let metrics = common::servers::curl(&[&format!("http://127.0.0.1:{}/metrics", g.admin_port)]);
    let count = |listener: &str| -> u64 {
        metrics
            .body
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "gatehouse_transparent_connections_total{{listener=\"{listener}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert!(count("https") >= 5, "{}", metrics.body);
    assert!(count("http") >= 3, "{}", metrics.body);
}

/// The shipped recipe is one nft accepts: `nft -c` checks it against the running
/// kernel's nftables (families, hooks, `redirect`, `reject`) without applying it.
#[test]
fn the_nftables_recipe_is_valid() {
    if let Some(why) = Lab::unavailable() {
        eprintln!("SKIPPED nftables recipe check: {why}");
        return;
    }
    let recipe = common::root().join("deploy/nftables/gatehouse-transparent.nft");
    let out = run("nft", &["-c", "-f", &recipe.to_string_lossy()]);
    assert!(
        out.status.success(),
        "nft -c -f {}: {}",
        recipe.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    // What the README promises it does.
    let text = std::fs::read_to_string(&recipe).expect("recipe readable");
    for rule in [
        "tcp dport 80 redirect to :$GATEHOUSE_HTTP_PORT",
        "tcp dport 443 redirect to :$GATEHOUSE_HTTPS_PORT",
        "udp dport 443 drop",
        "tcp dport 853 drop",
        "udp dport 853 drop",
        "ip daddr $SCHOOL_DNS_V4 udp dport 53 accept",
        "reject with icmpx admin-prohibited",
    ] {
        assert!(text.contains(rule), "the recipe has {rule:?}");
    }
}
