//! `schedule_job`: the proactive follow-up, bounded three ways.
//!
//! - `limits.chain_depth`: how deep a chain of follow-ups goes.
//! - `limits.follow_ups`: how many follow-ups one attempt of a run
//!   schedules, across its steps, `foreach` items (concurrent ones too)
//!   and agent tool calls. Follow-ups an earlier attempt scheduled, which
//!   the same step and item replay instead of scheduling again, count too:
//!   a retry gets no fresh budget on top of what it replays.
//! - the target job's `limits.queued_follow_ups`: how many of its
//!   follow-up runs wait to start at once, checked by the run queue under
//!   its lock (a Redis worker also reads the leader's published figures).
//!
//! A follow-up refused by one of them fails its step with an error naming
//! the limit, and leaves a `follow_up.refused` event (counted in
//! `multijob_follow_ups_refused_total{job, reason}`).

use std::sync::{Mutex, MutexGuard};

use serde_json::{Map, Value, json};
use tokio::sync::Notify;

use super::actions::{ActionCall, ActionResult};
use super::runtime::{RuntimeActions, number, text};
use crate::connectors::send_once;
use crate::run::{NewRun, NotQueued, RunError, new_run_id};
use crate::store::runs::Trigger;
use crate::store::{Mutation, NewEvent, format_ts};

/// The follow-ups one attempt of a run may still schedule. Shared by the
/// attempt's concurrent `foreach` items: a place is held while its
/// follow-up is being scheduled, then kept or given back, and a call is
/// refused only once `limit` places are kept, so N items racing for the
/// last place get exactly one, and one whose follow-up fails leaves its
/// place to another.
#[derive(Debug)]
pub struct FollowUpBudget {
    /// (kept, held).
    places: Mutex<(u32, u32)>,
    limit: u32,
    /// A held place was kept or given back.
    settled: Notify,
}

impl FollowUpBudget {
    pub fn new(limit: u32) -> FollowUpBudget {
        FollowUpBudget {
            places: Mutex::new((0, 0)),
            limit,
            settled: Notify::new(),
        }
    }

    fn places(&self) -> MutexGuard<'_, (u32, u32)> {
        self.places.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hold a place; `None` once `limit` places are kept. While the only
    /// places left are held by calls in flight, wait for them to settle.
    /// The place goes back when the guard is dropped without
    /// [`Taken::keep`].
    pub async fn take(&self) -> Option<Taken<'_>> {
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            {
                let mut places = self.places();
                let (kept, held) = *places;
                if kept >= self.limit {
                    return None;
                }
                if kept + held < self.limit {
                    places.1 += 1;
                    return Some(Taken {
                        budget: self,
                        kept: false,
                    });
                }
            }
            settled.await;
        }
    }

    /// Places kept: follow-ups this attempt scheduled or replayed.
    pub fn kept(&self) -> u32 {
        self.places().0
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    fn settle(&self, keep: bool) {
        {
            let mut places = self.places();
            places.1 = places.1.saturating_sub(1);
            if keep {
                places.0 += 1;
            }
        }
        self.settled.notify_waiters();
    }
}

/// A place held in a [`FollowUpBudget`], given back on drop unless kept:
/// a follow-up that was refused, failed or cancelled costs nothing.
#[must_use]
pub struct Taken<'a> {
    budget: &'a FollowUpBudget,
    kept: bool,
}

impl Taken<'_> {
    /// The follow-up exists (scheduled now or by an earlier attempt).
    pub fn keep(mut self) {
        self.kept = true;
        self.budget.settle(true);
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.budget.settle(false);
        }
    }
}

/// Why a follow-up was not scheduled, by the limit that refused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `limits.chain_depth` of the scheduling job.
    ChainDepth { depth: u32, limit: u32 },
    /// `limits.follow_ups` of the scheduling job.
    PerRun { limit: u32 },
    /// `limits.queued_follow_ups` of the target job.
    PerJob {
        target: String,
        waiting: usize,
        limit: u32,
    },
}

