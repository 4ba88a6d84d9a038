//! Writes to Redis as one Lua script call per batch: the ops travel as
//! arguments, the script applies them atomically (no other client sees
//! half a batch), checks the leader fence first and deduplicates retries.
//! Run records and `ready` entries go as plain commands in the same
//! MULTI, behind a gate the script keeps (see [`plain`]).

use std::sync::LazyLock;

mod call;
mod dispatch;
mod plain;

pub use call::{Applied, Outcome, Sequence, Target, apply, retryable};

use super::super::runs::{Run, RunStatus};
use super::super::{
    Coalesced, Event, EventParts, NewEvent, ResourceWrites, RevisionRecord, StoreError,
};
use super::record::encode as encode_record;

/// Newest events the stream keeps (approximately: `MAXLEN ~`).
pub const EVENTS_MAXLEN: usize = 100_000;
/// Most runs one `ready` entry carries (a worker takes them as a unit).
pub const DISPATCH_PACK: usize = 16;
/// Revision history records kept (the applied one is kept apart).
pub const REVISION_CAP: i64 = 1000;
/// The script's ARGV index of the ops' first argument (see `apply_once`).
const FIRST_OP_ARGV: usize = 11;

static SOURCE: LazyLock<String> = LazyLock::new(|| {
    // The script's notion of "active" comes from the one in Rust.
    let active: Vec<String> = RunStatus::ALL
        .into_iter()
        .filter(|s| s.is_active())
        .map(|s| format!("['{}'] = true", s.as_str()))
        .collect();
    let finished: Vec<String> = RunStatus::ALL
        .into_iter()
        .filter(|s| s.is_terminal())
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    include_str!("batch.lua")
        .replace("__ACTIVE__", &active.join(", "))
        .replace("__FINISHED__", &finished.join(", "))
});
/// For its SHA1: calls go as EVALSHA, loading the source on NOSCRIPT.
static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(&SOURCE));

/// The ops of one script call, encoded as arguments.
#[derive(Default)]
pub struct Ops {
    args: Vec<String>,
    pub mutations: usize,
    /// The batch's events, packed into one stream entry (see [`pack_event`]).
    events: String,
    n_events: usize,
    first_at: String,
    /// Run records written outside the script (see [`plain`]).
    plain: plain::Plain,
    /// The event seq this batch's events follow, when the writer numbered
    /// them (they are then a plain write too).
    events_after: Option<i64>,
}

/// One event inside a packed `events` entry: `[type, at, job, run, data]`.
type PackedEvent = EventParts;

/// Append `e` to the JSON array in `out` (empty: no array yet).
fn pack_event(out: &mut String, e: &NewEvent) {
    if out.pop().is_none() {
        out.push('[');
    } else {
        out.push(',');
    }
    let packed = (&e.event_type, &e.at, &e.job_id, &e.run_id, &e.data);
    // Serializing plain data to a String cannot fail.
    if let Ok(text) = serde_json::to_string(&packed) {
        out.push_str(&text);
    }
    out.push(']');
}

/// The events of a packed entry, given the entry's id `<last>-<n>`.
pub fn unpack_events(id: &str, packed: &str) -> Result<Vec<Event>, String> {
    let (last, n) = id
        .split_once('-')
        .and_then(|(l, n)| Some((l.parse::<i64>().ok()?, n.parse::<i64>().ok()?)))
        .ok_or_else(|| format!("stream id {id}"))?;
    let items: Vec<PackedEvent> = serde_json::from_str(packed).map_err(|e| e.to_string())?;
    if items.len() as i64 != n {
        return Err(format!("entry {id} holds {} events", items.len()));
    }
    Ok(items
        .into_iter()
        .zip(last - n + 1..)
        .map(|(parts, id)| Event::from_parts(id, parts))
        .collect())
}

impl Ops {
    fn push(&mut self, op: &str, fields: Vec<String>) {
        self.args.push(op.to_string());
        self.args.push(fields.len().to_string());
        self.args.extend(fields);
    }

