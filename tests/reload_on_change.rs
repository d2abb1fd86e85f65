//! `[server] reload_on_change`: the policy and its lists mounted as a Kubernetes
//! ConfigMap is (each file a link through `..data` to a timestamped directory, swapped
//! whole by renaming a new `..data` link over the old), updated the way the kubelet
//! updates it, and the running proxy picking the change up with no signal; a broken
//! update refused with the last good policy still in force.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests are shell: they read files and clocks

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use common::servers::{curl, Gatehouse, Origin};

fn policy(block: &str) -> String {
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
block = [{block}]
[log]
dir = "log"
[admin]
listen = "127.0.0.1:0"
[server]
listen = "127.0.0.1:0"
reload_on_change = true
allow_internal_destinations = ["127.0.0.1/32"]
[server.resolve]
"bet.test" = "127.0.0.1"
"casino.test" = "127.0.0.1"
"#
    )
}

/// Writes one version of the "ConfigMap" as `..<version>/` and points `..data` at it the
/// way the kubelet does: a new link beside the old, renamed over it.
fn publish(dir: &Path, version: &str, policy: &str, gambling: &str) {
    let data = dir.join(format!("..{version}"));
    std::fs::create_dir_all(data.join("lists/gambling")).expect("version dir");
    std::fs::write(data.join("policy.toml"), policy).expect("policy");
    std::fs::write(data.join("lists/gambling/domains"), gambling).expect("list");
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(format!("..{version}"), &tmp).expect("link");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap");
}

fn status(g: &Gatehouse, origin: &Origin, host: &str) -> u16 {
    curl(&[
        "-x",
        &format!("http://127.0.0.1:{}", g.port),
        &format!("http://{host}:{}/", origin.port),
    ])
    .status
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what} did not happen within 15 s");
}

#[test]
fn a_configmap_style_update_is_picked_up_without_a_signal_and_a_bad_one_refused() {
    let origin = Origin::http();
    let dir = tempfile::tempdir().expect("temp dir");
    publish(dir.path(), "v1", &policy("\"gambling\""), "bet.test\n");
    symlink("..data/policy.toml", dir.path().join("policy.toml")).expect("link");
    symlink("..data/lists", dir.path().join("lists")).expect("link");
    let g = Gatehouse::start_in(dir);
    assert_eq!(status(&g, &origin, "bet.test"), 403);
    assert_eq!(status(&g, &origin, "casino.test"), 200);

    // A new version of the lists.
    publish(g.dir.path(), "v2", &policy("\"gambling\""), "casino.test\n");
    eventually("the new list in force", || {
        status(&g, &origin, "casino.test") == 403
    });
    assert_eq!(status(&g, &origin, "bet.test"), 200);

    // A broken version: refused, the last good one stays.
    publish(g.dir.path(), "v3", &policy("\"gamblng\""), "bet.test\n");
    eventually("the refusal logged", || {
        g.log()
            .contains("reload refused; the previous policy stays in force")
    });
    assert!(
        g.log().contains("unknown category \"gamblng\""),
        "{}",
        g.log()
    );
    assert_eq!(status(&g, &origin, "casino.test"), 403);
    assert_eq!(status(&g, &origin, "bet.test"), 200);

    // The grants file beside the policy does not reload the policy.
    let reloads = g.log().matches("reloaded policy and lists").count();
    std::fs::write(g.dir.path().join("grants.toml"), "").expect("grants");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        g.log().matches("reloaded policy and lists").count(),
        reloads,
        "{}",
        g.log()
    );
}
