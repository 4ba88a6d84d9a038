//! Reads of the Redis store, and the key-value operations (single keys,
//! atomic on their own, run on the writer for ordering).

use std::collections::HashMap;

use serde_json::Value;

use super::super::runs::{
    Approval, ApprovalStatus, FailureState, InboxCommand, LiveState, Run, RunQuery,
};
use super::super::{Applied, Event, EventQuery, KvOp, RevisionRecord, StoreError};
use super::RedisStore;
use super::batch::{Target, retryable};
use crate::spec::model::Kind;
use crate::spec::snapshot::{Resource, Snapshot};

/// Runs fetched per page while filtering.
const RUN_PAGE: usize = 256;
/// Stream entries read per page while filtering or counting.
const EVENT_PAGE: usize = 1000;
/// Stream entries read per page without a filter.
const UNFILTERED_PAGE: usize = 16;

/// One stream entry as Redis returns it.
pub type Entry = (String, HashMap<String, String>);

pub fn err(target: &Target, what: &str) -> impl Fn(redis::RedisError) -> StoreError {
    let url = target.url.clone();
    let what = what.to_string();
    move |e| StoreError::Redis {
        url: url.clone(),
        message: format!("{what}: {e}"),
    }
}

/// The integer before the `-` of a stream id (`<seq>-1`).
pub fn entry_seq(id: &str) -> Option<i64> {
    id.split('-').next()?.parse().ok()
}

/// The events of one `events` entry (a batch's, packed: see `batch.lua`).
pub fn parse_events((id, f): Entry) -> Result<Vec<Event>, StoreError> {
    let packed = f.get("e").map_or("[]", String::as_str);
    super::batch::unpack_events(&id, packed)
        .map_err(|e| StoreError::corrupt(&format!("events {id}"), e))
}

pub async fn last_event_id(target: &Target) -> Result<i64, StoreError> {
    let mut c = target.conn.clone();
    let last: Vec<Entry> = redis::cmd("XREVRANGE")
        .arg(format!("{}events", target.prefix))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut c)
        .await
        .map_err(err(target, "reading the last event"))?;
    Ok(last.first().and_then(|(id, _)| entry_seq(id)).unwrap_or(0))
}

/// Get, set (optionally with a ttl), increment or delete one key; the
/// value after the operation (a delete returns what it removed).
pub async fn kv_op(target: &Target, key: &str, op: KvOp) -> Result<Option<Value>, StoreError> {
    let full = format!("{}kv:{key}", target.prefix);
    let what = format!("kv {key}");
    let mut c = target.conn.clone();
    // A command that answers with the key's JSON text, or nil.
    let read_value = async |cmd: &redis::Cmd, c: &mut redis::aio::ConnectionManager| {
        let text: Option<String> = cmd.query_async(c).await.map_err(err(target, &what))?;
        text.map(|t| serde_json::from_str(&t).map_err(|e| StoreError::corrupt(&what, e)))
            .transpose()
    };
    match op {
        KvOp::Get => read_value(redis::cmd("GET").arg(&full), &mut c).await,
        KvOp::Set { value, ttl_sec } => {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&full).arg(value.to_string());
            match ttl_sec {
                // Expired at once: it reads as absent, as in SQLite.
                Some(0) => {
                    cmd = redis::cmd("DEL");
                    cmd.arg(&full);
                }
                Some(t) => {
                    cmd.arg("PX").arg(t.saturating_mul(1000));
                }
                None => {}
            }
            let _: redis::Value = cmd.query_async(&mut c).await.map_err(err(target, &what))?;
            Ok(Some(value))
        }
        KvOp::SetIfAbsent { value, ttl_sec } => {
            // SET NX GET (Redis 7): the earlier value, or nil when ours
            // was set.
            let mut cmd = redis::cmd("SET");
            cmd.arg(&full)
                .arg(value.to_string())
                .arg("NX")
                .arg("GET")
                .arg("PX")
                .arg(ttl_sec.max(1).saturating_mul(1000));
            Ok(Some(read_value(&cmd, &mut c).await?.unwrap_or(value)))
        }
        KvOp::Incr { by } => {
            // INCRBY alone would keep a ttl and accept "5" set as a string.
            let script = redis::Script::new(
                "local v = redis.call('GET', KEYS[1])
                 if v and not string.match(v, '^%-?%d+$') then
                   return redis.error_reply('NOTINT incr needs a whole number, the key holds ' .. v)
                 end
                 local n = redis.call('INCRBY', KEYS[1], ARGV[1])
                 redis.call('PERSIST', KEYS[1])
                 return n",
            );
            let n: i64 = script
                .key(&full)
                .arg(by)
                .invoke_async(&mut c)
                .await
                .map_err(|e| {
                    if retryable(&e) {
                        err(target, &what)(e)
                    } else {
                        StoreError::corrupt(
                            &what,
                            e.detail().map(str::to_string).unwrap_or(e.to_string()),
                        )
                    }
                })?;
            Ok(Some(Value::from(n)))
        }
        KvOp::Count { by, limit, ttl_sec } => count(target, &full, &what, by, limit, ttl_sec).await,
        KvOp::Delete => read_value(redis::cmd("GETDEL").arg(&full), &mut c).await,
    }
}