    /// Events go last, as one stream entry per call (see `batch.lua`).
    pub fn events(&mut self, events: Vec<NewEvent>) {
        for e in &events {
            self.event(e);
        }
    }

    /// Number the batch's events after event `after` (the writer is the
    /// one writer of events): their entry becomes a plain write, and the
    /// script checks the numbering (`RENUMBER` when it is off). Returns
    /// how many there are.
    pub fn number_events(&mut self, after: i64) -> usize {
        if self.n_events == 0 {
            return 0;
        }
        let last = after + self.n_events as i64;
        self.plain.events(
            format!("{last}-{}", self.n_events),
            (last > EVENTS_MAXLEN as i64).then(|| last - EVENTS_MAXLEN as i64),
            std::mem::take(&mut self.first_at),
            std::mem::take(&mut self.events),
        );
        self.events_after = Some(after);
        self.n_events
    }

    fn event(&mut self, e: &NewEvent) {
        if self.n_events == 0 {
            self.first_at = e.at.clone();
        }
        pack_event(&mut self.events, e);
        self.n_events += 1;
    }

    pub fn resources(&mut self, w: &ResourceWrites) {
        for row in &w.upserts {
            let record = serde_json::json!({
                "spec": row.spec, "hash": row.hash, "file": row.file,
                "line": row.line, "column": row.column,
            });
            self.push(
                "res_put",
                vec![
                    resource_field(row.kind.as_str(), &row.id),
                    record.to_string(),
                ],
            );
        }
        for (kind, id) in &w.deletes {
            self.push("res_del", vec![resource_field(kind.as_str(), id)]);
        }
    }

    pub fn revision(&mut self, r: &RevisionRecord) -> Result<(), StoreError> {
        let text = serde_json::to_string(r).map_err(|e| StoreError::corrupt("revision", e))?;
        self.push("revision", vec![r.status.as_str().to_string(), text]);
        Ok(())
    }

    /// A coalesced batch in the order the SQLite writer applies it, with
    /// dispatches after the run records they hand out. Runs in `known`
    /// are indexed here; others go to the script as new (see `batch.lua`).
    ///
    /// `next_seq`: the last run seq, when this writer (fenced) assigns the
    /// seqs of new runs itself; the script checks it.
    pub fn coalesced(
        &mut self,
        c: &Coalesced,
        known: &Known,
        next_seq: Option<i64>,
    ) -> Result<RunsWritten, StoreError> {
        let mut payloads = Payloads::new(&c.dispatch);
        let written = self.runs(&c.runs, known, next_seq, &mut payloads)?;
        for (job, state) in &c.failure {
            let text = serde_json::to_string(state).map_err(|e| StoreError::corrupt(job, e))?;
            self.push("failure", vec![job.clone(), text]);
        }
        if !c.slots.is_empty() {
            let pairs = c
                .slots
                .iter()
                .flat_map(|(job, slot)| [job.clone(), slot.clone()]);
            self.push("slots", pairs.collect());
        }
        for a in &c.approvals {
            let text = serde_json::to_string(a).map_err(|e| StoreError::corrupt(&a.id, e))?;
            self.push("approval", vec![a.id.clone(), text]);
        }
        for (id, done) in &c.inbox_progress {
            self.push("inbox_progress", vec![id.to_string(), done.to_string()]);
        }
        for id in &c.inbox_done {
            self.push("inbox_done", vec![id.to_string()]);
        }
        for (job, keep) in &c.prune_runs {
            // SQLite keeps at least the newest run too.
            self.push("prune_runs", vec![job.clone(), (*keep).max(1).to_string()]);
        }
        if let Some(before) = &c.prune_events_before {
            self.push("prune_events", vec![before.clone()]);
        }
        for (key, value) in &c.kv {
            self.push("kv", vec![key.clone(), value.to_string()]);
        }
        self.dispatches(&c.dispatch, &mut payloads);
        for (entry_id, run_id) in &c.acks {
            self.push("ack", vec![entry_id.clone(), run_id.clone()]);
        }
        for e in &c.events {
            self.event(e);
        }
        Ok(written)
    }

