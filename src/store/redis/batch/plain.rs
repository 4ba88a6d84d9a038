//! Run records outside the script: a batch's records go as plain `HSET
//! runs:rec` and `XADD ready` commands queued after the batch script in
//! one MULTI, not as script arguments. Lua hashes every byte of every
//! argument it is given (a fifth of Redis's CPU at 40,000 runs/s went to
//! making the arguments of the script), and a record crossed into it up
//! to three times per run.
//!
//! The script still decides whether the batch applies (fence, retry,
//! order), behind a gate on the keys these commands write. [`CLOSE`],
//! queued first, closes it: each key moves aside to `<key>:gated` and a
//! string takes its place, so the commands fail WRONGTYPE and write
//! nothing. The script (EVALSHA) opens it when the batch applies;
//! [`UNGATE`], queued last, puts back whatever is still closed. A script
//! that did not run (NOSCRIPT after a restart) opens nothing. The MULTI
//! runs as one: no other client sees a closed gate.
//!
//! A record a script may refuse (a new run with a slot key) still goes
//! through the script, which writes it only when the slot is free.

/// The string that stands in for a closed key (see `batch.lua`).
pub(super) const GATE_TOKEN: &str = "multijob:gate";

/// Closes the gate on the keys a batch's plain commands write. KEYS: those
/// keys; ARGV[1]: the gate token.
pub(super) const CLOSE: &str = "\
for _, k in ipairs(KEYS) do
  if redis.call('EXISTS', k) == 1 then redis.call('RENAME', k, k .. ':gated') end
  redis.call('SET', k, ARGV[1])
end
return 1";

/// Puts back the keys the batch script left closed. KEYS: the gated keys;
/// ARGV[1]: the gate token.
pub(super) const UNGATE: &str = "\
for _, k in ipairs(KEYS) do
  if redis.call('TYPE', k).ok == 'string' and redis.call('GET', k) == ARGV[1] then
    redis.call('DEL', k)
    if redis.call('EXISTS', k .. ':gated') == 1 then redis.call('RENAME', k .. ':gated', k) end
  end
end
return 1";

/// A batch's plain writes.
#[derive(Default)]
pub(super) struct Plain {
    /// `HSET runs:rec` arguments: id, record, id, record, ...
    recs: Vec<String>,
    ready: Vec<ReadyEntry>,
    events: Option<EventsEntry>,
}

/// The batch's events as one `events` entry, numbered by the writer.
struct EventsEntry {
    /// `<last event id>-<count>`.
    id: String,
    /// Entries before this id go (`MINID ~`): the stream keeps about
    /// `EVENTS_MAXLEN` events.
    min_id: Option<i64>,
    at: String,
    packed: String,
}

/// One `ready` stream entry: the runs' ids, space-separated, and where
/// their records are in `recs`.
struct ReadyEntry {
    group: Option<String>,
    ids: String,
    recs: Vec<usize>,
}

impl Plain {
    /// Write `record` as run `id`'s; returns where the record is kept,
    /// for a `ready` entry that carries it.
    pub(super) fn record(&mut self, id: String, record: String) -> usize {
        self.recs.push(id);
        self.recs.push(record);
        self.recs.len() - 1
    }

    /// A `ready` entry (of `group`'s stream, or the shared one) carrying
    /// the records at `recs` (from [`Plain::record`]).
    pub(super) fn ready(&mut self, group: Option<&str>, ids: String, recs: Vec<usize>) {
        self.ready.push(ReadyEntry {
            group: group.map(str::to_string),
            ids,
            recs,
        });
    }

    /// The batch's events entry (see `Ops::number_events`).
    pub(super) fn events(&mut self, id: String, min_id: Option<i64>, at: String, packed: String) {
        self.events = Some(EventsEntry {
            id,
            min_id,
            at,
            packed,
        });
    }

    fn stream(prefix: &str, group: Option<&str>) -> String {
        match group {
            Some(g) => format!("{prefix}ready:{g}"),
            None => format!("{prefix}ready"),
        }
    }

    /// The keys the commands write, each once: the gate covers them.
    pub(super) fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        if !self.recs.is_empty() {
            keys.push(format!("{prefix}runs:rec"));
        }
        for e in &self.ready {
            let key = Self::stream(prefix, e.group.as_deref());
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        if self.events.is_some() {
            keys.push(format!("{prefix}events"));
        }
        keys
    }

