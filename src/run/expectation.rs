//! Expectations (`expect: {success_within: 2h}`): when a job counts as
//! broken, what the daemon remembers about it between checks, and the
//! verdict both the daemon's check loop and `multijob check` report.
//!
//! Everything is judged from a job's last succeeded run (its record's
//! `finished_at`) and a clock the caller passes, never from what a daemon
//! says: `multijob check` uses the wall clock, so a stuck or dead daemon
//! cannot hide a job that stopped succeeding. A job that never succeeded
//! counts from `since`, when the daemon first saw it with an expectation
//! (kept in the store's kv under [`state_key`]).

use std::sync::LazyLock;

use jiff::{SignedDuration, Timestamp};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::spec::model::{Expect, Job};
use crate::spec::snapshot::Snapshot;
use crate::store::runs::{Run, RunQuery, RunStatus};
use crate::store::{Applied, KvOp, Store, StoreError, format_ts};

/// The store kv key holding a job's [`ExpectState`].
pub fn state_key(job: &str) -> String {
    format!("expect:{job}")
}

/// What the daemon last concluded about a job, kept in the store's kv so
/// a transition is raised once, across restarts and leader changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpectState {
    /// When the daemon first saw the job with an expectation (RFC 3339):
    /// a job that never succeeded counts from here.
    pub since: String,
    /// Broken at the last transition (false until the first one).
    #[serde(default)]
    pub broken: bool,
    /// When `broken` last changed (RFC 3339), `since` before that.
    pub changed_at: String,
}

impl ExpectState {
    /// A job first seen at `now`, holding.
    pub fn first_seen(now: Timestamp) -> ExpectState {
        ExpectState {
            since: format_ts(now),
            broken: false,
            changed_at: format_ts(now),
        }
    }

    /// Reads a stored state; `None` when absent or unreadable (a state
    /// that does not read is started over, not fatal).
    pub fn from_stored(value: Option<Value>) -> Option<ExpectState> {
        value
            .filter(|v| !v.is_null())
            .and_then(|v| serde_json::from_value(v).ok())
    }

    pub fn since_ts(&self) -> Option<Timestamp> {
        self.since.parse().ok()
    }
}

/// True when no run succeeded for `within`: since `last_success`, or
/// since `since` when the job never succeeded.
pub fn broken(
    within: SignedDuration,
    last_success: Option<Timestamp>,
    since: Timestamp,
    now: Timestamp,
) -> bool {
    overdue(within, last_success, since, now) > SignedDuration::ZERO
}

/// How far past its deadline the next success is (negative: still due).
fn overdue(
    within: SignedDuration,
    last_success: Option<Timestamp>,
    since: Timestamp,
    now: Timestamp,
) -> SignedDuration {
    let from = last_success.unwrap_or(since);
    now.duration_since(from) - within
}

/// When a run succeeded: its `finished_at` (absent or unreadable: none).
pub fn success_time(run: &Run) -> Option<Timestamp> {
    run.finished_at.as_deref().and_then(|t| t.parse().ok())
}

/// The enabled jobs of `snapshot` with an expectation (a disabled job is
/// not expected to run).
pub fn expecting(snapshot: &Snapshot) -> impl Iterator<Item = (&Job, &Expect)> {
    snapshot
        .jobs
        .values()
        .filter(|r| r.spec.enabled)
        .filter_map(|r| r.spec.expect.as_ref().map(|e| (&r.spec, e)))
}

/// What a job's verdict is judged from, as the store holds it (and
/// `/api/v1/expectations` serves it): the judging clock is the reader's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    pub job: String,
    pub success_within: String,
    /// RFC 3339, the newest succeeded run's end.
    pub last_success: Option<String>,
    /// RFC 3339, what a job that never succeeded counts from.
    pub since: String,
}

impl Observed {
    /// `job`'s observation from its last success and its stored state;
    /// `fallback` (the applied revision's time) stands for `since` when
    /// no daemon has checked the job yet.
    pub fn new(
        job: &Job,
        expect: &Expect,
        last_success: Option<Timestamp>,
        state: Option<ExpectState>,
        fallback: Timestamp,
    ) -> Observed {
        let since = state.and_then(|s| s.since_ts()).unwrap_or(fallback);
        Observed {
            job: job.id.clone(),
            success_within: expect.success_within.clone(),
            last_success: last_success.map(format_ts),
            since: format_ts(since),
        }
    }

