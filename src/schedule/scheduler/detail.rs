//! What a skipped slot's guard saw, for its event's `detail`: read under
//! the same queue view (plus this tick's batch) the guard decided with.
//! Only a skip builds one, and run ids stop at [`crate::run::guards::MAX_IDS`].

use super::dispatch::Batch;
use crate::queue::QueueView;
use crate::run::guards::{RunIds, SkipDetail, SkipReason};
use crate::spec::model::Job;

/// The detail of a skip for `reason` the guards just decided.
pub(super) fn skip_detail(
    reason: SkipReason,
    job_id: &str,
    job: &Job,
    view: &QueueView<'_>,
    batch: &Batch,
) -> Option<SkipDetail> {
    Some(match reason {
        SkipReason::Overlap => SkipDetail::Overlap {
            overlap: job.overlap,
            runs: ids(
                view.job_run_ids(job_id),
                view.active_runs(job_id),
                batch.job_ids(job_id),
            ),
        },
        SkipReason::FlowLimit => {
            let lane = job.flow.as_deref()?;
            let load = view.lane(lane);
            let batched = batch.flow_ids(lane);
            SkipDetail::FlowLimit {
                lane: lane.to_string(),
                active: load.active + batched.1,
                max: load.max?,
                runs: ids(view.lane_run_ids(lane), load.active, batched),
            }
        }
        SkipReason::Pressure => {
            let p = view.pressure_state();
            SkipDetail::Pressure {
                waiting: view.waiting(),
                high: p.high,
                low: p.low,
            }
        }
        SkipReason::Cooldown => {
            let f = view.failure(job_id)?;
            SkipDetail::Cooldown {
                until: f.cooldown_until.as_deref()?.parse().ok()?,
                failures: f.consecutive_failures,
            }
        }
        SkipReason::Approval => SkipDetail::Approval {
            run: view.approval_run(job_id).map(str::to_string),
        },
        SkipReason::Paused => {
            let p = view.paused(job_id)?;
            SkipDetail::Paused {
                by: p.by.clone(),
                since: p.since.parse().ok()?,
                note: p.note.clone(),
            }
        }
        // Decided by the tick, not the guards, or read from the budgets
        // board: their callers say it.
        SkipReason::TickLimit | SkipReason::Missed | SkipReason::Budget => return None,
    })
}

/// The queue's ids first (older), then this tick's, capped; `queued`
/// counts the queue's.
fn ids<'a>(
    ids: impl Iterator<Item = &'a str>,
    queued: usize,
    (batch_ids, batched): (&'a [String], usize),
) -> RunIds {
    let all = ids.chain(batch_ids.iter().map(String::as_str));
    RunIds::capped(all, queued + batched)
}

impl super::Scheduler {
    /// The budget that held a job's slot back, from the board the guard read.
    pub(super) fn budget_detail(&self, job_id: &str, now: jiff::Timestamp) -> Option<SkipDetail> {
        let u = self.budgets.blocking(job_id, now)?;
        Some(SkipDetail::Budget {
            scope: u.scope,
            kind: u.field.to_string(),
            used: u.used,
            limit: u.limit,
            last_run: u.last_run,
            resets_at: u.resets_at,
        })
    }
}