    /// Run records: updates of runs in `known` as prepared bulk writes (no
    /// reads in the script), the others as new runs.
    fn runs(
        &mut self,
        runs: &[Box<Run>],
        known: &Known,
        next_seq: Option<i64>,
        payloads: &mut Payloads,
    ) -> Result<RunsWritten, StoreError> {
        let mut written = RunsWritten::default();
        let mut new: Vec<&Run> = Vec::new();
        let mut new_keys = std::collections::HashSet::new();
        let mut careful: Vec<&Run> = Vec::new();
        let mut finished = Vec::new();
        let mut by_status: std::collections::BTreeMap<&'static str, Vec<String>> =
            Default::default();
        let mut counts: std::collections::BTreeMap<String, i64> = Default::default();
        for run in runs {
            let Some(k) = known.get(&run.id) else {
                // Two new runs for one slot: the script refuses the second.
                if new_keys.insert(run.run_key.as_str()) {
                    new.push(run);
                } else {
                    careful.push(run);
                }
                continue;
            };
            let record = encode_record(run)?;
            if run.status != k.status {
                *counts.entry(count_field(&k.job, k.status)).or_default() -= 1;
                *counts.entry(count_field(&k.job, run.status)).or_default() += 1;
                // Known runs are active: only leaving that changes indexes.
                if !run.status.is_active() {
                    finished.push(run.id.clone());
                    let zset = by_status.entry(run.status.as_str()).or_default();
                    zset.push(k.seq.to_string());
                    zset.push(run.id.clone());
                }
            }
            written.updated.push((run.id.clone(), run.status));
            let at = self.plain.record(run.id.clone(), record);
            payloads.carried_at(&run.id, Carried::Plain(at));
        }
        if !new.is_empty() {
            written.new = self.new_runs(new, next_seq, payloads)?;
        }
        let bulk = |ops: &mut Self, cmd: &str, key: String, args: Vec<String>| {
            if !args.is_empty() {
                let mut all = vec![cmd.to_string(), key];
                all.extend(args);
                ops.push("bulk", all);
            }
        };
        bulk(self, "ZREM", "runs:active".into(), finished);
        for (status, pairs) in by_status {
            bulk(self, "ZADD", format!("runs:status:{status}"), pairs);
        }
        let counts: Vec<String> = counts
            .into_iter()
            .filter(|(_, by)| *by != 0)
            .flat_map(|(field, by)| [field, by.to_string()])
            .collect();
        if !counts.is_empty() {
            self.push("counts", counts);
        }
        for run in careful {
            self.careful_run(run, payloads)?;
        }
        Ok(written)
    }

    /// Runs this writer has not written: one `new` op that numbers them
    /// (from `next_seq` when the writer numbers them itself) and indexes
    /// them; the script refuses one whose slot is taken.
    fn new_runs(
        &mut self,
        new: Vec<&Run>,
        next_seq: Option<i64>,
        payloads: &mut Payloads,
    ) -> Result<Vec<(String, String, RunStatus)>, StoreError> {
        let n = new.len();
        let mut args = Vec::with_capacity(2 + 6 * n + 1);
        args.push(n.to_string());
        args.push(next_seq.map_or("-".to_string(), |s| s.to_string()));
        args.extend(new.iter().map(|r| r.id.clone()));
        args.extend(new.iter().map(|r| r.job_id.clone()));
        args.extend(new.iter().map(|r| r.status.as_str().to_string()));
        args.extend(new.iter().map(|r| slot_key(r).to_string()));
        let mut new_counts: std::collections::BTreeMap<String, i64> = Default::default();
        for r in &new {
            args.push(r.id.clone());
            let record = encode_record(r)?;
            if slot_key(r).is_empty() {
                // Never refused (its key is its id): written outside.
                let at = self.plain.record(r.id.clone(), record);
                payloads.carried_at(&r.id, Carried::Plain(at));
                args.push(String::new());
            } else {
                // The op's name and field count come before its fields.
                payloads.carried_at(&r.id, Carried::Argv(self.args.len() + 2 + args.len()));
                args.push(record);
            }
            *new_counts
                .entry(count_field(&r.job_id, r.status))
                .or_default() += 1;
        }
        args.push(new_counts.len().to_string());
        for (field, by) in new_counts {
            args.push(field);
            args.push(by.to_string());
        }
        self.push("new", args);
        Ok(new
            .into_iter()
            .map(|r| (r.id.clone(), r.job_id.clone(), r.status))
            .collect())
    }

