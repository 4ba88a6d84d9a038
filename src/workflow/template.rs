//! PURE. Rendering step values: a JSON value whose strings are minijinja
//! templates over the step context (SPEC section 5).
//!
//! A string that is exactly one `{{ expr }}` keeps the expression's type, so
//! `foreach: "{{ steps.list.output }}"` yields a list, not its text; when
//! the value is a string, the whitespace written around the `{{ }}` is
//! kept, as text rendering keeps it. Every other string with template
//! syntax renders to a string, trailing newline included.
//!
//! Each call renders with a [`Budget`]: what the templates of one step value
//! make is bounded together, and the render stops when its [`Control`] is
//! cancelled (see [`crate::spec::templates::limits`]). Where it runs, and
//! until when, is [`super::render`]'s business.

use minijinja::Environment;
use serde_json::Value;

use crate::spec::templates::{self, Budget, Failure, Stop, is_template};

pub use crate::spec::templates::limits::MAX_OUTPUT_BYTES;

/// A template that failed, with its text so the step's error shows it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template `{template}`: {message}")]
pub struct TemplateError {
    pub template: String,
    pub message: String,
}

impl TemplateError {
    pub(crate) fn new(template: &str, message: impl Into<String>) -> Self {
        TemplateError {
            template: template.to_string(),
            message: message.into(),
        }
    }

    fn from_minijinja(template: &str, e: &minijinja::Error) -> Self {
        let message = match e.detail() {
            Some(detail) => format!("{}: {detail}", e.kind()),
            None => e.kind().to_string(),
        };
        TemplateError::new(template, message)
    }
}

/// Why a step value did not render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    Template(TemplateError),
    /// Stopped from outside, or (inline) it moves to a render thread.
    Stopped(Stop),
}

impl From<TemplateError> for RenderError {
    fn from(e: TemplateError) -> Self {
        RenderError::Template(e)
    }
}

fn failed(template: &str, f: Failure) -> RenderError {
    match f {
        Failure::Error(e) => RenderError::Template(TemplateError::from_minijinja(template, &e)),
        Failure::Stopped(stop) => RenderError::Stopped(stop),
    }
}

/// A serializable value as templates see it.
pub fn to_template_value<T: serde::Serialize>(value: T) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(value))
}

/// Renders every string in `value`; objects and arrays recursively, other
/// values unchanged.
pub fn render_value(
    env: &Environment<'static>,
    value: &Value,
    ctx: &minijinja::Value,
    budget: &mut Budget,
) -> Result<Value, RenderError> {
    match value {
        Value::String(s) => render_string(env, s, ctx, budget),
        Value::Array(items) => items
            .iter()
            .map(|v| render_value(env, v, ctx, budget))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Value::Object(map) => {
            let mut out = serde_json::Map::with_capacity(map.len());
            for (k, v) in map {
                out.insert(k.clone(), render_value(env, v, ctx, budget)?);
            }
            Ok(Value::Object(out))
        }
        other => Ok(other.clone()),
    }
}

fn render_string(
    env: &Environment<'static>,
    s: &str,
    ctx: &minijinja::Value,
    budget: &mut Budget,
) -> Result<Value, RenderError> {
    if !is_template(s) {
        return Ok(Value::String(s.to_string()));
    }
    if let Some(expr) = single_expression(s) {
        let value = eval_expression(env, s, expr, ctx, budget)?;
        let (before, after) = kept_around(s);
        return match value.as_str() {
            Some(text) if !(before.is_empty() && after.is_empty()) => {
                sized(s, format!("{before}{text}{after}"))
            }
            _ => Ok(to_json(s, &value)?),
        };
    }
    let text = templates::render(env, s, ctx.clone(), budget).map_err(|f| failed(s, f))?;
    sized(s, text)
}

fn sized(template: &str, text: String) -> Result<Value, RenderError> {
    if text.len() > MAX_OUTPUT_BYTES {
        return Err(too_large(template, Some(text.len())).into());
    }
    Ok(Value::String(text))
}

/// The whitespace around the one `{{ expr }}` of `s` that rendering `s`
/// as text keeps: all of it, except on a side with a `-` mark. A string
/// value gets it back, so `"{{ x }}\n"` ends in a newline as written.
fn kept_around(s: &str) -> (&str, &str) {
    let start = s.trim_start();
    let end = s.trim_end();
    let before = &s[..s.len() - start.len()];
    let after = &s[end.len()..];
    (
        if start.starts_with("{{-") { "" } else { before },
        if end.ends_with("-}}") { "" } else { after },
    )
}

