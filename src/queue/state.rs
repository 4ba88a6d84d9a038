//! The queue's indexes: every unfinished run by id, the ready and delayed
//! heaps, runs parked behind a full lane, and the counts guards read.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use jiff::Timestamp;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Burst;
use crate::run::guards::Pressure;
use crate::spec::model::{Job, Priority};
use crate::store::paused::Paused;
use crate::store::runs::{FailureState, Run, RunStatus, Trigger};
use crate::store::{Applied, Mutation, NewEvent};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ReadyKey {
    rank: u8,
    pub(super) seq: u64,
}

impl Ord for ReadyKey {
    fn cmp(&self, other: &Self) -> Ordering {
        // Max-heap: higher priority (lower rank) first, then older first.
        other
            .rank
            .cmp(&self.rank)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for ReadyKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn rank(p: Priority) -> u8 {
    match p {
        Priority::Critical => 0,
        Priority::High => 1,
        Priority::Normal => 2,
        Priority::Low => 3,
    }
}

/// Put a run in line: the next seq (its place among runs of its priority)
/// on its entry and in the ready heap (keys an entry no longer holds are
/// skipped when popped).
pub(super) fn line_up(
    seq: &mut u64,
    ready: &mut BinaryHeap<(ReadyKey, String)>,
    entry: &mut Entry,
    id: String,
) {
    *seq += 1;
    entry.ready_seq = Some(*seq);
    let key = ReadyKey {
        rank: rank(entry.run.priority),
        seq: *seq,
    };
    ready.push((key, id));
}

pub(super) struct Entry {
    pub(super) run: Run,
    pub(super) cancel: CancellationToken,
    /// Key in the ready heap while ready (stale heap keys are skipped).
    pub(super) ready_seq: Option<u64>,
    /// The approval the run waits on while `awaiting_approval`: a decision
    /// for another one (an earlier approval decided twice) is refused.
    pub(super) pending_approval: Option<String>,
    /// The spec (and its hash) the run's first attempt started with: a
    /// retry or a resume after approval runs it too, not a spec applied
    /// meanwhile (SPEC: a run finishes on the spec it started with).
    pub(super) started_with: Option<(Arc<Job>, String)>,
    /// A follow-up that has not started yet: counted in
    /// `Counts::follow_ups_waiting` until it starts or leaves the queue.
    pub(super) waiting_follow_up: bool,
    /// The worker group its running attempt counts against (set while
    /// `running`): `Counts::running_by_group`.
    pub(super) running_in_group: Option<String>,
}

#[derive(Default)]
pub(super) struct Counts {
    pub(super) active_by_job: HashMap<String, usize>,
    pub(super) active_by_flow: HashMap<String, usize>,
    /// The active runs' ids (oldest first, ids are time-ordered), by job
    /// and by lane: what a skip's detail names.
    pub(super) ids_by_job: HashMap<String, BTreeSet<String>>,
    pub(super) ids_by_flow: HashMap<String, BTreeSet<String>>,
    pub(super) running_by_flow: HashMap<String, usize>,
    /// Running runs of jobs with a `worker_group`, by group: what the
    /// group's dispatch window bounds.
    pub(super) running_by_group: HashMap<String, usize>,
    pub(super) approvals_by_job: HashMap<String, usize>,
    /// Follow-up runs (`schedule_job`) not started yet, by job: what
    /// `limits.queued_follow_ups` bounds.
    pub(super) follow_ups_waiting: HashMap<String, usize>,
    /// Queued and not started: what pressure measures.
    pub(super) waiting: usize,
    pub(super) running: usize,
}

impl Counts {
    /// A follow-up run leaves the waiting ones (it started, or it ended
    /// before it could).
    pub(super) fn follow_up_left(&mut self, entry: &mut Entry) {
        if std::mem::take(&mut entry.waiting_follow_up) {
            Counts::add(&mut self.follow_ups_waiting, &entry.run.job_id, -1);
        }
    }

    /// A run becomes active (`true`) or leaves the queue: its job's and
    /// lane's counts and ids.
    pub(super) fn track(&mut self, run: &Run, active: bool) {
        let delta = if active { 1 } else { -1 };
        Counts::add(&mut self.active_by_job, &run.job_id, delta);
        Counts::index(&mut self.ids_by_job, &run.job_id, &run.id, active);
        if let Some(flow) = &run.flow {
            Counts::add(&mut self.active_by_flow, flow, delta);
            Counts::index(&mut self.ids_by_flow, flow, &run.id, active);
        }
    }

    fn index(map: &mut HashMap<String, BTreeSet<String>>, key: &str, id: &str, add: bool) {
        if add {
            map.entry(key.to_string())
                .or_default()
                .insert(id.to_string());
        } else if let Some(ids) = map.get_mut(key) {
            ids.remove(id);
            if ids.is_empty() {
                map.remove(key);
            }
        }
    }

    pub(super) fn add(map: &mut HashMap<String, usize>, key: &str, delta: isize) {
        if delta >= 0 {
            *map.entry(key.to_string()).or_default() += delta as usize;
        } else if let Some(v) = map.get_mut(key) {
            *v = v.saturating_sub(delta.unsigned_abs());
            if *v == 0 {
                map.remove(key);
            }
        }
    }
}

pub(super) struct State {
    /// Boxed: growing the map moves pointers, not whole runs.
    pub(super) runs: HashMap<String, Box<Entry>, foldhash::fast::RandomState>,
    pub(super) ready: BinaryHeap<(ReadyKey, String)>,
    pub(super) delayed: BinaryHeap<Reverse<(Timestamp, String)>>,
    /// Ready runs held back because their lane is full of running runs.
    pub(super) parked: HashMap<String, VecDeque<String>>,
    /// The worker groups some live worker serves; `None`: every group
    /// (the embedded pool). See [`super::RunQueue::set_served_groups`].
    pub(super) served: Option<std::collections::HashSet<String>>,
    /// Ready runs held back because no live worker serves their job's
    /// `worker_group`, by group: they stay queued, not dispatched, so
    /// they hold no place the served runs could take.
    pub(super) unserved: HashMap<String, VecDeque<String>>,
    /// Most runs of a group running at once (the slots of its live
    /// workers, times the runs a slot may hold); a ready run of a full
    /// group waits in `unserved` until one of its group's runs ends, so a
    /// burst of one group cannot fill the dispatch window of all.
    pub(super) group_windows: HashMap<String, usize>,
    pub(super) counts: Counts,
    pub(super) pressure: Pressure,
    pub(super) failure: HashMap<String, FailureState>,
    pub(super) finished_since_prune: HashMap<String, usize>,
    /// Each job's last finished run (the API shows it with the job).
    pub(super) last_finished: HashMap<String, Arc<Run>>,
    pub(super) applied: Arc<Applied>,
    /// Each runnable job's spec (a skill's derived one too), shared by its
    /// runs (built once per revision, so a run never deep-copies its job).
    pub(super) jobs: HashMap<String, (Arc<Job>, String)>,
    pub(super) draining: bool,
    pub(super) seq: u64,
    pub(super) dispatched: u64,
    pub(super) finished: u64,
    /// `trigger --count` bursts being admitted, by inbox id.
    pub(super) bursts: BTreeMap<i64, Burst>,
    /// Jobs an operator paused (`multijob pause`), loaded on recovery.
    pub(super) paused: Paused,
}

/// The jobs runs may be queued for: the directory's and the skills'
/// derived ones (`skill:<id>`, see [`crate::spec::snapshot::derived`]).
pub(super) fn job_cache(applied: &Applied) -> HashMap<String, (Arc<Job>, String)> {
    let snapshot = &applied.snapshot;
    snapshot
        .jobs
        .iter()
        .map(|(id, r)| (id.clone(), (Arc::new(r.spec.clone()), r.hash.clone())))
        .chain(
            snapshot
                .derived_jobs()
                .map(|(id, r)| (id, (Arc::new(r.spec), r.hash))),
        )
        .collect()
}

pub(super) fn pressure_event(on: bool, waiting: usize, p: &Pressure) -> Mutation {
    let t = if on {
        "scheduler.pressure_on"
    } else {
        "scheduler.pressure_off"
    };
    Mutation::Event(NewEvent::new(
        t,
        json!({"waiting": waiting, "high": p.high, "low": p.low}),
    ))
}

impl Counts {
    /// A running run counts against its job's worker group, if any.
    pub(super) fn started_in_group(&mut self, entry: &mut Entry, group: Option<String>) {
        if let Some(group) = group {
            Counts::add(&mut self.running_by_group, &group, 1);
            entry.running_in_group = Some(group);
        }
    }

    /// A run leaves `was`: leaving `running` frees a worker, a lane place
    /// and a place of its worker group (returned: a held run of that
    /// group may start), leaving `queued` a waiting place, and leaving
    /// `awaiting_approval` the job's pending approvals.
    pub(super) fn left(&mut self, entry: &mut Entry, was: RunStatus) -> Option<String> {
        match was {
            RunStatus::Running => {
                self.running = self.running.saturating_sub(1);
                if let Some(flow) = &entry.run.flow {
                    Counts::add(&mut self.running_by_flow, flow, -1);
                }
                let group = entry.running_in_group.take()?;
                Counts::add(&mut self.running_by_group, &group, -1);
                return Some(group);
            }
            RunStatus::Queued => self.waiting = self.waiting.saturating_sub(1),
            RunStatus::AwaitingApproval => {
                Counts::add(&mut self.approvals_by_job, &entry.run.job_id, -1)
            }
            _ => {}
        }
        None
    }
}

impl State {
    /// Line up to `room` of the runs held for worker group `group`, oldest
    /// first, skipping held ids of runs no longer waiting (cancelled
    /// meanwhile, or lined up already); how many were lined up.
    pub(super) fn line_up_held(&mut self, group: &str, room: usize) -> usize {
        let Some(held) = self.unserved.get_mut(group) else {
            return 0;
        };
        let mut lined = 0;
        while lined < room {
            let Some(id) = held.pop_front() else { break };
            if let Some(entry) = self.runs.get_mut(&id)
                && entry.run.status == RunStatus::Queued
                && entry.ready_seq.is_none()
            {
                line_up(&mut self.seq, &mut self.ready, entry, id);
                lined += 1;
            }
        }
        lined
    }

    pub(super) fn new(applied: Arc<Applied>, pressure: Pressure) -> State {
        State {
            runs: HashMap::default(),
            ready: BinaryHeap::new(),
            delayed: BinaryHeap::new(),
            parked: HashMap::new(),
            served: None,
            unserved: HashMap::new(),
            group_windows: HashMap::new(),
            counts: Counts::default(),
            pressure,
            failure: HashMap::new(),
            finished_since_prune: HashMap::new(),
            last_finished: HashMap::new(),
            jobs: job_cache(&applied),
            applied,
            draining: false,
            seq: 0,
            dispatched: 0,
            finished: 0,
            bursts: BTreeMap::new(),
            paused: Paused::new(),
        }
    }

    /// Track a run (not yet in the queue) in the right structure; `now`
    /// tells a queued run due later from one ready now.
    pub(super) fn insert(&mut self, run: Run, now: Timestamp) {
        let id = run.id.clone();
        self.counts.track(&run, true);
        // Not started yet (queued, delayed or awaiting approval before its
        // first attempt): a follow-up counts against its job's
        // `limits.queued_follow_ups` until it starts.
        let waiting_follow_up = run.trigger == Trigger::Workflow
            && run.attempt == 0
            && matches!(run.status, RunStatus::Queued | RunStatus::AwaitingApproval);
        if waiting_follow_up {
            Counts::add(&mut self.counts.follow_ups_waiting, &run.job_id, 1);
        }
        let mut entry = Entry {
            run,
            cancel: CancellationToken::new(),
            ready_seq: None,
            pending_approval: None,
            started_with: None,
            waiting_follow_up,
            running_in_group: None,
        };
        let due = entry
            .run
            .due_at
            .as_ref()
            .and_then(|d| d.parse::<Timestamp>().ok());
        match entry.run.status {
            RunStatus::Queued => {
                self.counts.waiting += 1;
                match due {
                    Some(due) if due > now => self.delayed.push(Reverse((due, id.clone()))),
                    _ => line_up(&mut self.seq, &mut self.ready, &mut entry, id.clone()),
                }
            }
            RunStatus::Running => {
                self.counts.running += 1;
                if let Some(flow) = &entry.run.flow {
                    Counts::add(&mut self.counts.running_by_flow, flow, 1);
                }
                let group = self
                    .jobs
                    .get(&entry.run.job_id)
                    .and_then(|(j, _)| j.worker_group.clone());
                self.counts.started_in_group(&mut entry, group);
                // Held elsewhere and cancelled before this process took
                // over (a new Redis leader): its executor is told again.
                if entry.run.cancelled_by.is_some() {
                    entry.cancel.cancel();
                }
            }
            RunStatus::Retrying => self.delayed.push(Reverse((due.unwrap_or(now), id.clone()))),
            _ => {}
        }
        self.runs.insert(id, Box::new(entry));
    }
}
