//! Notices on state changes (`notify:` on a job, its flow, or the directory's
//! `kind: Defaults`): `failure`, `recovery`, `missed`, `cooldown`, each sent
//! once per state change.
//!
//! The state change is already durable before anything here runs: it is
//! a committed event (`run.failed` is written in the same batch as the
//! run's final record). One task in the process that owns the run queue
//! reads the events after its cursor (kept in the store's kv), decides
//! the notices ([`machine`], pure), writes them as the job's pending
//! notices (kv `notify:job:<id>`) before the cursor moves, then sends the
//! pending ones ([`send`]) with the idempotent send-once keyed by (job,
//! kind, state change, connector, recipient), and removes what went out.
//! A process that dies anywhere in between leaves either the event after
//! the cursor or the notice pending: the next one sends it, once.
//!
//! Other slices raise their own kinds through [`send_notice`].

pub mod deadline;
pub mod machine;
pub mod send;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::connectors::Connectors;
use crate::spec::model::{Job, NoticeKind, NoticeRule};
use crate::spec::snapshot::Snapshot;
use crate::store::{Applied, EventQuery, KvOp, Store, StoreError};
use machine::{JobState, Notice};

/// Where the task's cursor (the last event it applied) is kept.
const CURSOR_KEY: &str = "notify:cursor";
/// Events read per query.
const PAGE: usize = 500;
/// How often the task looks for new events.
const POLL: Duration = Duration::from_millis(250);
/// How often unfinished runs are checked against their `deadline_sec`.
const DEADLINE_EVERY: Duration = Duration::from_secs(2);
/// The longest wait before a failed notice is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

fn state_key(job: &str) -> String {
    format!("notify:job:{job}")
}

/// The job's notice rules in `snapshot` (its own, else its flow's, else
/// the directory's Defaults document's).
pub fn rules_of<'a>(snapshot: &'a Snapshot, job_id: &str) -> Option<(&'a Job, &'a [NoticeRule])> {
    let job = &snapshot.jobs.get(job_id)?.spec;
    let flow = job
        .flow
        .as_ref()
        .and_then(|f| snapshot.flows.get(f))
        .map(|r| &r.spec);
    let rules = job.notice_rules(flow, snapshot.defaults());
    (!rules.is_empty()).then_some((job, rules))
}

/// Whether any job of `snapshot` has notice rules (its own, its flow's
/// or the Defaults document's).
fn any_rules(snapshot: &Snapshot) -> bool {
    let defaults = snapshot.defaults().is_some_and(|d| !d.notify.is_empty());
    defaults
        || snapshot.flows.values().any(|f| !f.spec.notify.is_empty())
        || snapshot.jobs.values().any(|j| !j.spec.notify.is_empty())
}

async fn save_cursor(store: &Store, last: i64) -> Result<(), StoreError> {
    let op = KvOp::Set {
        value: Value::from(last),
        ttl_sec: None,
    };
    store.kv(CURSOR_KEY, op).await.map(|_| ())
}

/// Send a notice of `kind` about `job_id` to its rules that want it, once
/// per `change` (the state change's id): a second call with the same
/// arguments sends nothing. For kinds raised outside run outcomes (the
/// expectations check's `expect`). `run` is what the template sees as
/// `run`. Ok(false): a connector failed (retry the call later).
pub async fn send_notice(
    store: &Store,
    snapshot: &Snapshot,
    job_id: &str,
    kind: NoticeKind,
    change: &str,
    run: Value,
) -> bool {
    let Some((job, rules)) = rules_of(snapshot, job_id) else {
        return true;
    };
    let notice = Notice {
        kind,
        change: change.to_string(),
        run,
        count: 0,
        reasons: BTreeMap::new(),
    };
    let connectors = Connectors::new(&snapshot.connectors);
    send::deliver(store, &connectors, job_id, job, rules, &notice).await
}

async fn load(store: &Store, job: &str) -> Result<JobState, StoreError> {
    let v = store.kv(&state_key(job), KvOp::Get).await?;
    Ok(v.and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default())
}

async fn save(store: &Store, job: &str, state: &JobState) -> Result<(), StoreError> {
    let value = serde_json::to_value(state).map_err(|e| StoreError::corrupt("notice state", e))?;
    store
        .kv(
            &state_key(job),
            KvOp::Set {
                value,
                ttl_sec: None,
            },
        )
        .await
        .map(|_| ())
}

