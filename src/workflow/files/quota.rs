//! How much `files` steps may write: per run (writes and bytes) and per
//! data dir (bytes under it), so one run or one template cannot fill the
//! disk the store and the other jobs share.
//!
//! The data dir's usage is walked once (at the first write after start,
//! so it is right across restarts), then kept as a running counter that
//! each write moves by what it adds; it is walked again after
//! [`REWALK_AFTER`], which picks up what other writers did meanwhile
//! (reports, backups, commands, an operator's clean-up, another process
//! sharing the dir). Every regular file under the data dir counts: they
//! share one disk. Only `files` writes are refused; reports and backups
//! are bounded by their own rotation and never fail on this quota.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;

/// The data dir is walked again after this long, so the counter follows
/// other writers; between walks a write costs no IO beyond its own.
pub const REWALK_AFTER: Duration = Duration::from_secs(60);

/// Deeper than this is a mistake; not counted.
const MAX_DEPTH: usize = 64;

/// `None` turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilesLimits {
    /// `files` writes one run makes.
    pub writes_per_run: Option<u64>,
    /// Bytes one run's `files` writes add up to.
    pub bytes_per_run: Option<u64>,
    /// Bytes under the data dir.
    pub dir_bytes: Option<u64>,
}

impl Default for FilesLimits {
    /// A daily report writes a file or two of well under a megabyte; a
    /// `foreach` writing one file per item of a 100-item page is the
    /// largest legitimate shape we know. 64 MB is 64 writes at the 1 MB a
    /// rendered value may take. 1 GiB of data dir is years of daily
    /// reports and leaves the disk to the store.
    fn default() -> Self {
        FilesLimits {
            writes_per_run: Some(100),
            bytes_per_run: Some(64 * MIB),
            dir_bytes: Some(GIB),
        }
    }
}

/// What one run wrote through `files` (every attempt of a write counts).
#[derive(Debug, Default)]
pub struct RunUsage {
    writes: AtomicU64,
    bytes: AtomicU64,
}

impl RunUsage {
    /// Counts a write of `len` bytes, or refuses it with what to do.
    pub fn take(&self, limits: &FilesLimits, len: u64) -> Result<(), String> {
        let made = self.writes.fetch_add(1, Ordering::SeqCst);
        if let Some(limit) = limits.writes_per_run
            && made >= limit
        {
            return Err(format!(
                "the run reached its limit of {limit} `files` writes; raise it with \
                 --files-max-writes (MULTIJOB_FILES_MAX_WRITES)"
            ));
        }
        let taken = self
            .bytes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                let after = used.saturating_add(len);
                limits
                    .bytes_per_run
                    .is_none_or(|l| after <= l)
                    .then_some(after)
            });
        match (taken, limits.bytes_per_run) {
            (Err(used), Some(limit)) => Err(format!(
                "writing {} would take the run's `files` writes to {}, over its limit of {}; \
                 raise it with --files-max-run-bytes (MULTIJOB_FILES_MAX_RUN_BYTES)",
                size(len),
                size(used.saturating_add(len)),
                size(limit)
            )),
            _ => Ok(()),
        }
    }
}

/// The data dir's limit and usage, shared by every run of a process.
#[derive(Debug)]
pub struct FilesQuota {
    limits: FilesLimits,
    data_dir: PathBuf,
    usage: Mutex<DirUsage>,
}

#[derive(Debug, Default)]
struct DirUsage {
    bytes: u64,
    /// When `bytes` was last walked; `None`: walk at the next write.
    walked: Option<Instant>,
}

impl FilesQuota {
    pub fn new(data_dir: impl Into<PathBuf>, limits: FilesLimits) -> Self {
        FilesQuota {
            limits,
            data_dir: data_dir.into(),
            usage: Mutex::default(),
        }
    }

    pub fn limits(&self) -> &FilesLimits {
        &self.limits
    }

    /// Charges a write of `new` bytes replacing a file of `old` bytes
    /// against the data dir's limit, or refuses it with what to do.
    /// Blocking: it may walk the data dir.
    pub fn charge(&self, new: u64, old: u64) -> Result<(), String> {
        let Some(limit) = self.limits.dir_bytes else {
            return Ok(());
        };
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        if usage.walked.is_none_or(|at| at.elapsed() >= REWALK_AFTER) {
            usage.bytes = walk(&self.data_dir);
            usage.walked = Some(Instant::now());
        }
        if let Some(after) = exceeds(usage.bytes, new, old, limit) {
            return Err(format!(
                "writing {} would take the data dir {} to {}, over its limit of {}; free space \
                 there or raise --files-max-dir-bytes (MULTIJOB_FILES_MAX_DIR_BYTES)",
                size(new),
                self.data_dir.display(),
                size(after),
                size(limit)
            ));
        }
        usage.bytes = usage.bytes.saturating_sub(old).saturating_add(new);
        Ok(())
    }

    /// After a write that failed half way: what it left is unknown, so
    /// the next write walks again.
    pub fn recount(&self) {
        self.usage.lock().unwrap_or_else(|p| p.into_inner()).walked = None;
    }
}

/// The usage a write of `new` bytes over `old` would leave, when that is
/// over `limit`. A write that does not grow the usage always passes (a
/// report overwriting yesterday's file after the limit was lowered).
fn exceeds(used: u64, new: u64, old: u64, limit: u64) -> Option<u64> {
    let after = used.saturating_sub(old).saturating_add(new);
    (new > old && after > limit).then_some(after)
}

/// Bytes of the regular files under `root`, symlinks not followed. What
/// cannot be read is not counted (and would not be written either).
fn walk(root: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if file_type.is_dir() && depth < MAX_DEPTH {
                stack.push((entry.path(), depth + 1));
            } else if file_type.is_file()
                && let Ok(meta) = entry.metadata()
            {
                total = total.saturating_add(meta.len());
            }
        }
    }
    total
}

