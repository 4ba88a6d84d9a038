//! Hostile templates: each filter, function and operator that can make a
//! value bigger than what it was given, pushed past the limits. Each must
//! fail with "template value too large" (or run out of fuel) instead of
//! allocating what it was asked to, and the same call within the limits
//! must still give minijinja's answer.

use minijinja::Value;

use super::limits::{Budget, Control, Stop};
use super::{Failure, environment, render};

fn ctx() -> Value {
    minijinja::context! {
        inputs => minijinja::context! {
            big => 100_000_000,
            six_m => 6_000_000,
            four_m => 4_000_000,
            two_m => 2_000_000,
            million => 1_000_000,
        }
    }
}

fn run(src: &str, control: &Control, inline: bool) -> Result<String, Failure> {
    render(
        &environment(),
        src,
        ctx(),
        &mut Budget::new(control, inline),
    )
}

fn ok(src: &str) -> String {
    match run(src, &Control::default(), false) {
        Ok(out) => out,
        Err(e) => panic!("{src}: {e:?}"),
    }
}

/// The error of `src`, which must be a limit's.
#[track_caller]
fn too_large(src: &str) -> String {
    match run(src, &Control::default(), false) {
        Ok(out) => panic!("{src} rendered {} bytes", out.len()),
        Err(Failure::Error(e)) => {
            let text = format!("{e:#}");
            assert!(text.contains("template value too large"), "{src}: {text}");
            text
        }
        Err(Failure::Stopped(stop)) => panic!("{src}: stopped {stop:?}"),
    }
}

#[test]
fn the_issue_templates_fail_with_a_clear_error() {
    // Constant: refused before minijinja folds 100 MB at compile time.
    let e = too_large("{{ ('x' * 100000000)|replace('x','xx')|replace('x','xx')|length }}");
    assert!(e.contains("constant expression"), "{e}");
    too_large("{{ ([0] * 100000000)|list|length }}");
    // The same from a value the template is given.
    let e = too_large("{{ ('x' * inputs.big)|replace('x','xx')|length }}");
    assert!(
        e.contains("a string of 100000000 bytes; the limit is 16 MB"),
        "{e}"
    );
    let e = too_large("{{ ([0] * inputs.big)|list|length }}");
    assert!(e.contains("a list of 100000000 items"), "{e}");
}

#[test]
fn operators_cannot_double_a_string_past_the_limits() {
    let doubling = |op: &str| {
        format!(
            "{{% set ns = namespace(s='x' * inputs.million) %}}\
             {{% for i in range(20) %}}{{% set ns.s = ns.s {op} ns.s %}}{{% endfor %}}{{{{ ns.s|length }}}}"
        )
    };
    too_large(&doubling("~"));
    too_large(&doubling("+"));
    // Lists joined lazily copy nothing, but their length is bounded.
    too_large(
        "{% set ns = namespace(l=[0] * inputs.million) %}\
         {% for i in range(3) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l|length }}",
    );
    // `~` of a list whose text is long.
    too_large("{{ ([10 ** 18] * inputs.million) ~ '' }}");
    // Slices are charged: keeping many of them fills the render's budget.
    let e = too_large(
        "{% set l = [0] * inputs.million %}{% set ns = namespace(l=[]) %}\
         {% for i in range(20) %}{% set ns.l = ns.l + [l[i:]] %}{% endfor %}{{ ns.l|length }}",
    );
    assert!(e.contains("add up to over 64 MB"), "{e}");
}

