//! Migrating a layout 4 keyspace to layout 5, in place, by the process
//! that holds the lease (the leader when it starts, or `multijob
//! migrate`): every write is fenced by its epoch.
//!
//! 1. Refuse while a process of layout 4 is connected: a leader holding
//!    layout 4's `leader` key, or any fresh heartbeat in `workers` that
//!    does not name layout 5 (workers, and replicas with or without
//!    slots). They would not read the records written from then on.
//! 2. Begin, in one script: set `layout` to 5, retire the `leader` key
//!    (a value with no expiry: a layout 4 process can never lead these
//!    keys again) and start the cursor `layout:migration` at 0.
//! 3. Re-encode `runs:rec` a page at a time (HSCAN), each page written
//!    with the cursor after it in one script, and note each keyed run's
//!    run key in `runs:key` (pruning reads it there, not in the record):
//!    killed midway, the next leader goes on from the last page written.
//!    The cursor goes with the last page.
//!
//! Nothing else moves: the indexes, events, streams and counters read the
//! same in both layouts, and runs in flight (in `ready`, `results`) carry
//! records that decode either way. Nothing writes run records meanwhile:
//! the leader migrates before it recovers or schedules, workers write
//! results, not records, and a layout 4 process is refused.

use std::time::{Duration, Instant};

use super::batch::slot_key;
use super::layout::{self, Found, LAYOUT, LAYOUT_V4, MIGRATION};
use super::{RedisStore, reads, record};
use crate::store::StoreError;
use crate::store::workers;

/// What layout 5 leaves in layout 4's election key, without expiry.
pub const RETIRED_LEADER: &str = "retired by key layout 5, which elects its leader with `lease`";

/// (run id, value) pairs: records, or run keys.
type Pairs = Vec<(String, String)>;

/// Records re-encoded per script call.
const PAGE: usize = 256;

