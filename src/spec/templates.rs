//! The template language (minijinja) as validation sees it: the same
//! environment the workflow engine renders with, so what validates renders.
//!
//! Templates cannot reach env, files or secrets: the environment has no
//! loader and only the names in [`ROOTS`] exist.

use minijinja::{Environment, UndefinedBehavior};

/// Names a template may read.
pub const ROOTS: [&str; 7] = ["inputs", "steps", "item", "loop", "run", "job", "now"];

/// Functions minijinja provides that templates may call.
const BUILTIN_FUNCTIONS: [&str; 4] = ["range", "dict", "namespace", "debug"];

/// Fuel bounds the work one render may do (loops over huge ranges).
pub const FUEL: u64 = 1_000_000;

/// The environment every template is compiled and rendered with.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(64);
    env
}

/// True when a string contains template syntax.
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// What is wrong with a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateIssue {
    /// 1-based line inside the template text, when known.
    pub line: Option<usize>,
    pub message: String,
}

/// How a string is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateUse {
    /// A value: literal text with `{{ }}` parts.
    Value,
    /// A condition (`when`): a bare expression, or one `{{ expr }}`.
    Condition,
}

/// Compile `source` and check the names it reads: roots from [`ROOTS`], and
/// `steps.<id>` only for ids in `earlier_steps`.
pub fn check(
    env: &Environment<'_>,
    source: &str,
    usage: TemplateUse,
    earlier_steps: &[&str],
) -> Result<(), TemplateIssue> {
    let names = match usage {
        TemplateUse::Condition if !is_template(source) => env
            .compile_expression(source)
            .map_err(issue)?
            .undeclared_variables(true),
        _ => env
            .template_from_str(source)
            .map_err(issue)?
            .undeclared_variables(true),
    };
    let mut names: Vec<String> = names.into_iter().collect();
    names.sort();
    for name in names {
        let mut parts = name.split('.');
        let root = parts.next().unwrap_or_default();
        if BUILTIN_FUNCTIONS.contains(&root) {
            continue;
        }
        if !ROOTS.contains(&root) {
            return Err(TemplateIssue {
                line: None,
                message: format!(
                    "unknown name `{root}`: templates can read {}",
                    ROOTS.join(", ")
                ),
            });
        }
        if root == "steps"
            && let Some(step) = parts.next()
            && !earlier_steps.contains(&step)
        {
            return Err(TemplateIssue {
                line: None,
                message: if earlier_steps.is_empty() {
                    format!("`steps.{step}`: no step runs before this one")
                } else {
                    format!(
                        "`steps.{step}`: no earlier step has id `{step}` (earlier: {})",
                        earlier_steps.join(", ")
                    )
                },
            });
        }
    }
    Ok(())
}

fn issue(e: minijinja::Error) -> TemplateIssue {
    let detail = e
        .detail()
        .map(str::to_string)
        .unwrap_or_else(|| e.kind().to_string());
    TemplateIssue {
        line: e.line(),
        message: format!("template does not compile: {detail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_value(s: &str, steps: &[&str]) -> Result<(), TemplateIssue> {
        check(&environment(), s, TemplateUse::Value, steps)
    }

    #[test]
    fn valid_templates_pass() {
        check_value("Hello {{ inputs.name | upper }} #{{ loop.index }}", &[]).unwrap();
        check_value("{{ steps.fetch.output.body.items | length }}", &["fetch"]).unwrap();
        check_value("{% for x in range(3) %}{{ x }}{% endfor %}", &[]).unwrap();
        check_value("{{ run.id }}-{{ job.id }}-{{ now }}-{{ item.sku }}", &[]).unwrap();
    }

    #[test]
    fn syntax_errors_name_a_line() {
        let e = check_value("line one\n{{ inputs.x ", &[]).unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(
            e.message.starts_with("template does not compile"),
            "{}",
            e.message
        );
    }

    #[test]
    fn unknown_roots_and_later_steps_are_rejected() {
        let e = check_value("{{ env.HOME }}", &[]).unwrap_err();
        assert!(e.message.contains("unknown name `env`"), "{}", e.message);
        let e = check_value("{{ steps.later.output }}", &["first"]).unwrap_err();
        assert!(
            e.message.contains("no earlier step has id `later`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn conditions_may_be_bare_expressions() {
        let env = environment();
        check(
            &env,
            "steps.a.output.ok and inputs.n > 3",
            TemplateUse::Condition,
            &["a"],
        )
        .unwrap();
        check(&env, "{{ inputs.flag }}", TemplateUse::Condition, &[]).unwrap();
        assert!(check(&env, "inputs.n >", TemplateUse::Condition, &[]).is_err());
    }
}
