//! The commands the CLI (and worker processes) leave in the store's inbox:
//! trigger bursts, approval decisions, cancels, follow-ups. Whoever owns the run
//! queue (the single process, or the leader) handles them in order.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::queue::{Burst, RunQueue};
use crate::reconcile::pull::FetchNow;
use crate::run::{NewRun, NotQueued};
use crate::store::runs::{ApprovalStatus, InboxCommand, MAX_APPROVAL_NOTE_BYTES};
use crate::store::{Mutation, NewEvent, Store};

/// Commands the CLI left in the store: triggers and approval decisions;
/// a `GitSync` asks this process's puller (`fetch`) for a fetch now.
pub(super) async fn inbox_loop(
    queue: std::sync::Arc<RunQueue>,
    store: Store,
    fetch: FetchNow,
    cancel: CancellationToken,
) {
    let mut after = 0;
    let mut full_page = false;
    loop {
        // A full page means more is waiting (a fan-out of follow-ups from
        // the workers): read on at once. Otherwise wait for the next
        // command (Redis wakes as it is posted; SQLite polls).
        // `posted`: the first command after `after` the wait saw; the read
        // below starts with it, so past it once read: one it cannot parse
        // is skipped, and must not wake the wait again at once (a loop).
        let mut posted = None;
        if !full_page {
            let waited = tokio::select! {
                _ = cancel.cancelled() => return,
                waited = store.wait_for_inbox(after, INBOX_POLL) => waited,
            };
            match waited {
                Ok(seq) => posted = seq,
                Err(e) => {
                    tracing::warn!(error = %e, "inbox: cannot wait for commands; polling");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(INBOX_POLL) => {}
                    }
                }
            }
        } else if cancel.is_cancelled() {
            return;
        }
        let commands = match store.inbox(after).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "inbox unreadable");
                full_page = false;
                continue;
            }
        };
        full_page = commands.len() >= crate::store::INBOX_PAGE;
        after = after.max(posted.unwrap_or(after));
        // Follow-ups and single-slice triggers are queued together, in
        // order with the rest: one store read for the lot, not a round
        // trip each (a steady stream of small triggers fell behind).
        let mut admissions = Admissions::default();
        for (id, command) in commands {
            after = after.max(id);
            let command = match admissions.take(id, command) {
                Some(other) => other,
                None => continue,
            };
            admissions.queue(&queue, &store).await;
            handle_one(&queue, &store, &fetch, &cancel, id, command).await;
        }
        admissions.queue(&queue, &store).await;
    }
}

/// How long the inbox waits for a command before it reads anyway (on
/// SQLite: how often it polls).
const INBOX_POLL: Duration = Duration::from_millis(100);

/// Commands that only queue runs, taken in order and queued together.
#[derive(Default)]
struct Admissions {
    commands: Vec<(i64, Admission)>,
}

enum Admission {
    FollowUp(NewRun),
    /// A trigger of one slice: its runs.
    Trigger(Trigger, Vec<NewRun>),
}

impl Admissions {
    /// Takes a follow-up or a single-slice trigger; any other command is
    /// given back.
    fn take(&mut self, id: i64, command: InboxCommand) -> Option<InboxCommand> {
        match command {
            command @ InboxCommand::FollowUp { .. } => {
                if let Some(run) = follow_up_run(command) {
                    self.commands.push((id, Admission::FollowUp(run)));
                }
                None
            }
            InboxCommand::Trigger {
                run_id,
                job_id,
                inputs,
                count,
            } if count <= TRIGGER_SLICE => {
                let trigger = Trigger {
                    inbox_id: id,
                    run_id,
                    job_id,
                    inputs,
                    count,
                };
                let runs = (0..count.max(1)).map(|i| trigger.new_run(i)).collect();
                self.commands.push((id, Admission::Trigger(trigger, runs)));
                None
            }
            other => Some(other),
        }
    }

    /// Queue what was taken, in order, and mark those commands done in one
    /// store write. Runs the store has a record of were queued before a
    /// crash, and recovered or finished since.
    async fn queue(&mut self, queue: &RunQueue, store: &Store) {
        let commands = std::mem::take(&mut self.commands);
        if commands.is_empty() {
            return;
        }
        let ids = commands.iter().flat_map(|(_, a)| match a {
            Admission::FollowUp(run) => std::slice::from_ref(run).iter(),
            Admission::Trigger(_, runs) => runs.iter(),
        });
        let recorded = recorded(store, ids.map(|r| r.id.clone()).collect()).await;
        let mut done = Vec::with_capacity(commands.len());
        for (id, admission) in commands {
            done.push(Mutation::InboxDone(id));
            match admission {
                Admission::FollowUp(run) if !recorded.contains(&run.id) => {
                    follow_up_from_worker(queue, store, run);
                }
                Admission::FollowUp(_) => {}
                Admission::Trigger(trigger, mut runs) => {
                    runs.retain(|r| !recorded.contains(&r.id));
                    if !runs.is_empty() && queue.enqueue(runs).is_empty() {
                        trigger.rejected(queue, store);
                    }
                }
            }
        }
        // After the runs' records: a crash between the two handles the
        // commands again, and the records tell what was queued.
        if let Err(e) = store.submit(done) {
            tracing::warn!(error = %e, "inbox: could not mark commands done");
        }
    }
}