/// [`KvOp::Count`]: one script, so the check and the add are atomic
/// across processes; `limit` -1 is none.
async fn count(
    target: &Target,
    full: &str,
    what: &str,
    by: i64,
    limit: Option<i64>,
    ttl_sec: u64,
) -> Result<Option<Value>, StoreError> {
    let script = redis::Script::new(
        "local v = redis.call('GET', KEYS[1])
         if v and not string.match(v, '^%-?%d+$') then
           return redis.error_reply('NOTINT incr needs a whole number, the key holds ' .. v)
         end
         local base = tonumber(v or '0')
         local next = base + tonumber(ARGV[1])
         local limit = tonumber(ARGV[2])
         if limit >= 0 and next > limit then
           return {0, base}
         end
         redis.call('SET', KEYS[1], next, 'PX', ARGV[3])
         return {1, next}",
    );
    let mut c = target.conn.clone();
    let (counted, n): (i64, i64) = script
        .key(full)
        .arg(by)
        .arg(limit.map_or(-1, |l| l.max(0)))
        .arg(ttl_sec.max(1).saturating_mul(1000))
        .invoke_async(&mut c)
        .await
        .map_err(|e| {
            if retryable(&e) {
                err(target, what)(e)
            } else {
                StoreError::corrupt(
                    what,
                    e.detail().map(str::to_string).unwrap_or(e.to_string()),
                )
            }
        })?;
    Ok(Some(
        serde_json::json!({"counted": counted == 1, "count": n}),
    ))
}

impl RedisStore {
    pub(super) fn target(&self) -> &Target {
        &self.inner.target
    }

