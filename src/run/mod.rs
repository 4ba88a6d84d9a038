//! The run's model and life cycle: how an attempt ends ([`Outcome`]) and
//! why it failed ([`RunError`]), what a new run and a claimed one carry,
//! what a run needs from whoever handed it out ([`RunHost`]), the retry
//! policy, the admission guards, the approval record key, and the state
//! machine that moves a run from queued to finished ([`machine`]).
//!
//! Everything here but the [`RunHost`] trait is pure. It uses `spec` (the
//! job's policies), `store::runs` (the run's records, which are the
//! store's rows) and `clock`; the queue, the scheduler, the workflow
//! engine and the workers build on it.
pub mod expectation;
pub mod guards;
pub mod host;
pub mod machine;
pub mod new_run;
pub mod outcome;
pub mod retry;

pub use host::{BoxFuture, Claim, FollowUpHandover, RunHost};
pub use new_run::{NewRun, NotQueued, new_run_id};
pub use outcome::{Outcome, RunError, RunResult};

/// The store key an approval's decision is recorded under: the approval
/// step finds it there when the run runs again. `step_key` is the step's
/// idempotency key.
pub fn approval_record_key(step_key: &str) -> String {
    format!("idem:approval:{step_key}")
}
