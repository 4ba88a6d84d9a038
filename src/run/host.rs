//! What a worker holds while it executes a run ([`Claim`]), and what the run
//! needs from whoever handed it out ([`RunHost`]).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::new_run::{NewRun, NotQueued};
use crate::clock::Clock;
use crate::spec::model::Job;
use crate::store::runs::{Run, StepRecord};
use crate::store::{Applied, Store};

/// A run handed to a worker.
#[derive(Debug, Clone)]
pub struct Claim {
    pub run: Run,
    /// The job's spec as applied when the attempt started.
    pub job: Arc<Job>,
    /// Fired on timeout, replace, or shutdown after the grace period.
    pub cancel: CancellationToken,
}

/// What a run needs from whoever handed it out: the local queue in a
/// single-process deployment, or the link to the leader in a Redis one.
pub trait RunHost: Send + Sync {
    /// The applied snapshot the run executes under.
    fn applied(&self) -> Arc<Applied>;
    fn store(&self) -> &Store;
    fn clock(&self) -> Clock;
    /// Why a run was cancelled (overlap `replace`, an operator), if it was.
    fn cancel_reason(&self, run_id: &str) -> Option<String>;
    /// Queue a follow-up run (`schedule_job`). `Ok(Err(_))`: not queued,
    /// and why (no such job, disabled, its job's waiting follow-ups at
    /// `limits.queued_follow_ups`); `Err`: it could not be handed over.
    fn follow_up(&self, run: NewRun) -> BoxFuture<'_, FollowUpHandover>;
    /// A workflow's step records, kept with the run's record.
    fn record_steps(&self, run_id: &str, steps: Vec<StepRecord>);
    /// LLM tokens the run used.
    fn record_usage(&self, run_id: &str, llm_tokens: u64);
}

/// What handing a follow-up to the queue gave: queued, refused, or an
/// error on the way (the store, the link to the leader).
pub type FollowUpHandover = Result<Result<(), NotQueued>, String>;

/// A boxed future without pulling in the `futures` crate.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
