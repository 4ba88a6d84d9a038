//! The daemon's side of `multijob cancel` (an [`InboxCommand::Cancel`]
//! left in the store's inbox): the run queue cancels the run (see
//! `queue::cancel`), and an approval the run was waiting for is closed as
//! `cancelled`. A cancel for a run that already ended (a replay, or a race
//! with its end) or that does not exist is logged and changes nothing:
//! the CLI that posted it reads the run's record and tells its operator.
//!
//! [`InboxCommand::Cancel`]: crate::store::runs::InboxCommand::Cancel

use serde_json::json;

use crate::queue::{Cancelled, RunQueue};
use crate::store::runs::{Approval, ApprovalStatus};
use crate::store::{Mutation, NewEvent, Store, now_rfc3339};

/// Cancel `run_id` for the operator `by`.
pub(super) async fn cancel(
    queue: &RunQueue,
    store: &Store,
    run_id: &str,
    by: &str,
    reason: Option<&str>,
) {
    let why = reason.unwrap_or("-");
    match queue.cancel_run(run_id, by, reason) {
        Cancelled::Ended {
            job_id,
            was,
            approval,
        } => {
            tracing::info!(run = %run_id, job = %job_id, by, reason = why, was = was.as_str(), "run cancelled");
            if let Some(approval_id) = approval {
                close_approval(store, &approval_id, by).await;
            }
        }
        Cancelled::Stopping { job_id } => {
            tracing::info!(run = %run_id, job = %job_id, by, reason = why, "cancelling a running run: its executor stops it");
        }
        Cancelled::AlreadyCancelling { by: earlier } => {
            tracing::info!(run = %run_id, by, earlier = %earlier, "cancel: the run is already being cancelled; nothing more to do");
        }
        Cancelled::NotActive => match store.run(run_id).await {
            Ok(Some((_, run))) => {
                tracing::info!(run = %run_id, job = %run.job_id, status = run.status.as_str(), by,
                    "cancel: the run already ended; nothing to do");
            }
            Ok(None) => tracing::warn!(run = %run_id, by, "cancel: no such run; nothing to do"),
            Err(e) => {
                tracing::warn!(run = %run_id, error = %e, "cancel: the run is not in the queue and its record is unreadable")
            }
        },
    }
}

/// The approval a cancelled run waited for: `cancelled`, decided by the
/// operator who cancelled the run, with an `approval.cancelled` event.
async fn close_approval(store: &Store, approval_id: &str, by: &str) {
    // The approval may have been requested a moment ago and not be
    // written yet.
    if let Err(e) = store.flush().await {
        tracing::warn!(approval = %approval_id, error = %e, "cancel: store flush failed");
    }
    let pending = match store.approvals(true).await {
        Ok(all) => all.into_iter().find(|a| a.id == approval_id),
        Err(e) => {
            tracing::warn!(approval = %approval_id, error = %e, "cancel: approvals unreadable; the approval stays pending");
            return;
        }
    };
    let Some(approval) = pending else {
        return;
    };
    let event = NewEvent::new(
        "approval.cancelled",
        json!({"approval_id": approval.id, "by": by}),
    )
    .job(approval.job_id.clone())
    .run(approval.run_id.clone());
    let closed = Approval {
        status: ApprovalStatus::Cancelled,
        decided_at: Some(now_rfc3339()),
        decided_by: Some(by.to_string()),
        ..approval
    };
    let writes = vec![Mutation::Event(event), Mutation::PutApproval(closed)];
    if let Err(e) = store.submit(writes) {
        tracing::warn!(approval = %approval_id, error = %e, "cancel: the approval was not closed");
    }
}