/// Evaluates a `when`: a bool, a bare expression, or one `{{ expr }}`;
/// anything else is true or false by minijinja's rules.
pub fn eval_condition(
    env: &Environment<'static>,
    when: &Value,
    ctx: &minijinja::Value,
    budget: &mut Budget,
) -> Result<bool, RenderError> {
    match when {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => {
            let expr = match single_expression(s) {
                Some(expr) => expr,
                None if is_template(s) => {
                    return Err(TemplateError::new(
                        s,
                        "a condition is a bare expression or one {{ expr }}",
                    )
                    .into());
                }
                None => s.as_str(),
            };
            Ok(eval_expression(env, s, expr, ctx, budget)?.is_true())
        }
        other => Ok(to_template_value(other).is_true()),
    }
}

/// The expression inside `s` when `s` is exactly one `{{ expr }}`
/// (whitespace and whitespace-control marks allowed).
fn single_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") || inner.contains("{#")
    {
        return None;
    }
    let inner = inner.strip_prefix(['-', '+']).unwrap_or(inner);
    let inner = inner.strip_suffix(['-', '+']).unwrap_or(inner);
    let inner = inner.trim();
    (!inner.is_empty()).then_some(inner)
}

fn eval_expression(
    env: &Environment<'static>,
    template: &str,
    expr: &str,
    ctx: &minijinja::Value,
    budget: &mut Budget,
) -> Result<minijinja::Value, RenderError> {
    let value = templates::eval(env, expr, ctx.clone(), budget).map_err(|f| failed(template, f))?;
    // Strict mode fails on most uses of an undefined value, but a bare
    // lookup evaluates to it: report it the same way.
    if value.is_undefined() {
        return Err(TemplateError::new(template, "undefined value").into());
    }
    Ok(value)
}

/// The JSON form of an expression's value, measured before it is made: a
/// value can be far larger as JSON than in memory (one long string
/// repeated in a list).
fn to_json(template: &str, value: &minijinja::Value) -> Result<Value, TemplateError> {
    let data_error = |e: serde_json::Error| {
        TemplateError::new(template, format!("the value cannot be used as data: {e}"))
    };
    let mut sink = Measure(0);
    if let Err(e) = serde_json::to_writer(&mut sink, value) {
        if sink.0 > MAX_OUTPUT_BYTES {
            return Err(too_large(template, None));
        }
        return Err(data_error(e));
    }
    serde_json::to_value(value).map_err(data_error)
}

/// Counts what is written; fails past [`MAX_OUTPUT_BYTES`].
struct Measure(usize);

