//! Helpers shared by the integration tests: the shipped policy, temporary policies, the
//! real binary.

#![allow(dead_code, clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, Utc};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped example policy.
pub fn example_policy() -> PathBuf {
    root().join("policy/gatehouse.toml")
}

/// A `Command` for the real `gatehouse` binary.
pub fn gatehouse() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
}

/// Runs `gatehouse ARGS --config CONFIG`: whether it succeeded, its stdout and stderr.
#[allow(dead_code)] // not every test binary runs the CLI this way
pub fn run_cli(args: &[&str], config: &Path) -> (bool, String, String) {
    let out = gatehouse()
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("gatehouse runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A UTC instant from RFC 3339 text.
pub fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("test time")
        .with_timezone(&Utc)
}

/// A temporary directory holding `files` (relative path → contents).
pub fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().expect("has parent")).expect("mkdir");
        std::fs::write(&p, text).expect("write");
    }
    dir
}

/// `gatehouse log tail -n 500` of a log directory: the audit trail as text.
pub fn log_tail(log_dir: &Path) -> String {
    let out = gatehouse()
        .args(["log", "tail", "-n", "500", "--dir"])
        .arg(log_dir)
        .output()
        .expect("gatehouse log tail runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Path of `name` inside `dir`.
pub fn at(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
pub mod browser;
pub mod etcd;
pub mod kdc;
pub mod servers;
pub mod slapd;