/// The notifier: run until `stop` in the process that owns the queue.
pub async fn run(store: Store, applied: watch::Receiver<Arc<Applied>>, stop: CancellationToken) {
    let mut n = Notifier {
        store,
        applied,
        connectors: None,
        open: BTreeSet::new(),
        retry: BTreeMap::new(),
        deadlines_at: Instant::now(),
        overdue: BTreeSet::new(),
        states: HashMap::new(),
    };
    let mut cursor = loop {
        match n.start().await {
            Ok(c) => break c,
            Err(e) => tracing::warn!(error = %e, "notices: reading the cursor failed; retrying"),
        }
        tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(POLL * 4) => {} }
    };
    loop {
        let behind = match n.step(cursor).await {
            Ok((c, full)) => {
                cursor = c;
                full
            }
            Err(e) => {
                tracing::warn!(error = %e, "notices: the store failed; retrying");
                false
            }
        };
        // A full page: more events wait, so catch up before sleeping.
        if behind {
            tokio::task::yield_now().await;
            if stop.is_cancelled() {
                return;
            }
            continue;
        }
        tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(POLL) => {} }
    }
}

struct Notifier {
    store: Store,
    applied: watch::Receiver<Arc<Applied>>,
    /// The connectors of the revision they were built for.
    connectors: Option<(Option<String>, Arc<Connectors>)>,
    /// Jobs with pending notices or an open burst.
    open: BTreeSet<String>,
    /// Jobs whose last delivery failed: when to try again, and the wait.
    retry: BTreeMap<String, (Instant, Duration)>,
    /// When unfinished runs are next checked for deadlines.
    deadlines_at: Instant,
    /// Runs already made a `deadline` notice by this process.
    overdue: BTreeSet<String>,
    /// Each job's notice state as this process last read or wrote it:
    /// only this task writes it, so the store is read once per job.
    states: HashMap<String, JobState>,
}

impl Notifier {
    /// The cursor (from now on the first start), and the jobs left with
    /// pending notices or an open burst by the last process.
    async fn start(&mut self) -> Result<i64, StoreError> {
        let cursor = match self.store.kv(CURSOR_KEY, KvOp::Get).await? {
            Some(v) => v.as_i64().unwrap_or(0),
            None => self.store.last_event_id().await?,
        };
        let jobs: Vec<String> = self
            .applied
            .borrow()
            .snapshot
            .jobs
            .keys()
            .cloned()
            .collect();
        for job in jobs {
            let s = self.state(&job).await?;
            if !s.pending.is_empty() || s.burst.is_some() {
                self.open.insert(job);
            }
        }
        Ok(cursor)
    }

    /// Apply the events after `cursor`, then send what is pending; the
    /// new cursor, and whether the page was full (more events wait).
    async fn step(&mut self, cursor: i64) -> Result<(i64, bool), StoreError> {
        let applied = self.applied.borrow().clone();
        if self.open.is_empty() && !any_rules(&applied.snapshot) {
            // No job has a rule, so no event can make a notice: follow the
            // log's end without reading it (at 9,000 runs/s on Redis,
            // reading and parsing every event took the leader's CPU).
            // Rules added later apply from when they are applied.
            let last = self.store.last_event_id().await?.max(cursor);
            if last > cursor {
                save_cursor(&self.store, last).await?;
            }
            return Ok((last, false));
        }
        let query = EventQuery {
            after: cursor,
            limit: PAGE,
            event_type: None,
            job_id: None,
        };
        let events = self.store.events(query).await?;
        let now = jiff::Timestamp::now();
        let mut last = cursor;
        for event in &events {
            last = last.max(event.id);
            let Some((job, observed)) = machine::classify(event) else {
                continue;
            };
            if rules_of(&applied.snapshot, &job).is_none() {
                continue;
            }
            let mut state = self.state(&job).await?;
            let before = state.clone();
            machine::observe(&mut state, event.id, observed, now);
            // Written only when it changed beyond `seen`: a replay after a
            // crash re-observes the events after the cursor, and those
            // that changed nothing change nothing again.
            let changed = JobState {
                seen: before.seen,
                ..state.clone()
            } != before;
            if !state.pending.is_empty() || state.burst.is_some() {
                self.open.insert(job.clone());
            }
            if changed {
                self.put_state(&job, state).await?;
            } else {
                self.states.insert(job, state);
            }
        }
        if last > cursor {
            save_cursor(&self.store, last).await?;
        }
        self.check_deadlines(&applied, now).await?;
        self.send_pending(&applied, now).await?;
        Ok((last, events.len() == PAGE))
    }

