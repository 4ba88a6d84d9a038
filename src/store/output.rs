//! A run's output as it is printed: chunks of a `command` run's stdout and
//! stderr, recorded while the run goes (not only in its final record), so
//! `multijob logs --follow` can stream them. Both backends keep them in
//! the order written, beside the run, and drop them with it: SQLite in
//! `run_output` (a trigger deletes a pruned run's rows), Redis in a list
//! per run (`output:<run id>`, deleted when the run is pruned and expiring
//! [`REDIS_OUTPUT_TTL_SEC`] after its last write).
//!
//! What a run may record is bounded by whoever writes it (see
//! `jobs::output`); the store keeps what it is given.

use serde::{Deserialize, Serialize};

/// Which pipe a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

impl OutputStream {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        }
    }

    pub fn parse(s: &str) -> Option<OutputStream> {
        match s {
            "stdout" => Some(OutputStream::Stdout),
            "stderr" => Some(OutputStream::Stderr),
            _ => None,
        }
    }
}

/// One recorded piece of a run's output: whole lines where it could
/// wait for them, a partial line when it had waited long enough.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputChunk {
    /// Where a reader resumes: read chunks with a larger `pos` next time
    /// (assigned by the store when it reads; 0 when writing).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pos: i64,
    pub run_id: String,
    pub attempt: u32,
    /// 0-based order within the attempt.
    pub seq: u32,
    pub stream: OutputStream,
    pub text: String,
    /// RFC 3339 UTC.
    pub at: String,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// A Redis run's output outlives its last write by this long at most
/// (pruning deletes it sooner with its run).
pub const REDIS_OUTPUT_TTL_SEC: u64 = 14 * 24 * 3600;

/// Most chunks one read returns; a reader pages with `pos`.
pub const OUTPUT_PAGE: usize = 1000;