    /// Queue the commands on `pipe` (after the script, before [`UNGATE`]).
    pub(super) fn queue(&self, pipe: &mut redis::Pipeline, prefix: &str) {
        if !self.recs.is_empty() {
            let bytes = self.recs.iter().map(|a| a.len() + 16).sum::<usize>() + 64;
            let mut hset = redis::Cmd::with_capacity(self.recs.len() + 2, bytes);
            hset.arg("HSET").arg(format!("{prefix}runs:rec"));
            for a in &self.recs {
                hset.arg(a);
            }
            pipe.add_command(hset);
        }
        for e in &self.ready {
            let mut xadd = redis::cmd("XADD");
            xadd.arg(Self::stream(prefix, e.group.as_deref()))
                .arg("*")
                .arg("runs")
                .arg(&e.ids);
            for (i, at) in e.recs.iter().enumerate() {
                xadd.arg(i)
                    .arg(self.recs.get(*at).map_or("", String::as_str));
            }
            pipe.add_command(xadd);
        }
        if let Some(e) = &self.events {
            let mut xadd = redis::cmd("XADD");
            xadd.arg(format!("{prefix}events"));
            if let Some(min) = e.min_id {
                xadd.arg("MINID").arg("~").arg(min);
            }
            xadd.arg(&e.id).arg("at").arg(&e.at).arg("e").arg(&e.packed);
            pipe.add_command(xadd);
        }
    }
}

#[cfg(test)]
impl Plain {
    pub(super) fn ready_ids(&self) -> Vec<&str> {
        self.ready.iter().map(|e| e.ids.as_str()).collect()
    }

