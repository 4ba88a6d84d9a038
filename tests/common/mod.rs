//! Test harness: run the real binary on temp config dirs, with failures that
//! explain themselves (command, dir listing, stdout, stderr).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_multijob"))
}

/// The repository root (for fixtures, examples, schemas).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A temp config directory.
pub struct ConfigDir {
    pub tmp: tempfile::TempDir,
}

impl ConfigDir {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(tmp.path().join("jobs.d")).expect("jobs.d");
        ConfigDir { tmp }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Write `relative` (e.g. "jobs.d/a.yaml") with `text`.
    pub fn write(&self, relative: &str, text: &str) -> &Self {
        let path = self.path().join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, text).expect("write");
        self
    }

    pub fn remove(&self, relative: &str) {
        std::fs::remove_file(self.path().join(relative)).expect("remove");
    }

    /// Run `multijob <args> --dir <this dir>`.
    pub fn run(&self, args: &[&str]) -> Run {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.push("--dir".into());
        all.push(self.path().display().to_string());
        run(&all, Some(self.path()))
    }

    pub fn listing(&self) -> String {
        listing(self.path())
    }
}

pub struct Run {
    pub command: String,
    pub output: Output,
    pub listing: String,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    /// Everything a failing assertion should show.
    pub fn explain(&self) -> String {
        format!(
            "command: {}\nexit: {:?}\n--- dir ---\n{}--- stdout ---\n{}--- stderr ---\n{}",
            self.command,
            self.code(),
            self.listing,
            self.stdout(),
            self.stderr()
        )
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), Some(code), "\n{}", self.explain());
        self
    }

    /// Assert stdout has a line starting with `prefix` and containing `text`.
    #[track_caller]
    pub fn assert_line(&self, prefix: &str, text: &str) -> &Self {
        let out = self.stdout();
        assert!(
            out.lines()
                .any(|l| l.starts_with(prefix) && l.contains(text)),
            "expected a line starting with {prefix:?} containing {text:?}\n{}",
            self.explain()
        );
        self
    }

    #[track_caller]
    pub fn assert_stdout_lacks(&self, text: &str) -> &Self {
        assert!(
            !self.stdout().contains(text) && !self.stderr().contains(text),
            "output must not contain {text:?}\n{}",
            self.explain()
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.output.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", self.explain()))
    }
}

pub fn run(args: &[String], dir: Option<&Path>) -> Run {
    let output = Command::new(bin())
        .args(args)
        .env_remove("MULTIJOB_DIR")
        .output()
        .expect("spawn multijob");
    Run {
        command: format!("multijob {}", args.join(" ")),
        output,
        listing: dir.map(listing).unwrap_or_default(),
    }
}

fn listing(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    files.push(p);
                }
            }
        }
    }
    files.sort();
    for f in files {
        let rel = f.strip_prefix(dir).unwrap_or(&f);
        out.push_str(&format!("{}\n", rel.display()));
    }
    out
}