impl Refusal {
    /// The `reason` label of `multijob_follow_ups_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::ChainDepth { .. } => "chain_depth",
            Refusal::PerRun { .. } => "per_run",
            Refusal::PerJob { .. } => "per_job",
        }
    }

    /// The step's error: which limit, whose, and what to do.
    pub fn message(&self, job_id: &str) -> String {
        match self {
            Refusal::ChainDepth { depth, limit } => format!(
                "schedule_job: follow-up depth {depth} exceeds limits.chain_depth {limit} \
                 of job {job_id}; the chain stops here"
            ),
            Refusal::PerRun { limit } => format!(
                "schedule_job: this run already scheduled {limit} follow-ups, the limit \
                 (limits.follow_ups of job {job_id}); this one was not scheduled. Schedule \
                 fewer (a shorter foreach), or raise limits.follow_ups (at most 10000)"
            ),
            Refusal::PerJob {
                target,
                waiting,
                limit,
            } => format!(
                "schedule_job: job {target} has {waiting} follow-up runs waiting to start, \
                 the limit (limits.queued_follow_ups of job {target}: {limit}); this one was \
                 not queued. Let them start (more workers, a shorter delay_sec), or raise \
                 that limit"
            ),
        }
    }

    /// Event data for `follow_up.refused`.
    fn data(&self, target: &str, call: &ActionCall<'_>) -> Value {
        let mut data = json!({
            "reason": self.reason(),
            "target": target,
            "step": call.step_id,
            "item": call.item_index,
        });
        let extra = match self {
            Refusal::ChainDepth { depth, limit } => json!({"depth": depth, "limit": limit}),
            Refusal::PerRun { limit } => json!({"limit": limit}),
            Refusal::PerJob { waiting, limit, .. } => json!({"waiting": waiting, "limit": limit}),
        };
        if let (Value::Object(d), Value::Object(e)) = (&mut data, extra) {
            d.extend(e);
        }
        data
    }
}

impl RuntimeActions {
    /// Fail the step for `refusal`, leaving its event.
    fn refuse(&self, call: &ActionCall<'_>, target: &str, refusal: Refusal) -> RunError {
        let event = NewEvent::new("follow_up.refused", refusal.data(target, call))
            .job(call.run.job_id.clone())
            .run(call.run.id.clone());
        if let Err(e) = self.store.submit(vec![Mutation::Event(event)]) {
            tracing::warn!(run = %call.run.id, error = %e, "follow_up.refused not recorded");
        }
        RunError::Permanent(refusal.message(&call.run.job_id))
    }

