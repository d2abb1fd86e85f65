//! The Kubernetes manifests in deploy/k8s/: each resource valid against the Kubernetes
//! schemas (kubernetes-validate, strict: unknown fields refused), the policy the
//! ConfigMap carries accepted by `gatehouse check`, and every file the kustomization
//! names present.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests are shell: they read files and clocks

mod common;

use std::process::Command;

use common::{gatehouse, root};

/// `kubernetes-validate`: from `$KUBERNETES_VALIDATE`, else on the PATH (`.ci/run`
/// installs it from PyPI into a virtual environment and puts it there).
fn validator() -> String {
    std::env::var("KUBERNETES_VALIDATE").unwrap_or_else(|_| "kubernetes-validate".into())
}

#[test]
fn the_manifests_are_valid_kubernetes_resources() {
    let dir = root().join("deploy/k8s");
    // The ServiceMonitor is the Prometheus Operator's own kind, which the Kubernetes
    // schemas do not cover; the rest are core kinds.
    let files = ["namespace.yaml", "service.yaml", "statefulset.yaml"];
    let out = Command::new(validator())
        .arg("--strict")
        .args(files.iter().map(|f| dir.join(f)))
        .output()
        .unwrap_or_else(|e| {
            panic!("kubernetes-validate runs ({e}; .ci/run installs it from PyPI)")
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // One line per resource: the namespace, two services and the StatefulSet.
    assert_eq!(
        format!("{stdout}{stderr}")
            .matches(" passed for resource ")
            .count(),
        4,
        "{stdout}\n{stderr}"
    );
}

#[test]
fn the_configmap_policy_passes_gatehouse_check() {
    let k8s = root().join("deploy/k8s");
    let text = std::fs::read_to_string(k8s.join("policy.toml")).expect("policy");
    // In the pod the lists are the image's copy of blocklists/.
    let text = text.replace(
        "dir = \"/usr/share/gatehouse/blocklists\"",
        &format!(
            "dir = {:?}",
            root().join("blocklists").display().to_string()
        ),
    );
    let text = text.replace(
        "dir = \"/var/lib/gatehouse/decisions\"",
        "dir = \"decisions\"",
    );
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("policy.toml"), text).expect("policy");
    for f in ["users.toml", "grants.toml"] {
        std::fs::copy(k8s.join(f), dir.path().join(f)).expect("copy");
    }
    let out = gatehouse()
        .args(["check", "--config"])
        .arg(dir.path().join("policy.toml"))
        .output()
        .expect("gatehouse runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("proxy auto-configuration:"), "{stdout}");

    let kustomization =
        std::fs::read_to_string(k8s.join("kustomization.yaml")).expect("kustomization");
    for line in kustomization.lines() {
        let name = line.trim().trim_start_matches("- ").trim();
        if name.ends_with(".yaml") || name.ends_with(".toml") {
            assert!(k8s.join(name).is_file(), "{name} is named but missing");
        }
    }
}