    /// The verdict at `now`, or why the observation does not read.
    pub fn judge(&self, now: Timestamp) -> Result<Verdict, String> {
        let time = |what: &str, t: &str| {
            t.parse::<Timestamp>()
                .map_err(|e| format!("job {}: {what} {t:?} is not a time: {e}", self.job))
        };
        let last = match &self.last_success {
            Some(t) => Some(time("last_success", t)?),
            None => None,
        };
        let since = time("since", &self.since)?;
        let expect = Expect {
            success_within: self.success_within.clone(),
        };
        verdict(&self.job, &expect, last, since, now).ok_or_else(|| {
            format!(
                "job {}: success_within {:?} is not a duration",
                self.job, self.success_within
            )
        })
    }
}

/// The end of the newest succeeded run of `job` in `store`.
pub async fn last_success(store: &Store, job: &str) -> Result<Option<Timestamp>, StoreError> {
    let runs = store.runs(last_success_query(job)).await?;
    Ok(runs.first().and_then(|(_, r)| success_time(r)))
}

/// The query for the newest succeeded run of `job`.
pub fn last_success_query(job: &str) -> RunQuery {
    RunQuery {
        job_id: Some(job.to_string()),
        status: Some(RunStatus::Succeeded),
        limit: 1,
        before: None,
    }
}

/// What `store` holds for each expecting job of `applied`: its last
/// success and the daemon's state.
pub async fn observe_all(store: &Store, applied: &Applied) -> Result<Vec<Observed>, StoreError> {
    let fallback = applied_at(applied);
    let mut out = Vec::new();
    for (job, expect) in expecting(&applied.snapshot) {
        let last = last_success(store, &job.id).await?;
        let state = ExpectState::from_stored(store.kv(&state_key(&job.id), KvOp::Get).await?);
        out.push(Observed::new(job, expect, last, state, fallback));
    }
    Ok(out)
}

/// When the applied revision was applied (now when unknown): what a job
/// no daemon has checked yet counts from.
pub fn applied_at(applied: &Applied) -> Timestamp {
    applied
        .revision
        .as_ref()
        .and_then(|r| r.at.parse().ok())
        .unwrap_or_else(Timestamp::now)
}

/// One job's expectation, judged at one time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub job: String,
    /// The job's `expect:` as written, e.g. `{"success_within": "5s"}`.
    pub expectation: Value,
    /// The newest succeeded run's end (RFC 3339), if any is recorded.
    pub last_success: Option<String>,
    /// What a job that never succeeded counts from (RFC 3339).
    pub since: String,
    pub broken: bool,
    /// How long it has been broken, in whole seconds (0 when it holds).
    pub for_sec: u64,
}

/// Judges `expect` of `job` at `now`; `None` when `success_within` does
/// not read (validation refuses such a job before it is applied).
pub fn verdict(
    job: &str,
    expect: &Expect,
    last_success: Option<Timestamp>,
    since: Timestamp,
    now: Timestamp,
) -> Option<Verdict> {
    let secs = expect.within_secs().ok()?;
    let within = SignedDuration::from_secs(i64::try_from(secs).ok()?);
    let late = overdue(within, last_success, since, now);
    let is_broken = broken(within, last_success, since, now);
    Some(Verdict {
        job: job.to_string(),
        expectation: json!({"success_within": expect.success_within}),
        last_success: last_success.map(format_ts),
        since: format_ts(since),
        broken: is_broken,
        for_sec: if is_broken {
            u64::try_from(late.as_secs()).unwrap_or(0)
        } else {
            0
        },
    })
}

impl Verdict {
    /// One line for people: `JOB broken for 12s: no success within 5s
    /// (last success 2026-...)`.
    pub fn line(&self) -> String {
        let within = self.expectation["success_within"].as_str().unwrap_or("?");
        let last = match &self.last_success {
            Some(t) => format!("last success {t}"),
            None => format!("never succeeded; counting from {}", self.since),
        };
        if self.broken {
            format!(
                "{} BROKEN for {}s: no success within {within} ({last})",
                self.job, self.for_sec
            )
        } else {
            format!("{} ok: success within {within} ({last})", self.job)
        }
    }
}