    pub(super) fn record_ids(&self) -> Vec<&str> {
        self.recs.iter().step_by(2).map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::call::apply_once;
    use super::super::{Known, Ops, Outcome, Sequence, Target};
    use crate::store::runs::RunStatus;
    use crate::store::{Coalesced, Mutation};
    use crate::testkit::{RedisServer, sample_run};
    use redis::aio::ConnectionManager;

    /// A batch writing run `id` (a key of its own) as running and
    /// dispatching it: its record and `ready` entry go outside the script.
    fn dispatching(id: &str) -> Ops {
        let mut c = Coalesced::default();
        let run = sample_run(id, "job", &format!("manual:{id}"), RunStatus::Running);
        c.add(Mutation::PutRun(Box::new(run)));
        c.add(Mutation::Dispatch {
            run_id: id.into(),
            group: None,
        });
        let mut ops = Ops::default();
        ops.coalesced(&c, &Known::default(), None).expect("encode");
        assert_eq!(ops.plain.record_ids(), [id]);
        ops
    }

    fn seq(batch_id: &str, after: Option<&str>) -> Sequence {
        Sequence {
            marker: "w".into(),
            batch_id: batch_id.into(),
            after: after.map(|id| ("w".to_string(), id.to_string())),
        }
    }

    async fn cmd<T: redis::FromRedisValue>(conn: &mut ConnectionManager, args: &[&str]) -> T {
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        c.query_async(conn).await.expect("redis command")
    }

    /// What the keys a batch writes look like: record ids, ready entries,
    /// the consumer groups of `ready`, and every key of the prefix.
    async fn keyspace(
        conn: &mut ConnectionManager,
        p: &str,
    ) -> (Vec<String>, usize, usize, Vec<String>) {
        let ids: Vec<String> = cmd(conn, &["HKEYS", &format!("{p}runs:rec")]).await;
        let ready: usize = cmd(conn, &["XLEN", &format!("{p}ready")]).await;
        let groups: Vec<redis::Value> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(format!("{p}ready"))
            .query_async(conn)
            .await
            .unwrap_or_default();
        let mut keys: Vec<String> = cmd(conn, &["KEYS", &format!("{p}*")]).await;
        keys.sort();
        (ids, ready, groups.len(), keys)
    }

    /// A connection to `server`, and a target of keys under `prefix`.
    async fn connect(server: &RedisServer, prefix: &str) -> (ConnectionManager, Target) {
        let client = redis::Client::open(server.url()).expect("url");
        let conn = ConnectionManager::new(client).await.expect("connect");
        let target = Target {
            conn: conn.clone(),
            prefix: prefix.into(),
            url: server.url(),
        };
        (conn, target)
    }

    #[tokio::test]
    async fn a_batch_that_does_not_apply_writes_no_record_and_no_ready_entry() {
        let server = RedisServer::start().expect("redis-server");
        let (mut conn, target) = connect(&server, "{t}:").await;
        let _: () = cmd(
            &mut conn,
            &["XGROUP", "CREATE", "{t}:ready", "workers", "0", "MKSTREAM"],
        )
        .await;
        let first = apply_once(&target, None, &seq("b1", None), &dispatching("r1")).await;
        assert!(matches!(first, Ok(Outcome::Applied(_))));
        let applied = keyspace(&mut conn, "{t}:").await;
        assert_eq!(
            (applied.0.clone(), applied.1, applied.2),
            (vec!["r1".to_string()], 1, 1)
        );
        let entry: Vec<(String, Vec<(String, String)>)> =
            cmd(&mut conn, &["XRANGE", "{t}:ready", "-", "+"]).await;
        assert_eq!(entry[0].1[0], ("runs".to_string(), "r1".to_string()));
        let stored: String = cmd(&mut conn, &["HGET", "{t}:runs:rec", "r1"]).await;
        assert_eq!(entry[0].1[1], ("0".to_string(), stored));

        // A retry of the applied batch (its reply lost): nothing twice.
        let again = apply_once(&target, None, &seq("b1", None), &dispatching("r1")).await;
        assert!(matches!(again, Ok(Outcome::Applied(_))));
        assert_eq!(keyspace(&mut conn, "{t}:").await, applied);
        // Behind a call that never applied: nothing.
        let stale = apply_once(&target, None, &seq("b3", Some("b2")), &dispatching("r2")).await;
        assert!(matches!(stale, Ok(Outcome::Stale)));
        assert_eq!(keyspace(&mut conn, "{t}:").await, applied);
        // A deposed leader: nothing.
        let _: () = cmd(&mut conn, &["SET", "{t}:epoch", "2"]).await;
        let fence = ("{t}:epoch".to_string(), "1".to_string());
        let fenced = apply_once(&target, Some(&fence), &seq("b4", None), &dispatching("r3")).await;
        assert!(matches!(fenced, Ok(Outcome::Fenced)));
        let mut after = keyspace(&mut conn, "{t}:").await;
        after.3.retain(|k| k != "{t}:epoch");
        assert_eq!(after, applied);

        // A server without the script (restarted): the first try writes
        // nothing, the script is loaded, the second applies once.
        let _: () = cmd(&mut conn, &["SCRIPT", "FLUSH"]).await;
        let reloaded = apply_once(&target, None, &seq("b5", None), &dispatching("r4")).await;
        assert!(matches!(reloaded, Ok(Outcome::Applied(_))));
        let (ids, ready, groups, _) = keyspace(&mut conn, "{t}:").await;
        assert_eq!((ids.len(), ready, groups), (2, 2, 1));

        // Keys that did not exist do not exist after a refused batch.
        let target = Target {
            prefix: "{u}:".into(),
            ..target
        };
        let _: () = cmd(&mut conn, &["SET", "{u}:epoch", "2"]).await;
        let fence = ("{u}:epoch".to_string(), "1".to_string());
        let fenced = apply_once(&target, Some(&fence), &seq("b1", None), &dispatching("r1")).await;
        assert!(matches!(fenced, Ok(Outcome::Fenced)));
        let keys: Vec<String> = cmd(&mut conn, &["KEYS", "{u}:*"]).await;
        assert_eq!(keys, ["{u}:epoch"]);
    }

    /// Events the writer numbered from a count that is off (another
    /// process wrote some meanwhile): nothing is written.
    #[tokio::test]
    async fn events_numbered_from_a_count_that_is_off_are_not_written() {
        let server = RedisServer::start().expect("redis-server");
        let (mut conn, target) = connect(&server, "{v}:").await;
        let numbered = |after: i64| {
            let mut ops = Ops::default();
            ops.events(vec![crate::store::NewEvent::new(
                "a",
                serde_json::json!({}),
            )]);
            assert_eq!(ops.number_events(after), 1);
            ops
        };
        let off = apply_once(&target, None, &seq("b1", None), &numbered(5)).await;
        assert!(matches!(off, Ok(Outcome::Renumber)));
        let keys: Vec<String> = cmd(&mut conn, &["KEYS", "{v}:*"]).await;
        assert!(keys.is_empty(), "{keys:?}");
        match apply_once(&target, None, &seq("b2", None), &numbered(0)).await {
            Ok(Outcome::Applied(a)) => {
                assert_eq!((a.first_event, a.events, a.event_seq), (1, 1, 1))
            }
            _ => panic!("not applied"),
        }
        let entries: Vec<(String, Vec<(String, String)>)> =
            cmd(&mut conn, &["XRANGE", "{v}:events", "-", "+"]).await;
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].0, "1-1");
    }
}
