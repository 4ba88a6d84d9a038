//! The `files` quota flags, shared by `run` and `worker`.

use crate::workflow::files::FilesLimits;
use crate::workflow::files::quota::{parse_bytes, parse_count};

/// One limit; `off` (None) turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub Option<u64>);

fn count(text: &str) -> Result<Limit, String> {
    parse_count(text).map(Limit)
}

fn bytes(text: &str) -> Result<Limit, String> {
    parse_bytes(text).map(Limit)
}

#[derive(Debug, Clone, clap::Args)]
pub struct FilesQuotaArgs {
    /// `files` writes one run may make; `off` for no limit.
    #[arg(long, value_name = "N", env = "MULTIJOB_FILES_MAX_WRITES",
          default_value = "100", value_parser = count)]
    pub files_max_writes: Limit,
    /// Bytes one run's `files` writes may add up to (64MiB, 1G, 500KB ...);
    /// `off` for no limit.
    #[arg(long, value_name = "SIZE", env = "MULTIJOB_FILES_MAX_RUN_BYTES",
          default_value = "64MiB", value_parser = bytes)]
    pub files_max_run_bytes: Limit,
    /// Bytes the data dir may hold before `files` writes are refused
    /// (every file under it counts: reports and backups too); `off` for no
    /// limit.
    #[arg(long, value_name = "SIZE", env = "MULTIJOB_FILES_MAX_DIR_BYTES",
          default_value = "1GiB", value_parser = bytes)]
    pub files_max_dir_bytes: Limit,
}

impl FilesQuotaArgs {
    pub fn limits(&self) -> FilesLimits {
        FilesLimits {
            writes_per_run: self.files_max_writes.0,
            bytes_per_run: self.files_max_run_bytes.0,
            dir_bytes: self.files_max_dir_bytes.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        files: FilesQuotaArgs,
    }

    #[test]
    fn the_defaults_are_the_documented_ones_and_flags_override_them() {
        let cmd = Cmd::try_parse_from(["x"]).unwrap();
        assert_eq!(cmd.files.limits(), FilesLimits::default());
        let cmd = Cmd::try_parse_from([
            "x",
            "--files-max-writes",
            "off",
            "--files-max-run-bytes",
            "1M",
            "--files-max-dir-bytes",
            "2GiB",
        ])
        .unwrap();
        assert_eq!(
            cmd.files.limits(),
            FilesLimits {
                writes_per_run: None,
                bytes_per_run: Some(1024 * 1024),
                dir_bytes: Some(2 * 1024 * 1024 * 1024),
            }
        );
        let e = Cmd::try_parse_from(["x", "--files-max-dir-bytes", "lots"]).unwrap_err();
        assert!(e.to_string().contains("a size is bytes"), "{e}");
    }
}