/// `multijob_expectation_ok{job}`, one family for the process.
static EXPECTATION_OK: LazyLock<Family<Vec<(String, String)>, Gauge>> =
    LazyLock::new(Family::default);

/// Show the expectation gauge in `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(
        "multijob_expectation_ok",
        "1 while a job's expectation (expect.success_within) holds, 0 while it is broken",
        EXPECTATION_OK.clone(),
    );
}

fn job_labels(job: &str) -> Vec<(String, String)> {
    vec![("job".to_string(), job.to_string())]
}

/// Sets the gauge of `job`.
pub fn set_gauge(job: &str, ok: bool) {
    EXPECTATION_OK
        .get_or_create(&job_labels(job))
        .set(i64::from(ok));
}

/// Drops the gauge of a job that no longer has an expectation.
pub fn clear_gauge(job: &str) {
    EXPECTATION_OK.remove(&job_labels(job));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const HOUR: SignedDuration = SignedDuration::from_hours(1);

    #[test]
    fn broken_counts_from_the_last_success() {
        let last = Some(t("2026-01-01T10:00:00Z"));
        let since = t("2025-01-01T00:00:00Z");
        assert!(!broken(2 * HOUR, last, since, t("2026-01-01T11:59:59Z")));
        assert!(!broken(2 * HOUR, last, since, t("2026-01-01T12:00:00Z")));
        assert!(broken(2 * HOUR, last, since, t("2026-01-01T12:00:01Z")));
    }

    #[test]
    fn a_job_that_never_succeeded_counts_from_since() {
        let since = t("2026-01-01T10:00:00Z");
        assert!(!broken(HOUR, None, since, t("2026-01-01T10:30:00Z")));
        assert!(broken(HOUR, None, since, t("2026-01-01T11:00:01Z")));
    }

    #[test]
    fn an_old_success_breaks_a_newly_added_expectation_at_once() {
        // `since` is later than the last success: the success still counts.
        let last = Some(t("2026-01-01T00:00:00Z"));
        let since = t("2026-01-02T00:00:00Z");
        assert!(broken(HOUR, last, since, t("2026-01-02T00:00:01Z")));
    }

    #[test]
    fn a_clock_behind_the_last_success_is_not_broken() {
        let last = t("2026-01-01T10:00:00Z");
        assert!(!broken(HOUR, Some(last), last, t("2026-01-01T09:00:00Z")));
    }

    #[test]
    fn verdict_reports_how_long_it_has_been_broken() {
        let expect = Expect {
            success_within: "5s".into(),
        };
        let since = t("2026-01-01T10:00:00Z");
        let last = Some(t("2026-01-01T10:00:10Z"));
        let v = verdict("j", &expect, last, since, t("2026-01-01T10:00:27Z")).unwrap();
        assert!(v.broken);
        assert_eq!(v.for_sec, 12);
        assert_eq!(v.last_success.as_deref(), Some("2026-01-01T10:00:10.000Z"));
        assert_eq!(v.expectation, json!({"success_within": "5s"}));
        assert!(v.line().contains("j BROKEN for 12s"), "{}", v.line());
        let ok = verdict("j", &expect, last, since, t("2026-01-01T10:00:12Z")).unwrap();
        assert!(!ok.broken);
        assert_eq!(ok.for_sec, 0);
        let bad = Expect {
            success_within: "soon".into(),
        };
        assert_eq!(
            verdict("j", &bad, last, since, t("2026-01-01T10:00:12Z")),
            None
        );
    }

    #[test]
    fn a_state_that_does_not_read_starts_over() {
        assert_eq!(ExpectState::from_stored(Some(json!({"x": 1}))), None);
        assert_eq!(ExpectState::from_stored(Some(Value::Null)), None);
        let s = ExpectState::first_seen(t("2026-01-01T10:00:00Z"));
        let back = ExpectState::from_stored(Some(serde_json::to_value(&s).unwrap()));
        assert_eq!(back, Some(s));
    }
}
