//! Device names in the decision log: the policy's `[[identity.devices]]` map and reverse
//! DNS against a real DNS server (Debian's dnsmasq, started by the test on a loopback
//! port with its own hosts file), through the real proxy with curl from several
//! loopback source addresses; then the names in `log show`, the CSV and JSON-lines
//! exports and the weekly report. And a DNS server that never answers does not hold
//! requests up past the configured wait.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests are shell

mod common;

use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::servers::{curl, CurlResult, Gatehouse, Origin};

/// dnsmasq answering PTR queries from a hosts file, on 127.0.0.1:`port`, killed when
/// dropped.
struct Dnsmasq {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    fn start(hosts: &str) -> Dnsmasq {
        let dir = tempfile::tempdir().expect("temp dir");
        let hosts_file = dir.path().join("hosts");
        std::fs::write(&hosts_file, hosts).expect("write hosts");
        // A free port: UDP and TCP both, as a resolver may retry over TCP.
        let port = loop {
            let tcp = TcpListener::bind("127.0.0.1:0").expect("free port");
            let port = tcp.local_addr().expect("addr").port();
            if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
                break port;
            }
        };
        let child = Command::new("/usr/sbin/dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--pid-file=",
                // As root it would switch to a user that may not exist here.
                "--user=root",
                "--group=root",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--addn-hosts={}", hosts_file.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq starts (install dnsmasq-base)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "dnsmasq did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Dnsmasq {
            child,
            port,
            _dir: dir,
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

fn policy(reverse_dns: &str) -> String {
    format!(
        r#"[school]
name = "Test Academy"
[lists]
dir = "lists"
[categories.self-harm]
severity = "safeguarding"
[identity]
default_group = "ks3"
[[identity.devices]]
address = "127.0.0.7"
name = "KS2-LAPTOP-07"
[[identity.devices]]
address = "127.0.0.16/28"
name = "Library trolley"
[[identity.devices]]
address = "127.0.0.17"
name = "LIB-PC-17"
{reverse_dns}
[groups.ks3]
mode = "blocklist"
block = ["self-harm"]
[log]
dir = "log"
[admin]
listen = "127.0.0.1:0"
[server]
listen = "127.0.0.1:0"
allow_internal_destinations = ["127.0.0.1/32"]
[server.resolve]
"origin.test" = "127.0.0.1"
"harm.test" = "127.0.0.1"
"#
    )
}

fn start(reverse_dns: &str) -> Gatehouse {
    let policy = policy(reverse_dns);
    Gatehouse::start(&[
        ("policy.toml", policy.as_str()),
        ("lists/self-harm/domains", "harm.test\n"),
    ])
}

/// A request from loopback address `from` (curl binds its source to it).
fn get_from(g: &Gatehouse, from: &str, url: &str) -> CurlResult {
    curl(&["-x", &g.url(), "--interface", from, url])
}

fn gatehouse_out(args: &[&str], config: &Path) -> String {
    let (ok, out, err) = common::run_cli(args, config);
    assert!(ok, "{args:?}: {err}");
    out
}

#[test]
fn device_names_from_policy_and_reverse_dns_reach_log_exports_and_report() {
    let mut dns = Dnsmasq::start(
        "127.0.0.8 ks3-laptop-08.school.test\n127.0.0.17 not-this-one.school.test\n",
    );
    let origin = Origin::http();
    let g = start(&format!(
        "[identity.reverse_dns]\nserver = \"127.0.0.1:{}\"\nwait_ms = 1000\ntimeout_ms = 2000\n",
        dns.port
    ));
    let harm = format!("http://harm.test:{}/", origin.port);
    let plain = format!("http://origin.test:{}/", origin.port);

    // (source address, the name its records should carry)
    let rows: &[(&str, Option<&str>)] = &[
        ("127.0.0.7", Some("KS2-LAPTOP-07")),    // the policy's address
        ("127.0.0.18", Some("Library trolley")), // the policy's subnet
        ("127.0.0.17", Some("LIB-PC-17")),       // the policy beats DNS
        ("127.0.0.8", Some("ks3-laptop-08.school.test")), // reverse DNS
        ("127.0.0.9", None),                     // no name anywhere
    ];
    for (from, _) in rows {
        let r = get_from(&g, from, &harm);
        assert_eq!(r.status, 403, "{from}: {r:?}");
        let r = get_from(&g, from, &plain);
        assert_eq!(r.status, 200, "{from}: {r:?}");
    }
    // The DNS server gone: the name already found is remembered.
    dns.stop();
    let r = get_from(&g, "127.0.0.8", &plain);
    assert_eq!(r.status, 200, "{r:?}");

    let config = g.dir.path().join("policy.toml");
    let log_dir = g.dir.path().join("log");

    // JSON lines: every decision names its device, or none.
    let out = common::gatehouse()
        .args(["log", "export", "--format", "jsonl", "--dir"])
        .arg(&log_dir)
        .output()
        .expect("export runs");
    assert!(out.status.success());
    let records: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(records.len(), rows.len() * 2 + 1);
    for (from, name) in rows {
        let mine: Vec<_> = records.iter().filter(|r| r["client"] == *from).collect();
        assert!(mine.len() >= 2, "{from}");
        for r in mine {
            assert_eq!(
                r["device"].as_str(),
                *name,
                "{from}: {r}\n{}",
                g.log()
                    .lines()
                    .filter(|l| l.contains("device"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }

    // CSV: the device is the column after `enforced` (then transparent mode's
    // original destination, empty here).
    let out = common::gatehouse()
        .args(["log", "export", "--format", "csv", "--dir"])
        .arg(&log_dir)
        .output()
        .expect("export runs");
    let csv = String::from_utf8_lossy(&out.stdout);
    let header = csv.lines().next().expect("header");
    assert!(
        header.ends_with(",enforced,device,original_destination"),
        "{header}"
    );
    let laptop = csv
        .lines()
        .find(|l| l.contains("127.0.0.7") && l.contains("harm.test"))
        .expect("the laptop's blocked row");
    assert!(laptop.ends_with(",KS2-LAPTOP-07,"), "{laptop}");

    // `log show` on the blocked request's reference.
    let blocked = records
        .iter()
        .find(|r| r["client"] == "127.0.0.8" && r["action"] == "block")
        .expect("the DNS-named device's block");
    let seq = blocked["seq"].as_u64().expect("seq");
    let shown = gatehouse_out(&["log", "show", &format!("#{seq}")], &config);
    assert!(
        shown.contains("127.0.0.8, device ks3-laptop-08.school.test"),
        "{shown}"
    );

    // The weekly report: the alerts table names the device beside the person.
    let now = chrono::Utc::now();
    let from = (now - chrono::Duration::hours(1)).to_rfc3339();
    let to = (now + chrono::Duration::hours(1)).to_rfc3339();
    let report = |format: &str| {
        gatehouse_out(
            &["report", "--format", format, "--from", &from, "--to", &to],
            &config,
        )
    };
    let json: serde_json::Value = serde_json::from_str(&report("json")).expect("report JSON");
    let alerts = json["alerts"].as_array().expect("alerts");
    for (from, name) in rows {
        let row = alerts
            .iter()
            .find(|a| a["who"] == *from)
            .unwrap_or_else(|| panic!("{from}: {alerts:?}"));
        let want: Vec<&str> = name.iter().copied().collect();
        assert_eq!(row["devices"], serde_json::json!(want), "{from}");
    }
    let csv = report("csv");
    assert!(csv.lines().next().expect("header").ends_with(",device"));
    assert!(
        csv.lines()
            .any(|l| l.contains("127.0.0.18") && l.ends_with(",Library trolley")),
        "{csv}"
    );
    let html = report("html");
    assert!(html.contains(">Device</th>"), "{html}");
    assert!(html.contains("KS2-LAPTOP-07"));
}

#[test]
fn a_silent_dns_server_does_not_hold_requests_up() {
    // A UDP socket that reads nothing: every query goes unanswered.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let port = silent.local_addr().expect("addr").port();
    let origin = Origin::http();
    let g = start(&format!(
        "[identity.reverse_dns]\nserver = \"127.0.0.1:{port}\"\nwait_ms = 50\ntimeout_ms = 5000\n"
    ));
    let plain = format!("http://origin.test:{}/", origin.port);
    let started = Instant::now();
    let r = get_from(&g, "127.0.0.9", &plain);
    assert_eq!(r.status, 200, "{r:?}");
    // The lookup may take 5 s; the request waits 50 ms for it (a loose bound here: this
    // is about not waiting for the lookup, not about speed).
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The policy's names need no DNS at all.
    let r = get_from(&g, "127.0.0.7", &plain);
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn bad_device_entries_are_refused_with_their_line() {
    let policy = policy(
        "[[identity.devices]]\naddress = \"10.0.0.300\"\nname = \"x\"\n[[identity.devices]]\naddress = \"127.0.0.7\"\nname = \"again\"\n[[identity.devices]]\naddress = \"10.0.0.1\"\nname = \"\"\n[identity.reverse_dns]\nserver = \"dns.school\"\n",
    );
    let dir = common::tree(&[("policy.toml", policy.as_str())]);
    let out = common::gatehouse()
        .args(["check", "--config"])
        .arg(dir.path().join("policy.toml"))
        .output()
        .expect("check runs");
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "device address \"10.0.0.300\" is not an address",
        "device address 127.0.0.7/32 is already named on line 10",
        "device name is empty",
        "server \"dns.school\" is not ADDRESS or ADDRESS:PORT",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
}
