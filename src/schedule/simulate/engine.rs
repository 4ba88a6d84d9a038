//! The event loop: slots firing and runs finishing, earliest first, on
//! nanoseconds since the period's start. At one instant slots are decided
//! before runs finish: a real run always takes a little longer than its
//! nominal duration.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use jiff::Timestamp;

use super::report::{
    BusyHour, JobReport, LaneReport, LaneSeen, QueueReport, SimReport, TracedSlot,
};
use super::{SimConfig, SimJob};
use crate::run::guards::{self, Decision, GuardInput, LaneLoad, Pressure, SkipReason};
use crate::schedule::scheduler::successor_wait;
use crate::spec::model::Priority;

const HOUR_NS: i64 = 3_600_000_000_000;

/// The reasons in report order; a job's skips are counted by index.
const REASONS: [SkipReason; 8] = [
    SkipReason::Overlap,
    SkipReason::FlowLimit,
    SkipReason::Pressure,
    SkipReason::Cooldown,
    SkipReason::Approval,
    SkipReason::TickLimit,
    SkipReason::Missed,
    SkipReason::Paused,
];

fn reason_index(r: SkipReason) -> usize {
    REASONS.iter().position(|x| *x == r).unwrap_or(0)
}

/// A slot on the heap, ordered as the scheduler's (fire time, wait,
/// nominal time, job id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    fire: i64,
    waiting: i64,
    nominal: i64,
    job: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunState {
    Waiting,
    Running,
    /// Replaced while waiting or running: freed when its queue lets go.
    Cancelled,
}

#[derive(Debug, Clone, Copy)]
struct SimRun {
    job: u32,
    state: RunState,
    queued_at: i64,
}

#[derive(Debug, Default)]
struct JobState {
    /// The job's runs waiting or running (slab ids).
    runs: Vec<u32>,
    buffered: Option<(i64, i64)>,
    slots: u64,
    dispatched: u64,
    skipped: [u64; 8],
}

#[derive(Debug, Default)]
struct LaneState {
    id: String,
    max: Option<u32>,
    active: usize,
    full_since: Option<i64>,
    full_ns: i64,
    started: u64,
    /// Per clock hour of the period: runs started and time full.
    hours: Vec<(u64, i64)>,
}

pub(super) struct Engine<'a> {
    jobs: &'a [SimJob],
    config: &'a SimConfig,
    start_ns: i128,
    end: i64,
    /// Offset of the period's start into its first clock hour.
    hour_offset: i64,
    duration: Vec<i64>,
    /// Each job's fixed step between slots, when it has one.
    step: Vec<Option<i64>>,
    lane_of: Vec<Option<usize>>,
    lanes: Vec<LaneState>,
    state: Vec<JobState>,
    heap: BinaryHeap<Reverse<Due>>,
    slab: Vec<SimRun>,
    free: Vec<u32>,
    /// Waiting runs by priority rank, oldest first.
    ready: [VecDeque<u32>; 4],
    finishes: BinaryHeap<Reverse<(i64, u32)>>,
    workers: usize,
    waiting: usize,
    running: usize,
    pressure: Pressure,
    pressure_since: Option<i64>,
    queue: QueueReport,
    pressure_ns: i64,
    wait_total_ns: i128,
    started: u64,
    trace_job: Option<usize>,
    trace: Vec<TracedSlot>,
}

fn rank(p: Priority) -> usize {
    match p {
        Priority::Critical => 0,
        Priority::High => 1,
        Priority::Normal => 2,
        Priority::Low => 3,
    }
}