    /// Records of `ids` (with their list scores), skipping any pruned
    /// meanwhile; with `status`, only runs in it.
    async fn fetch_runs(
        &self,
        ids: &[(String, f64)],
        status: Option<&str>,
    ) -> Result<Vec<(i64, Run)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&str> = ids.iter().map(|(id, _)| id.as_str()).collect();
        let mut c = self.connection();
        let recs: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.key("runs:rec"))
            .arg(&names)
            .query_async(&mut c)
            .await
            .map_err(err(self.target(), "reading runs"))?;
        let mut out = Vec::with_capacity(ids.len());
        for ((id, score), rec) in ids.iter().zip(recs) {
            let Some(rec) = rec else { continue };
            let run: Run = super::record::decode(&rec)
                .map_err(|e| StoreError::corrupt(&format!("run {id}"), e))?;
            // An index read before the run moved on lists it by where it was.
            if status.is_some_and(|s| s != run.status.as_str()) {
                continue;
            }
            out.push((*score as i64, run));
        }
        Ok(out)
    }

    pub async fn run(&self, id: String) -> Result<Option<(i64, Run)>, StoreError> {
        let mut c = self.connection();
        // A run's seq is its score in `runs`.
        let (seq, rec): (Option<f64>, Option<String>) = redis::pipe()
            .cmd("ZSCORE")
            .arg(self.key("runs"))
            .arg(&id)
            .cmd("HGET")
            .arg(self.key("runs:rec"))
            .arg(&id)
            .query_async(&mut c)
            .await
            .map_err(err(self.target(), "reading a run"))?;
        let seq = seq.map(|s| s as i64);
        match (seq, rec) {
            (Some(seq), Some(rec)) => Ok(Some((
                seq,
                super::record::decode(&rec)
                    .map_err(|e| StoreError::corrupt(&format!("run {id}"), e))?,
            ))),
            _ => Ok(None),
        }
    }

    /// Runs whose id starts with `prefix` (at most `limit`, in no order):
    /// the CLI accepts an id's first characters. A scan of the records'
    /// hash, so for the CLI, never a hot path.
    pub async fn runs_by_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(i64, Run)>, StoreError> {
        let mut pattern = String::with_capacity(prefix.len() + 1);
        for ch in prefix.chars() {
            if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(ch);
        }
        pattern.push('*');
        let mut c = self.connection();
        let mut cursor: u64 = 0;
        let mut ids = Vec::new();
        loop {
            let (next, page): (u64, Vec<(String, String)>) = redis::cmd("HSCAN")
                .arg(self.key("runs:rec"))
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await
                .map_err(err(self.target(), "looking up a run id prefix"))?;
            ids.extend(page.into_iter().map(|(id, _)| id));
            cursor = next;
            if cursor == 0 || ids.len() >= limit.max(1) {
                break;
            }
        }
        ids.truncate(limit.max(1));
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(found) = self.run(id).await? {
                out.push(found);
            }
        }
        Ok(out)
    }

    /// Runs newest first, below `before`, by job and/or status.
    pub async fn runs(&self, q: RunQuery) -> Result<Vec<(i64, Run)>, StoreError> {
        let limit = q.limit.max(1);
        // Active runs are indexed together (see batch.lua), finished ones
        // by status.
        let (index, filter) = match (&q.job_id, q.status) {
            (Some(job), status) => (format!("runs:job:{job}"), status.map(|s| s.as_str())),
            (None, Some(status)) if status.is_active() => {
                ("runs:active".to_string(), Some(status.as_str()))
            }
            (None, Some(status)) => (format!("runs:status:{}", status.as_str()), None),
            (None, None) => ("runs".to_string(), None),
        };
        let index = self.key(&index);
        let mut max = q.before.map_or("+inf".to_string(), |b| format!("({b}"));
        let mut out = Vec::new();
        let mut c = self.connection();
        while out.len() < limit {
            let page = if filter.is_some() {
                RUN_PAGE
            } else {
                limit - out.len()
            };
            let ids: Vec<(String, f64)> = redis::cmd("ZREVRANGEBYSCORE")
                .arg(&index)
                .arg(&max)
                .arg("-inf")
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(page)
                .query_async(&mut c)
                .await
                .map_err(err(self.target(), "listing runs"))?;
            let Some((_, last)) = ids.last() else { break };
            max = format!("({}", *last as i64);
            let full = ids.len() == page;
            out.extend(self.fetch_runs(&ids, filter).await?);
            if !full {
                break;
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    pub async fn last_runs(&self, jobs: Vec<String>) -> Result<HashMap<String, Run>, StoreError> {
        if jobs.is_empty() {
            return Ok(HashMap::new());
        }
        let mut pipe = redis::pipe();
        for job in &jobs {
            pipe.cmd("ZREVRANGE")
                .arg(self.key(&format!("runs:job:{job}")))
                .arg(0)
                .arg(0)
                .arg("WITHSCORES");
        }
        let mut c = self.connection();
        let newest: Vec<Vec<(String, f64)>> = pipe
            .query_async(&mut c)
            .await
            .map_err(err(self.target(), "reading last runs"))?;
        let ids: Vec<(String, f64)> = newest.into_iter().flatten().collect();
        Ok(self
            .fetch_runs(&ids, None)
            .await?
            .into_iter()
            .map(|(_, run)| (run.job_id.clone(), run))
            .collect())
    }

    /// Unfinished runs, oldest first.
    pub async fn active_runs(&self) -> Result<Vec<Run>, StoreError> {
        let mut c = self.connection();
        let ids: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(self.key("runs:active"))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut c)
            .await
            .map_err(err(self.target(), "reading active runs"))?;
        Ok(self
            .fetch_runs(&ids, None)
            .await?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    pub async fn run_counts(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        let counts: HashMap<String, u64> = self.hgetall("run_counts").await?;
        let mut out: Vec<_> = counts
            .into_iter()
            .filter_map(|(k, n)| {
                let (job, status) = k.split_once('\n')?;
                Some((job.to_string(), status.to_string(), n))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    async fn hgetall<T: redis::FromRedisValue>(
        &self,
        name: &str,
    ) -> Result<HashMap<String, T>, StoreError> {
        let mut c = self.connection();
        redis::cmd("HGETALL")
            .arg(self.key(name))
            .query_async(&mut c)
            .await
            .map_err(err(self.target(), &format!("reading {name}")))
    }

    pub async fn failure_states(&self) -> Result<Vec<(String, FailureState)>, StoreError> {
        let all: HashMap<String, String> = self.hgetall("failure").await?;
        let mut out = Vec::with_capacity(all.len());
        for (job, text) in all {
            let state = serde_json::from_str(&text)
                .map_err(|e| StoreError::corrupt(&format!("failure memory of {job}"), e))?;
            out.push((job, state));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    pub async fn job_slots(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut out: Vec<_> = self
            .hgetall::<String>("job_slots")
            .await?
            .into_iter()
            .collect();
        out.sort();
        Ok(out)
    }

    pub async fn approvals(&self, pending_only: bool) -> Result<Vec<Approval>, StoreError> {
        let all: HashMap<String, String> = self.hgetall("approvals").await?;
        let mut out = Vec::new();
        for (id, text) in all {
            let a: Approval = serde_json::from_str(&text)
                .map_err(|e| StoreError::corrupt(&format!("approval {id}"), e))?;
            if !pending_only || a.status == ApprovalStatus::Pending {
                out.push(a);
            }
        }
        super::super::runs::sort_approvals(&mut out);
        Ok(out)
    }

    /// Stream entries of `name` with a seq above `after`, up to `count`.
    async fn entries_after(
        &self,
        name: &str,
        after: i64,
        count: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut c = self.connection();
        redis::cmd("XRANGE")
            .arg(self.key(name))
            .arg(format!("{}-0", after.saturating_add(1)))
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut c)
            .await
            .map_err(err(self.target(), &format!("reading {name}")))
    }

    pub async fn inbox_progress(&self, id: i64) -> Result<u32, StoreError> {
        let mut c = self.connection();
        let done: Option<u32> = redis::cmd("HGET")
            .arg(self.key("inbox_progress"))
            .arg(id)
            .query_async(&mut c)
            .await
            .map_err(err(self.target(), "reading an inbox command's progress"))?;
        Ok(done.unwrap_or_default())
    }

    /// Which of `keys` a run holds (`runkey:<key>`; pruned runs drop theirs).
    pub async fn recorded_run_keys(
        &self,
        keys: Vec<String>,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        self.each_exists(keys, "looking up run keys", |pipe, key| {
            pipe.cmd("EXISTS").arg(self.key(&format!("runkey:{key}")));
        })
        .await
    }

    pub async fn recorded_runs(
        &self,
        ids: Vec<String>,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let rec = self.key("runs:rec");
        self.each_exists(ids, "looking up runs", |pipe, id| {
            pipe.cmd("HEXISTS").arg(&rec).arg(id);
        })
        .await
    }

    /// The `items` whose pipelined existence check (`add` queues one per
    /// item, answering 0 or 1) says yes, 256 to a round trip.
    async fn each_exists(
        &self,
        items: Vec<String>,
        what: &str,
        add: impl Fn(&mut redis::Pipeline, &str),
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut c = self.connection();
        let mut found = std::collections::HashSet::new();
        for chunk in items.chunks(256) {
            let mut pipe = redis::pipe();
            for item in chunk {
                add(&mut pipe, item);
            }
            let exists: Vec<bool> = pipe
                .query_async(&mut c)
                .await
                .map_err(err(self.target(), what))?;
            found.extend(
                chunk
                    .iter()
                    .zip(exists)
                    .filter(|(_, e)| *e)
                    .map(|(item, _)| item.clone()),
            );
        }
        Ok(found)
    }

    pub async fn inbox(&self, after: i64) -> Result<Vec<(i64, InboxCommand)>, StoreError> {
        let mut out = Vec::new();
        for (id, fields) in self
            .entries_after("inbox", after, crate::store::INBOX_PAGE)
            .await?
        {
            let Some(seq) = entry_seq(&id) else { continue };
            match serde_json::from_str(fields.get("cmd").map_or("", String::as_str)) {
                Ok(cmd) => out.push((seq, cmd)),
                Err(e) => {
                    tracing::warn!(id = seq, error = %e, "store: unreadable inbox command skipped")
                }
            }
        }
        Ok(out)
    }

    pub async fn events(&self, q: EventQuery) -> Result<Vec<Event>, StoreError> {
        let limit = q.limit.max(1);
        let filtered = q.event_type.is_some() || q.job_id.is_some();
        let mut after = q.after;
        let mut out = Vec::new();
        while out.len() < limit {
            // An entry holds every event of one write batch (up to
            // thousands): unfiltered, read a few entries at a time, so a
            // page of `limit` events does not parse far more than it returns.
            let page = if filtered {
                EVENT_PAGE
            } else {
                (limit - out.len()).min(UNFILTERED_PAGE)
            };
            let entries = self.entries_after("events", after, page).await?;
            let full = entries.len() == page;
            for entry in entries {
                for event in parse_events(entry)? {
                    // The first entry may begin before `after`.
                    if event.id <= after {
                        continue;
                    }
                    after = event.id;
                    if q.matches(&event) && out.len() < limit {
                        out.push(event);
                    }
                }
            }
            if !full {
                break;
            }
        }
        Ok(out)
    }

    pub async fn last_event_id(&self) -> Result<i64, StoreError> {
        last_event_id(self.target()).await
    }

    /// Events per type since `since`: read newest first until older.
    pub async fn event_counts_since(
        &self,
        since: String,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
        let mut c = self.connection();
        let mut end = "+".to_string();
        'pages: loop {
            let page: Vec<Entry> = redis::cmd("XREVRANGE")
                .arg(self.key("events"))
                .arg(&end)
                .arg("-")
                .arg("COUNT")
                .arg(EVENT_PAGE)
                .query_async(&mut c)
                .await
                .map_err(err(self.target(), "counting events"))?;
            let full = page.len() == EVENT_PAGE;
            let Some((last_id, _)) = page.last() else {
                break;
            };
            end = format!("({last_id}");
            for entry in page {
                let mut older = false;
                for event in parse_events(entry)? {
                    if event.at.as_str() < since.as_str() {
                        older = true;
                    } else {
                        *counts.entry(event.event_type).or_default() += 1;
                    }
                }
                if older {
                    break 'pages;
                }
            }
            if !full {
                break;
            }
        }
        Ok(counts.into_iter().collect())
    }

    /// The applied revision's seq (`None`: nothing applied yet): one cheap
    /// read, for a worker that loads a new revision before its runs ask.
    pub async fn applied_seq(&self) -> Result<Option<i64>, StoreError> {
        let mut c = self.connection();
        redis::cmd("HGET")
            .arg(self.key("applied_revision"))
            .arg("seq")
            .query_async(&mut c)
            .await
            .map_err(err(self.target(), "reading the applied revision"))
    }

    pub async fn applied(&self) -> Result<Applied, StoreError> {
        let mut c = self.connection();
        // One transaction: the resources and the revision they came from.
        let (resources, (seq, rec)): (HashMap<String, String>, (Option<i64>, Option<String>)) =
            redis::pipe()
                .atomic()
                .cmd("HGETALL")
                .arg(self.key("resources"))
                .cmd("HMGET")
                .arg(self.key("applied_revision"))
                .arg("seq")
                .arg("rec")
                .query_async(&mut c)
                .await
                .map_err(err(self.target(), "reading the applied snapshot"))?;
        let mut snapshot = Snapshot::default();
        for (field, text) in resources {
            let (kind, id) = field
                .split_once('/')
                .ok_or_else(|| StoreError::corrupt("resource", format!("field {field}")))?;
            let what = format!("{kind} {id}");
            let kind =
                Kind::parse(kind).ok_or_else(|| StoreError::corrupt(&what, "unknown kind"))?;
            fn typed<T: serde::de::DeserializeOwned>(
                text: &str,
                what: &str,
            ) -> Result<Resource<T>, StoreError> {
                serde_json::from_str(text).map_err(|e| StoreError::corrupt(what, e))
            }
            let id = id.to_string();
            match kind {
                Kind::Job => {
                    snapshot.jobs.insert(id, typed(&text, &what)?);
                }
                Kind::Flow => {
                    snapshot.flows.insert(id, typed(&text, &what)?);
                }
                Kind::Connector => {
                    snapshot.connectors.insert(id, typed(&text, &what)?);
                }
                Kind::Skill => {
                    snapshot.skills.insert(id, typed(&text, &what)?);
                }
                Kind::Trigger => {
                    snapshot.triggers.insert(id, typed(&text, &what)?);
                }
                Kind::Defaults => {
                    snapshot.defaults.insert(id, typed(&text, &what)?);
                }
            }
        }
        let revision = match (seq, rec) {
            (Some(seq), Some(rec)) => Some(parse_revision(seq, &rec)?),
            _ => None,
        };
        Ok(Applied { revision, snapshot })
    }

    /// History newest first, with seq below `before` (0 = from the newest).
    pub async fn revisions(
        &self,
        before: i64,
        limit: usize,
    ) -> Result<Vec<RevisionRecord>, StoreError> {
        let mut c = self.connection();
        let top = if before <= 0 {
            let newest: Option<i64> = redis::cmd("GET")
                .arg(self.key("revision_seq"))
                .query_async(&mut c)
                .await
                .map_err(err(self.target(), "reading revisions"))?;
            newest.unwrap_or(0)
        } else {
            before - 1
        };
        // Seqs are contiguous; the oldest are trimmed, so stop at the cap.
        let lowest = (top - limit as i64 + 1)
            .max(top - super::batch::REVISION_CAP + 1)
            .max(1);
        if top < lowest {
            return Ok(Vec::new());
        }
        let seqs: Vec<i64> = (lowest..=top).rev().collect();
        let texts: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.key("revisions"))
            .arg(&seqs)
            .query_async(&mut c)
            .await
            .map_err(err(self.target(), "reading revisions"))?;
        seqs.iter()
            .zip(texts)
            .filter_map(|(seq, t)| t.map(|t| parse_revision(*seq, &t)))
            .collect()
    }

    /// What `plan` needs of the live state (as `read_live_state` reads
    /// it from SQLite).
    pub async fn live_state(&self) -> Result<LiveState, StoreError> {
        Ok(LiveState::gather(
            self.job_slots().await?,
            &self.active_runs().await?,
        ))
    }
}

fn parse_revision(seq: i64, text: &str) -> Result<RevisionRecord, StoreError> {
    let mut r: RevisionRecord = serde_json::from_str(text)
        .map_err(|e| StoreError::corrupt(&format!("revision {seq}"), e))?;
    r.seq = seq;
    Ok(r)
}
