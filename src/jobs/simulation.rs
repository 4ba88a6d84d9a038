//! `simulation.heavy`: synthetic load for capacity and failure tests.
//!
//! Inputs: `work_ms` (a cancellable sleep), `cpu_ms` (a busy loop on the
//! blocking pool), `fail_rate` (0..1), `fail_attempts` (the first N attempts
//! of each run fail) and `output_bytes` (size of a dummy output string).
//! Numbers may be JSON numbers or numeric strings, because trigger inputs
//! from the CLI and from connectors arrive as text.
//!
//! Failures are decided after the work is done, so a failing attempt costs
//! what a succeeding one does: retry and capacity tests see real load.
//! They are deterministic per `(run_id, attempt)`, so a test that sees a
//! failure once sees it every time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::RunContext;
use crate::run::{RunError, RunResult};
use crate::spec::model::Job;

/// A typo in `output_bytes` must not take the daemon's memory with it.
pub const MAX_OUTPUT_BYTES: u64 = 16 * 1024 * 1024;

/// The inputs, checked.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Load {
    work_ms: u64,
    cpu_ms: u64,
    fail_rate: f64,
    fail_attempts: u64,
    output_bytes: Option<u64>,
}

pub async fn run(_job: &Job, ctx: &RunContext, cancel: &CancellationToken) -> RunResult {
    let load = Load::from_inputs(&ctx.inputs)?;
    if cancel.is_cancelled() {
        return Err(RunError::Cancelled);
    }
    if load.work_ms > 0 {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(load.work_ms)) => {}
            _ = cancel.cancelled() => return Err(RunError::Cancelled),
        }
    }
    if load.cpu_ms > 0 {
        burn_cpu(Duration::from_millis(load.cpu_ms), cancel).await?;
    }
    if let Some(reason) = simulated_failure(&load, &ctx.run_id, ctx.attempt) {
        return Err(RunError::retryable(reason));
    }
    let mut out = json!({
        "work_ms": load.work_ms,
        "cpu_ms": load.cpu_ms,
        "attempt": ctx.attempt,
    });
    if let (Some(n), Value::Object(map)) = (load.output_bytes, &mut out) {
        // Bounded by MAX_OUTPUT_BYTES, so the cast cannot truncate on 64-bit.
        map.insert("output".into(), Value::String("x".repeat(n as usize)));
    }
    Ok(out)
}

impl Load {
    fn from_inputs(inputs: &Value) -> Result<Load, RunError> {
        let empty = Map::new();
        let map = match inputs {
            Value::Object(map) => map,
            Value::Null => &empty,
            other => {
                return Err(RunError::Permanent(format!(
                    "inputs must be an object, got {}",
                    type_name(other)
                )));
            }
        };
        let output_bytes = whole_number(map, "output_bytes")?;
        if let Some(n) = output_bytes
            && n > MAX_OUTPUT_BYTES
        {
            return Err(RunError::Permanent(format!(
                "input output_bytes: {n} is more than the limit of {MAX_OUTPUT_BYTES}"
            )));
        }
        let fail_rate = number(map, "fail_rate")?.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&fail_rate) {
            return Err(RunError::Permanent(format!(
                "input fail_rate: {fail_rate} is not between 0 and 1"
            )));
        }
        Ok(Load {
            work_ms: whole_number(map, "work_ms")?.unwrap_or(0),
            cpu_ms: whole_number(map, "cpu_ms")?.unwrap_or(0),
            fail_rate,
            fail_attempts: whole_number(map, "fail_attempts")?.unwrap_or(0),
            output_bytes,
        })
    }
}

