//! What `run --git` is told, checked before anything runs: the remote URL
//! (and its form without credentials, the only one status and logs show),
//! the branch, the subdirectory and the SSH key file.

use std::path::{Component, Path, PathBuf};

/// A remote URL and its display form.
#[derive(Clone)]
pub struct Remote {
    url: String,
    /// The `user:password` part of `scheme://user:password@host/...`, to
    /// scrub from git's own messages.
    userinfo: Option<String>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

impl Remote {
    /// A URL git accepts as a repository argument: not empty, not an
    /// option (`-…`), no whitespace or control characters.
    pub fn parse(url: &str) -> Result<Remote, String> {
        if url.is_empty() || url.starts_with('-') {
            return Err(format!(
                "--git `{url}`: expected a repository URL (https://…, ssh://…, git@host:org/repo, file:///path)"
            ));
        }
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("--git: the URL has whitespace or control characters".into());
        }
        let userinfo = url.split_once("://").and_then(|(_, rest)| {
            let authority = rest.split('/').next().unwrap_or("");
            authority.rsplit_once('@').map(|(info, _)| info.to_string())
        });
        Ok(Remote {
            url: url.to_string(),
            userinfo,
        })
    }

    /// The URL git is given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL without its userinfo: what status and logs show.
    pub fn display(&self) -> String {
        match &self.userinfo {
            Some(info) => self.url.replacen(&format!("{info}@"), "", 1),
            None => self.url.clone(),
        }
    }

    /// `text` (git's stderr) with the URL's credentials masked.
    pub fn scrub(&self, text: &str) -> String {
        let mut text = text.replace(&self.url, &self.display());
        if let Some(info) = &self.userinfo {
            // The whole `user:password`, then the password alone (git may
            // quote it decoded or on its own).
            let password = info.split_once(':').map(|(_, p)| p).unwrap_or(info);
            for secret in [info.as_str(), password] {
                if !secret.is_empty() {
                    text = text.replace(secret, "***");
                }
            }
        }
        text
    }
}

/// `--git-path`: a relative path inside the checkout, without `..`.
pub fn subdir(path: &str) -> Result<PathBuf, String> {
    let p = Path::new(path);
    let inside = p
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !inside {
        return Err(format!(
            "--git-path `{path}`: must be a relative path inside the repository (no `..`, no leading `/`), e.g. `config/prod`"
        ));
    }
    Ok(p.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect())
}

/// `--branch`: a name git accepts for a branch, that cannot be read as an
/// option or a refspec.
pub fn branch(name: &str) -> Result<String, String> {
    let bad = name.is_empty()
        || name.starts_with('-')
        || name.contains("..")
        || name.ends_with('/')
        || name.ends_with(".lock")
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\@{".contains(c));
    if bad {
        return Err(format!(
            "--branch `{name}`: not a valid branch name (see `git check-ref-format --branch`)"
        ));
    }
    Ok(name.to_string())
}

/// `--git-key PATH` or `--git-key ${file:PATH}`: the SSH private key file.
/// Refused when missing or when its path would need shell quoting in
/// `GIT_SSH_COMMAND`.
pub fn key_file(arg: &str) -> Result<PathBuf, String> {
    let path = arg
        .strip_prefix("${file:")
        .and_then(|r| r.strip_suffix('}'))
        .unwrap_or(arg);
    if path.is_empty()
        || !path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+@=".contains(c))
    {
        return Err(format!(
            "--git-key `{arg}`: expected a key file path of letters, digits and `/._-+@=` (or `${{file:PATH}}`)"
        ));
    }
    let path = PathBuf::from(path);
    if !path.is_file() {
        return Err(format!(
            "--git-key {}: no such file (an SSH private key the remote accepts)",
            path.display()
        ));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show() {
        let r = Remote::parse("https://bob:s3cret@example.com/org/repo.git").unwrap();
        assert_eq!(r.display(), "https://example.com/org/repo.git");
        let msg =
            "fatal: unable to access 'https://bob:s3cret@example.com/org/repo.git/': x; s3cret";
        let scrubbed = r.scrub(msg);
        assert!(!scrubbed.contains("s3cret"), "{scrubbed}");
        let plain = Remote::parse("git@github.com:org/repo.git").unwrap();
        assert_eq!(plain.display(), "git@github.com:org/repo.git");
        assert_eq!(
            Remote::parse("file:///srv/a@b/repo.git").unwrap().display(),
            "file:///srv/a@b/repo.git"
        );
    }

    #[test]
    fn hostile_arguments_are_refused() {
        assert!(Remote::parse("--upload-pack=touch /tmp/x").is_err());
        assert!(Remote::parse("https://x/ y").is_err());
        assert!(subdir("../..").is_err());
        assert!(subdir("/etc").is_err());
        assert!(subdir("a/../../b").is_err());
        assert_eq!(
            subdir("./config/prod").unwrap(),
            PathBuf::from("config/prod")
        );
        assert!(branch("-f").is_err());
        assert!(branch("a..b").is_err());
        assert!(branch("main:evil").is_err());
        assert_eq!(branch("release/1.2").unwrap(), "release/1.2");
        assert!(key_file("/no/such/key").is_err());
        assert!(key_file("${file:/tmp/a b}").is_err());
    }
}
