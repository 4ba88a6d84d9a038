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