/// A finite number, from a JSON number or a numeric string. Absent and
/// `null` both mean "not given".
fn number(map: &Map<String, Value>, key: &str) -> Result<Option<f64>, RunError> {
    let bad = |what: String| RunError::Permanent(format!("input {key}: {what}"));
    let value = match map.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(value) => value,
    };
    let n = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        other => {
            return Err(bad(format!("expected a number, got {}", type_name(other))));
        }
    };
    match n {
        Some(n) if n.is_finite() => Ok(Some(n)),
        _ => Err(bad(format!("{value} is not a number"))),
    }
}

/// A non-negative whole number (`100`, `"100"`, `100.0`).
fn whole_number(map: &Map<String, Value>, key: &str) -> Result<Option<u64>, RunError> {
    // Exact path first: `as_f64` would round integers above 2^53.
    if let Some(n) = map.get(key).and_then(Value::as_u64) {
        return Ok(Some(n));
    }
    if let Some(Value::String(s)) = map.get(key)
        && let Ok(n) = s.trim().parse::<u64>()
    {
        return Ok(Some(n));
    }
    let Some(n) = number(map, key)? else {
        return Ok(None);
    };
    let bad = |what: &str| RunError::Permanent(format!("input {key}: {n} {what}"));
    if n < 0.0 {
        return Err(bad("is negative"));
    }
    if n.fract() != 0.0 {
        return Err(bad("is not a whole number"));
    }
    if n >= u64::MAX as f64 {
        return Err(bad("is too large"));
    }
    Ok(Some(n as u64))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Why this attempt fails, if it does.
fn simulated_failure(load: &Load, run_id: &str, attempt: u32) -> Option<String> {
    if u64::from(attempt) <= load.fail_attempts && attempt > 0 {
        return Some(format!(
            "simulated failure on attempt {attempt} of {}",
            load.fail_attempts
        ));
    }
    // `> 0.0` keeps the hash off the hot path of the common case.
    if load.fail_rate > 0.0 && unit_draw(run_id, attempt) < load.fail_rate {
        return Some(format!(
            "simulated failure (fail_rate {}) on attempt {attempt}",
            load.fail_rate
        ));
    }
    None
}

/// A number in [0, 1) fixed by `(run_id, attempt)`: SHA-256 spreads similar
/// run ids apart, splitmix64 turns the seed into a well-mixed draw.
fn unit_draw(run_id: &str, attempt: u32) -> f64 {
    let mut hasher = Sha256::new();
    hasher.update(run_id.as_bytes());
    // A separator, so ("a1", 2) and ("a", 12) cannot collide.
    hasher.update([0u8]);
    hasher.update(attempt.to_le_bytes());
    let digest = hasher.finalize();
    let mut seed = [0u8; 8];
    seed.copy_from_slice(&digest[..8]);
    let mut state = u64::from_le_bytes(seed);
    // The top 53 bits fill an f64 mantissa exactly.
    (splitmix64(&mut state) >> 11) as f64 / (1u64 << 53) as f64
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Sets the flag when the run's future is dropped (a caller that times out
/// by dropping rather than cancelling), so the blocking thread stops too.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Real CPU work on the blocking pool: a tight loop on the runtime's
/// threads would stall every other run sharing them.
async fn burn_cpu(budget: Duration, cancel: &CancellationToken) -> Result<(), RunError> {
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = StopOnDrop(stop.clone());
    let flag = stop.clone();
    let mut burner = tokio::task::spawn_blocking(move || burn(budget, &flag));
    let finished = tokio::select! {
        joined = &mut burner => joined,
        _ = cancel.cancelled() => {
            stop.store(true, Ordering::Relaxed);
            // The loop checks the flag every few microseconds: waiting for
            // it keeps "cancelled" meaning "no longer using the CPU".
            let _ = burner.await;
            return Err(RunError::Cancelled);
        }
    };
    match finished {
        Ok(true) => Ok(()),
        Ok(false) => Err(RunError::Cancelled),
        Err(e) => Err(RunError::retryable(format!(
            "cpu phase did not finish: {e}"
        ))),
    }
}

/// Spins for `budget`; false if stopped first.
fn burn(budget: Duration, stop: &AtomicBool) -> bool {
    let start = Instant::now();
    let mut state = 0u64;
    loop {
        // A batch is a few microseconds: short enough for a prompt stop,
        // long enough that the clock and flag reads cost nothing.
        for _ in 0..1024 {
            std::hint::black_box(splitmix64(&mut state));
        }
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        if start.elapsed() >= budget {
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        serde_json::from_value(json!({"id": "sim", "type": "simulation.heavy"}))
            .expect("a minimal job deserializes")
    }

    fn ctx(inputs: Value, attempt: u32) -> RunContext {
        RunContext {
            run_id: "run-1".into(),
            job_id: "sim".into(),
            attempt,
            inputs,
            data_dir: std::env::temp_dir(),
            allow_command: false,
            store: None,
            applied: None,
        }
    }

    async fn run_with(inputs: Value, attempt: u32) -> RunResult {
        run(&job(), &ctx(inputs, attempt), &CancellationToken::new()).await
    }

    fn permanent_message(r: RunResult) -> String {
        match r {
            Err(RunError::Permanent(m)) => m,
            other => panic!("expected a permanent error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn empty_inputs_succeed_at_once() {
        let out = run_with(json!({}), 1).await.expect("succeeds");
        assert_eq!(out, json!({"work_ms": 0, "cpu_ms": 0, "attempt": 1}));
        let out = run_with(Value::Null, 2)
            .await
            .expect("null inputs are empty");
        assert_eq!(out["attempt"], 2);
    }

    #[tokio::test]
    async fn numbers_may_be_numeric_strings() {
        let out = run_with(
            json!({"work_ms": "5", "cpu_ms": " 2 ", "fail_rate": "0"}),
            1,
        )
        .await
        .expect("succeeds");
        assert_eq!(out, json!({"work_ms": 5, "cpu_ms": 2, "attempt": 1}));
        let out = run_with(json!({"work_ms": 3.0}), 1)
            .await
            .expect("3.0 is whole");
        assert_eq!(out["work_ms"], 3);
    }

    #[tokio::test]
    async fn bad_inputs_are_permanent_and_name_the_input() {
        for (inputs, key) in [
            (json!({"work_ms": -1}), "work_ms"),
            (json!({"cpu_ms": "-5"}), "cpu_ms"),
            (json!({"work_ms": "soon"}), "work_ms"),
            (json!({"work_ms": 1.5}), "work_ms"),
            (json!({"cpu_ms": [1]}), "cpu_ms"),
            (json!({"fail_rate": 1.5}), "fail_rate"),
            (json!({"fail_rate": -0.1}), "fail_rate"),
            (json!({"fail_rate": "NaN"}), "fail_rate"),
            (json!({"fail_attempts": true}), "fail_attempts"),
            (
                json!({"output_bytes": MAX_OUTPUT_BYTES + 1}),
                "output_bytes",
            ),
        ] {
            let message = permanent_message(run_with(inputs.clone(), 1).await);
            assert!(message.contains(key), "{inputs}: {message}");
        }
        let message = permanent_message(run_with(json!([1]), 1).await);
        assert!(message.contains("inputs must be an object"), "{message}");
    }

    #[tokio::test]
    async fn first_attempts_fail_then_succeed() {
        let inputs = json!({"fail_attempts": 2});
        for attempt in 1..=2 {
            match run_with(inputs.clone(), attempt).await {
                Err(RunError::Retryable { message: m, .. }) => {
                    assert_eq!(m, format!("simulated failure on attempt {attempt} of 2"));
                }
                other => panic!("attempt {attempt}: {other:?}"),
            }
        }
        run_with(inputs, 3).await.expect("attempt 3 succeeds");
    }

    #[tokio::test]
    async fn fail_rate_bounds() {
        for attempt in 1..=20 {
            let err = run_with(json!({"fail_rate": 1}), attempt).await;
            assert!(matches!(err, Err(RunError::Retryable { .. })), "{err:?}");
            run_with(json!({"fail_rate": 0}), attempt)
                .await
                .expect("fail_rate 0 never fails");
        }
    }

    #[test]
    fn fail_rate_is_reproducible_and_roughly_right() {
        let load = Load {
            fail_rate: 0.3,
            ..Load::default()
        };
        let mut failures = 0;
        for i in 0..10_000 {
            let run_id = format!("run-{i}");
            let first = simulated_failure(&load, &run_id, 1);
            assert_eq!(first, simulated_failure(&load, &run_id, 1), "{run_id}");
            failures += usize::from(first.is_some());
        }
        // 3000 expected; the bound is ~10 standard deviations wide.
        assert!((2550..=3450).contains(&failures), "{failures} of 10000");
    }

    #[test]
    fn draws_differ_by_attempt() {
        let draws: Vec<f64> = (1..=8).map(|a| unit_draw("run-1", a)).collect();
        for (i, d) in draws.iter().enumerate() {
            assert!((0.0..1.0).contains(d));
            assert!(!draws[..i].contains(d), "{draws:?}");
        }
    }

    #[tokio::test]
    async fn output_bytes_sizes_the_output() {
        let out = run_with(json!({"output_bytes": "1000"}), 1)
            .await
            .expect("ok");
        assert_eq!(out["output"].as_str().map(str::len), Some(1000));
    }

    #[tokio::test]
    async fn cpu_phase_burns_for_its_budget() {
        let started = Instant::now();
        run_with(json!({"cpu_ms": 50}), 1).await.expect("ok");
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    /// The aim is ~10 ms; measured: microseconds for the sleep, up to 4 ms
    /// for the cpu loop with the whole suite running on 2 cores. The bound
    /// has room for a busier CI machine without hiding a loop that stopped
    /// checking its flag (that would take the whole 30 s).
    const PROMPT: Duration = Duration::from_millis(50);

    /// Cancels after `after`; returns the result and how long the run took
    /// to notice.
    async fn cancel_after(inputs: Value, after: Duration) -> (RunResult, Duration) {
        let token = CancellationToken::new();
        let trigger = token.clone();
        let job = job();
        let ctx = ctx(inputs, 1);
        let run = run(&job, &ctx, &token);
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => panic!("finished before the cancel: {r:?}"),
            _ = tokio::time::sleep(after) => {}
        }
        trigger.cancel();
        let fired = Instant::now();
        let result = run.await;
        (result, fired.elapsed())
    }

    #[tokio::test]
    async fn cancel_stops_the_sleep_promptly() {
        let (result, took) =
            cancel_after(json!({"work_ms": 30_000}), Duration::from_millis(20)).await;
        assert_eq!(result, Err(RunError::Cancelled));
        assert!(took < PROMPT, "{took:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancel_stops_the_cpu_loop_promptly() {
        let (result, took) =
            cancel_after(json!({"cpu_ms": 30_000}), Duration::from_millis(50)).await;
        assert_eq!(result, Err(RunError::Cancelled));
        assert!(took < PROMPT, "{took:?}");
    }

    #[tokio::test]
    async fn already_cancelled_runs_do_nothing() {
        let token = CancellationToken::new();
        token.cancel();
        let r = run(&job(), &ctx(json!({"work_ms": 10_000}), 1), &token).await;
        assert_eq!(r, Err(RunError::Cancelled));
    }

    #[tokio::test]
    async fn dropping_the_run_stops_the_cpu_loop() {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = tokio::task::spawn_blocking(move || burn(Duration::from_secs(30), &flag));
        drop(StopOnDrop(stop));
        let finished = tokio::time::timeout(Duration::from_secs(1), handle)
            .await
            .expect("the loop stops within a second")
            .expect("the loop does not panic");
        assert!(!finished);
    }
}
