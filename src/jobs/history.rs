//! The run history, page by page, newest first: what reports and backups
//! read.

use tokio_util::sync::CancellationToken;

use crate::run::RunError;
use crate::store::Store;
use crate::store::runs::{Run, RunQuery};

/// Pages of every job's runs, newest first, until the history ends; each
/// page checks the run's token first.
pub struct RunPages<'a> {
    store: &'a Store,
    cancel: &'a CancellationToken,
    /// The position of the last run read: the next page starts before it.
    before: Option<i64>,
    ended: bool,
}

impl<'a> RunPages<'a> {
    pub fn new(store: &'a Store, cancel: &'a CancellationToken) -> Self {
        RunPages {
            store,
            cancel,
            before: None,
            ended: false,
        }
    }

    /// The next page of at most `limit` runs; `None` once the history has
    /// no more (a page shorter than its limit is the last).
    pub async fn next(&mut self, limit: usize) -> Result<Option<Vec<Run>>, RunError> {
        if self.ended {
            return Ok(None);
        }
        if self.cancel.is_cancelled() {
            return Err(RunError::Cancelled);
        }
        let page = self
            .store
            .runs(RunQuery {
                job_id: None,
                status: None,
                limit,
                before: self.before,
            })
            .await
            .map_err(|e| RunError::retryable(format!("reading runs: {e}")))?;
        let Some((last, _)) = page.last() else {
            return Ok(None);
        };
        self.before = Some(*last);
        self.ended = page.len() < limit;
        Ok(Some(page.into_iter().map(|(_, run)| run).collect()))
    }
}