    /// A run written the careful way (the script reads it first): a
    /// second new run for a slot already taken in the batch.
    fn careful_run(&mut self, run: &Run, payloads: &mut Payloads) -> Result<(), StoreError> {
        let record = encode_record(run)?;
        // `run`, its field count, then id, job, status and key.
        payloads.carried_at(&run.id, Carried::Argv(self.args.len() + 6));
        self.push(
            "run",
            vec![
                run.id.clone(),
                run.job_id.clone(),
                run.status.as_str().to_string(),
                slot_key(run).to_string(),
                record,
            ],
        );
        Ok(())
    }
}

/// Where the records of a batch's dispatched runs are: a `ready` entry's
/// fields are those records, sent once.
struct Payloads {
    by_run: std::collections::HashMap<String, Option<Carried>, foldhash::fast::RandomState>,
}

/// Where a run's record is in a batch.
#[derive(Clone, Copy)]
enum Carried {
    /// An index in `Ops::args`: the script writes it.
    Argv(usize),
    /// A plain write (see [`plain`]): its index there.
    Plain(usize),
}

impl Payloads {
    fn new(dispatch: &[(String, Option<String>)]) -> Payloads {
        Payloads {
            by_run: dispatch.iter().map(|(id, _)| (id.clone(), None)).collect(),
        }
    }

    /// Where the run's record is (kept when it is dispatched).
    fn carried_at(&mut self, run_id: &str, at: Carried) {
        if let Some(slot) = self.by_run.get_mut(run_id) {
            *slot = Some(at);
        }
    }
}

/// The run key the script keeps unique (`runkey:<key>`), or '' for one
/// that names the run itself (`manual:<its id>`): unique as the id is,
/// which the script checks against `runs:rec` instead, without a key per
/// run in the keyspace.
pub(super) fn slot_key(run: &Run) -> &str {
    if run.run_key.strip_prefix("manual:") == Some(run.id.as_str()) {
        ""
    } else {
        &run.run_key
    }
}

/// A `run_counts` field.
fn count_field(job: &str, status: RunStatus) -> String {
    format!("{job}\n{}", status.as_str())
}

/// A run this writer wrote and that is still active: what the script
/// would otherwise read back to index the run's next write. Kept only
/// under a fence: the fenced leader is the one writer of runs, so nobody
/// changes them meanwhile (a new term starts with nothing known).
#[derive(Debug, Clone)]
pub struct KnownRun {
    pub seq: i64,
    pub job: String,
    pub status: RunStatus,
}

pub type Known = std::collections::HashMap<String, KnownRun, foldhash::fast::RandomState>;

/// The runs a batch writes, remembered once it is applied.
#[derive(Default)]
pub struct RunsWritten {
    /// New runs, in the order of their seqs: id, job, status.
    new: Vec<(String, String, RunStatus)>,
    /// Known runs and their new status.
    updated: Vec<(String, RunStatus)>,
}

impl RunsWritten {
    pub fn new_runs(&self) -> usize {
        self.new.len()
    }

