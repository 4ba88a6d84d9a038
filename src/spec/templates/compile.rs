//! Compiling and running a template with its limits.
//!
//! The steps minijinja's `render_str` takes, with three added: constant
//! expressions are checked before they are folded ([`super::constants`]),
//! the operators become checked calls ([`super::ops::patch`]), and a
//! template whose loops or macros hold long literal text gets less fuel,
//! so that repeating the text cannot write more than a render's budget
//! (literal text is written without any call to check it).

use std::collections::BTreeMap;

use minijinja::machinery::{self, Instruction, Instructions};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Value};

use super::limits::{self, Budget, INLINE_FUEL, RENDER_BUDGET_BYTES, Stop};
use super::{FUEL, constants, ops};

/// Why a render gave no result.
#[derive(Debug)]
pub enum Failure {
    /// The template failed: its error.
    Error(Error),
    /// It was stopped from outside, or moves to a render thread.
    Stopped(Stop),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Error(e)
    }
}

struct Compiled<'s> {
    instructions: Instructions<'s>,
    blocks: BTreeMap<&'s str, Instructions<'s>>,
    fuel: u64,
}

/// Checks the constant expressions of `source` (a template, or a bare
/// expression) the way rendering does, without compiling it.
pub fn check_constants(env: &Environment<'_>, source: &str, expression: bool) -> Result<(), Error> {
    let mut folded = 0;
    if expression {
        let ast = machinery::parse_expr(source)?;
        constants::check_expr(&ast, &mut folded).map(drop)
    } else {
        let ast = machinery::parse(source, "<string>", env.syntax().clone())?;
        constants::check_stmt(&ast, &mut folded)
    }
}

fn compile_template<'s>(env: &Environment<'_>, source: &'s str) -> Result<Compiled<'s>, Error> {
    let ast = machinery::parse(source, "<string>", env.syntax().clone())?;
    constants::check_stmt(&ast, &mut 0)?;
    let mut g = machinery::CodeGenerator::new("<string>", source);
    g.compile_stmt(&ast);
    let (instructions, blocks) = g.finish();
    Ok(finish(instructions, blocks))
}

fn compile_expression(source: &str) -> Result<Compiled<'_>, Error> {
    let ast = machinery::parse_expr(source)?;
    constants::check_expr(&ast, &mut 0)?;
    let mut g = machinery::CodeGenerator::new("<expression>", source);
    g.compile_expr(&ast);
    let (instructions, blocks) = g.finish();
    Ok(finish(instructions, blocks))
}

fn finish<'s>(
    mut instructions: Instructions<'s>,
    mut blocks: BTreeMap<&'s str, Instructions<'s>>,
) -> Compiled<'s> {
    let mut repeated = repeated_text(&instructions);
    ops::patch(&mut instructions);
    for block in blocks.values_mut() {
        // A block may be called from a loop: all its text may repeat.
        repeated = repeated.max(longest_text(block, |_| true));
        ops::patch(block);
    }
    let fuel = match repeated {
        0 => FUEL,
        n => FUEL.min((RENDER_BUDGET_BYTES / n) as u64),
    };
    Compiled {
        instructions,
        blocks,
        fuel,
    }
}

/// The longest literal text inside a loop body or a macro (the text a
/// template can write many times).
fn repeated_text(instructions: &Instructions<'_>) -> usize {
    let mut regions = Vec::new();
    let mut idx = 0;
    while let Some(instr) = instructions.get(idx) {
        match instr {
            Instruction::Iterate(end) => regions.push((idx, *end)),
            Instruction::BuildMacro(_, start, _) => regions.push((*start, idx)),
            _ => {}
        }
        idx += 1;
    }
    longest_text(instructions, |i| {
        regions.iter().any(|(start, end)| *start <= i && i <= *end)
    })
}

fn longest_text(instructions: &Instructions<'_>, counts: impl Fn(u32) -> bool) -> usize {
    let mut longest = 0;
    let mut idx = 0;
    while let Some(instr) = instructions.get(idx) {
        if let Instruction::EmitRaw(text) = instr
            && counts(idx)
        {
            longest = longest.max(text.len());
        }
        idx += 1;
    }
    longest
}

/// Runs `compiled` with `budget` installed: what it wrote, or the value
/// an expression left.
fn run(
    env: &Environment<'static>,
    compiled: &Compiled<'_>,
    ctx: Value,
    budget: &mut Budget,
) -> Result<(String, Option<Value>), Failure> {
    let inline = budget.is_inline();
    let fuel = if inline {
        compiled.fuel.min(INLINE_FUEL)
    } else {
        compiled.fuel
    };
    let mut env = env.clone();
    env.set_fuel(Some(fuel));
    let (result, stop) = limits::with_budget(budget, || {
        let mut text = String::new();
        let value = machinery::eval(
            &env,
            &compiled.instructions,
            ctx,
            &compiled.blocks,
            &mut machinery::make_string_output(&mut text),
            AutoEscape::None,
        )
        .map(|(value, _state)| value);
        value.map(|value| (text, value))
    });
    if let Some(stop) = stop {
        return Err(Failure::Stopped(stop));
    }
    match result {
        Err(e) if inline && e.kind() == ErrorKind::OutOfFuel && fuel < compiled.fuel => {
            Err(Failure::Stopped(Stop::Escalate))
        }
        other => other.map_err(Failure::Error),
    }
}

/// Renders the template `source` with `ctx`.
pub fn render(
    env: &Environment<'static>,
    source: &str,
    ctx: Value,
    budget: &mut Budget,
) -> Result<String, Failure> {
    let compiled = compile_template(env, source)?;
    run(env, &compiled, ctx, budget).map(|(text, _)| text)
}

/// Evaluates the bare expression `source` with `ctx`.
pub fn eval(
    env: &Environment<'static>,
    source: &str,
    ctx: Value,
    budget: &mut Budget,
) -> Result<Value, Failure> {
    let compiled = compile_expression(source)?;
    let (_, value) = run(env, &compiled, ctx, budget)?;
    Ok(value.unwrap_or(Value::UNDEFINED))
}
