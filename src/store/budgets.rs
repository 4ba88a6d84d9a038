//! Daily budgets (`budgets:` on a job or a flow) counted in the store's
//! key-value table, so every run and every process (the daemon, Redis
//! workers) shares one count.
//!
//! A counter is one key per scope (`job:<id>` or `flow:<id>`), kind and
//! calendar day in the job's time zone (its schedule's `timezone`, else
//! UTC): `budget:job:digest:messages_per_day:2026-12-07`. A new day is a
//! new key, so the count resets at local midnight with nothing to clear;
//! keys expire two days after they were last counted. Messages and HTTP
//! calls are reserved before the call ([`KvOp::Count`] with a limit, atomic
//! on both stores); LLM tokens are unknown before the call, so the call is
//! refused once the day's tokens reached the limit and the tokens it used
//! are counted after it.
//!
//! What the job's last run used of each kind is kept too
//! (`budget-last:<job>:<kind>`): the scheduler skips a slot whose run
//! could not finish within what is left (see [`BudgetUse::blocks`]).

use std::fmt;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use serde::Serialize;
use serde_json::Value;

use super::{KvOp, Store, StoreError};
use crate::spec::model::{Budgets, Flow, Job};

/// Counters outlive their day by this much (a late reader still sees it).
const TTL_SEC: u64 = 2 * 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetKind {
    LlmTokens,
    Messages,
    HttpCalls,
}

impl BudgetKind {
    pub const ALL: [BudgetKind; 3] = [
        BudgetKind::LlmTokens,
        BudgetKind::Messages,
        BudgetKind::HttpCalls,
    ];

    /// The field's name under `budgets:`.
    pub fn field(self) -> &'static str {
        match self {
            BudgetKind::LlmTokens => "llm_tokens_per_day",
            BudgetKind::Messages => "messages_per_day",
            BudgetKind::HttpCalls => "http_calls_per_day",
        }
    }

    fn limit(self, b: &Budgets) -> Option<u64> {
        match self {
            BudgetKind::LlmTokens => b.llm_tokens_per_day,
            BudgetKind::Messages => b.messages_per_day,
            BudgetKind::HttpCalls => b.http_calls_per_day,
        }
    }
}

/// The calendar day `now` falls on in `tz`, and the instant it ends.
pub fn day_of(now: Timestamp, tz: &TimeZone) -> (Date, Timestamp) {
    let zoned = now.to_zoned(tz.clone());
    let date = zoned.date();
    let next = date
        .checked_add(1.day())
        .ok()
        .and_then(|d| d.to_zoned(tz.clone()).ok())
        .map(|z| z.timestamp())
        .unwrap_or(Timestamp::MAX);
    (date, next)
}

/// The store key counting `kind` for `scope` on `date`.
pub fn counter_key(scope: &str, kind: BudgetKind, date: Date) -> String {
    format!("budget:{scope}:{}:{date}", kind.field())
}

fn last_key(job_id: &str, kind: BudgetKind) -> String {
    format!("budget-last:{job_id}:{}", kind.field())
}

/// One budget that applies to a job: its own or its flow's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// `job:<id>` or `flow:<id>`.
    pub scope: String,
    pub kind: BudgetKind,
    pub limit: u64,
}

/// The budgets a job's runs count against, and the day they count in.
#[derive(Debug, Clone)]
pub struct Meter {
    pub job_id: String,
    pub budgets: Vec<Budget>,
    pub tz: TimeZone,
    /// The time zone's name, for messages.
    pub tz_name: String,
}

/// A budget used up: the permanent error of the call that would pass it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exhausted {
    pub budget: Budget,
    pub used: u64,
    pub tz_name: String,
}

impl fmt::Display for Exhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.budget;
        let (kind, id) = b.scope.split_once(':').unwrap_or(("job", &b.scope));
        write!(
            f,
            "budget {} of {kind} {id} exhausted ({}/{} today, {}); resets at 00:00 ({})",
            b.kind.field(),
            self.used,
            b.limit,
            self.tz_name,
            self.tz_name
        )
    }
}

