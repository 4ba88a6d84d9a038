//! Recording authored files in git: `git add` of exactly the written
//! paths, then `git commit` of only those paths, with the person who
//! asked as author and the sentence as message. The committer stays the
//! checkout's own identity; when git has none configured, the commit is
//! made as `multijob <multijob@localhost>` rather than failing.
//!
//! The `git` binary runs with an argv (no shell), in the config
//! directory, each call under a timeout; the files stay written when
//! git fails, and the error says so.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// Each git call gets this long (a commit runs hooks).
const TIMEOUT: Duration = Duration::from_secs(20);

/// Who the commit is by: `Name <email>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    pub name: String,
    pub email: String,
}

/// What became of the written files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// The commit's full hash.
    Commit(String),
    /// The directory is not inside a git work tree.
    NotACheckout,
}

/// Commit `files` (paths relative to `dir`) and nothing else already
/// staged. An error names the git call and its stderr.
pub async fn commit(
    dir: &Path,
    files: &[String],
    author: &Author,
    message: &str,
) -> Result<Committed, String> {
    let inside = git(dir, &["rev-parse", "--is-inside-work-tree"]).await;
    if !matches!(inside.as_deref(), Ok(out) if out.trim() == "true") {
        return Ok(Committed::NotACheckout);
    }
    let mut add = vec!["add", "--"];
    add.extend(files.iter().map(String::as_str));
    git(dir, &add).await?;
    let mut identity = Vec::new();
    let named = git(dir, &["config", "user.name"]).await.is_ok();
    if !named || git(dir, &["config", "user.email"]).await.is_err() {
        identity = vec![
            "-c",
            "user.name=multijob",
            "-c",
            "user.email=multijob@localhost",
        ];
    }
    let who = format!("{} <{}>", author.name, author.email);
    let mut args = identity;
    args.extend(["commit", "--quiet", "-m", message]);
    args.extend(["--author", who.as_str(), "--"]);
    args.extend(files.iter().map(String::as_str));
    git(dir, &args).await?;
    let head = git(dir, &["rev-parse", "HEAD"]).await?;
    Ok(Committed::Commit(head.trim().to_string()))
}

/// `git -C dir args…`: its stdout, or an error naming the call.
async fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("git");
    cmd.arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let shown = format!("git {}", args.join(" "));
    let output = match tokio::time::timeout(TIMEOUT, cmd.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(format!("{shown}: cannot run git ({e}); is git installed?")),
        Err(_) => {
            return Err(format!(
                "{shown}: took over {}s; killed it",
                TIMEOUT.as_secs()
            ));
        }
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stderr: String = stderr.trim().chars().take(500).collect();
        return Err(format!("{shown} failed ({}): {stderr}", output.status));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .expect("git");
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn ana() -> Author {
        Author {
            name: "Ana Sari".into(),
            email: "telegram-42@users.noreply.telegram".into(),
        }
    }

    #[tokio::test]
    async fn commits_exactly_the_written_files_as_the_author() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        run(dir, &["init", "-q"]);
        run(dir, &["config", "user.name", "Owner"]);
        run(dir, &["config", "user.email", "owner@example.test"]);
        std::fs::create_dir_all(dir.join("jobs.d")).expect("mkdir");
        std::fs::write(dir.join("jobs.d/a.yaml"), "a").expect("write");
        std::fs::write(dir.join("staged.txt"), "s").expect("write");
        run(dir, &["add", "staged.txt"]);
        let files = vec!["jobs.d/a.yaml".to_string()];
        let done = commit(dir, &files, &ana(), "pantau tiap 30 detik").await;
        let Ok(Committed::Commit(hash)) = done else {
            panic!("not committed: {done:?}");
        };
        assert_eq!(hash, run(dir, &["rev-parse", "HEAD"]));
        let shown = run(
            dir,
            &["show", "--name-only", "--format=%an <%ae>|%cn|%B", "HEAD"],
        );
        assert_eq!(
            shown,
            "Ana Sari <telegram-42@users.noreply.telegram>|Owner|pantau tiap 30 detik\n\n\njobs.d/a.yaml"
        );
        let staged = run(dir, &["diff", "--cached", "--name-only"]);
        assert_eq!(staged, "staged.txt", "what was staged before stays staged");
    }

    #[tokio::test]
    async fn outside_git_nothing_is_committed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let files = vec!["jobs.d/a.yaml".to_string()];
        let done = commit(tmp.path(), &files, &ana(), "x").await;
        assert_eq!(done, Ok(Committed::NotACheckout));
    }

    #[tokio::test]
    async fn a_file_git_refuses_is_an_error_naming_the_call() {
        let tmp = tempfile::tempdir().expect("tempdir");
        run(tmp.path(), &["init", "-q"]);
        let files = vec!["missing.yaml".to_string()];
        let done = commit(tmp.path(), &files, &ana(), "x").await;
        let Err(why) = done else {
            panic!("committed a missing file: {done:?}");
        };
        assert!(why.starts_with("git add -- missing.yaml failed"), "{why}");
    }
}
