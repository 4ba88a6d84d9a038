//! The inputs each built-in job type reads, so a misspelt one is caught
//! before a run silently ignores it (`wrk_ms`, `perod`).
//!
//! Types whose inputs templates read (`agent.workflow`, `http.request`)
//! and `noop` (reads nothing) take any inputs. The lists mirror what the
//! handlers in `jobs/` read; a handler that reads a new input adds it here.

use super::Checker;
use crate::spec::diagnostic::Severity;
use crate::spec::model::Job;
use crate::spec::suggest;
use crate::spec::yaml::escape_token;

/// Seed spellings any job may carry in `inputs` (see `aliases`), and the
/// implicit lane's limit.
const EVERY_TYPE: [&str; 8] = [
    "flow_group",
    "flow_max_active_runs",
    "pressure_priority",
    "allow_overlap",
    "failure_memory_enabled",
    "failure_threshold",
    "failure_cooldown_sec",
    "failure_cooldown_max_sec",
];

/// What a built-in job type reads from `inputs`, or `None` when it takes
/// any.
pub(super) fn known_inputs(job_type: &str) -> Option<&'static [&'static str]> {
    Some(match job_type {
        "simulation.heavy" => &[
            "work_ms",
            "cpu_ms",
            "fail_rate",
            "fail_attempts",
            "output_bytes",
        ],
        "report.daily" => &["period", "formats", "deliver_to", "title"],
        "backup.export" => &["include_runs", "max_runs", "keep"],
        "monitor.channel" => &[
            "connector",
            "connectors",
            "alert_connector",
            "alert_to",
            "check_path",
            "timeout_ms",
        ],
        "command" => &["argv", "env", "cwd"],
        _ => return None,
    })
}

/// An input a built-in type does not read: an error when it is close to
/// one it does (a typo the run would ignore), else a warning (seed specs
/// carry inputs for the Python platform's handlers).
pub(super) fn check_inputs(job: &Job, c: &mut Checker) {
    let Some(known) = known_inputs(&job.job_type) else {
        return;
    };
    let reads = known.join(", ");
    for key in job.inputs.keys() {
        if known.contains(&key.as_str()) || EVERY_TYPE.contains(&key.as_str()) {
            continue;
        }
        let pointer = format!("/inputs/{}", escape_token(key));
        match suggest::closest(key, known.iter().copied()) {
            Some(near) => c.push_at_key(
                &pointer,
                Severity::Error,
                "input",
                format!(
                    "{} does not read input `{key}` (did you mean `{near}`?)",
                    job.job_type
                ),
            ),
            None => c.warn(
                &pointer,
                "input",
                format!(
                    "{} does not read input `{key}`: it is ignored ({} reads {reads})",
                    job.job_type, job.job_type
                ),
            ),
        }
    }
}
