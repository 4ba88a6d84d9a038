//! A bare `origin.git` and a working clone to commit and push from: the
//! remote `run --git` tests pull (over `file://`, or a `git daemon`).

use std::path::PathBuf;

use super::{Daemon, git};

/// A bare `origin.git` and a clone to commit and push from.
pub struct Origin {
    pub tmp: tempfile::TempDir,
}

impl Origin {
    pub fn new() -> Origin {
        let tmp = tempfile::tempdir().expect("tmp");
        let bare = tmp.path().join("origin.git");
        std::fs::create_dir_all(&bare).expect("bare");
        git(&bare, &["init", "--bare", "-q", "-b", "main"]);
        let work = tmp.path().join("work");
        std::fs::create_dir_all(&work).expect("work");
        git(&work, &["init", "-q", "-b", "main"]);
        git(
            &work,
            &["remote", "add", "origin", bare.to_str().expect("utf-8")],
        );
        Origin { tmp }
    }

    pub fn bare(&self) -> PathBuf {
        self.tmp.path().join("origin.git")
    }

    pub fn work(&self) -> PathBuf {
        self.tmp.path().join("work")
    }

    pub fn file_url(&self) -> String {
        format!("file://{}", self.bare().display())
    }

    /// Writes `files`, commits and pushes; the new commit.
    pub fn push(&self, files: &[(&str, &str)], message: &str) -> String {
        let work = self.work();
        for (path, text) in files {
            let p = work.join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "--allow-empty", "-m", message]);
        git(&work, &["push", "-q", "--force", "origin", "HEAD:main"]);
        git(&work, &["rev-parse", "HEAD"])
    }

    /// Resets the branch to `sha` and force-pushes it.
    pub fn force_push(&self, sha: &str) {
        git(&self.work(), &["reset", "-q", "--hard", sha]);
        git(
            &self.work(),
            &["push", "-q", "--force", "origin", "HEAD:main"],
        );
    }
}

/// Waits until the running revision is `sha`'s.
#[track_caller]
pub fn applied(d: &Daemon, sha: &str) -> serde_json::Value {
    let prefix = format!("{sha}+");
    d.wait_until("/api/v1/status", "the pushed commit to run", |v| {
        v["revision"]
            .as_str()
            .is_some_and(|r| r.starts_with(&prefix))
    })
}
