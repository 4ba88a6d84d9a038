//! The checkouts on disk, under `<data-dir>/git/`: a bare mirror
//! (`repo.git`), one detached worktree per commit (`commits/<sha>`), and
//! `current`, a relative symlink to the live one, swapped with rename(2)
//! so a reader sees the old tree or the new one, never half of either.
//! The current and the previous checkout are kept; older ones go.
//!
//! Everything runs the `git` binary by argv (no shell) with a timeout:
//! no new dependency, and the same git, credentials helpers and SSH
//! setup the operators already use.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::remote::Remote;

/// A fetch of a large repository over a slow link.
const FETCH_TIMEOUT: Duration = Duration::from_secs(300);
/// Anything else git does here (init, rev-parse, worktree).
const LOCAL_TIMEOUT: Duration = Duration::from_secs(120);

/// The git area: where the mirror and checkouts live, and how to reach
/// the remote.
pub struct Area {
    pub root: PathBuf,
    pub remote: Remote,
    pub branch: String,
    /// `--git-key`: used through `GIT_SSH_COMMAND`.
    pub key: Option<PathBuf>,
}

impl Area {
    fn mirror(&self) -> PathBuf {
        self.root.join("repo.git")
    }

    /// The symlink to the live checkout.
    pub fn current(&self) -> PathBuf {
        self.root.join("current")
    }

    /// The commit `current` points at, if any.
    pub fn current_commit(&self) -> Option<String> {
        let target = std::fs::read_link(self.current()).ok()?;
        Some(target.file_name()?.to_str()?.to_string())
    }

    /// Runs `git args…` in the mirror; stdout, or why it failed (with
    /// credentials scrubbed).
    async fn git(&self, args: &[&str], timeout: Duration) -> Result<String, String> {
        let mut cmd = Command::new("git");
        cmd.arg("-C")
            .arg(self.mirror())
            .args(["-c", "protocol.ext.allow=never", "-c", "core.symlinks=true"])
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(key) = &self.key {
            let known = self.root.join("known_hosts");
            cmd.env(
                "GIT_SSH_COMMAND",
                format!(
                    "ssh -i '{}' -o IdentitiesOnly=yes -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile='{}' -o BatchMode=yes",
                    key.display(),
                    known.display()
                ),
            );
        }
        let what = args.first().copied().unwrap_or("git");
        let output = match tokio::time::timeout(timeout, cmd.output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => return Err(format!("cannot run git (is it installed?): {e}")),
            Err(_) => {
                return Err(format!(
                    "git {what} took over {}s; killed it",
                    timeout.as_secs()
                ));
            }
        };
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            // git's message spans lines ("fatal: …", then advice): all of
            // it, on one line, capped.
            let lines: Vec<&str> = stderr
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let message: String = lines.join(" ").chars().take(500).collect();
            return Err(format!("git {what}: {}", self.remote.scrub(&message)));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// Creates the bare mirror on the first run.
    async fn ensure_mirror(&self) -> Result<(), String> {
        if self.mirror().join("HEAD").is_file() {
            return Ok(());
        }
        let mirror = self.mirror();
        std::fs::create_dir_all(&mirror)
            .map_err(|e| format!("{}: cannot create: {e}", mirror.display()))?;
        self.git(&["init", "--bare", "--quiet"], LOCAL_TIMEOUT)
            .await?;
        Ok(())
    }

    /// Fetches the branch (force: a rewritten branch replaces the old one)
    /// and returns the commit the remote has.
    pub async fn fetch(&self) -> Result<String, String> {
        self.ensure_mirror().await?;
        let refspec = format!("+refs/heads/{0}:refs/remotes/origin/{0}", self.branch);
        self.git(
            &[
                "fetch",
                "--quiet",
                "--no-tags",
                "--force",
                "--",
                self.remote.url(),
                &refspec,
            ],
            FETCH_TIMEOUT,
        )
        .await?;
        let rev = format!("refs/remotes/origin/{}^{{commit}}", self.branch);
        let sha = self
            .git(&["rev-parse", "--verify", "--quiet", &rev], LOCAL_TIMEOUT)
            .await
            .map_err(|_| format!("branch `{}` not found on the remote", self.branch))?;
        if sha.is_empty() || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("git rev-parse gave `{sha}`, not a commit"));
        }
        Ok(sha)
    }

    /// Checks `sha` out in its own directory and points `current` at it.
    pub async fn switch_to(&self, sha: &str) -> Result<(), String> {
        let commits = self.root.join("commits");
        let dir = commits.join(sha);
        if dir.exists() {
            // A left-over of a crash, or the previous commit after a
            // force-push back: checked out again, never trusted as is.
            self.remove_checkout(&dir).await;
        }
        let path = dir.to_string_lossy().to_string();
        self.git(
            &[
                "worktree", "add", "--detach", "--force", "--quiet", &path, sha,
            ],
            LOCAL_TIMEOUT,
        )
        .await?;
        let tmp = self.root.join("current.tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(Path::new("commits").join(sha), &tmp)
            .and_then(|()| std::fs::rename(&tmp, self.current()))
            .map_err(|e| format!("{}: cannot swap the symlink: {e}", self.current().display()))
    }

    async fn remove_checkout(&self, dir: &Path) {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove an old checkout");
        }
        let _ = self.git(&["worktree", "prune"], LOCAL_TIMEOUT).await;
    }

    /// Removes every checkout but `keep` (the current and the previous).
    pub async fn prune(&self, keep: &[&str]) {
        let Ok(entries) = std::fs::read_dir(self.root.join("commits")) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !keep.iter().any(|k| name.to_str() == Some(k)) {
                self.remove_checkout(&entry.path()).await;
            }
        }
    }
}
