//! The git commit a config directory was read from, for the revision id.
//!
//! Runs the `git` binary with a timeout rather than linking a git library:
//! two commands give everything the revision id needs.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// Each git command gets this long; a hung NFS mount must not stall reloads.
const TIMEOUT: Duration = Duration::from_secs(2);

/// How many hex digits of the content hash the revision id keeps.
const SHORT_HASH: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GitState {
    /// `HEAD`, 40 (or 64) hex digits.
    pub commit: String,
    /// Tracked files under DIR differ from `HEAD`, or untracked ones exist.
    pub dirty: bool,
}

/// The commit of `dir` when it is inside a git work tree. `None` when it is
/// not, when the repository has no commit yet, when git is missing or
/// refuses the repository (another owner: see `git config safe.directory`),
/// or when git takes longer than 2 s.
///
/// The embedded store in `DIR/.multijob/` never makes the checkout dirty.
pub async fn git_state(dir: &Path) -> Option<GitState> {
    let head = git(dir, &["rev-parse", "--is-inside-work-tree", "HEAD"]).await?;
    let mut lines = head.lines();
    if lines.next() != Some("true") {
        return None;
    }
    let commit = lines.next()?.trim().to_string();
    if commit.is_empty() || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let status = git(
        dir,
        &[
            "status",
            "--porcelain",
            "--untracked-files=normal",
            "--",
            ".",
            ":(exclude).multijob",
        ],
    )
    .await?;
    Some(GitState {
        commit,
        dirty: !status.trim().is_empty(),
    })
}

/// The revision id SPEC section 4 fixes: `<sha>` for a clean checkout,
/// `<sha>-dirty` otherwise, `nogit` outside git; then `+` and the first 12
/// hex digits of the content hash.
pub fn revision_id(git: Option<&GitState>, content_hash: &str) -> String {
    let short: String = content_hash.chars().take(SHORT_HASH).collect();
    match git {
        Some(GitState {
            commit,
            dirty: true,
        }) => format!("{commit}-dirty+{short}"),
        Some(GitState {
            commit,
            dirty: false,
        }) => format!("{commit}+{short}"),
        None => format!("nogit+{short}"),
    }
}

/// Runs `git -C dir args…`; its stdout when it succeeds within the timeout.
async fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let mut cmd = Command::new("git");
    cmd.arg("-C")
        .arg(dir)
        .args(args)
        // `status` would otherwise refresh and rewrite .git/index: a write the
        // watcher would not see, but one that can race the user's own git.
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Dropping the future on timeout kills git.
        .kill_on_drop(true);
    let output = match tokio::time::timeout(TIMEOUT, cmd.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => {
            tracing::debug!(dir = %dir.display(), error = %e, "git not run");
            return None;
        }
        Err(_) => {
            tracing::warn!(dir = %dir.display(), ?args, "git took over {}s; killed it", TIMEOUT.as_secs());
            return None;
        }
    };
    if !output.status.success() {
        tracing::debug!(
            dir = %dir.display(),
            ?args,
            stderr = %String::from_utf8_lossy(&output.stderr).trim(),
            "git failed"
        );
        return None;
    }
    String::from_utf8(output.stdout).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::fs;

    /// Runs git with a fixed identity; panics with its output on failure.
    pub(crate) fn git_sync(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=multijob", "-c", "user.email=t@example.com"])
            .args([
                "-c",
                "init.defaultBranch=main",
                "-c",
                "commit.gpgsign=false",
            ])
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn repo() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        git_sync(d, &["init", "-q"]);
        fs::create_dir_all(d.join("jobs.d")).unwrap();
        fs::write(d.join("jobs.d/a.yaml"), "id: a\ntype: noop\n").unwrap();
        git_sync(d, &["add", "."]);
        git_sync(d, &["commit", "-q", "-m", "first"]);
        tmp
    }

    #[tokio::test]
    async fn clean_checkout_is_its_commit() {
        let tmp = repo();
        let head = git_sync(tmp.path(), &["rev-parse", "HEAD"]);
        let state = git_state(tmp.path()).await.unwrap();
        assert_eq!(state.commit, head.trim());
        assert_eq!(state.commit.len(), 40);
        assert!(!state.dirty);
    }

    #[tokio::test]
    async fn modified_or_untracked_file_is_dirty() {
        let tmp = repo();
        fs::write(
            tmp.path().join("jobs.d/a.yaml"),
            "id: a\ntype: http.request\n",
        )
        .unwrap();
        assert!(git_state(tmp.path()).await.unwrap().dirty);
        git_sync(tmp.path(), &["checkout", "-q", "--", "."]);
        assert!(!git_state(tmp.path()).await.unwrap().dirty);
        fs::write(tmp.path().join("jobs.d/b.yaml"), "id: b\n").unwrap();
        assert!(git_state(tmp.path()).await.unwrap().dirty);
    }

    #[tokio::test]
    async fn the_store_folder_does_not_make_it_dirty() {
        let tmp = repo();
        fs::create_dir_all(tmp.path().join(".multijob")).unwrap();
        fs::write(tmp.path().join(".multijob/state.db"), "sqlite").unwrap();
        fs::write(tmp.path().join(".multijob/state.db-wal"), "wal").unwrap();
        assert!(!git_state(tmp.path()).await.unwrap().dirty);
    }

    #[tokio::test]
    async fn a_subdirectory_reports_only_its_own_changes() {
        let tmp = repo();
        fs::write(tmp.path().join("elsewhere.txt"), "x").unwrap();
        let state = git_state(&tmp.path().join("jobs.d")).await.unwrap();
        assert!(!state.dirty);
    }

    #[tokio::test]
    async fn outside_git_is_none() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("cfg/jobs.d")).unwrap();
        assert_eq!(git_state(&tmp.path().join("cfg")).await, None);
        assert_eq!(git_state(&tmp.path().join("missing")).await, None);
    }

    #[tokio::test]
    async fn repository_without_commits_is_none() {
        let tmp = tempfile::tempdir().unwrap();
        git_sync(tmp.path(), &["init", "-q"]);
        assert_eq!(git_state(tmp.path()).await, None);
    }

    #[test]
    fn revision_id_formats() {
        let sha = "3f2a9c1d".repeat(5);
        let hash = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
        let clean = GitState {
            commit: sha.clone(),
            dirty: false,
        };
        let dirty = GitState {
            commit: sha.clone(),
            dirty: true,
        };
        assert_eq!(
            revision_id(Some(&clean), hash),
            format!("{sha}+a1b2c3d4e5f6")
        );
        assert_eq!(
            revision_id(Some(&dirty), hash),
            format!("{sha}-dirty+a1b2c3d4e5f6")
        );
        assert_eq!(revision_id(None, hash), "nogit+a1b2c3d4e5f6");
        assert_eq!(revision_id(None, "abc"), "nogit+abc");
    }
}