/// One command other than a follow-up, in its turn.
async fn handle_one(
    queue: &std::sync::Arc<RunQueue>,
    store: &Store,
    fetch: &FetchNow,
    cancel: &CancellationToken,
    id: i64,
    command: InboxCommand,
) {
    if let InboxCommand::GitSync {
        trigger,
        delivery_id,
    } = &command
    {
        tracing::info!(trigger = %trigger, delivery = ?delivery_id, "inbox: a sync trigger asks for a git fetch");
        fetch.request();
        mark_done(store, id);
        return;
    }
    // A burst is queued as it is worked off, which may take long (or
    // wait for workers to join): other commands go on meanwhile.
    let bulk = match &command {
        InboxCommand::Trigger { count, .. } => *count > TRIGGER_SLICE,
        InboxCommand::Backfill { .. } => true,
        _ => false,
    };
    if bulk {
        let (queue, store, cancel) = (queue.clone(), store.clone(), cancel.clone());
        // Stops with the loop (shutdown, or leadership lost): the recorded
        // progress lets whoever handles it next resume.
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => queue.set_burst(id, None),
                _ = handle_command(&queue, &store, id, command) => mark_done(&store, id),
            }
        });
    } else {
        handle_command(queue, store, id, command).await;
        mark_done(store, id);
    }
}

fn mark_done(store: &Store, inbox_id: i64) {
    if let Err(e) = store.submit(vec![Mutation::InboxDone(inbox_id)]) {
        tracing::warn!(inbox = inbox_id, error = %e, "inbox: could not mark a command done");
    }
}

/// Runs one `trigger --count` command queues at a time. Small enough that
/// a slice is mostly started in the store batch that queues it (Redis: 9%
/// fewer bytes per run than 256, +3–5% no-op rate), large enough that the
/// per-slice work (the queue's lock, the progress write) stays small.
const TRIGGER_SLICE: u32 = 64;

async fn handle_command(queue: &RunQueue, store: &Store, inbox_id: i64, command: InboxCommand) {
    match command {
        InboxCommand::Trigger {
            run_id,
            job_id,
            inputs,
            count,
        } => {
            let trigger = Trigger {
                inbox_id,
                run_id,
                job_id,
                inputs,
                count,
            };
            trigger.queue_runs(queue, store).await;
        }
        // Taken by the loop's admissions; here only if one comes alone.
        command @ InboxCommand::FollowUp { .. } => {
            let mut admissions = Admissions::default();
            if admissions.take(inbox_id, command).is_none() {
                admissions.queue(queue, store).await;
            }
        }
        InboxCommand::Decide {
            approval_id,
            approve,
            by,
            note,
        } => decide(queue, store, &approval_id, approve, &by, note.as_deref()).await,
        inbound @ InboxCommand::Inbound { .. } => {
            let Some(run) = crate::inbound::intake::run_of_command(inbound) else {
                return;
            };
            let (run_id, job_id) = (run.id.clone(), run.job_id.clone());
            for run in without_recorded(store, vec![run]).await {
                match queue.enqueue_one(run) {
                    Ok(_) | Err(NotQueued::Duplicate) => {}
                    Err(why) => {
                        tracing::warn!(run = %run_id, job = %job_id, reason = ?why, "inbound run not queued: no such job, or disabled, in the applied revision");
                    }
                }
            }
        }
        InboxCommand::Cancel { run_id, by, reason } => {
            super::cancel::cancel(queue, store, &run_id, &by, reason.as_deref()).await
        }
        operator => super::operator::handle(queue, store, inbox_id, operator).await,
    }
}

/// A `trigger` command: `count` manual runs of one job, the first with
/// the id the CLI printed, the others with a suffix.
struct Trigger {
    inbox_id: i64,
    run_id: String,
    job_id: String,
    inputs: Value,
    count: u32,
}