/// A budget's state today (the API, `/metrics`, the scheduler).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetUse {
    pub scope: String,
    pub kind: BudgetKind,
    pub field: &'static str,
    pub used: u64,
    pub limit: u64,
    /// What the job's last run used of this kind (0 before any).
    pub last_run: u64,
    pub resets_at: Timestamp,
}

impl BudgetUse {
    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }

    /// The rule for a due slot: skip it when nothing is left, or when less
    /// is left than the job's last run used (that run would stop part way).
    pub fn blocks(&self) -> bool {
        self.remaining() == 0 || self.remaining() < self.last_run
    }
}

impl Meter {
    /// The job's budgets and its flow's; `None` when it has neither.
    pub fn of(job: &Job, flow: Option<&Flow>) -> Option<Meter> {
        let mut budgets = Vec::new();
        let scopes = [
            Some((format!("job:{}", job.id), &job.budgets)),
            flow.map(|f| (format!("flow:{}", f.id), &f.budgets)),
        ];
        for (scope, b) in scopes.into_iter().flatten() {
            for kind in BudgetKind::ALL {
                if let Some(limit) = kind.limit(b) {
                    let scope = scope.clone();
                    budgets.push(Budget { scope, kind, limit });
                }
            }
        }
        if budgets.is_empty() {
            return None;
        }
        let tz_name = job
            .schedule
            .as_ref()
            .and_then(|s| s.timezone.clone())
            .unwrap_or_else(|| "UTC".to_string());
        // Validation checked the name; an unknown one counts in UTC.
        let tz = TimeZone::get(&tz_name).unwrap_or(TimeZone::UTC);
        Some(Meter {
            job_id: job.id.clone(),
            budgets,
            tz,
            tz_name,
        })
    }

    fn of_kind(&self, kind: BudgetKind) -> impl Iterator<Item = &Budget> {
        self.budgets.iter().filter(move |b| b.kind == kind)
    }

    fn key(&self, b: &Budget, now: Timestamp) -> String {
        counter_key(&b.scope, b.kind, day_of(now, &self.tz).0)
    }

    /// Takes `n` of `kind` from every budget of that kind before a call;
    /// refused (and nothing kept) when one would pass its limit.
    pub async fn reserve(
        &self,
        store: &Store,
        kind: BudgetKind,
        n: u64,
        now: Timestamp,
    ) -> Result<Result<(), Exhausted>, StoreError> {
        let mut taken: Vec<String> = Vec::new();
        for b in self.of_kind(kind) {
            let key = self.key(b, now);
            let (counted, used) = count(store, &key, n as i64, Some(b.limit as i64)).await?;
            if !counted {
                // Give back what the other scopes took for this call.
                for key in taken {
                    count(store, &key, -(n as i64), None).await?;
                }
                return Ok(Err(self.exhausted(b, used)));
            }
            taken.push(key);
        }
        Ok(Ok(()))
    }

    /// Before an LLM call: refused once the day's tokens reached a limit.
    pub async fn check(
        &self,
        store: &Store,
        kind: BudgetKind,
        now: Timestamp,
    ) -> Result<Result<(), Exhausted>, StoreError> {
        for b in self.of_kind(kind) {
            let used = read(store, &self.key(b, now)).await?;
            if used >= b.limit {
                return Ok(Err(self.exhausted(b, used)));
            }
        }
        Ok(Ok(()))
    }

    /// After an LLM call: counts what it used, whatever the limit.
    pub async fn spend(
        &self,
        store: &Store,
        kind: BudgetKind,
        n: u64,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        for b in self.of_kind(kind) {
            count(store, &self.key(b, now), n as i64, None).await?;
        }
        Ok(())
    }

    /// Records what one run used of each budgeted kind (the slot rule).
    pub async fn record_run(
        &self,
        store: &Store,
        used: impl Fn(BudgetKind) -> u64,
    ) -> Result<(), StoreError> {
        let mut kinds: Vec<BudgetKind> = self.budgets.iter().map(|b| b.kind).collect();
        kinds.dedup();
        for kind in kinds {
            let value = Value::from(used(kind));
            let op = KvOp::Set {
                value,
                ttl_sec: Some(TTL_SEC),
            };
            store.kv(&last_key(&self.job_id, kind), op).await?;
        }
        Ok(())
    }

