//! The template language (minijinja) as validation sees it: the same
//! environment the workflow engine renders with, so what validates renders.
//!
//! Templates cannot reach env, files or secrets: the environment has no
//! loader and only the names in [`ROOTS`] exist.
//!
//! Nor can they exhaust memory or time: fuel bounds the instructions a
//! render runs, and every filter, function, test and operator that makes or
//! walks a value is a checked call ([`limits`]) that bounds what it makes
//! and stops a render that was cancelled. Render through [`compile`]: it
//! is where the operators become checked calls.
//!
//! Part of `spec` and pure like it: it uses minijinja and nothing of the
//! crate above `spec`; the workflow engine renders with [`environment`].

mod compile;
mod constants;
mod estimate;
mod filters;
#[cfg(test)]
mod hostile;
pub mod limits;
mod ops;

use std::sync::OnceLock;

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, UndefinedBehavior};

pub use compile::{Failure, eval, render};
pub use limits::{Budget, Control, Stop};

/// Names a template may read.
pub const ROOTS: [&str; 7] = ["inputs", "steps", "item", "loop", "run", "job", "now"];

/// Names an inbound trigger's `inputs` templates may read: the request
/// (`payload`, `headers` with lower-cased names, `source`) and `now`.
pub const INBOUND_ROOTS: [&str; 4] = ["payload", "headers", "source", "now"];

/// Functions minijinja provides that templates may call.
const BUILTIN_FUNCTIONS: [&str; 4] = ["range", "dict", "namespace", "debug"];

/// Fuel bounds the work one render may do (loops over huge ranges).
pub const FUEL: u64 = 1_000_000;

/// The environment every template is compiled and rendered with (built
/// once; a clone shares it).
///
/// It keeps a template's trailing newline: minijinja drops one by default
/// (Jinja's habit for template files), and a step's `content`, message
/// text or body is sent as written.
pub fn environment() -> Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_syntax(keep_trailing_newline());
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(64);
        filters::register(&mut env);
        ops::register(&mut env);
        env
    })
    .clone()
}

/// The default syntax, keeping the trailing newline.
fn keep_trailing_newline() -> SyntaxConfig {
    // Only custom delimiters can fail to build; on the defaults the
    // fallback is never taken, and would only bring back the old habit.
    SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
        .unwrap_or_default()
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

/// Step ids a message lists: a list of thousands, in one finding per
/// step, made the output grow with the square of the steps.
const NAMED_STEPS: usize = 8;

/// `a, b, c`, or the first [`NAMED_STEPS`] and how many in all.
fn name_some(ids: &[&str]) -> String {
    if ids.len() <= NAMED_STEPS {
        return ids.join(", ");
    }
    format!(
        "{}, … ({} in all)",
        ids[..NAMED_STEPS].join(", "),
        ids.len()
    )
}

/// Compile `source` and check the names it reads: roots from [`ROOTS`],
/// `steps.<id>` only for ids in `earlier_steps`, `item` and `loop` only
/// `in_foreach` (a `foreach` step's body), and filters and tests the
/// environment has (minijinja looks those up only when rendering).
pub fn check(
    env: &Environment<'_>,
    source: &str,
    usage: TemplateUse,
    earlier_steps: &[&str],
    in_foreach: bool,
) -> Result<(), TemplateIssue> {
    let expression = usage == TemplateUse::Condition && !is_template(source);
    for name in read_names(env, source, usage)? {
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
        if (root == "item" || root == "loop") && !in_foreach {
            return Err(TemplateIssue {
                line: None,
                message: format!(
                    "`{root}` exists only in the body of a step with `foreach` (not in its `when` or `foreach`)"
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
                        name_some(earlier_steps)
                    )
                },
            });
        }
    }
    check_filters_and_tests(env, source, expression)
}

/// Compile `source` as a value that may read only `roots` (and call the
/// built-in functions): an inbound trigger's `inputs`, which see the
/// request and nothing of the run or the host. `why` ends the message
/// about a name outside `roots`.
pub fn check_reads(
    env: &Environment<'_>,
    source: &str,
    roots: &[&str],
    why: &str,
) -> Result<(), TemplateIssue> {
    for name in read_names(env, source, TemplateUse::Value)? {
        let root = name.split('.').next().unwrap_or_default();
        if BUILTIN_FUNCTIONS.contains(&root) || roots.contains(&root) {
            continue;
        }
        return Err(TemplateIssue {
            line: None,
            message: format!(
                "`{root}` cannot be read here: these templates read only {}; {why}",
                roots.join(", ")
            ),
        });
    }
    check_filters_and_tests(env, source, false)
}

/// The names `source` reads that it does not define, sorted, once it
/// compiles (its constants checked first: compiling folds them).
fn read_names(
    env: &Environment<'_>,
    source: &str,
    usage: TemplateUse,
) -> Result<Vec<String>, TemplateIssue> {
    let expression = usage == TemplateUse::Condition && !is_template(source);
    compile::check_constants(env, source, expression).map_err(issue)?;
    let names = if expression {
        env.compile_expression(source)
            .map_err(issue)?
            .undeclared_variables(true)
    } else {
        env.template_from_str(source)
            .map_err(issue)?
            .undeclared_variables(true)
    };
    let mut names: Vec<String> = names.into_iter().collect();
    names.sort();
    Ok(names)
}

