//! Delivering a notice: render its text, send it through the connector
//! (its rate limit included) once per key, and say so in the events
//! (`notice.sent`, `notice.failed`).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::machine::Notice;
use crate::connectors::{Connectors, OutboundMessage, send_once};
use crate::spec::model::{Job, NoticeKind, NoticeRule};
use crate::spec::templates::{self, Budget, Control};
use crate::store::{NewEvent, Store, format_ts};

/// The text of a notice whose rule has no `template`.
pub const DEFAULT_TEMPLATE: &str = "{{ job.id }}: {{ event }} — {{ run.error | default('') }}";

/// The default text of a `missed` notice: the count and the reasons.
const DEFAULT_MISSED: &str = "{{ job.id }}: missed — {{ count }} slot(s) skipped ({{ reasons }})";

/// The send-once key of `notice` for `job` through `rule`.
pub fn notice_key(job: &str, kind: NoticeKind, change: &str, rule: &NoticeRule) -> String {
    let to = rule.to.as_deref().unwrap_or_default();
    format!(
        "notice:{job}:{}:{change}:{}:{to}",
        kind.as_str(),
        rule.connector
    )
}

/// Send `notice` to every rule of `job` that wants its kind. True when
/// every one of them has it (now or before); a failed one is retried by
/// the caller, and the ones already delivered are not sent again.
pub async fn deliver(
    store: &Store,
    connectors: &Connectors,
    job_id: &str,
    job: &Job,
    rules: &[NoticeRule],
    notice: &Notice,
) -> bool {
    let mut all = true;
    for rule in rules.iter().filter(|r| r.on.contains(&notice.kind)) {
        let key = notice_key(job_id, notice.kind, &notice.change, rule);
        if let Ok(Some(_)) = send_once::recorded(store, &key).await {
            continue;
        }
        let msg = OutboundMessage {
            text: text(job_id, job, rule, notice),
            to: rule.to.clone(),
            subject: Some(format!("multijob {}: {job_id}", notice.kind.as_str())),
            idempotency_key: key.clone(),
        };
        let result = send_once::send_once(store, connectors, &rule.connector, &key, msg).await;
        let mut data = json!({"job": job_id, "kind": notice.kind.as_str(), "connector": rule.connector, "change": notice.change});
        let event_type = match result {
            Ok(_) => "notice.sent",
            Err(e) => {
                all = false;
                tracing::warn!(job = job_id, kind = notice.kind.as_str(), connector = %rule.connector, error = %e, "notice not sent; retried");
                data["error"] = Value::String(e.to_string());
                "notice.failed"
            }
        };
        let event = NewEvent::new(event_type, data).job(job_id.to_string());
        if let Err(e) = store.append_events(vec![event]).await {
            tracing::warn!(job = job_id, error = %e, "could not record a notice event");
        }
    }
    all
}

/// The notice's text: the rule's template, or the default; a template
/// that fails to render falls back to the default (the notice still goes
/// out, and the log says why).
fn text(job_id: &str, job: &Job, rule: &NoticeRule, notice: &Notice) -> String {
    let ctx = json!({
        "job": {"id": job_id, "description": job.description, "labels": job.labels},
        "run": notice.run,
        "event": notice.kind.as_str(),
        "count": notice.count,
        "reasons": reasons(&notice.reasons),
        "now": format_ts(jiff::Timestamp::now()),
    });
    let default = match notice.kind {
        NoticeKind::Missed => DEFAULT_MISSED,
        _ => DEFAULT_TEMPLATE,
    };
    let source = rule.template.as_deref().unwrap_or(default);
    match render(source, &ctx) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(job = job_id, connector = %rule.connector, error = %e, "notice template failed; the default text is sent");
            render(default, &ctx).unwrap_or_else(|_| format!("{job_id}: {}", notice.kind.as_str()))
        }
    }
}

fn render(source: &str, ctx: &Value) -> Result<String, String> {
    let env = templates::environment();
    let ctx = minijinja::Value::from(minijinja::value::Serde(ctx));
    let mut budget = Budget::new(&Control::default(), false);
    templates::render(&env, source, ctx, &mut budget).map_err(|e| match e {
        templates::Failure::Error(e) => e.to_string(),
        templates::Failure::Stopped(s) => format!("stopped: {s:?}"),
    })
}

/// `flow_limit × 3, overlap × 1`.
fn reasons(reasons: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{r} × {n}")).collect();
    parts.join(", ")
}
