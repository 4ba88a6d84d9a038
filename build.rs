//! Stamps the commit the binary is built from into `multijob --version`:
//! `MULTIJOB_BUILD_COMMIT` is `git rev-parse --short HEAD`, `-dirty` when
//! tracked files differ, `unknown` outside a git checkout (a crate
//! tarball, a Docker build without .git).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let commit = match git(&["rev-parse", "--short", "HEAD"]) {
        Some(sha) if !sha.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty { format!("{sha}-dirty") } else { sha }
        }
        _ => "unknown".to_string(),
    };
    println!("cargo:rustc-env=MULTIJOB_BUILD_COMMIT={commit}");
    // A new commit or a checkout of another branch changes HEAD or the
    // ref it names (in a worktree, .git is a file naming the real git dir).
    // Not the index: every `git add` would rebuild the crate, so `-dirty`
    // is as of the last commit or change to build.rs.
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={head}");
    }
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(path) = git(&["rev-parse", "--git-path", &reference])
    {
        println!("cargo:rerun-if-changed={path}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
