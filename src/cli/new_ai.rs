//! `multijob new --ai CONNECTOR`: the directory's `openai` connector asked
//! for the plan with structured output (the job JSON Schema), its answer
//! read as data by [`planner::ai`] and validated with the whole directory
//! like the rules' jobs; refused once, asked again with the findings;
//! refused twice, unreachable, failing or slow, the rule planner plans
//! instead, with a warning on stderr naming why.
//!
//! The call goes through [`Connectors::chat`]: the connector's secrets,
//! egress policy and redaction apply as they do for a run's `llm` step.

use std::time::Duration;

use anyhow::bail;
use serde_json::{Value, json};

use crate::connectors::{ChatRequest, Connectors};
use crate::spec::model::Provider;
use crate::spec::planner::{self, Options, PlannedJob, ai};
use crate::spec::{self, Loaded, SourceFile};

use crate::reconcile::author::{Draft, draft_errors, with_drafts};

/// Most characters of a refused answer echoed back to the model.
const ECHO_CHARS: usize = 4096;
/// The model asked when the connector's `config.model` names none.
const DEFAULT_MODEL: &str = "gpt-4o-mini";

/// What `new --ai` works from.
pub struct Request<'a> {
    pub connector: &'a str,
    pub timeout: Duration,
    pub sentence: &'a str,
    pub opts: &'a Options,
    pub before: &'a Loaded,
    pub files: &'a [SourceFile],
    pub now: jiff::Timestamp,
    pub force: bool,
}

/// The planned jobs, which planner made them, and why the rules did.
pub struct Planned {
    pub jobs: Vec<PlannedJob>,
    pub planner: &'static str,
    pub warnings: Vec<String>,
}

/// The model's plan, else the rules' with a warning. An `--ai` naming no
/// `openai` connector of the directory is an error (nothing to fall back
/// from: the command line is wrong).
pub fn plan(req: &Request) -> anyhow::Result<Planned> {
    let model = model_of(req)?;
    let connectors = Connectors::new(&req.before.snapshot.connectors);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut messages = vec![
        json!({"role": "system", "content": ai::system_prompt(&context(req))}),
        json!({"role": "user", "content": req.sentence}),
    ];
    let mut findings = Vec::new();
    for _ in 0..2 {
        let asked = runtime.block_on(ask(&connectors, req, &model, &messages));
        let answer = match asked {
            Ok(answer) => answer,
            Err(why) => return fallback(req, format!("the model could not be asked ({why})")),
        };
        match check(req, &answer) {
            Ok(jobs) => {
                return Ok(Planned {
                    jobs,
                    planner: "ai",
                    warnings: Vec::new(),
                });
            }
            Err(found) => {
                let echo: String = answer.chars().take(ECHO_CHARS).collect();
                messages.push(json!({"role": "assistant", "content": echo}));
                messages.push(json!({"role": "user", "content": ai::retry_prompt(&found)}));
                findings = found;
            }
        }
    }
    fallback(
        req,
        format!(
            "the model's plan did not validate twice ({})",
            findings.join("; ")
        ),
    )
}

/// The connector's `config.model`, after checking it is an `openai`
/// connector of the directory.
fn model_of(req: &Request) -> anyhow::Result<String> {
    let Some(res) = req.before.snapshot.connectors.get(req.connector) else {
        let ids: Vec<&str> = req
            .before
            .snapshot
            .connectors
            .keys()
            .map(String::as_str)
            .collect();
        bail!(
            "--ai {}: the directory has no such connector (it has: {}); add a Connector with provider: openai",
            req.connector,
            if ids.is_empty() {
                "none".to_string()
            } else {
                ids.join(", ")
            }
        );
    };
    if res.spec.provider != Provider::Openai {
        bail!(
            "--ai {}: {}:{} is not an openai connector; name one with provider: openai",
            req.connector,
            res.file,
            res.line
        );
    }
    Ok(match res.spec.config.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => m.clone(),
        _ => DEFAULT_MODEL.to_string(),
    })
}

fn context(req: &Request) -> ai::Context {
    let snapshot = &req.before.snapshot;
    ai::Context {
        timezone: req.opts.timezone.clone(),
        channel: req.opts.channel.clone(),
        account: req.opts.account.clone(),
        job_ids: snapshot.jobs.keys().cloned().collect(),
        connectors: snapshot
            .connectors
            .iter()
            .map(|(id, r)| {
                let provider = serde_json::to_value(r.spec.provider)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                (id.clone(), provider)
            })
            .collect(),
    }
}

/// One chat completion within the timeout; its text content.
async fn ask(
    connectors: &Connectors,
    req: &Request<'_>,
    model: &str,
    messages: &[Value],
) -> Result<String, String> {
    let chat = ChatRequest {
        model: model.to_string(),
        messages: messages.to_vec(),
        response_format: Some(ai::response_format()),
        temperature: Some(0.0),
        ..ChatRequest::default()
    };
    let reply = tokio::time::timeout(req.timeout, connectors.chat(req.connector, chat))
        .await
        .map_err(|_| {
            format!(
                "no answer within {:?}; --ai-timeout sets the limit",
                req.timeout
            )
        })?
        .map_err(|e| format!("connector {}: {e}", req.connector))?;
    reply
        .content
        .ok_or_else(|| "the reply has no message content".to_string())
}

/// The answer's jobs when they validate with the whole directory, else
/// the findings (file:line messages) to send back. A job whose id the
/// directory has is passed on: `new` refuses it naming the file, as it
/// does for the rules.
fn check(req: &Request, answer: &str) -> Result<Vec<PlannedJob>, Vec<String>> {
    let jobs = ai::jobs_of(answer, &context(req), req.sentence)?;
    let taken = jobs
        .iter()
        .any(|j| req.before.snapshot.jobs.contains_key(&j.id));
    if taken && !req.force {
        return Ok(jobs);
    }
    let drafts: Vec<Draft> = jobs
        .iter()
        .cloned()
        .map(|j| Draft::of(j, req.sentence))
        .collect();
    let after = spec::build_at(&with_drafts(req.files, &drafts), Some(req.now));
    let errors = draft_errors(&after, &drafts);
    if errors.is_empty() {
        Ok(jobs)
    } else {
        Err(errors)
    }
}

/// The rule planner's jobs, with the warning (also on stderr).
fn fallback(req: &Request, why: String) -> anyhow::Result<Planned> {
    let warning = format!("{why}; used the rules instead");
    eprintln!("warning: {warning}");
    Ok(Planned {
        jobs: planner::plan(req.sentence, req.opts)?,
        planner: "rules",
        warnings: vec![warning],
    })
}