#[test]
fn amplifying_filters_are_refused_before_they_run() {
    too_large("{{ ('x' * inputs.million)|replace('x', 'abcdefghijklmnopq')|length }}");
    too_large("{{ ('x' * inputs.million)|replace('', 'abcdefghijklmnopq')|length }}");
    too_large("{{ range(100000)|join('y' * 1000)|length }}");
    too_large("{{ (['x' * inputs.million] * 20)|join|length }}");
    too_large("{{ ('\n' * 100000)|indent(1000)|length }}");
    too_large("{{ '%100000000s'|format('x')|length }}");
    too_large("{{ '%.100000000f'|format(1.5)|length }}");
    too_large("{{ ([[1, 2, 3]] * 100000)|tojson(indent=100)|length }}");
    too_large("{{ ([10 ** 18] * inputs.million)|pprint|length }}");
    too_large("{{ ('<' * inputs.four_m)|escape|length }}");
    too_large("{{ ('<' * inputs.six_m)|urlencode|length }}");
    too_large("{{ ('\u{149}' * inputs.six_m)|upper|length }}");
    too_large("{{ [1]|batch(100000000, 0)|length }}");
    too_large("{{ [1]|slice(100000000)|length }}");
    too_large("{{ (',' * inputs.two_m)|split(',')|length }}");
    too_large("{{ ('a ' * inputs.two_m)|split|length }}");
    too_large("{{ ('\n' * inputs.two_m)|lines|length }}");
    too_large("{{ (['x' * 1000] * 100000)|sum(start='')|length }}");
    too_large("{{ ([10 ** 18] * inputs.million)|string|length }}");
}

#[test]
fn within_the_limits_the_builtins_answer_as_minijinja_does() {
    let plain = minijinja::Environment::new();
    let cases = [
        "{{ 'abc'|replace('b', 'xx') }}|{{ 'ab'|replace('', '-') }}",
        "{{ [1, 2, 3]|join(', ') }}|{{ ['a', 'b']|join(d='-') }}",
        "{{ 'a\nb'|indent(2, true) }}|{{ '%5s|%-4d|%.2f'|format('x', 7, 1.5) }}",
        "{{ {'a': [1, '<'], 'b': none}|tojson }}|{{ [1, [2]]|tojson(indent=2) }}",
        "{{ '<a href=\"x\">'|escape }}|{{ {'q': 'a b', 'n': 1}|urlencode }}",
        "{{ 'stra\u{df}e'|upper }}|{{ 'HeLLo wOrld'|title }}|{{ 'x y'|capitalize }}",
        "{{ range(7)|batch(3, 0)|list }}|{{ range(7)|slice(3)|list }}",
        "{{ 'a,b,,c'|split(',') }}|{{ ' a  b '|split }}|{{ 'a\nb'|lines }}",
        "{{ ['a', 'b']|sum(start='') }}|{{ [1, 2.5]|sum }}|{{ [[1], [2]]|sum(start=[]) }}",
        "{{ [3, 1, 2]|sort }}|{{ [1, 2, 3]|select('odd')|list }}|{{ [1, 2]|map('string')|list }}",
        "{{ ([1, 2]|chain([3]))[2] }}|{{ range(5)[-1] }}|{{ range(10, 0, -3)|list }}",
        "{{ 1 + 2 }}|{{ 1.5 + 1 }}|{{ 'a' + 'b' }}|{{ [1] + [2] }}|{{ 2 * 'ab' }}|{{ [1, 2] * 2 }}",
        "{{ (1, 2) * 2 }}|{{ 'a' ~ 1 ~ none }}|{{ 'abcdef'[1:4] }}|{{ [1, 2, 3][::-1] }}",
        "{{ 2 in [1, 2] }}|{{ 'b' in 'abc' }}|{{ 1 < 2 }}|{{ 'a' == 'a' }}|{{ [1] != [1] }}|{{ 3 >= 4 }}",
        "{{ 9223372036854775807 + 1 }}|{{ 4611686018427387904 * 4 }}|{{ 7 // 2 }}|{{ 2 ** 10 }}",
        "{% for x in range(3) if x > 0 %}{{ loop.index }}{% endfor %}|{{ ([1, 2] * 2)|length }}",
    ];
    for src in cases {
        let expected = plain.render_str(src, ()).unwrap();
        assert_eq!(ok(src), expected, "{src}");
    }
}

#[test]
fn undefined_operands_fail_as_minijinja_fails_them() {
    let mut plain = minijinja::Environment::new();
    plain.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    let control = Control::default();
    for src in [
        "{{ nope ~ 'a' }}",
        "{{ nope + 1 }}",
        "{{ nope == 1 }}",
        "{{ 1 in nope }}",
        "{{ nope[1:] }}",
    ] {
        let expected = plain.render_str(src, ()).unwrap_err();
        match run(src, &control, false) {
            Err(Failure::Error(e)) => assert_eq!(e.kind(), expected.kind(), "{src}: {e}"),
            other => panic!("{src}: {other:?}"),
        }
    }
}

