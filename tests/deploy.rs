//! deploy/: the Kubernetes manifests validate against the schemas of a
//! pinned Kubernetes version (the `kubernetes-validate` Python package,
//! which scripts/test installs), and the systemd unit passes
//! `systemd-analyze verify`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Kubernetes version the manifests are checked against.
const KUBERNETES: &str = "1.31.0";

fn manifests(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("deploy/kubernetes").flatten() {
        let path = entry.path();
        if path.is_dir() {
            manifests(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

/// `kubernetes-validate` on PATH or in pip's --user bin; a missing one
/// fails the test (scripts/test installs it).
fn validator() -> PathBuf {
    let user_bin =
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/bin/kubernetes-validate"));
    let on_path = Command::new("kubernetes-validate")
        .arg("--version")
        .output();
    if on_path.is_ok_and(|o| o.status.success()) {
        return PathBuf::from("kubernetes-validate");
    }
    match user_bin.filter(|p| p.is_file()) {
        Some(p) => p,
        None => panic!(
            "kubernetes-validate is not installed: run scripts/test (pip install --user kubernetes-validate==1.31.0)"
        ),
    }
}

fn validate(files: &[PathBuf]) -> std::process::Output {
    Command::new(validator())
        .args(["--strict", "--quiet", "-k", KUBERNETES])
        .args(files)
        .output()
        .expect("kubernetes-validate")
}

#[test]
fn the_kubernetes_manifests_validate() {
    let mut files = Vec::new();
    manifests(&common::repo().join("deploy/kubernetes"), &mut files);
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    let out = validate(&files);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The probes are the API's real paths.
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        if text.contains("livenessProbe") {
            assert!(
                text.contains("path: /healthz") && text.contains("path: /readyz"),
                "{}",
                f.display()
            );
        }
    }
}

#[test]
fn the_validator_rejects_a_broken_manifest() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicaz: 1}\n",
    )
    .expect("write");
    assert!(!validate(&[bad]).status.success());
}

/// `systemd-analyze verify` with the unit's binary path pointed at the
/// built binary (verify checks that ExecStart exists); any message fails.
#[test]
fn the_systemd_unit_verifies() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze not installed (scripts/test installs systemd); not checked");
        return;
    }
    let unit = std::fs::read_to_string(common::repo().join("deploy/systemd/multijob.service"))
        .expect("unit");
    for must in [
        "User=multijob",
        "StateDirectory=multijob",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGTERM",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(unit.contains(must), "the unit lacks {must:?}");
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("multijob.service");
    let bin = common::bin();
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/multijob", &bin.display().to_string()),
    )
    .expect("write");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}