    pub(super) async fn schedule_job_impl(
        &self,
        call: &ActionCall<'_>,
        args: Value,
    ) -> ActionResult {
        let target = text(args.get("job"))
            .ok_or_else(|| RunError::Permanent("schedule_job needs `job`".into()))?;
        let depth = self.chain_depth + 1;
        let limit = self.job.limits.chain_depth;
        if depth > limit {
            return Err(self.refuse(call, &target, Refusal::ChainDepth { depth, limit }));
        }
        let Some(place) = self.follow_ups.take().await else {
            let limit = self.follow_ups.limit();
            return Err(self.refuse(call, &target, Refusal::PerRun { limit }));
        };
        let record_key = format!("follow-up:{}", call.idempotency_key);
        if let Some(done) = send_once::recorded(&self.store, &record_key).await? {
            place.keep();
            return Ok(done);
        }
        let delay = number(args.get("delay_sec"), "delay_sec")?
            .unwrap_or(0.0)
            .max(0.0);
        let now = self.queue.clock().now();
        let due = jiff::SignedDuration::try_from_secs_f64(delay)
            .map_err(|e| e.to_string())
            .and_then(|d| now.checked_add(d).map_err(|e| e.to_string()))
            .map_err(|e| RunError::Permanent(format!("delay_sec {delay}: {e}")))?;
        let inputs = match args.get("inputs") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(Value::Object(m)) => Value::Object(m.clone()),
            Some(other) => {
                return Err(RunError::Permanent(format!(
                    "schedule_job inputs must be a map, not {other}"
                )));
            }
        };
        // Disabled jobs get no new runs (SPEC section 4), follow-ups included.
        if let Some(job) = self.queue.applied().snapshot.jobs.get(&target)
            && !job.spec.enabled
        {
            return Err(RunError::Permanent(format!(
                "schedule_job: job `{target}` is disabled (enabled: false): it gets no new runs"
            )));
        }
        let run_id = new_run_id();
        let handed = self
            .queue
            .follow_up(NewRun {
                id: run_id.clone(),
                job_id: target.clone(),
                trigger: Trigger::Workflow,
                inputs,
                run_key: record_key.clone(),
                scheduled_at: None,
                chain_depth: depth,
                due_at: Some(due),
                extra: json!({"from_run": call.run.id, "from_job": call.run.job_id,
                              "from_step": call.step_id}),
                requires_approval: false,
                traceparent: None,
            })
            .await
            .map_err(|e| RunError::retryable(format!("schedule_job: {e}")))?;
        match handed {
            Ok(()) | Err(NotQueued::Duplicate) => {}
            Err(NotQueued::NoSuchJob) => {
                return Err(RunError::Permanent(format!(
                    "schedule_job: no job `{target}` in the applied revision"
                )));
            }
            Err(NotQueued::Disabled) => {
                return Err(RunError::Permanent(format!(
                    "schedule_job: job `{target}` is disabled (enabled: false): it gets no new runs"
                )));
            }
            Err(NotQueued::FollowUpsFull { waiting, limit }) => {
                let refusal = Refusal::PerJob {
                    target: target.clone(),
                    waiting,
                    limit,
                };
                return Err(self.refuse(call, &target, refusal));
            }
        }
        place.keep();
        let output = json!({"run_id": run_id, "due_at": format_ts(due)});
        send_once::record(&self.store, &record_key, &output).await?;
        Ok(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_budget_gives_its_limit_and_no_more() {
        let budget = FollowUpBudget::new(3);
        for _ in 0..3 {
            budget.take().await.expect("a place").keep();
        }
        assert!(budget.take().await.is_none());
        assert_eq!(budget.kept(), 3);
    }

    #[tokio::test]
    async fn a_zero_budget_refuses_the_first() {
        assert!(FollowUpBudget::new(0).take().await.is_none());
    }

    /// The last place is held by a call in flight: the next waits for it,
    /// and gets it when that call fails (or is refused) and gives it back.
    #[tokio::test(start_paused = true)]
    async fn a_call_waits_for_the_place_in_flight_and_gets_it_back() {
        let budget = Arc::new(FollowUpBudget::new(1));
        let held = budget.take().await.expect("a place");
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move {
                let got = budget.take().await;
                got.map(Taken::keep).is_some()
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "no place free, none refused yet");
        drop(held);
        assert!(
            waiter.await.unwrap_or(false),
            "the place given back was taken"
        );
        assert_eq!(budget.kept(), 1);
        assert!(budget.take().await.is_none(), "the limit is kept now");
    }

    /// Concurrent foreach items share one budget: 16 tasks taking 1,000
    /// places each from a budget of 100 keep exactly 100 between them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_takers_never_pass_the_limit() {
        let budget = Arc::new(FollowUpBudget::new(100));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let budget = budget.clone();
                tokio::spawn(async move {
                    let mut got = 0u32;
                    for i in 0..1000 {
                        let Some(place) = budget.take().await else {
                            break;
                        };
                        // Every third call fails and gives its place back.
                        if i % 3 == 0 {
                            drop(place);
                        } else {
                            place.keep();
                            got += 1;
                        }
                        tokio::task::yield_now().await;
                    }
                    got
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap_or(0);
        }
        assert_eq!(total, 100);
        assert_eq!(budget.kept(), 100);
    }

    #[test]
    fn refusals_name_their_limit_and_reason() {
        let per_run = Refusal::PerRun { limit: 100 };
        assert_eq!(per_run.reason(), "per_run");
        assert!(
            per_run.message("storm").contains(
                "already scheduled 100 follow-ups, the limit (limits.follow_ups of job storm)"
            ),
            "{}",
            per_run.message("storm")
        );
        let per_job = Refusal::PerJob {
            target: "storm".into(),
            waiting: 1000,
            limit: 1000,
        };
        assert_eq!(per_job.reason(), "per_job");
        assert!(
            per_job
                .message("caller")
                .contains("job storm has 1000 follow-up runs waiting to start, the limit (limits.queued_follow_ups of job storm: 1000)"),
            "{}",
            per_job.message("caller")
        );
        let depth = Refusal::ChainDepth {
            depth: 11,
            limit: 10,
        };
        assert_eq!(depth.reason(), "chain_depth");
        assert!(
            depth
                .message("storm")
                .contains("depth 11 exceeds limits.chain_depth 10")
        );
    }
}