impl std::io::Write for Measure {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        if self.0 > MAX_OUTPUT_BYTES {
            return Err(std::io::Error::other("over the limit"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn too_large(template: &str, len: Option<usize>) -> TemplateError {
    let message = match len {
        Some(len) => format!("renders {len} bytes, over the {MAX_OUTPUT_BYTES}-byte limit"),
        None => format!("renders more than the {MAX_OUTPUT_BYTES}-byte limit"),
    };
    TemplateError::new(template, message)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::spec::templates::environment;

    fn ctx() -> minijinja::Value {
        to_template_value(json!({
            "inputs": {"n": 3, "name": "ada", "flag": false, "items": [1, 2]},
        }))
    }

    fn render(v: Value) -> Result<Value, TemplateError> {
        let mut budget = Budget::new(&Default::default(), false);
        render_value(&environment(), &v, &ctx(), &mut budget).map_err(|e| match e {
            RenderError::Template(e) => e,
            RenderError::Stopped(stop) => panic!("stopped: {stop:?}"),
        })
    }

    #[test]
    fn a_single_expression_keeps_its_type() {
        assert_eq!(render(json!("{{ 3 }}")).unwrap(), json!(3));
        assert_eq!(render(json!("  {{ [1,2] }} ")).unwrap(), json!([1, 2]));
        assert_eq!(render(json!("{{ inputs.items }}")).unwrap(), json!([1, 2]));
        assert_eq!(render(json!("{{- inputs.flag -}}")).unwrap(), json!(false));
        assert_eq!(render(json!("{{ none }}")).unwrap(), json!(null));
        assert_eq!(
            render(json!("{{ {'a': inputs.n} }}")).unwrap(),
            json!({"a": 3})
        );
    }

    #[test]
    fn other_templates_render_to_strings() {
        assert_eq!(render(json!("n={{ 3 }}")).unwrap(), json!("n=3"));
        assert_eq!(
            render(json!("{{ inputs.name }}{{ inputs.n }}")).unwrap(),
            json!("ada3")
        );
        assert_eq!(
            render(json!({"a": ["x {{ inputs.n + 1 }}", 5, true, null], "b": "plain"})).unwrap(),
            json!({"a": ["x 4", 5, true, null], "b": "plain"})
        );
    }

    /// Regression (#21): minijinja drops one trailing newline by default,
    /// so `content: "{{ run.id }} {{ now }}\n"` was written without it.
    #[test]
    fn trailing_newlines_are_kept_as_written() {
        let cases = [
            ("{{ inputs.name }} {{ inputs.n }}\n", "ada 3\n"),
            ("{{ inputs.name }} {{ inputs.n }}\n\n", "ada 3\n\n"),
            ("{{ inputs.name }} {{ inputs.n }}\r\n", "ada 3\r\n"),
            ("{% if inputs.n %}yes{% endif %}\n", "yes\n"),
            ("n={{ inputs.n }}", "n=3"),
            // One `{{ expr }}` with a string value keeps what surrounds it,
            // as text rendering does; a `-` mark trims that side.
            ("{{ inputs.name }}\n", "ada\n"),
            ("{{ inputs.name }}\n\n", "ada\n\n"),
            ("  {{ inputs.name }} \n", "  ada \n"),
            ("{{ inputs.name -}}\n", "ada"),
            ("\n{{- inputs.name }}\n", "ada\n"),
        ];
        for (template, want) in cases {
            assert_eq!(
                render(json!(template)).unwrap(),
                json!(want),
                "{template:?}"
            );
        }
        // Other values keep their type, newline or not.
        assert_eq!(
            render(json!("{{ inputs.items }}\n")).unwrap(),
            json!([1, 2])
        );
        assert_eq!(render(json!("{{ inputs.n }}\n")).unwrap(), json!(3));
    }

    #[test]
    fn the_kept_newline_counts_toward_the_output_limit() {
        let over = format!("renders {} bytes", MAX_OUTPUT_BYTES + 1);
        // Text: exactly the limit, then one newline more.
        let text = format!("n{{{{ 'x' * {} }}}}", MAX_OUTPUT_BYTES - 1);
        assert_eq!(
            render(json!(text)).unwrap().as_str().map(str::len),
            Some(MAX_OUTPUT_BYTES)
        );
        let e = render(json!(format!("{text}\n"))).unwrap_err();
        assert!(e.message.contains(&over), "{e}");
        // One expression whose string value fills the limit, and a newline.
        let one = format!("{{{{ 'x' * {MAX_OUTPUT_BYTES} }}}}\n");
        let e = render(json!(one)).unwrap_err();
        assert!(e.message.contains(&over), "{e}");
    }

    #[test]
    fn undefined_names_are_errors_naming_the_template() {
        for t in ["{{ inputs.missing }}", "x {{ nope.y }}", "{{ nope }}"] {
            let e = render(json!(t)).unwrap_err();
            assert_eq!(e.template, t);
            assert!(e.to_string().contains(t), "{e}");
        }
    }

    #[test]
    fn fuel_stops_runaway_loops() {
        let e = render(json!("{% for i in range(100000000) %}{{ i }}{% endfor %}")).unwrap_err();
        assert!(!e.message.is_empty());
        // Within range()'s own limit, fuel is what stops it.
        let e = render(json!(
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
        ))
        .unwrap_err();
        assert!(e.message.contains("fuel"), "{e}");
    }

    #[test]
    fn output_over_the_limit_is_an_error() {
        let e = render(json!(
            "{% for i in range(3000) %}{{ 'x' * 1000 }}{% endfor %}"
        ))
        .unwrap_err();
        assert!(e.message.contains("byte limit"), "{e}");
    }

    #[test]
    fn conditions() {
        let env = environment();
        let c = |v: Value| {
            let mut budget = Budget::new(&Default::default(), false);
            eval_condition(&env, &v, &ctx(), &mut budget)
        };
        assert!(c(json!(true)).unwrap());
        assert!(!c(json!(false)).unwrap());
        assert!(c(json!("inputs.n > 2")).unwrap());
        assert!(!c(json!("{{ inputs.n > 5 }}")).unwrap());
        assert!(!c(json!("inputs.flag")).unwrap());
        assert!(c(json!("inputs.items")).unwrap());
        assert!(!c(json!("inputs.items | length == 0")).unwrap());
        assert!(c(json!("inputs.missing")).is_err());
        assert!(c(json!("x {{ inputs.n }}")).is_err());
        assert!(!c(json!(0)).unwrap());
        assert!(!c(json!(null)).unwrap());
    }
}
