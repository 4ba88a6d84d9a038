//! A job's, flow's or Defaults document's `notify:` beyond its schema: each connector exists
//! and delivers messages (a messaging provider, as a `message` step
//! needs), each template compiles and reads only what a notice has
//! (`job`, `run`, `event`, `count`, `reasons`, `now`), and `deadline`
//! comes with the job's `deadline_sec`.

use super::{Checker, no_such, push_template_issue};
use crate::spec::model::{NoticeKind, NoticeRule, Provider};
use crate::spec::snapshot::Snapshot;
use crate::spec::templates;

/// What a notice template may read.
pub const NOTICE_ROOTS: [&str; 6] = ["job", "run", "event", "count", "reasons", "now"];

/// Why nothing else: the end of the finding about another name.
const ONLY_THE_NOTICE: &str =
    "a notice is rendered by the daemon after the run, outside its steps and inputs";

/// Check the rules under `/notify`; `deadline_sec` is the job's (a flow
/// or the Defaults document passes `Some(..)`: its jobs bring their own).
pub(super) fn check_rules(
    rules: &[NoticeRule],
    deadline_sec: Option<u64>,
    snapshot: &Snapshot,
    env: &minijinja::Environment<'_>,
    c: &mut Checker,
) {
    for (i, rule) in rules.iter().enumerate() {
        let base = format!("/notify/{i}");
        check_connector(&rule.connector, &format!("{base}/connector"), snapshot, c);
        if let Some(template) = &rule.template
            && let Err(issue) =
                templates::check_reads(env, template, &NOTICE_ROOTS, ONLY_THE_NOTICE)
        {
            push_template_issue(issue, &format!("{base}/template"), c);
        }
        if rule.on.contains(&NoticeKind::Deadline) && deadline_sec.is_none() {
            c.error(
                &format!("{base}/on"),
                "notify",
                "`deadline` needs the job's `deadline_sec` (seconds after the slot a run must have finished): add it or drop `deadline`".to_string(),
            );
        }
    }
}

fn check_connector(name: &str, pointer: &str, snapshot: &Snapshot, c: &mut Checker) {
    match snapshot.connectors.get(name) {
        None => c.error(
            pointer,
            "reference",
            no_such("Connector", name, &snapshot.connectors),
        ),
        Some(r) if !Provider::MESSAGING.contains(&r.spec.provider) => c.error(
            pointer,
            "reference",
            format!(
                "connector `{name}` ({}:{}) does not deliver messages: a notice needs a telegram, slack, webhook, smtp, whatsapp or sms connector",
                r.file, r.line
            ),
        ),
        Some(_) => {}
    }
}