    /// Close stale bursts and send every pending notice not waiting for
    /// a retry.
    async fn send_pending(
        &mut self,
        applied: &Applied,
        now: jiff::Timestamp,
    ) -> Result<(), StoreError> {
        let connectors = self.connectors_for(applied);
        let jobs: Vec<String> = self.open.iter().cloned().collect();
        for job_id in jobs {
            if self
                .retry
                .get(&job_id)
                .is_some_and(|(at, _)| *at > Instant::now())
            {
                continue;
            }
            let mut state = self.state(&job_id).await?;
            let closed = machine::close_stale_burst(&mut state, now);
            let before = state.pending.len();
            let mut failed = false;
            if let Some((job, rules)) = rules_of(&applied.snapshot, &job_id) {
                let mut kept = Vec::new();
                for notice in std::mem::take(&mut state.pending) {
                    if !send::deliver(&self.store, &connectors, &job_id, job, rules, &notice).await
                    {
                        failed = true;
                        kept.push(notice);
                    }
                }
                state.pending = kept;
            } else {
                // The job or its rules are gone: nobody to tell.
                state.pending.clear();
            }
            let done = state.pending.is_empty() && state.burst.is_none();
            if closed || state.pending.len() != before {
                self.put_state(&job_id, state).await?;
            }
            self.backoff(&job_id, failed);
            if done {
                self.open.remove(&job_id);
            }
        }
        Ok(())
    }

    /// Every [`DEADLINE_EVERY`]: overdue unfinished runs become pending
    /// `deadline` notices (once each: pending is checked, and the send is
    /// keyed by the run).
    async fn check_deadlines(
        &mut self,
        applied: &Applied,
        now: jiff::Timestamp,
    ) -> Result<(), StoreError> {
        let wanted = applied
            .snapshot
            .jobs
            .values()
            .any(|j| j.spec.deadline_sec.is_some());
        if !wanted || Instant::now() < self.deadlines_at {
            return Ok(());
        }
        self.deadlines_at = Instant::now() + DEADLINE_EVERY;
        let active = self.store.active_runs().await?;
        for (job, notice) in deadline::overdue(&active, &applied.snapshot, now) {
            if !self.overdue.insert(notice.change.clone()) {
                continue;
            }
            let mut state = self.state(&job).await?;
            if !state
                .pending
                .iter()
                .any(|n| n.kind == notice.kind && n.change == notice.change)
            {
                state.pending.push(notice);
                self.put_state(&job, state).await?;
            }
            self.open.insert(job);
        }
        let live: BTreeSet<&String> = active.iter().map(|r| &r.id).collect();
        self.overdue.retain(|id| live.contains(id));
        Ok(())
    }

    /// The job's notice state: this process's copy, else the store's.
    async fn state(&mut self, job: &str) -> Result<JobState, StoreError> {
        if let Some(s) = self.states.get(job) {
            return Ok(s.clone());
        }
        let s = load(&self.store, job).await?;
        self.states.insert(job.to_string(), s.clone());
        Ok(s)
    }

    /// Write the job's notice state to the store, then keep it.
    async fn put_state(&mut self, job: &str, state: JobState) -> Result<(), StoreError> {
        save(&self.store, job, &state).await?;
        self.states.insert(job.to_string(), state);
        Ok(())
    }

    fn backoff(&mut self, job: &str, failed: bool) {
        if !failed {
            self.retry.remove(job);
            return;
        }
        let wait = self
            .retry
            .get(job)
            .map_or(Duration::from_secs(1), |(_, w)| (*w * 2).min(MAX_BACKOFF));
        self.retry
            .insert(job.to_string(), (Instant::now() + wait, wait));
    }

    fn connectors_for(&mut self, applied: &Applied) -> Arc<Connectors> {
        let rev = applied.revision.as_ref().map(|r| r.id.clone());
        match &self.connectors {
            Some((r, c)) if *r == rev => c.clone(),
            _ => {
                let c = Arc::new(Connectors::new(&applied.snapshot.connectors));
                self.connectors = Some((rev, c.clone()));
                c
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::any_rules;

    fn snapshot(text: &str) -> crate::spec::snapshot::Snapshot {
        crate::spec::build(&[crate::spec::SourceFile {
            path: "jobs.d/t.yaml".into(),
            text: text.to_string(),
        }])
        .snapshot
    }

    /// The notifier skips reading events only when no rule can apply:
    /// a job's own, its flow's or the Defaults document's.
    #[test]
    fn any_rules_sees_every_place_a_rule_can_be() {
        let hook =
            "kind: Connector\nid: hook\nprovider: webhook\nbase_url: http://127.0.0.1:9/h\n---\n";
        let rule = "notify:\n  - connector: hook\n    on: [failure]\n";
        assert!(!any_rules(&snapshot(&format!("{hook}id: a\ntype: noop\n"))));
        assert!(any_rules(&snapshot(&format!(
            "{hook}id: a\ntype: noop\n{rule}"
        ))));
        assert!(any_rules(&snapshot(&format!(
            "{hook}kind: Flow\nid: f\n{rule}---\nid: a\ntype: noop\nflow: f\n"
        ))));
        assert!(any_rules(&snapshot(&format!(
            "{hook}kind: Defaults\n{rule}---\nid: a\ntype: noop\n"
        ))));
    }
}