impl Trigger {
    fn new_run(&self, i: u32) -> NewRun {
        let mut run = NewRun::manual(&self.job_id, self.inputs.clone());
        run.id = if i == 0 {
            self.run_id.clone()
        } else {
            format!("{}-{i}", self.run_id)
        };
        run.run_key = format!("manual:{}", run.id);
        run
    }

    /// A large burst is queued in slices, so workers and the store start
    /// on the first runs while the rest are still being made (one slice of
    /// 100,000 held the queue's lock for a second). A command handled
    /// again after a crash resumes after the slices recorded as queued,
    /// skipping the runs of the next one that were recorded without their
    /// progress.
    async fn queue_runs(&self, queue: &RunQueue, store: &Store) {
        let total = self.count.max(1);
        let burst = total > TRIGGER_SLICE;
        let mut next = match store.inbox_progress(self.inbox_id).await {
            Ok(done) => done.min(total),
            Err(e) => {
                tracing::warn!(inbox = self.inbox_id, error = %e, "trigger: progress unreadable; starting from the first run");
                0
            }
        };
        let mut offered = 0;
        let mut queued = 0;
        let mut first_slice = true;
        // A burst is queued no faster than it starts: the next slice
        // once the last run of the one before has started (runs of one
        // job and priority start in order). Memory stays flat, and more
        // runs start in the store batch that queues them, so their
        // record is written once, running, not queued and then again
        // running (a Redis leader sent ~8% fewer bytes per run than
        // when up to 512 of the burst waited, with slices of 256).
        // Other jobs' waiting runs (a follow-up due in an hour) do not
        // hold the burst up.
        let mut last_queued: Option<String> = None;
        while next < total {
            // (A command of one slice is queued at once: it must not
            // wait behind a burst's slices.)
            if let Some(last) = last_queued.as_deref() {
                until_started(queue, last).await;
            }
            let end = total.min(next.saturating_add(TRIGGER_SLICE));
            let mut runs: Vec<NewRun> = (next..end).map(|i| self.new_run(i)).collect();
            if std::mem::take(&mut first_slice) {
                runs = without_recorded(store, runs).await;
            }
            offered += runs.len();
            let ids = queue.enqueue(runs);
            queued += ids.len();
            if burst && let Some(last) = ids.into_iter().last() {
                last_queued = Some(last);
            }
            next = end;
            if burst {
                self.record_progress(queue, store, next, total);
            }
            tokio::task::yield_now().await;
        }
        if offered > 0 && queued == 0 {
            self.rejected(queue, store);
        }
    }

    /// How far a burst got: in the store (where a crash resumes) and in
    /// the queue's figures (`/api/v1/status` shows it until done).
    fn record_progress(&self, queue: &RunQueue, store: &Store, done: u32, total: u32) {
        // Submitted after the slice's records: it commits with them or
        // after them, never before.
        let progress = Mutation::InboxProgress {
            id: self.inbox_id,
            done,
        };
        if let Err(e) = store.submit(vec![progress]) {
            tracing::warn!(inbox = self.inbox_id, error = %e, "trigger: progress not recorded");
        }
        let shown = (done < total).then(|| Burst {
            inbox_id: self.inbox_id,
            job_id: self.job_id.clone(),
            admitted: done,
            total,
        });
        queue.set_burst(self.inbox_id, shown);
    }

    /// None of the runs was queued: the job is disabled or gone, or (the
    /// job is there) they are in the queue already, by the same command
    /// handled twice, which is not told.
    fn rejected(&self, queue: &RunQueue, store: &Store) {
        let job_id = &self.job_id;
        let reason = match queue.applied().snapshot.jobs.get(job_id) {
            Some(job) if !job.spec.enabled => {
                format!("job {job_id} is disabled: it gets no new runs")
            }
            Some(_) => return,
            None => format!("no job {job_id} in the applied revision"),
        };
        let event = NewEvent::new(
            "trigger.rejected",
            json!({"run_id": self.run_id, "reason": reason}),
        )
        .job(job_id.clone());
        let _ = store.submit(vec![Mutation::Event(event)]);
    }
}

/// Wait until the queued run `last` has started (or gone).
async fn until_started(queue: &RunQueue, last: &str) {
    loop {
        let released = queue.released();
        if !queue.view().is_waiting(last) {
            break;
        }
        tokio::select! {
            _ = released => {}
            _ = tokio::time::sleep(Duration::from_millis(2)) => {}
        }
    }
}