impl<'a> Engine<'a> {
    pub(super) fn new(
        jobs: &'a [SimJob],
        lanes: &BTreeMap<String, Option<u32>>,
        config: &'a SimConfig,
    ) -> Engine<'a> {
        let start_ns = config.from.as_nanosecond();
        let end = i64::try_from(config.to.as_nanosecond() - start_ns).unwrap_or(i64::MAX);
        let hour_offset = i64::try_from(start_ns.rem_euclid(i128::from(HOUR_NS))).unwrap_or(0);
        let hours = usize::try_from((end + hour_offset) / HOUR_NS + 1).unwrap_or(1);
        let lane_ids: Vec<&String> = lanes.keys().collect();
        let lanes: Vec<LaneState> = lanes
            .iter()
            .map(|(id, max)| LaneState {
                id: id.clone(),
                max: *max,
                hours: vec![(0, 0); hours],
                ..LaneState::default()
            })
            .collect();
        let lane_of = jobs
            .iter()
            .map(|j| {
                j.lane
                    .as_ref()
                    .and_then(|l| lane_ids.binary_search(&l).ok())
            })
            .collect();
        let duration = jobs
            .iter()
            .map(|j| {
                i64::try_from(j.duration.as_nanos())
                    .unwrap_or(i64::MAX)
                    .max(1)
            })
            .collect();
        let trace_job = config
            .trace
            .as_ref()
            .and_then(|t| jobs.iter().position(|j| &j.id == t));
        Engine {
            jobs,
            config,
            start_ns,
            end,
            hour_offset,
            duration,
            step: jobs.iter().map(|j| j.rule.fixed_step()).collect(),
            lane_of,
            lanes,
            state: jobs.iter().map(|_| JobState::default()).collect(),
            heap: BinaryHeap::with_capacity(jobs.len()),
            slab: Vec::new(),
            free: Vec::new(),
            ready: Default::default(),
            finishes: BinaryHeap::new(),
            workers: config.workers.unwrap_or(usize::MAX),
            waiting: 0,
            running: 0,
            pressure: Pressure::new(config.pressure_high, config.pressure_low),
            pressure_since: None,
            queue: QueueReport::default(),
            pressure_ns: 0,
            wait_total_ns: 0,
            started: 0,
            trace_job,
            trace: Vec::new(),
        }
    }

    fn ts(&self, t: i64) -> Timestamp {
        Timestamp::from_nanosecond(self.start_ns + i128::from(t)).unwrap_or(Timestamp::MAX)
    }

    fn rel(&self, t: Timestamp) -> i64 {
        i64::try_from(t.as_nanosecond() - self.start_ns).unwrap_or(i64::MAX)
    }

    /// Each job's first slot after the start, as a daemon started then
    /// schedules it.
    fn seed(&mut self) {
        for (i, job) in self.jobs.iter().enumerate() {
            if let Some(slot) = job.rule.next_slot(self.config.from) {
                let fire = self.rel(slot.fire_at);
                self.heap.push(Reverse(Due {
                    fire,
                    waiting: fire,
                    nominal: self.rel(slot.nominal),
                    job: i as u32,
                }));
            }
        }
    }

    /// Runs active at the start take their places (a job missing from
    /// the set is ignored).
    fn seed_active(&mut self) {
        for active in &self.config.active {
            let Ok(j) = self
                .jobs
                .binary_search_by(|job| job.id.as_str().cmp(&active.job))
            else {
                continue;
            };
            self.enqueue(j, 0);
            self.state[j].dispatched -= 1;
            if let Some(ends) = active.ends_at {
                let id = self.state[j].runs[self.state[j].runs.len() - 1];
                self.ready[rank(self.jobs[j].priority)].pop_back();
                self.slab[id as usize].state = RunState::Running;
                self.waiting -= 1;
                self.running += 1;
                self.finishes.push(Reverse((self.rel(ends).max(0), id)));
            }
        }
        self.admitted(0);
    }

    pub(super) fn run(&mut self) {
        self.seed_active();
        self.seed();
        loop {
            let fire = self.heap.peek().map(|Reverse(d)| d.fire);
            let finish = self.finishes.peek().map(|Reverse((t, _))| *t);
            match (fire, finish) {
                (Some(f), fin) if f < self.end && fin.is_none_or(|fin| f <= fin) => self.tick(f),
                (_, Some(fin)) if fin < self.end => self.finish_at(fin),
                _ => break,
            }
        }
        self.close(self.end);
    }

    /// A wake-up at `now`: every due slot, in heap order, then the runs
    /// queued are counted for pressure and workers take what they can.
    fn tick(&mut self, now: i64) {
        let mut queued = false;
        while let Some(Reverse(due)) = self.heap.peek().copied() {
            if due.fire > now {
                break;
            }
            let (successor, q) = self.decide_slot(due, now);
            queued |= q;
            // The successor takes the top's place: one sift instead of a
            // pop and a push (millions of slots a simulated day).
            match successor {
                Some(next) => {
                    if let Some(mut top) = self.heap.peek_mut() {
                        *top = Reverse(next);
                    }
                }
                None => {
                    self.heap.pop();
                }
            }
        }
        if queued {
            self.admitted(now);
        }
    }

    /// The job's slot after `due`, as (fire, nominal).
    fn successor(&self, due: Due) -> Option<(i64, i64)> {
        let j = due.job as usize;
        if let Some(step) = self.step[j] {
            // On an interval's grid: the next slot is a step on, with the
            // same jitter.
            return Some((due.fire.checked_add(step)?, due.nominal.checked_add(step)?));
        }
        let n = self.jobs[j].rule.next_slot(self.ts(due.nominal))?;
        Some((self.rel(n.fire_at), self.rel(n.nominal)))
    }

    /// One slot's outcome: its successor on the heap, and `true` when it
    /// queued a run.
    fn decide_slot(&mut self, due: Due, now: i64) -> (Option<Due>, bool) {
        let j = due.job as usize;
        let next = self.successor(due);
        self.state[j].slots += 1;
        let decision = self.decide(j, now);
        if self.trace_job == Some(j) {
            self.record_trace(j, due, decision, now);
        }
        let mut queued = false;
        let skipped = match decision {
            Decision::Skip(reason) => {
                self.state[j].skipped[reason_index(reason)] += 1;
                Some(reason)
            }
            Decision::Buffer => {
                self.state[j].buffered = Some((due.nominal, due.fire));
                None
            }
            Decision::Dispatch | Decision::Replace => {
                if decision == Decision::Replace {
                    self.cancel_runs(j, now);
                }
                self.enqueue(j, now);
                queued = true;
                None
            }
        };
        let successor = next.map(|(fire, nominal)| Due {
            fire,
            waiting: successor_wait(due.waiting, fire, skipped),
            nominal,
            job: due.job,
        });
        (successor, queued)
    }

    fn decide(&self, j: usize, now: i64) -> Decision {
        let job = &self.jobs[j];
        let lane = self.lane_of[j].map(|l| LaneLoad {
            active: self.lanes[l].active,
            max: self.lanes[l].max,
        });
        // `now` only matters against a cooldown: built only then.
        let now_ts = match job.cooldown_until {
            Some(_) => self.ts(now),
            None => self.config.from,
        };
        guards::decide(&GuardInput {
            priority: job.priority,
            overlap: job.overlap,
            active_runs: self.state[j].runs.len(),
            buffered: self.state[j].buffered.is_some(),
            lane,
            pressure: self.pressure.on,
            cooldown_until: job.cooldown_until,
            approval_pending: false,
            paused: job.paused,
            // The simulator counts no calls.
            budget_exhausted: false,
            now: now_ts,
        })
    }

    /// A run of job `j` joins the line.
    fn enqueue(&mut self, j: usize, now: i64) {
        let run = SimRun {
            job: j as u32,
            state: RunState::Waiting,
            queued_at: now,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slab[id as usize] = run;
                id
            }
            None => {
                self.slab.push(run);
                (self.slab.len() - 1) as u32
            }
        };
        self.state[j].runs.push(id);
        self.state[j].dispatched += 1;
        if let Some(l) = self.lane_of[j] {
            self.lane_changed(l, 1, now);
        }
        self.waiting += 1;
        self.ready[rank(self.jobs[j].priority)].push_back(id);
    }

    /// After runs were queued: pressure is measured, then workers start.
    fn admitted(&mut self, now: i64) {
        self.measure_pressure(now);
        self.start_runs(now);
        // The depth reported is what workers could not take at once.
        if self.waiting > self.queue.peak_waiting {
            self.queue.peak_waiting = self.waiting;
            self.queue.peak_waiting_at = Some(self.ts(now));
        }
    }

    /// Free workers take waiting runs, highest priority and oldest first.
    fn start_runs(&mut self, now: i64) {
        while self.running < self.workers {
            let Some(id) = self.ready.iter_mut().find_map(|q| q.pop_front()) else {
                return;
            };
            let run = self.slab[id as usize];
            if run.state == RunState::Cancelled {
                self.free.push(id);
                continue;
            }
            self.slab[id as usize].state = RunState::Running;
            self.waiting -= 1;
            self.running += 1;
            self.queue.peak_running = self.queue.peak_running.max(self.running);
            let waited = now - run.queued_at;
            self.wait_total_ns += i128::from(waited);
            self.started += 1;
            self.queue.max_wait_ms = self.queue.max_wait_ms.max(waited as f64 / 1e6);
            let j = run.job as usize;
            if let Some(l) = self.lane_of[j] {
                self.lanes[l].started += 1;
                let hour = self.hour_of(now);
                self.lanes[l].hours[hour].0 += 1;
            }
            let at = now.saturating_add(self.duration[j]);
            self.finishes.push(Reverse((at, id)));
            self.measure_pressure(now);
        }
    }

    /// Runs ending at `t`; idle jobs with a buffered slot dispatch it.
    fn finish_at(&mut self, t: i64) {
        let mut released = Vec::new();
        while let Some(Reverse((at, id))) = self.finishes.peek().copied() {
            if at != t {
                break;
            }
            self.finishes.pop();
            let run = self.slab[id as usize];
            self.free.push(id);
            if run.state == RunState::Cancelled {
                continue;
            }
            self.running -= 1;
            let j = run.job as usize;
            self.leave(j, id, t);
            if self.state[j].runs.is_empty() && self.state[j].buffered.is_some() {
                released.push(j);
            }
        }
        self.measure_pressure(t);
        let mut queued = false;
        for j in released {
            if let Some((nominal, fire)) = self.state[j].buffered.take() {
                let decision = self.decide(j, t);
                match decision {
                    Decision::Dispatch | Decision::Replace => {
                        self.enqueue(j, t);
                        queued = true;
                    }
                    Decision::Skip(reason) => {
                        self.state[j].skipped[reason_index(reason)] += 1;
                    }
                    Decision::Buffer => self.state[j].buffered = Some((nominal, fire)),
                }
            }
        }
        if queued {
            self.admitted(t);
        } else {
            self.start_runs(t);
        }
    }

    /// Run `id` of job `j` is no longer active.
    fn leave(&mut self, j: usize, id: u32, t: i64) {
        if let Some(pos) = self.state[j].runs.iter().position(|r| *r == id) {
            self.state[j].runs.swap_remove(pos);
        }
        if let Some(l) = self.lane_of[j] {
            self.lane_changed(l, -1, t);
        }
    }

    /// `overlap: replace`: the job's active runs are cancelled.
    fn cancel_runs(&mut self, j: usize, now: i64) {
        for id in std::mem::take(&mut self.state[j].runs) {
            let was = self.slab[id as usize].state;
            self.slab[id as usize].state = RunState::Cancelled;
            match was {
                RunState::Waiting => self.waiting -= 1,
                RunState::Running => self.running -= 1,
                RunState::Cancelled => continue,
            }
            if let Some(l) = self.lane_of[j] {
                self.lane_changed(l, -1, now);
            }
        }
    }

    fn measure_pressure(&mut self, now: i64) {
        if let Some(on) = self.pressure.update(self.waiting) {
            if on {
                self.pressure_since = Some(now);
                self.queue.pressure_turned_on += 1;
            } else if let Some(since) = self.pressure_since.take() {
                self.pressure_ns += now - since;
            }
        }
    }

    fn hour_of(&self, t: i64) -> usize {
        usize::try_from((t + self.hour_offset) / HOUR_NS).unwrap_or(0)
    }

    /// A lane's active count moves by `delta`; time at its limit is kept.
    fn lane_changed(&mut self, l: usize, delta: isize, t: i64) {
        let lane = &mut self.lanes[l];
        lane.active = lane.active.saturating_add_signed(delta);
        let full = lane.max.is_some_and(|m| lane.active >= m as usize);
        match (full, lane.full_since) {
            (true, None) => lane.full_since = Some(t),
            (false, Some(since)) => {
                lane.full_since = None;
                self.add_full(l, since, t);
            }
            _ => {}
        }
    }

    /// Time full from `a` to `b`, spread over the clock hours it spans.
    fn add_full(&mut self, l: usize, a: i64, b: i64) {
        self.lanes[l].full_ns += b - a;
        let mut from = a;
        while from < b {
            let hour = self.hour_of(from);
            let hour_end = (hour as i64 + 1) * HOUR_NS - self.hour_offset;
            let to = b.min(hour_end);
            if let Some(h) = self.lanes[l].hours.get_mut(hour) {
                h.1 += to - from;
            }
            from = to;
        }
    }

    /// The period ends: open intervals are counted up to `end`.
    fn close(&mut self, end: i64) {
        for l in 0..self.lanes.len() {
            if let Some(since) = self.lanes[l].full_since.take() {
                self.add_full(l, since, end);
            }
        }
        if let Some(since) = self.pressure_since.take() {
            self.pressure_ns += end - since;
        }
    }

    fn record_trace(&mut self, j: usize, due: Due, decision: Decision, now: i64) {
        let (outcome, reason) = match decision {
            Decision::Skip(r) => ("skipped", Some(r.as_str())),
            Decision::Buffer => ("buffered", None),
            Decision::Dispatch | Decision::Replace => ("dispatched", None),
        };
        let lane = self.lane_of[j].map(|l| self.lane_seen(l));
        let cooldown_until = self.jobs[j].cooldown_until.filter(|c| *c > self.ts(now));
        self.trace.push(TracedSlot {
            nominal: self.ts(due.nominal),
            fire_at: self.ts(due.fire),
            outcome,
            reason,
            active_runs: self.state[j].runs.len(),
            waiting: self.waiting,
            lane,
            cooldown_until,
        });
    }

    /// Lane `l` now, with (up to 5 of) the jobs holding it.
    fn lane_seen(&self, l: usize) -> LaneSeen {
        let mut held_by = Vec::new();
        'jobs: for (j, st) in self.state.iter().enumerate() {
            if self.lane_of[j] != Some(l) {
                continue;
            }
            for _ in &st.runs {
                if held_by.len() == 5 {
                    break 'jobs;
                }
                held_by.push(self.jobs[j].id.clone());
            }
        }
        LaneSeen {
            id: self.lanes[l].id.clone(),
            active: self.lanes[l].active,
            max: self.lanes[l].max,
            held_by,
        }
    }

    pub(super) fn report(self) -> SimReport {
        let mut skipped: BTreeMap<&'static str, u64> = BTreeMap::new();
        let (mut slots, mut dispatched) = (0, 0);
        let jobs: Vec<JobReport> = self
            .jobs
            .iter()
            .zip(&self.state)
            .zip(&self.duration)
            .map(|((job, st), d)| {
                slots += st.slots;
                dispatched += st.dispatched;
                let mut by_reason = BTreeMap::new();
                for (i, n) in st.skipped.iter().enumerate() {
                    if *n > 0 {
                        let r = REASONS[i].as_str();
                        by_reason.insert(r, *n);
                        *skipped.entry(r).or_default() += n;
                    }
                }
                JobReport {
                    id: job.id.clone(),
                    slots: st.slots,
                    dispatched: st.dispatched,
                    skipped: by_reason,
                    duration_ms: (*d / 1_000_000) as u64,
                }
            })
            .collect();
        let lanes = self.lanes.iter().map(|l| self.lane_report(l)).collect();
        let mut queue = self.queue.clone();
        queue.pressure_seconds = self.pressure_ns as f64 / 1e9;
        if self.started > 0 {
            queue.mean_wait_ms = (self.wait_total_ns / i128::from(self.started)) as f64 / 1e6;
        }
        SimReport {
            from: self.config.from,
            to: self.config.to,
            workers: self.config.workers,
            slots,
            dispatched,
            skipped,
            jobs,
            lanes,
            queue,
            trace: self.trace,
        }
    }

    fn lane_report(&self, l: &LaneState) -> LaneReport {
        let busiest = l
            .hours
            .iter()
            .enumerate()
            .filter(|(_, (runs, full))| *runs > 0 || *full > 0)
            .max_by_key(|(i, (runs, full))| (*full, *runs, Reverse(*i)));
        LaneReport {
            id: l.id.clone(),
            max_active_runs: l.max,
            runs_started: l.started,
            full_seconds: l.full_ns as f64 / 1e9,
            busiest_hour: busiest.map(|(i, (runs, full))| BusyHour {
                start: self.ts(i as i64 * HOUR_NS - self.hour_offset),
                runs_started: *runs,
                full_seconds: *full as f64 / 1e9,
            }),
        }
    }
}
