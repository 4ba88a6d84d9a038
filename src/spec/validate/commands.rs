//! A job's `commands` (the agent's `command` tool) beyond its schema: no
//! prefix both allowed and approved, environment values by reference only
//! (reported without the value), a `cwd` that stays inside the data dir,
//! and an agent that offers `command` only with a policy to match against.

use super::{Checker, inside_data_dir, is_secret_reference};
use crate::spec::model::{Action, Job};

pub(super) fn check_commands(job: &Job, c: &mut Checker) {
    let offered = job
        .steps
        .iter()
        .enumerate()
        .find_map(|(i, s)| match &s.action {
            Action::Agent(a) => a.tools.iter().position(|t| t == "command").map(|t| (i, t)),
            _ => None,
        });
    let Some(policy) = &job.commands else {
        if let Some((i, t)) = offered {
            c.error(
                &format!("/steps/{i}/agent/tools/{t}"),
                "commands",
                "the `command` tool needs the job's `commands` policy, e.g. \
                 `commands: {allow: [[git, status]]}`; without it nothing could run"
                    .to_string(),
            );
        }
        return;
    };
    for (list, prefixes) in [("allow", &policy.allow), ("approve", &policy.approve)] {
        for (i, prefix) in prefixes.iter().enumerate() {
            if prefix.iter().any(|a| a.contains('\0')) {
                c.error(
                    &format!("/commands/{list}/{i}"),
                    "commands",
                    "an argv element contains a NUL byte".to_string(),
                );
            }
        }
    }
    for (i, prefix) in policy.approve.iter().enumerate() {
        if policy.allow.contains(prefix) {
            c.error(
                &format!("/commands/approve/{i}"),
                "commands",
                format!(
                    "{prefix:?} is in both `allow` and `approve`; keep it in one list \
                     (`approve` to have an operator confirm each run)"
                ),
            );
        }
    }
    for (name, value) in &policy.env {
        let pointer = format!("/commands/env/{name}");
        if name == "PATH" || name.starts_with("MULTIJOB_") {
            c.error(
                &pointer,
                "commands",
                format!("`{name}` is set by the runner (PATH is fixed); remove it"),
            );
        } else if !is_secret_reference(value) {
            // The value is not repeated: it may be the secret itself.
            c.error(
                &pointer,
                "literal-secret",
                format!(
                    "env `{name}` holds a literal value; write a reference like \
                     `${{env:{name}}}` or `${{file:/run/secrets/{name}}}`"
                ),
            );
        }
    }
    if let Some(cwd) = &policy.cwd
        && let Err(why) = inside_data_dir(cwd)
    {
        c.error(
            "/commands/cwd",
            "commands",
            format!("cwd `{cwd}` {why}; give a path relative to the data dir"),
        );
    }
}
