//! `--git URL [--branch B] [--git-interval D] [--git-path SUBDIR]
//! [--git-key PATH]`: the config read from a git repository instead of a
//! local directory (`run`, and `plan` for a branch in CI).

use std::time::Duration;

use crate::reconcile::pull::GitOptions;
use crate::reconcile::pull::remote::{self, Remote};

#[derive(Debug, Clone, clap::Args)]
pub struct GitArgs {
    /// Read the config from this git repository (https://…, ssh://…,
    /// git@host:org/repo, file:///path), branch --branch: `run` fetches it
    /// into DATA_DIR/git/ and reconciles each new commit, `plan` clones it
    /// to a temporary directory; DIR then only places the store and data
    /// dir. Credentials in the URL are never shown.
    #[arg(long = "git", value_name = "URL", env = "MULTIJOB_GIT_URL")]
    pub url: Option<String>,
    /// The branch --git follows (force-pushes included).
    #[arg(long, value_name = "B", default_value = "main", requires = "url")]
    pub branch: String,
    /// The config directory inside the repository [default: its root].
    #[arg(long, value_name = "SUBDIR", default_value = ".", requires = "url")]
    pub git_path: String,
    /// An SSH private key for the remote: a path or `${file:PATH}`
    /// (host keys are accepted on first use into DATA_DIR/git/known_hosts).
    #[arg(long, value_name = "KEY", env = "MULTIJOB_GIT_KEY", requires = "url")]
    pub git_key: Option<String>,
}

impl GitArgs {
    /// The checked options, `None` without `--git`; `interval` is how
    /// often a daemon fetches.
    pub fn options(&self, interval: Duration) -> anyhow::Result<Option<GitOptions>> {
        let Some(url) = &self.url else {
            return Ok(None);
        };
        let remote = Remote::parse(url).map_err(anyhow::Error::msg)?;
        Ok(Some(GitOptions {
            remote,
            branch: remote::branch(&self.branch).map_err(anyhow::Error::msg)?,
            interval,
            subdir: remote::subdir(&self.git_path).map_err(anyhow::Error::msg)?,
            key: self
                .git_key
                .as_deref()
                .map(remote::key_file)
                .transpose()
                .map_err(anyhow::Error::msg)?,
        }))
    }
}