#[test]
fn what_one_render_writes_is_bounded_too() {
    // A `{{ }}` value's text counts against the render's budget (here
    // mostly taken by four 15 MB strings).
    let e = too_large(
        "{% set s = 'x' * inputs.million * 15 %}{% set t = [s ~ 1, s ~ 2, s ~ 3] %}\
         {{ [10 ** 18] * 200000 }}",
    );
    assert!(e.contains("budget of one render"), "{e}");
    // Literal text repeated by loops: the template gets less fuel, so it
    // runs out before writing more than the budget.
    let raw = "r".repeat(4096);
    let src = format!(
        "{{% for i in range(100000) %}}{{% for j in range(100) %}}{raw}{{% endfor %}}{{% endfor %}}"
    );
    match run(&src, &Control::default(), false) {
        Err(Failure::Error(e)) => assert_eq!(e.kind(), minijinja::ErrorKind::OutOfFuel, "{e}"),
        other => panic!("{:?}", other.map(|s| s.len())),
    }
    // The same text once is not limited.
    assert_eq!(ok(&format!("{raw}{{{{ 1 }}}}")).len(), 4097);
}

#[test]
fn a_cancelled_render_stops_and_an_inline_one_moves_when_it_is_not_small() {
    let cancelled = Control::default();
    cancelled.cancel();
    let heavy = "{% for i in range(100) %}{{ 'x' * 100000 }}{% endfor %}";
    assert!(matches!(
        run(heavy, &cancelled, false),
        Err(Failure::Stopped(Stop::Cancelled))
    ));
    let control = Control::default();
    assert!(matches!(
        run(heavy, &control, true),
        Err(Failure::Stopped(Stop::Escalate))
    ));
    // Many instructions and no checked call: out of inline fuel, it moves.
    assert!(matches!(
        run("{% for i in range(50000) %}{% endfor %}", &control, true),
        Err(Failure::Stopped(Stop::Escalate))
    ));
    assert_eq!(
        run("{{ inputs.million }}", &control, true).unwrap(),
        "1000000"
    );
    assert_eq!(run(heavy, &control, false).unwrap().len(), 10_000_000);
}

#[test]
fn a_render_walking_a_long_string_stops_soon_after_it_is_cancelled() {
    // Each `s[i]` walks 8 million characters: minutes for the loop.
    let src = "{% set s = 'x' * inputs.million * 8 %}\
               {% for i in range(2000) %}{% set c = s[7999999] %}{% endfor %}done";
    let control = Control::default();
    let canceller = {
        let control = control.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            control.cancel();
        })
    };
    let started = std::time::Instant::now();
    let result = run(src, &control, false);
    let took = started.elapsed();
    canceller.join().unwrap();
    assert!(
        matches!(result, Err(Failure::Stopped(Stop::Cancelled))),
        "{result:?}"
    );
    assert!(
        took < std::time::Duration::from_secs(5),
        "ran on for {took:?}"
    );
}

#[test]
fn validation_refuses_constants_rendering_would_refuse() {
    let env = environment();
    let check = |s: &str| super::check(&env, s, super::TemplateUse::Value, &[], false);
    let e = check("{{ ('x' * 100000000)|length }}").unwrap_err();
    assert!(
        e.message.contains("template value too large"),
        "{}",
        e.message
    );
    let e = check("{{ ('ab' * 300000) ~ ('ab' * 300000) }}").unwrap_err();
    assert!(e.message.contains("constant expressions"), "{}", e.message);
    check("{{ '-' * 80 }} {{ inputs.x * 3 }}").unwrap();
    let e = super::check(
        &env,
        "[0] * 100000000",
        super::TemplateUse::Condition,
        &[],
        false,
    );
    assert!(e.unwrap_err().message.contains("too large"));
}