/// An operator's decision on an approval (with their note); one the
/// queue cannot apply is told in an `approval.failed` event.
async fn decide(
    queue: &RunQueue,
    store: &Store,
    approval_id: &str,
    approve: bool,
    by: &str,
    note: Option<&str>,
) {
    let approvals = store.approvals(false).await.unwrap_or_default();
    let found = approvals.iter().find(|a| a.id == approval_id);
    // The queue refuses a decision for an approval it no longer
    // waits on, even when the store has not recorded the first one
    // yet (two decisions a moment apart).
    let result = match found {
        _ if note.is_some_and(|n| n.len() > MAX_APPROVAL_NOTE_BYTES) => Err(format!(
            "the note is {} bytes, more than the {MAX_APPROVAL_NOTE_BYTES} a decision keeps; this decision was not applied",
            note.map_or(0, str::len)
        )),
        Some(a) if a.status != ApprovalStatus::Pending => Err(format!(
            "approval {approval_id} is already {} by {}; this decision was not applied",
            a.status.as_str(),
            a.decided_by.as_deref().unwrap_or("an operator")
        )),
        Some(a) => queue.decide(a, approve, by, note),
        None => Err(format!("no approval {approval_id}")),
    };
    if let Err(reason) = result {
        tracing::warn!(approval = %approval_id, %reason, "approval decision not applied");
        let mut event = NewEvent::new(
            "approval.failed",
            json!({"approval_id": approval_id, "decision": if approve { "approve" } else { "reject" },
                   "by": by, "reason": reason}),
        );
        if let Some(a) = found {
            event = event.job(a.job_id.clone()).run(a.run_id.clone());
        }
        let _ = store.submit(vec![Mutation::Event(event)]);
    }
}

/// The run a worker's follow-up command asks for (`None`: another command).
fn follow_up_run(command: InboxCommand) -> Option<NewRun> {
    let InboxCommand::FollowUp {
        run_id,
        job_id,
        inputs,
        run_key,
        chain_depth,
        due_at,
        extra,
    } = command
    else {
        return None;
    };
    Some(NewRun {
        id: run_id,
        job_id,
        trigger: crate::store::runs::Trigger::Workflow,
        inputs,
        run_key,
        scheduled_at: None,
        chain_depth,
        due_at: due_at.and_then(|d| d.parse().ok()),
        extra,
        requires_approval: false,
        traceparent: None,
    })
}

/// Queue a follow-up a worker process handed over. The step that
/// scheduled it has ended by now, so a refusal can only be told: a
/// warning and a `follow_up.refused` event (the worker refuses itself when
/// the figures it read already showed the job at its limit).
fn follow_up_from_worker(queue: &RunQueue, store: &Store, run: NewRun) {
    let (run_id, job_id) = (run.id.clone(), run.job_id.clone());
    let from = |field: &str| run.extra[field].as_str().map(str::to_string);
    let (from_run, from_job, from_step) = (from("from_run"), from("from_job"), from("from_step"));
    match queue.enqueue_follow_up(run) {
        Ok(_) | Err(NotQueued::Duplicate) => {}
        Err(NotQueued::FollowUpsFull { waiting, limit }) => {
            tracing::warn!(run = %run_id, job = %job_id, waiting, limit,
                "follow-up not queued: the job's follow-up runs waiting to start are at limits.queued_follow_ups");
            let mut event = NewEvent::new(
                "follow_up.refused",
                json!({"reason": "per_job", "target": job_id, "step": from_step,
                       "waiting": waiting, "limit": limit, "dropped_run_id": run_id}),
            );
            event.job_id = from_job;
            event.run_id = from_run;
            if let Err(e) = store.submit(vec![Mutation::Event(event)]) {
                tracing::warn!(run = %run_id, error = %e, "follow_up.refused not recorded");
            }
        }
        Err(why) => {
            tracing::warn!(run = %run_id, job = %job_id, reason = ?why, "follow-up not queued: no such job, or disabled, in the applied revision");
        }
    }
}

/// Drop the runs the store already has a record of: a command handled
/// again after a crash must not run a finished run a second time (or
/// write a queued record over its final one).
async fn without_recorded(store: &Store, runs: Vec<NewRun>) -> Vec<NewRun> {
    let recorded = recorded(store, runs.iter().map(|r| r.id.clone()).collect()).await;
    if recorded.is_empty() {
        return runs;
    }
    runs.into_iter()
        .filter(|r| !recorded.contains(&r.id))
        .collect()
}

/// Which of `ids` the store has a record of (none when it cannot tell:
/// queueing them all is the lesser harm).
async fn recorded(store: &Store, ids: Vec<String>) -> std::collections::HashSet<String> {
    match store.recorded_runs(ids).await {
        Ok(recorded) => recorded,
        Err(e) => {
            tracing::warn!(error = %e, "inbox: cannot tell which runs exist; queueing them all");
            Default::default()
        }
    }
}
