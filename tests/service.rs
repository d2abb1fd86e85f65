//! `gatehouse run` under a service manager's eye: the `sd_notify` messages systemd's
//! `Type=notify` unit (deploy/systemd/gatehouse.service) waits for, read from a real
//! notification socket as systemd would — ready once listening, reloading and ready
//! again around SIGHUP with the result on the status line (a refused reload says so and
//! names the problem), the watchdog's keep-alives, and stopping on SIGTERM. And the
//! shipped units pass `systemd-analyze verify`.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests are shell: they read files and clocks

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{gatehouse, root, tree};

const POLICY: &str = r#"[school]
name = "Test Academy"
[lists]
dir = "lists"
[categories.gambling]
severity = "inappropriate"
[categories.csam]
severity = "illegal"
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
"#;

/// Every message until one contains `want` (or `timeout`); all of them, joined.
fn until(socket: &UnixDatagram, want: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut seen = String::new();
    let mut buf = vec![0u8; 4096];
    while Instant::now() < deadline {
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        if let Ok(n) = socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push_str(&message);
            seen.push_str("\n--\n");
            if message.contains(want) {
                return seen;
            }
        }
    }
    panic!("no {want:?} within {timeout:?}; got:\n{seen}");
}

/// `gatehouse log tail` of the policy in `dir`.
fn log_tail(dir: &std::path::Path) -> String {
    let out = gatehouse()
        .args(["log", "tail", "-n", "50", "--config"])
        .arg(dir.join("policy.toml"))
        .output()
        .expect("gatehouse runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[test]
fn the_service_manager_hears_ready_reloading_watchdog_and_stopping() {
    let dir = tree(&[
        ("policy.toml", POLICY),
        ("lists/gambling/domains", "bet.test\n"),
        ("lists/csam/urls", "csam.test/a/\ncsam.test/b/\n"),
    ]);
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notification socket");
    let mut child = gatehouse()
        .args(["run", "--config"])
        .arg(dir.path().join("policy.toml"))
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gatehouse starts");
    let pid = child.id();

    let started = until(&socket, "READY=1", Duration::from_secs(20));
    assert!(
        started.contains("STATUS=serving on 127.0.0.1:"),
        "{started}"
    );
    assert!(started.contains("1 domains loaded"), "{started}");
    // The illegal lists' entries are on record from the start.
    let tail = log_tail(dir.path());
    assert!(
        tail.contains(
            "reload policy: ok  loaded at start: 1 domains; illegal lists: csam 2 entries"
        ),
        "{tail}"
    );
    // WatchdogSec=0.4 s: keep-alives every 0.2 s.
    until(&socket, "WATCHDOG=1", Duration::from_secs(2));
    until(&socket, "WATCHDOG=1", Duration::from_secs(2));

    std::fs::write(
        dir.path().join("lists/gambling/domains"),
        "bet.test\ncasino.test\n",
    )
    .expect("lists");
    signal(pid, "HUP");
    let reloaded = until(&socket, "READY=1", Duration::from_secs(20));
    assert!(reloaded.contains("RELOADING=1"), "{reloaded}");
    assert!(reloaded.contains("MONOTONIC_USEC="), "{reloaded}");
    assert!(
        reloaded.contains("policy and lists reloaded at") && reloaded.contains("(2 domains)"),
        "{reloaded}"
    );
    let tail = log_tail(dir.path());
    assert!(
        tail.contains("reload policy: ok  2 domains; illegal lists: csam 2 entries"),
        "{tail}"
    );

    std::fs::write(
        dir.path().join("policy.toml"),
        POLICY.replace("block = [\"gambling\"]", "block = [\"gamblng\"]"),
    )
    .expect("policy");
    let block_line = POLICY
        .lines()
        .position(|l| l.starts_with("block ="))
        .expect("block line")
        + 1;
    signal(pid, "HUP");
    let refused = until(&socket, "READY=1", Duration::from_secs(20));
    assert!(refused.contains("RELOADING=1"), "{refused}");
    assert!(
        refused.contains("serving the previous policy: reload at")
            && refused.contains("refused (1 problem(s); first: ")
            && refused.contains(&format!("policy.toml:{block_line}:")),
        "{refused}"
    );

    signal(pid, "TERM");
    let stopping = until(&socket, "STOPPING=1", Duration::from_secs(20));
    assert!(stopping.contains("STATUS=stopping"), "{stopping}");
    let status = child.wait().expect("exits");
    assert!(status.success(), "{status}");
}

#[test]
fn the_shipped_units_pass_systemd_analyze_verify() {
    let Ok(analyze) = which("systemd-analyze") else {
        panic!("systemd-analyze is needed (apt-get install systemd)");
    };
    // The units name /usr/local/bin/gatehouse, which verify requires to exist: check
    // copies that name the binary under test instead.
    let units = root().join("deploy/systemd");
    let dir = tempfile::tempdir().expect("temp dir");
    let binary = env!("CARGO_BIN_EXE_gatehouse");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&units).expect("deploy/systemd") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name").to_owned();
        let text = std::fs::read_to_string(&path).expect("unit");
        std::fs::write(
            dir.path().join(&name),
            text.replace("/usr/local/bin/gatehouse", binary),
        )
        .expect("copy");
        names.push(dir.path().join(&name));
    }
    assert!(names.len() >= 3, "{names:?}");
    let out = Command::new(analyze)
        .arg("verify")
        .arg("--man=no")
        .args(&names)
        .output()
        .expect("systemd-analyze runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or(())
}
