//! PURE. Whether a due slot dispatches, and if not, why. Every skipped slot
//! gets one reason, which becomes `scheduler.dispatch_skipped_<reason>`.

mod detail;

use jiff::Timestamp;

pub use detail::{MAX_IDS, RunIds, SkipDetail, Tense};

use crate::spec::model::{Overlap, Priority};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// `overlap: forbid` (or a full `buffer_one`) and a run is active.
    Overlap,
    /// The job's lane is at `max_active_runs`.
    FlowLimit,
    /// Pressure mode: only `critical` dispatches.
    Pressure,
    /// Failure memory cools the job down.
    Cooldown,
    /// `requires_approval` and an approval is pending.
    Approval,
    /// The tick cap deferred it until a newer slot of the job came due.
    TickLimit,
    /// Missed while the daemon was down (misfire policy).
    Missed,
    /// An operator paused the job (`multijob pause`).
    Paused,
    /// A daily budget of the job (or its flow) is used up, or has less
    /// left than the job's last run used.
    Budget,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Overlap => "overlap",
            SkipReason::FlowLimit => "flow_limit",
            SkipReason::Pressure => "pressure",
            SkipReason::Cooldown => "cooldown",
            SkipReason::Approval => "approval",
            SkipReason::TickLimit => "tick_limit",
            SkipReason::Missed => "missed",
            SkipReason::Paused => "paused",
            SkipReason::Budget => "budget",
        }
    }

    pub fn event_type(self) -> String {
        format!("scheduler.dispatch_skipped_{}", self.as_str())
    }
}

/// A lane's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneLoad {
    pub active: usize,
    /// `None`: unlimited.
    pub max: Option<u32>,
}

/// What a guard decision looks at.
#[derive(Debug, Clone, Copy)]
pub struct GuardInput {
    pub priority: Priority,
    pub overlap: Overlap,
    /// Active runs of this job (queued, awaiting approval, running, retrying).
    pub active_runs: usize,
    /// A `buffer_one` slot already waits for the active run.
    pub buffered: bool,
    pub lane: Option<LaneLoad>,
    pub pressure: bool,
    pub cooldown_until: Option<Timestamp>,
    pub approval_pending: bool,
    /// An operator paused the job.
    pub paused: bool,
    /// A daily budget holds the job back today (the scheduler's cached
    /// view, see `schedule::budgets`).
    pub budget_exhausted: bool,
    pub now: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Dispatch,
    /// Dispatch, cancelling the job's active runs first (`overlap: replace`).
    Replace,
    /// Hold one slot to run right after the active run (`buffer_one`).
    Buffer,
    Skip(SkipReason),
}

/// Decide one due slot. Checks run in a fixed order so a slot blocked for
/// several reasons always reports the same one.
pub fn decide(i: &GuardInput) -> Decision {
    // An operator's word first: a paused job's slots say so, whatever
    // else holds them back.
    if i.paused {
        return Decision::Skip(SkipReason::Paused);
    }
    if i.cooldown_until.is_some_and(|until| until > i.now) {
        return Decision::Skip(SkipReason::Cooldown);
    }
    if i.approval_pending {
        return Decision::Skip(SkipReason::Approval);
    }
    if i.budget_exhausted {
        return Decision::Skip(SkipReason::Budget);
    }
    if i.pressure && i.priority != Priority::Critical {
        return Decision::Skip(SkipReason::Pressure);
    }
    // Runs a replace would cancel free their place in the lane.
    let mut freed = 0;
    let decision = if i.active_runs == 0 {
        Decision::Dispatch
    } else {
        match i.overlap {
            Overlap::Allow => Decision::Dispatch,
            Overlap::Forbid => return Decision::Skip(SkipReason::Overlap),
            Overlap::BufferOne if i.buffered => return Decision::Skip(SkipReason::Overlap),
            // Waits for the active run; the lane is checked when it is released.
            Overlap::BufferOne => return Decision::Buffer,
            Overlap::Replace => {
                freed = i.active_runs;
                Decision::Replace
            }
        }
    };
    if let Some(LaneLoad {
        active,
        max: Some(max),
    }) = i.lane
        && active.saturating_sub(freed) >= max as usize
    {
        return Decision::Skip(SkipReason::FlowLimit);
    }
    decision
}

/// Pressure mode with hysteresis: on at `high` runs waiting to start, off
/// again at `low`. Measures the queue of runs not yet started, never
/// history, so it always switches off once the queue drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pressure {
    pub on: bool,
    pub high: usize,
    pub low: usize,
}

impl Pressure {
    pub fn new(high: usize, low: usize) -> Self {
        Pressure {
            on: false,
            high,
            low: low.min(high),
        }
    }

