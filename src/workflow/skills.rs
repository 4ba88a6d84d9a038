//! `uses`: a step that runs a skill's steps with the rendered `with` over
//! the skill's default inputs, one `uses` level deeper.

use serde_json::{Map, Value};

use super::step::item_key;
use super::{Engine, Frame, MAX_USES_DEPTH, StepResult, render, render_value};
use crate::run::RunError;
use crate::spec::model::Step;

impl Engine<'_> {
    pub(super) async fn uses(
        &self,
        skill_id: &str,
        step: &Step,
        ctx: &minijinja::Value,
        item_index: Option<usize>,
        frame: &Frame<'_>,
        limit: (tokio::time::Instant, render::Limit),
    ) -> StepResult {
        let skill = &self
            .skills
            .get(skill_id)
            .ok_or_else(|| RunError::Permanent(format!("no skill `{skill_id}`")))?
            .spec;
        if frame.depth + 1 > MAX_USES_DEPTH {
            return Err(RunError::Permanent(format!(
                "skill `{skill_id}`: `uses` nests deeper than {MAX_USES_DEPTH}"
            )));
        }
        let (with, what) = match (&step.with, &self.skill_call) {
            // A one-off run's own step: the run's inputs, not templates.
            (None, Some(inputs)) if frame.depth == 0 => (inputs.clone(), "the run's inputs do"),
            (Some(with), _) => {
                let with = Value::Object(with.clone());
                let with = render::render(render_value, &self.env, &with, ctx, limit).await?;
                (with, "`with` does")
            }
            (None, _) => (Value::Object(Map::new()), "`with` does"),
        };
        if let Some(params) = &skill.params {
            check_params(skill_id, params, &with, what)?;
        }
        let mut inputs = skill.default_inputs.clone();
        if let Value::Object(with) = with {
            inputs.extend(with);
        }
        let inner = Frame {
            run: frame.run,
            actions: frame.actions,
            cancel: frame.cancel,
            counters: frame.counters,
            progress: frame.progress,
            depth: frame.depth + 1,
            scope: format!("{}{}/", frame.scope, item_key(step, item_index)),
        };
        // The skill's own step records stay inside it: the caller's record
        // is the `uses` step, and an error names the inner step.
        let mut records = Vec::new();
        self.run_steps(&skill.steps, Value::Object(inputs), &inner, &mut records)
            .await
            .map_err(|e| e.map_message(|m| format!("skill `{skill_id}`: {m}")))
    }
}

/// The rendered `with` (`what` names it, with its verb, in the error:
/// "`with` does") against the skill's
/// `params` (validation checked only its literal values).
fn check_params(skill_id: &str, params: &Value, with: &Value, what: &str) -> Result<(), RunError> {
    let validator = jsonschema::validator_for(params)
        .map_err(|e| RunError::Permanent(format!("skill `{skill_id}`: bad params schema: {e}")))?;
    let problems: Vec<String> = validator
        .iter_errors(with)
        .map(|e| {
            let path = e.instance_path().as_str().to_string();
            if path.is_empty() {
                e.to_string()
            } else {
                format!("{path}: {e}")
            }
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(RunError::Permanent(format!(
            "{what} not match skill `{skill_id}` params: {}",
            problems.join("; ")
        )))
    }
}
