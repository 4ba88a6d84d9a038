//! Prompt experiments: an `llm` or `agent` step may list `variants`
//! (`{id, weight, prompt|goal|model}`); each run uses one, picked from a
//! hash of its run key and the step id, so a run (and its retries) always
//! gets the same one, and keys spread over the variants by weight. The
//! pick overrides the step's fields, is recorded on the step's record
//! (`variant`) and counted in `multijob_variant_runs_total`.

use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::Value;

use crate::spec::model::{Action, Step};
use crate::store::runs::{StepRecord, StepStatus};

/// Step outcomes per variant, by job, step, variant and status.
type VariantRuns = Family<Vec<(String, String)>, Counter>;

/// One family for the process: steps count into it wherever they run,
/// and the status registry shows it (see [`register`]).
static VARIANT_RUNS: LazyLock<VariantRuns> = LazyLock::new(VariantRuns::default);

/// Show the variant counters in `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(
        "multijob_variant_runs",
        "llm and agent steps with variants that ended, by job, step, variant and status",
        VARIANT_RUNS.clone(),
    );
}

/// 64-bit FNV-1a: stable across builds and platforms, unlike std's hasher.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The index `run_key` picks among `weights` (each > 0): a point in
/// [0, total) from the hash, and the variant whose share holds it.
pub fn choose(run_key: &str, step_id: &str, weights: &[f64]) -> Option<usize> {
    let total: f64 = weights.iter().filter(|w| **w > 0.0).sum();
    if total <= 0.0 || !total.is_finite() {
        return None;
    }
    // 53 bits: exactly representable in an f64.
    let unit = (fnv1a(&[run_key, step_id]) >> 11) as f64 / (1u64 << 53) as f64;
    let mut point = unit * total;
    for (i, w) in weights.iter().enumerate() {
        if *w <= 0.0 {
            continue;
        }
        if point < *w {
            return Some(i);
        }
        point -= w;
    }
    weights.iter().rposition(|w| *w > 0.0)
}

/// The weights of the rendered `variants` (default 1).
fn weights(variants: &[Value]) -> Vec<f64> {
    variants
        .iter()
        .map(|v| v.get("weight").and_then(Value::as_f64).unwrap_or(1.0))
        .collect()
}

/// A step's rendered arguments with the picked variant's fields put in
/// place of the step's own (`prompt`, `goal`, `model`, `system`).
pub fn apply(mut args: Value, run_key: &str, step_id: &str) -> Value {
    let Some(Value::Array(variants)) = args.as_object_mut().and_then(|o| o.remove("variants"))
    else {
        return args;
    };
    let Some(i) = choose(run_key, step_id, &weights(&variants)) else {
        return args;
    };
    for field in ["prompt", "goal", "model", "system"] {
        if let Some(v) = variants[i].get(field).filter(|v| !v.is_null()) {
            args[field] = v.clone();
        }
    }
    args
}

/// The variant ids of a step (empty: no experiment).
fn variant_ids(step: &Step) -> Vec<(String, f64)> {
    let list = match &step.action {
        Action::Llm(a) => &a.variants,
        Action::Agent(a) => &a.variants,
        _ => return Vec::new(),
    };
    list.iter().map(|v| (v.id.clone(), v.weight)).collect()
}

/// Put the picked variant on the records of `steps` that ran one, and
/// count the ones that ended.
pub fn label(job_id: &str, run_key: &str, steps: &[Step], records: &mut [StepRecord]) {
    for record in records.iter_mut() {
        let Some(step) = steps.iter().find(|s| s.id == record.id) else {
            continue;
        };
        let ids = variant_ids(step);
        let w: Vec<f64> = ids.iter().map(|(_, w)| *w).collect();
        let Some(i) = choose(run_key, &step.id, &w) else {
            continue;
        };
        let variant = ids[i].0.clone();
        if matches!(record.status, StepStatus::Succeeded | StepStatus::Failed) {
            let labels = vec![
                ("job".to_string(), job_id.to_string()),
                ("step".to_string(), step.id.clone()),
                ("variant".to_string(), variant.clone()),
                ("status".to_string(), record.status.as_str().to_string()),
            ];
            VARIANT_RUNS.get_or_create(&labels).inc();
        }
        record.variant = Some(variant);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn one_run_key_always_picks_the_same_variant() {
        let w = [1.0, 1.0, 1.0];
        for key in ["nightly@2026-12-07T02:00:00Z", "manual:0195", ""] {
            let first = choose(key, "ask", &w);
            assert!(first.is_some());
            assert!((0..10).all(|_| choose(key, "ask", &w) == first));
        }
        let picks: std::collections::BTreeSet<_> = (0..50)
            .filter_map(|i| choose(&format!("job@{i}"), "ask", &w))
            .collect();
        assert_eq!(picks.len(), 3, "different keys reach every variant");
    }

    #[test]
    fn weights_are_respected_over_a_thousand_keys() {
        let w = [1.0, 3.0];
        let mut counts = [0u32; 2];
        for i in 0..1000 {
            let key = format!("report@2026-12-{:02}T{:02}:00:00Z", i % 28 + 1, i % 24);
            let key = format!("{key}#{i}");
            counts[choose(&key, "ask", &w).unwrap_or(9)] += 1;
        }
        // Expect 250 / 750; a fair hash stays well within ±60.
        assert!((190..=310).contains(&counts[0]), "{counts:?}");
        assert_eq!(counts[0] + counts[1], 1000);
    }

    #[test]
    fn no_positive_weight_picks_nothing_and_zero_weights_are_never_picked() {
        assert_eq!(choose("k", "s", &[]), None);
        assert_eq!(choose("k", "s", &[0.0, -1.0]), None);
        assert!((0..200).all(|i| choose(&i.to_string(), "s", &[0.0, 2.0, 0.0]) == Some(1)));
    }

    #[test]
    fn the_pick_replaces_the_step_fields_and_the_list_is_dropped() {
        let args = json!({"connector": "ai", "prompt": "base", "model": "m0",
            "variants": [{"id": "a", "weight": 1, "prompt": "A"}, {"id": "b", "weight": 1, "model": "mB"}]});
        let w = [1.0, 1.0];
        let key = (0..100)
            .map(|i| format!("k{i}"))
            .find(|k| choose(k, "s", &w) == Some(1))
            .unwrap_or_default();
        let out = apply(args.clone(), &key, "s");
        assert_eq!(
            out,
            json!({"connector": "ai", "prompt": "base", "model": "mB"})
        );
        let no_variants = json!({"prompt": "p"});
        assert_eq!(apply(no_variants.clone(), "k", "s"), no_variants);
    }
}