/// `n` bytes for a person.
pub fn size(n: u64) -> String {
    if n >= GIB {
        format!("{:.1} GiB", n as f64 / GIB as f64)
    } else if n >= MIB {
        format!("{:.1} MiB", n as f64 / MIB as f64)
    } else {
        format!("{n} bytes")
    }
}

/// A byte limit from the command line: `1048576`, `64MiB`, `64M`, `1G`,
/// `500KB` (K/M/G/T and KiB/MiB/GiB/TiB are powers of 1024, KB/MB/GB/TB
/// of 1000), or `off`.
pub fn parse_bytes(text: &str) -> Result<Option<u64>, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let factor: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kib" => KIB,
        "m" | "mib" => MIB,
        "g" | "gib" => GIB,
        "t" | "tib" => 1024 * GIB,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "`{text}`: a size is bytes with an optional unit (64MiB, 1G, 500KB), or `off`"
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .map(Some)
        .ok_or_else(|| {
            format!("`{text}`: a size is bytes with an optional unit (64MiB, 1G, 500KB), or `off`")
        })
}

/// A count limit from the command line: a number, or `off`.
pub fn parse_count(text: &str) -> Result<Option<u64>, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    t.parse::<u64>()
        .map(Some)
        .map_err(|_| format!("`{text}`: a number, or `off`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_that_does_not_grow_the_usage_always_passes() {
        assert_eq!(exceeds(900, 100, 0, 1000), None);
        assert_eq!(exceeds(900, 101, 0, 1000), Some(1001));
        assert_eq!(
            exceeds(900, 200, 150, 1000),
            None,
            "replaces 150 bytes: 950"
        );
        assert_eq!(
            exceeds(2000, 10, 50, 1000),
            None,
            "shrinks: over the limit, still allowed"
        );
        assert_eq!(exceeds(2000, 60, 50, 1000), Some(2010));
        assert_eq!(exceeds(u64::MAX, 1, 0, 1000), Some(u64::MAX));
    }

    #[test]
    fn run_usage_counts_writes_and_bytes() {
        let limits = FilesLimits {
            writes_per_run: Some(3),
            bytes_per_run: Some(100),
            dir_bytes: None,
        };
        let usage = RunUsage::default();
        usage.take(&limits, 40).unwrap();
        usage.take(&limits, 60).unwrap();
        let e = usage.take(&limits, 1).unwrap_err();
        assert!(
            e.contains("over its limit of 100 bytes") && e.contains("--files-max-run-bytes"),
            "{e}"
        );
        let e = usage.take(&limits, 0).unwrap_err();
        assert!(
            e.contains("limit of 3 `files` writes") && e.contains("--files-max-writes"),
            "{e}"
        );

        let off = FilesLimits {
            writes_per_run: None,
            bytes_per_run: None,
            dir_bytes: None,
        };
        let usage = RunUsage::default();
        for _ in 0..1000 {
            usage.take(&off, u64::MAX / 2).unwrap();
        }
    }

    #[test]
    fn the_data_dir_is_walked_once_then_counted() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::write(dir.path().join("a/b/old.txt"), vec![b'x'; 600]).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero")).unwrap();
        let limits = FilesLimits {
            dir_bytes: Some(1000),
            ..FilesLimits::default()
        };
        let quota = FilesQuota::new(dir.path(), limits);
        // The walk finds the 600 bytes already there (a restart).
        quota.charge(300, 0).unwrap();
        let e = quota.charge(101, 0).unwrap_err();
        assert!(
            e.contains("to 1001 bytes, over its limit of 1000 bytes"),
            "{e}"
        );
        assert!(e.contains("--files-max-dir-bytes"), "{e}");
        // Not walked again: a file written behind its back is not seen
        // until the next walk ...
        fs::write(dir.path().join("behind"), vec![b'x'; 50]).unwrap();
        quota.charge(100, 0).unwrap();
        // ... which `recount` asks for: 650 bytes are on disk (the
        // charges above wrote nothing), not the 1000 counted.
        quota.recount();
        quota.charge(350, 0).unwrap();
        let e = quota.charge(1, 0).unwrap_err();
        assert!(e.contains("to 1001 bytes"), "{e}");
        // Replacing a file counts the difference.
        quota.charge(300, 350).unwrap();
        quota.charge(60, 10).unwrap();
        assert!(quota.charge(1, 0).is_err());
    }

    #[test]
    fn sizes_parse_with_units_or_off() {
        assert_eq!(parse_bytes("1048576"), Ok(Some(MIB)));
        assert_eq!(parse_bytes("64MiB"), Ok(Some(64 * MIB)));
        assert_eq!(parse_bytes("64M"), Ok(Some(64 * MIB)));
        assert_eq!(parse_bytes("1g"), Ok(Some(GIB)));
        assert_eq!(parse_bytes("500KB"), Ok(Some(500_000)));
        assert_eq!(parse_bytes("2 GiB"), Ok(Some(2 * GIB)));
        assert_eq!(parse_bytes("off"), Ok(None));
        for bad in [
            "",
            "MiB",
            "-1",
            "1.5G",
            "12PB",
            "99999999999999999999",
            "20000000T",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_count("100"), Ok(Some(100)));
        assert_eq!(parse_count("OFF"), Ok(None));
        assert!(parse_count("1k").is_err());
    }

    #[test]
    fn sizes_read_as_a_person_would() {
        assert_eq!(size(1000), "1000 bytes");
        assert_eq!(size(64 * MIB), "64.0 MiB");
        assert_eq!(size(GIB + GIB / 2), "1.5 GiB");
    }
}
