//! `multijob --version`: the version and the commit it was built from.

mod common;

#[test]
fn version_names_the_commit() {
    let out = std::process::Command::new(common::bin())
        .arg("--version")
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let expected_prefix = format!("multijob {} (", env!("CARGO_PKG_VERSION"));
    let commit = text
        .trim()
        .strip_prefix(&expected_prefix)
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unexpected --version: {text}"));
    let sha = commit.strip_suffix("-dirty").unwrap_or(commit);
    assert!(
        sha == "unknown" || (sha.len() >= 7 && sha.bytes().all(|b| b.is_ascii_hexdigit())),
        "{text}"
    );
}