    /// `new_base`: the seq before the new runs', or -1 when the script
    /// wrote them one by one (they stay unknown).
    pub fn remember(self, known: &mut Known, new_base: i64) {
        for (id, status) in self.updated {
            if status.is_active() {
                if let Some(k) = known.get_mut(&id) {
                    k.status = status;
                }
            } else {
                known.remove(&id);
            }
        }
        if new_base < 0 {
            return;
        }
        for ((id, job, status), seq) in self.new.into_iter().zip(new_base + 1..) {
            if status.is_active() {
                known.insert(id, KnownRun { seq, job, status });
            }
        }
    }
}

/// The `resources` hash field of one resource.
pub fn resource_field(kind: &str, id: &str) -> String {
    format!("{kind}/{id}")
}

#[cfg(test)]
mod tests {
    use super::call::apply_once;
    use super::*;
    use redis::aio::ConnectionManager;

    async fn target(server: &crate::testkit::RedisServer) -> Target {
        let client = redis::Client::open(server.url()).unwrap();
        Target {
            conn: ConnectionManager::new(client).await.unwrap(),
            prefix: "{t}:".into(),
            url: server.url(),
        }
    }

    fn seq(marker: &str, batch_id: &str, after: Option<(&str, &str)>) -> Sequence {
        Sequence {
            marker: marker.into(),
            batch_id: batch_id.into(),
            after: after.map(|(m, id)| (m.into(), id.into())),
        }
    }

    fn summary(o: Outcome) -> (i64, usize) {
        match o {
            Outcome::Applied(a) => (a.first_event, a.events),
            Outcome::Fenced => panic!("fenced"),
            Outcome::Stale => panic!("stale"),
            Outcome::Renumber => panic!("renumber"),
        }
    }

    use crate::testkit::sample_run;

    /// What `parse_rec` in batch.lua reads from a record's text without
    /// decoding it: `id`, `job_id`, `status` and `run_key` open it, in
    /// that order, whatever the fields after them hold.
    #[test]
    fn record_text_has_the_fields_the_script_reads() {
        let mut run = sample_run("r1", "j", "j@2026-12-07T00:00:00Z", RunStatus::Succeeded);
        let held = serde_json::json!({"run_key": "decoy", "due_at": null, "status": "queued"});
        run.inputs = held.clone();
        run.output = Some(held);
        run.cancelled_by = Some("ops".into());
        run.cancel_reason = Some("a {reason}".into());
        run.trace_parent_span = Some("00f067aa0ba902b7".into());
        let text = encode_record(&run).unwrap();
        assert!(
            text.starts_with(
                r#"{"id":"r1","job_id":"j","status":"succeeded","run_key":"j@2026-12-07T00:00:00Z","#
            ),
            "{text}"
        );
    }

    /// A dispatched run's record is sent once. A record the script may
    /// refuse (a new run with a slot key) goes through it: the `dispatch`
    /// op names the argument carrying it. Any other goes outside it, as
    /// does its `ready` entry.
    #[test]
    fn a_dispatch_names_where_each_record_is() {
        use super::super::super::Mutation;
        let mut c = Coalesced::default();
        // Known (an update), new with a key of its own, new with a slot
        // key, and new with that slot key again (sent the careful way).
        for (id, key) in [
            ("known", "k0"),
            ("own", "manual:own"),
            ("new", "k1"),
            ("twin", "k1"),
        ] {
            c.add(Mutation::PutRun(Box::new(sample_run(
                id,
                "job",
                key,
                RunStatus::Running,
            ))));
            c.add(Mutation::Dispatch {
                run_id: id.into(),
                group: None,
            });
        }
        let mut known = Known::default();
        known.insert(
            "known".into(),
            KnownRun {
                seq: 7,
                job: "job".into(),
                status: RunStatus::Queued,
            },
        );
        let mut ops = Ops::default();
        ops.coalesced(&c, &known, Some(41)).unwrap();
        let at = ops.args.iter().position(|a| a == "dispatch").unwrap();
        let n: usize = ops.args[at + 1].parse().unwrap();
        let ids: Vec<&str> = ops.args[at + 2].split(' ').collect();
        assert_eq!(ids, ["new", "twin"]);
        assert_eq!(n, 1 + ids.len());
        for (id, argv) in ids.iter().zip(&ops.args[at + 3..at + 2 + n]) {
            let index = argv.parse::<usize>().unwrap() - FIRST_OP_ARGV;
            let carried: Run = super::super::record::decode(&ops.args[index]).unwrap();
            assert_eq!(carried.id, *id);
        }
        assert_eq!(ops.plain.ready_ids(), ["known own"]);
        assert_eq!(ops.plain.record_ids(), ["known", "own"]);
        assert_eq!(ops.plain.keys("{t}:"), ["{t}:runs:rec", "{t}:ready"]);
    }