    /// Every budget's state on the day of `now`.
    pub async fn usage(&self, store: &Store, now: Timestamp) -> Result<Vec<BudgetUse>, StoreError> {
        let resets_at = day_of(now, &self.tz).1;
        let mut out = Vec::with_capacity(self.budgets.len());
        for b in &self.budgets {
            out.push(BudgetUse {
                scope: b.scope.clone(),
                kind: b.kind,
                field: b.kind.field(),
                used: read(store, &self.key(b, now)).await?,
                limit: b.limit,
                last_run: read(store, &last_key(&self.job_id, b.kind)).await?,
                resets_at,
            });
        }
        Ok(out)
    }

    fn exhausted(&self, b: &Budget, used: u64) -> Exhausted {
        Exhausted {
            budget: b.clone(),
            used,
            tz_name: self.tz_name.clone(),
        }
    }
}

async fn count(
    store: &Store,
    key: &str,
    by: i64,
    limit: Option<i64>,
) -> Result<(bool, u64), StoreError> {
    let op = KvOp::Count {
        by,
        limit,
        ttl_sec: TTL_SEC,
    };
    let v = store.kv(key, op).await?.unwrap_or_default();
    let counted = v["counted"].as_bool().unwrap_or(false);
    Ok((counted, v["count"].as_i64().unwrap_or(0).max(0) as u64))
}

async fn read(store: &Store, key: &str) -> Result<u64, StoreError> {
    let v = store.kv(key, KvOp::Get).await?;
    Ok(v.and_then(|v| v.as_i64()).unwrap_or(0).max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counter_key_changes_at_local_midnight() {
        let jakarta = TimeZone::get("Asia/Jakarta").unwrap();
        // 16:59:59 UTC is 23:59:59 in Jakarta (UTC+7).
        let before: Timestamp = "2026-12-07T16:59:59Z".parse().unwrap();
        let after: Timestamp = "2026-12-07T17:00:00Z".parse().unwrap();
        let (d1, resets) = day_of(before, &jakarta);
        let (d2, _) = day_of(after, &jakarta);
        assert_eq!(d1.to_string(), "2026-12-07");
        assert_eq!(d2.to_string(), "2026-12-08");
        assert_eq!(resets, after);
        assert_ne!(
            counter_key("job:a", BudgetKind::Messages, d1),
            counter_key("job:a", BudgetKind::Messages, d2)
        );
        assert_eq!(
            counter_key("job:a", BudgetKind::Messages, d1),
            "budget:job:a:messages_per_day:2026-12-07"
        );
        // The same instant is still the 7th in UTC.
        assert_eq!(day_of(after, &TimeZone::UTC).0.to_string(), "2026-12-07");
    }

    #[test]
    fn a_slot_is_blocked_when_less_is_left_than_the_last_run_used() {
        let u = |used, last_run| BudgetUse {
            scope: "job:a".into(),
            kind: BudgetKind::Messages,
            field: "messages_per_day",
            used,
            limit: 5,
            last_run,
            resets_at: Timestamp::UNIX_EPOCH,
        };
        assert!(!u(0, 0).blocks());
        assert!(!u(2, 2).blocks(), "3 left, a run uses 2");
        assert!(u(4, 2).blocks(), "1 left, a run uses 2");
        assert!(u(5, 0).blocks(), "nothing left");
        assert!(!u(4, 1).blocks());
    }

    #[test]
    fn the_error_names_the_budget_the_count_and_the_zone() {
        let e = Exhausted {
            budget: Budget {
                scope: "job:digest".into(),
                kind: BudgetKind::Messages,
                limit: 5,
            },
            used: 5,
            tz_name: "Asia/Jakarta".into(),
        };
        assert_eq!(
            e.to_string(),
            "budget messages_per_day of job digest exhausted (5/5 today, Asia/Jakarta); \
             resets at 00:00 (Asia/Jakarta)"
        );
    }
}