/// Filters and tests are looked up only when rendering: probe each one
/// `source` applies, so an unknown one fails validation, not a run.
fn check_filters_and_tests(
    env: &Environment<'_>,
    source: &str,
    expression: bool,
) -> Result<(), TemplateIssue> {
    for (kind, name) in filters_and_tests(source, expression) {
        let (probe, unknown) = match kind {
            Applied::Filter => (
                format!("{{{{ none | {name} }}}}"),
                minijinja::ErrorKind::UnknownFilter,
            ),
            Applied::Test => (
                format!("{{{{ none is {name} }}}}"),
                minijinja::ErrorKind::UnknownTest,
            ),
        };
        if let Err(e) = env.render_str(&probe, ())
            && e.kind() == unknown
        {
            let (what, known) = if kind == Applied::Filter {
                ("filter", filters::filter_names())
            } else {
                ("test", filters::test_names())
            };
            return Err(TemplateIssue {
                line: None,
                message: format!(
                    "unknown {what} `{name}`{}",
                    crate::spec::suggest::hint(&name, known)
                ),
            });
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    Filter,
    Test,
}

/// The filters (`| name`) and tests (`is [not] name`) a template applies,
/// found by scanning its `{{ }}` and `{% %}` parts (all of it when
/// `expression`), skipping string literals.
fn filters_and_tests(source: &str, expression: bool) -> Vec<(Applied, String)> {
    let b = source.as_bytes();
    let ident = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        (&source[start..i], i)
    };
    let mut out = Vec::new();
    let mut inside = expression;
    let mut i = 0;
    while i < b.len() {
        if !expression && !inside {
            if b[i] == b'{' && matches!(b.get(i + 1), Some(b'{' | b'%')) {
                inside = true;
                i += 2;
            } else {
                i += 1;
            }
            continue;
        }
        match b[i] {
            b'}' | b'%' if !expression && b.get(i + 1) == Some(&b'}') => {
                inside = false;
                i += 2;
            }
            q @ (b'"' | b'\'') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'|' => {
                let (name, next) = ident(i + 1);
                if !name.is_empty() {
                    out.push((Applied::Filter, name.to_string()));
                }
                i = next.max(i + 1);
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let (word, next) = ident(i);
                if word == "is" {
                    let (mut name, mut after) = ident(next);
                    if name == "not" {
                        (name, after) = ident(after);
                    }
                    if !name.is_empty() {
                        out.push((Applied::Test, name.to_string()));
                    }
                    i = after;
                } else {
                    i = next;
                }
            }
            _ => i += 1,
        }
    }
    out
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
        check(&environment(), s, TemplateUse::Value, steps, true)
    }

    #[test]
    fn item_and_loop_exist_only_in_a_foreach_body() {
        let env = environment();
        let outside = check(&env, "{{ item.sku }}", TemplateUse::Value, &[], false);
        assert!(outside.unwrap_err().message.contains("foreach"));
        let when = check(&env, "loop.index > 1", TemplateUse::Condition, &[], false);
        assert!(when.is_err());
        check(&env, "{{ inputs.x }}", TemplateUse::Value, &[], false).unwrap();
    }

    #[test]
    fn unknown_filters_and_tests_are_caught_before_a_run_is() {
        let e = check_value("{{ 1 | nosuchfilter }}", &[]).unwrap_err();
        assert_eq!(e.message, "unknown filter `nosuchfilter`");
        let e = check_value("{% if inputs.x is not nosuchtest %}y{% endif %}", &[]).unwrap_err();
        assert_eq!(e.message, "unknown test `nosuchtest`");
        let e = check(
            &environment(),
            "inputs.x | nope",
            TemplateUse::Condition,
            &[],
            false,
        );
        assert_eq!(e.unwrap_err().message, "unknown filter `nope`");
        let e = check_value("{{ 1 | uper }}", &[]);
        assert_eq!(
            e.unwrap_err().message,
            "unknown filter `uper` (did you mean `upper`?)"
        );
        // Known ones, arguments, chains, and pipes inside strings are fine.
        check_value(
            "{{ inputs.a | default('x|y') | upper }} {{ inputs.n is number }} {{ 'a | b' }} {{ inputs.l | join(\", \") | length }}",
            &[],
        )
        .unwrap();
        check_value("{% if inputs.x is not none %}{{ inputs.x | tojson }}{% endif %} this is text | not a filter", &[]).unwrap();
    }

    #[test]
    fn the_environment_keeps_a_trailing_newline() {
        let env = environment();
        assert!(env.syntax().keep_trailing_newline());
        let mut budget = Budget::new(&Control::default(), false);
        let text = render(
            &env,
            "{{ 1 }} {{ 2 }}\n\n",
            minijinja::Value::UNDEFINED,
            &mut budget,
        );
        assert_eq!(text.ok().as_deref(), Some("1 2\n\n"));
        // Validation sees the same template.
        check_value("{{ inputs.x }}\n", &[]).unwrap();
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
    fn a_missing_step_names_a_few_earlier_ones_not_all() {
        let ids: Vec<String> = (0..5000).map(|i| format!("s{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let e = check_value("{{ steps.zz.output }}", &ids).unwrap_err();
        assert_eq!(
            e.message,
            "`steps.zz`: no earlier step has id `zz` (earlier: s0, s1, s2, s3, s4, s5, s6, s7, … (5000 in all))"
        );
        let e = check_value("{{ steps.zz.output }}", &ids[..2]).unwrap_err();
        assert!(e.message.ends_with("(earlier: s0, s1)"), "{}", e.message);
    }

    #[test]
    fn conditions_may_be_bare_expressions() {
        let env = environment();
        check(
            &env,
            "steps.a.output.ok and inputs.n > 3",
            TemplateUse::Condition,
            &["a"],
            false,
        )
        .unwrap();
        check(
            &env,
            "{{ inputs.flag }}",
            TemplateUse::Condition,
            &[],
            false,
        )
        .unwrap();
        assert!(check(&env, "inputs.n >", TemplateUse::Condition, &[], false).is_err());
    }
}