    /// A batch of one event.
    fn one_event() -> Ops {
        let mut ops = Ops::default();
        ops.events(vec![NewEvent::new("a", serde_json::json!({}))]);
        ops
    }

    #[tokio::test]
    async fn a_retried_batch_is_applied_once() {
        let server = crate::testkit::RedisServer::start().expect("redis-server");
        let target = target(&server).await;
        let ops = one_event();
        // The same batch id again (a reply lost): the first result, no write.
        let first = apply_once(&target, None, &seq("w", "b1", None), &ops).await;
        let again = apply_once(&target, None, &seq("w", "b1", None), &ops).await;
        assert_eq!(
            (summary(first.unwrap()), summary(again.unwrap())),
            ((1, 1), (1, 1))
        );
        let next = apply_once(&target, None, &seq("w", "b2", None), &ops).await;
        assert_eq!(summary(next.unwrap()), (2, 1));
    }

    /// A call encoded while another was in flight applies only after that
    /// one applied cleanly.
    #[tokio::test]
    async fn a_call_applies_only_after_the_one_it_follows() {
        let server = crate::testkit::RedisServer::start().expect("redis-server");
        let target = target(&server).await;
        let ops = one_event();
        // The call before never arrived (a lost connection): nothing written.
        let early = apply_once(&target, None, &seq("w:1", "b2", Some(("w:0", "b1"))), &ops).await;
        assert!(matches!(early, Ok(Outcome::Stale)));
        let first = apply_once(&target, None, &seq("w:0", "b1", None), &ops).await;
        assert_eq!(summary(first.unwrap()), (1, 1));
        let second = apply_once(&target, None, &seq("w:1", "b2", Some(("w:0", "b1"))), &ops).await;
        assert_eq!(summary(second.unwrap()), (2, 1));
        // New runs numbered from a wrong count go the careful way; what
        // the writer encoded after them assumed otherwise.
        let run = sample_run("r1", "job", "k1", RunStatus::Queued);
        let mut coalesced = Coalesced::default();
        coalesced.add(super::super::super::Mutation::PutRun(Box::new(run)));
        let mut careful = Ops::default();
        careful
            .coalesced(&coalesced, &Known::default(), Some(41))
            .unwrap();
        let third = apply_once(
            &target,
            None,
            &seq("w:0", "b3", Some(("w:1", "b2"))),
            &careful,
        )
        .await;
        match third.unwrap() {
            Outcome::Applied(a) => assert_eq!(a.new_base, -1),
            _ => panic!("not applied"),
        }
        let fourth = apply_once(&target, None, &seq("w:1", "b4", Some(("w:0", "b3"))), &ops).await;
        assert!(matches!(fourth, Ok(Outcome::Stale)));
        let events: usize = redis::cmd("GET")
            .arg("{t}:event_seq")
            .query_async(&mut target.conn.clone())
            .await
            .unwrap();
        assert_eq!(events, 2, "a stale call writes nothing");
    }
}