    /// Feed the current number of waiting runs; returns the new state when
    /// it flips.
    pub fn update(&mut self, waiting: usize) -> Option<bool> {
        let next = if self.on {
            waiting > self.low
        } else {
            waiting >= self.high
        };
        (next != self.on).then(|| {
            self.on = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> GuardInput {
        GuardInput {
            priority: Priority::Normal,
            overlap: Overlap::Forbid,
            active_runs: 0,
            buffered: false,
            lane: None,
            pressure: false,
            cooldown_until: None,
            approval_pending: false,
            paused: false,
            budget_exhausted: false,
            now: "2026-11-22T10:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn an_idle_job_dispatches() {
        assert_eq!(decide(&base()), Decision::Dispatch);
    }

    #[test]
    fn overlap_policies() {
        let busy = GuardInput {
            active_runs: 1,
            ..base()
        };
        assert_eq!(decide(&busy), Decision::Skip(SkipReason::Overlap));
        let allow = GuardInput {
            overlap: Overlap::Allow,
            ..busy
        };
        assert_eq!(decide(&allow), Decision::Dispatch);
        let replace = GuardInput {
            overlap: Overlap::Replace,
            ..busy
        };
        assert_eq!(decide(&replace), Decision::Replace);
        let buffer = GuardInput {
            overlap: Overlap::BufferOne,
            ..busy
        };
        assert_eq!(decide(&buffer), Decision::Buffer);
        let full = GuardInput {
            buffered: true,
            ..buffer
        };
        assert_eq!(decide(&full), Decision::Skip(SkipReason::Overlap));
    }

    #[test]
    fn lane_limits_count_active_runs_and_replace_frees_its_own() {
        let lane = |active| GuardInput {
            lane: Some(LaneLoad {
                active,
                max: Some(2),
            }),
            ..base()
        };
        assert_eq!(decide(&lane(1)), Decision::Dispatch);
        assert_eq!(decide(&lane(2)), Decision::Skip(SkipReason::FlowLimit));
        let replace = GuardInput {
            overlap: Overlap::Replace,
            active_runs: 1,
            ..lane(2)
        };
        assert_eq!(decide(&replace), Decision::Replace);
        let unlimited = GuardInput {
            lane: Some(LaneLoad {
                active: 1000,
                max: None,
            }),
            ..base()
        };
        assert_eq!(decide(&unlimited), Decision::Dispatch);
    }

    #[test]
    fn pressure_lets_only_critical_through() {
        let p = GuardInput {
            pressure: true,
            ..base()
        };
        assert_eq!(decide(&p), Decision::Skip(SkipReason::Pressure));
        let critical = GuardInput {
            priority: Priority::Critical,
            ..p
        };
        assert_eq!(decide(&critical), Decision::Dispatch);
    }

    #[test]
    fn cooldown_and_approval() {
        let now = base().now;
        let cooling = GuardInput {
            cooldown_until: Some(now + jiff::SignedDuration::from_secs(5)),
            ..base()
        };
        assert_eq!(decide(&cooling), Decision::Skip(SkipReason::Cooldown));
        let over = GuardInput {
            cooldown_until: Some(now),
            ..base()
        };
        assert_eq!(decide(&over), Decision::Dispatch);
        let approval = GuardInput {
            approval_pending: true,
            ..base()
        };
        assert_eq!(decide(&approval), Decision::Skip(SkipReason::Approval));
    }

    #[test]
    fn reasons_have_a_fixed_order() {
        let everything = GuardInput {
            cooldown_until: Some(base().now + jiff::SignedDuration::from_secs(5)),
            approval_pending: true,
            pressure: true,
            active_runs: 3,
            lane: Some(LaneLoad {
                active: 9,
                max: Some(1),
            }),
            ..base()
        };
        assert_eq!(decide(&everything), Decision::Skip(SkipReason::Cooldown));
        let paused = GuardInput {
            paused: true,
            ..everything
        };
        assert_eq!(decide(&paused), Decision::Skip(SkipReason::Paused));
        assert_eq!(
            SkipReason::Paused.event_type(),
            "scheduler.dispatch_skipped_paused"
        );
    }

    #[test]
    fn a_used_up_budget_skips_after_approval_and_before_pressure() {
        let spent = GuardInput {
            budget_exhausted: true,
            pressure: true,
            ..base()
        };
        assert_eq!(decide(&spent), Decision::Skip(SkipReason::Budget));
        let waiting = GuardInput {
            approval_pending: true,
            ..spent
        };
        assert_eq!(decide(&waiting), Decision::Skip(SkipReason::Approval));
        assert_eq!(
            SkipReason::Budget.event_type(),
            "scheduler.dispatch_skipped_budget"
        );
    }

    #[test]
    fn pressure_hysteresis_switches_off_when_the_queue_drains() {
        let mut p = Pressure::new(300, 180);
        assert_eq!(p.update(299), None);
        assert_eq!(p.update(300), Some(true));
        assert_eq!(p.update(250), None);
        assert_eq!(p.update(181), None);
        assert_eq!(p.update(180), Some(false));
        assert_eq!(p.update(0), None);
        // Regression (seeds): pressure measured on history never went off.
        // Here only the waiting count matters, so an empty queue is off.
        let mut stuck = Pressure::new(1, 0);
        assert_eq!(stuck.update(5), Some(true));
        assert_eq!(stuck.update(0), Some(false));
    }

    #[test]
    fn event_names() {
        assert_eq!(
            SkipReason::FlowLimit.event_type(),
            "scheduler.dispatch_skipped_flow_limit"
        );
    }
}