/// Set layout 5 and retire layout 4's leader key, unless a layout 4
/// leader holds it. KEYS: fence, layout, leader, cursor; ARGV: token,
/// retired value, layout. Returns 'FENCED', 'LEADER <holder>' or the cursor.
const BEGIN: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'FENCED' end
local holder = redis.call('GET', KEYS[3])
if holder and holder ~= ARGV[2] then return 'LEADER ' .. holder end
redis.call('SET', KEYS[3], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
redis.call('SET', KEYS[4], '0', 'NX')
return redis.call('GET', KEYS[4])";

/// Write one page of records, the run keys of its keyed runs and the
/// cursor after it ('0': the last page, the cursor goes). KEYS: fence,
/// records, cursor, run keys; ARGV: token, next cursor, the number of
/// (id, record) pairs, those pairs, then (id, run key) pairs.
const STEP: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'FENCED' end
local split = 4 + 2 * tonumber(ARGV[3])
for j = 4, split - 1, 1000 do
  redis.call('HSET', KEYS[2], unpack(ARGV, j, math.min(j + 999, split - 1)))
end
for j = split, #ARGV, 1000 do
  redis.call('HSET', KEYS[4], unpack(ARGV, j, math.min(j + 999, #ARGV)))
end
if ARGV[2] == '0' then redis.call('DEL', KEYS[3]) else redis.call('SET', KEYS[3], ARGV[2]) end
return 'OK'";

/// What a migration would do, or where one stands.
#[derive(Debug, Clone)]
pub struct MigrationPlan {
    /// The layout found (`4`, or `5` when finished or unfinished).
    pub found: Found,
    /// Run records in `runs:rec`.
    pub records: u64,
    /// Of a sample of records (the first page of the scan): how many,
    /// their bytes now, and as layout 5 would store them.
    pub sample: (usize, usize, usize),
    /// Processes of layout 4 still connected: the migration refuses while
    /// there are any.
    pub blockers: Vec<String>,
    /// The scan cursor an unfinished migration goes on from.
    pub cursor: Option<String>,
}

/// What a migration did.
#[derive(Debug, Clone, Default)]
pub struct MigrationReport {
    /// Records read, and rewritten (the rest were layout 5 already).
    pub read: u64,
    pub rewritten: u64,
    /// Records that did not decode, left as they were (by id, first 20).
    pub unreadable: Vec<String>,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub elapsed: Duration,
    /// Whether it went on from an earlier, unfinished one.
    pub resumed: bool,
}

impl RedisStore {
    /// Where the keyspace stands and what migrating it would do; writes
    /// nothing.
    pub async fn migration_plan(&self) -> Result<MigrationPlan, StoreError> {
        let target = &self.inner.target;
        let found = layout::check(target).await?;
        let mut c = self.connection();
        let (records, cursor): (u64, Option<String>) = redis::pipe()
            .cmd("HLEN")
            .arg(self.key("runs:rec"))
            .cmd("GET")
            .arg(self.key(MIGRATION))
            .query_async(&mut c)
            .await
            .map_err(reads::err(target, "reading the run records"))?;
        let (_, page) = self.scan_page(cursor.as_deref().unwrap_or("0")).await?;
        let mut sample = (0, 0, 0);
        for (_, text) in &page {
            sample.0 += 1;
            sample.1 += text.len();
            sample.2 += record::decode(text)
                .ok()
                .and_then(|run| record::encode(&run).ok())
                .map_or(text.len(), |t| t.len());
        }
        let blockers = if found == Found::Current {
            Vec::new()
        } else {
            self.older_processes().await?
        };
        Ok(MigrationPlan {
            found,
            records,
            sample,
            blockers,
            cursor,
        })
    }

    /// Migrate the keyspace to layout 5 under the fence this store writes
    /// with (`set_fence`); `None` when it was current already. Refuses
    /// while a process of layout 4 is connected.
    pub async fn migrate_layout(&self) -> Result<Option<MigrationReport>, StoreError> {
        let target = &self.inner.target;
        let found = layout::check(target).await?;
        if found == Found::Current {
            return Ok(None);
        }
        let Some((fence_key, token)) = self.current_fence() else {
            return Err(self.refusal("it needs the lease: only the leader migrates".into()));
        };
        let blockers = self.older_processes().await?;
        if !blockers.is_empty() {
            return Err(self.refusal(format!(
                "processes of layout {LAYOUT_V4} are still connected: {}. Stop them \
                 (or upgrade them to this version) and start again",
                blockers.join(", ")
            )));
        }
        let started = Instant::now();
        let mut c = self.connection();
        let begun: String = redis::Script::new(BEGIN)
            .key(&fence_key)
            .key(self.key("layout"))
            .key(self.key("leader"))
            .key(self.key(MIGRATION))
            .arg(&token)
            .arg(RETIRED_LEADER)
            .arg(LAYOUT)
            .invoke_async(&mut c)
            .await
            .map_err(reads::err(target, "beginning the layout migration"))?;
        let mut cursor = match begun.as_str() {
            "FENCED" => return Err(StoreError::Fenced { key: fence_key }),
            held if held.starts_with("LEADER ") => {
                return Err(self.refusal(format!(
                    "a leader of layout {LAYOUT_V4} holds the `leader` key ({}): stop it and start again",
                    &held["LEADER ".len()..]
                )));
            }
            cursor => cursor.to_string(),
        };
        let mut report = MigrationReport {
            resumed: cursor != "0" || found == Found::Unfinished,
            ..MigrationReport::default()
        };
        let total: u64 = redis::cmd("HLEN")
            .arg(self.key("runs:rec"))
            .query_async(&mut c)
            .await
            .map_err(reads::err(target, "counting the run records"))?;
        tracing::info!(records = total, from = %cursor, resumed = report.resumed, "store: migrating the Redis keys from layout 4 to 5");
        let mut shown = Instant::now();
        loop {
            let (next, page) = self.scan_page(&cursor).await?;
            let (rewrites, keys) = reencode(page, &mut report);
            self.write_page(&fence_key, &token, &next, rewrites, keys)
                .await?;
            cursor = next;
            if cursor == "0" {
                break;
            }
            if shown.elapsed() >= Duration::from_secs(2) {
                shown = Instant::now();
                tracing::info!(
                    read = report.read,
                    of = total,
                    rewritten = report.rewritten,
                    "store: migrating run records"
                );
            }
        }
        report.elapsed = started.elapsed();
        Ok(Some(report))
    }

    /// One HSCAN page of `runs:rec` from `cursor`: the next cursor ('0' at
    /// the end) and the (id, record) pairs.
    async fn scan_page(&self, cursor: &str) -> Result<(String, Vec<(String, String)>), StoreError> {
        let mut c = self.connection();
        redis::cmd("HSCAN")
            .arg(self.key("runs:rec"))
            .arg(cursor)
            .arg("COUNT")
            .arg(PAGE)
            .query_async(&mut c)
            .await
            .map_err(reads::err(&self.inner.target, "scanning the run records"))
    }

    async fn write_page(
        &self,
        fence_key: &str,
        token: &str,
        next: &str,
        rewrites: Pairs,
        keys: Pairs,
    ) -> Result<(), StoreError> {
        let mut c = self.connection();
        let script = redis::Script::new(STEP);
        let mut call = script.key(fence_key);
        call.key(self.key("runs:rec"))
            .key(self.key(MIGRATION))
            .key(self.key("runs:key"))
            .arg(token)
            .arg(next)
            .arg(rewrites.len());
        for (id, text) in rewrites.iter().chain(&keys) {
            call.arg(id).arg(text);
        }
        let done: String = call.invoke_async(&mut c).await.map_err(reads::err(
            &self.inner.target,
            "writing migrated run records",
        ))?;
        if done == "FENCED" {
            return Err(StoreError::Fenced {
                key: fence_key.to_string(),
            });
        }
        Ok(())
    }

    /// Processes connected to this keyspace that read layout 4: a leader
    /// holding its `leader` key, and fresh heartbeats without layout 5.
    async fn older_processes(&self) -> Result<Vec<String>, StoreError> {
        let mut c = self.connection();
        let (holder, entries): (Option<String>, Vec<(String, String)>) = redis::pipe()
            .cmd("GET")
            .arg(self.key("leader"))
            .cmd("HGETALL")
            .arg(self.key("workers"))
            .query_async(&mut c)
            .await
            .map_err(reads::err(&self.inner.target, "reading who is connected"))?;
        let now = jiff::Timestamp::now().as_millisecond().max(0) as u64;
        let mut out: Vec<String> = holder
            .filter(|h| h != RETIRED_LEADER)
            .map(|h| format!("leader {h}"))
            .into_iter()
            .collect();
        let mut older: Vec<_> = workers::connected(entries, now)
            .into_iter()
            .filter(|w| w.layout.to_string() != LAYOUT)
            .collect();
        older.sort_by(|a, b| a.id.cmp(&b.id));
        out.extend(older.into_iter().map(|w| {
            let role = if w.slots == 0 { "replica" } else { "worker" };
            let ago = now.saturating_sub(w.beat_ms) as f64 / 1000.0;
            format!("{role} {} (heartbeat {ago:.1} s ago)", w.id)
        }));
        Ok(out)
    }

    fn refusal(&self, why: String) -> StoreError {
        StoreError::Open {
            path: self.inner.target.url.clone(),
            message: format!(
                "cannot migrate the keys under {} from layout {LAYOUT_V4} to {LAYOUT}: {why}",
                self.inner.target.prefix
            ),
        }
    }
}

/// The page's records that are not layout 5 yet, re-encoded, and the run
/// keys of the keyed runs among them; counted in `report`. One that does
/// not decode stays as it is.
fn reencode(page: Vec<(String, String)>, report: &mut MigrationReport) -> (Pairs, Pairs) {
    let (mut records, mut keys) = (Vec::new(), Vec::new());
    for (id, text) in page {
        report.read += 1;
        report.bytes_before += text.len() as u64;
        if record::is_current(&text) {
            report.bytes_after += text.len() as u64;
            continue;
        }
        let decoded = record::decode(&text);
        match decoded
            .as_ref()
            .map(|run| (record::encode(run), slot_key(run)))
        {
            Ok((Ok(new), key)) => {
                report.bytes_after += new.len() as u64;
                report.rewritten += 1;
                // As the batch script keeps them: none for a key that is
                // the run's own id, or an empty one.
                if !key.is_empty() {
                    keys.push((id.clone(), key.to_string()));
                }
                records.push((id, new));
            }
            _ => {
                report.bytes_after += text.len() as u64;
                tracing::warn!(run = %id, "store: a run record does not decode; left as it was");
                if report.unreadable.len() < 20 {
                    report.unreadable.push(id);
                }
            }
        }
    }
    (records, keys)
}
