//! The operators that make or walk values, as checked calls.
//!
//! minijinja runs `~`, `+`, `*`, slices, `x[i]`, `in` and comparisons as VM
//! instructions no filter sees, so `{% set s = s ~ s %}` could double a
//! string forever. A compiled template's instructions are rewritten
//! ([`patch`]) into calls of the functions below, registered under names
//! that are not identifiers (no template can call or shadow them). Each
//! checks the size of what it is about to make, then does what minijinja
//! does: the common cases directly, the rest by asking a plain environment
//! to evaluate the same operator.

use std::sync::OnceLock;

use minijinja::machinery::{Instruction, Instructions};
use minijinja::value::ObjectRepr;
use minijinja::{Environment, Error, Expression, UndefinedBehavior, Value};

use super::limits;

const ADD: &str = "~add";
const MUL: &str = "~mul";
const CONCAT: &str = "~concat";
const SLICE: &str = "~slice";
const GET_ITEM: &str = "~getitem";
const IN: &str = "~in";
const EQ: &str = "~eq";
const NE: &str = "~ne";
const LT: &str = "~lt";
const LTE: &str = "~lte";
const GT: &str = "~gt";
const GTE: &str = "~gte";

/// Registers the checked operators [`patch`] calls.
pub(super) fn register(env: &mut Environment<'static>) {
    env.add_function(ADD, add);
    env.add_function(MUL, mul);
    env.add_function(CONCAT, concat);
    env.add_function(SLICE, slice);
    env.add_function(GET_ITEM, get_item);
    env.add_function(IN, contains);
    env.add_function(EQ, |a: Value, b: Value| compare(Op::Eq, a, b));
    env.add_function(NE, |a: Value, b: Value| compare(Op::Ne, a, b));
    env.add_function(LT, |a: Value, b: Value| compare(Op::Lt, a, b));
    env.add_function(LTE, |a: Value, b: Value| compare(Op::Lte, a, b));
    env.add_function(GT, |a: Value, b: Value| compare(Op::Gt, a, b));
    env.add_function(GTE, |a: Value, b: Value| compare(Op::Gte, a, b));
}

/// Rewrites operator instructions into calls of the checked operators.
/// Each takes its operands off the stack and pushes one result, as the
/// instruction did, so no jump target moves.
pub(super) fn patch(instructions: &mut Instructions<'_>) {
    let mut idx = 0;
    while let Some(instr) = instructions.get_mut(idx) {
        let call = |name| Instruction::CallFunction(name, Some(2));
        let replacement = match instr {
            Instruction::Add => call(ADD),
            Instruction::Mul => call(MUL),
            Instruction::StringConcat => call(CONCAT),
            Instruction::In => call(IN),
            Instruction::Eq => call(EQ),
            Instruction::Ne => call(NE),
            Instruction::Lt => call(LT),
            Instruction::Lte => call(LTE),
            Instruction::Gt => call(GT),
            Instruction::Gte => call(GTE),
            Instruction::Slice => Instruction::CallFunction(SLICE, Some(4)),
            Instruction::GetItem => call(GET_ITEM),
            _ => {
                idx += 1;
                continue;
            }
        };
        *instr = replacement;
        idx += 1;
    }
}

#[derive(Clone, Copy)]
enum Op {
    Add,
    Mul,
    Concat,
    Slice,
    In,
    Eq,
    Ne,
    Lt,
    Lte,
    Gt,
    Gte,
}

impl Op {
    const ALL: [Op; 11] = [
        Op::Add,
        Op::Mul,
        Op::Concat,
        Op::Slice,
        Op::In,
        Op::Eq,
        Op::Ne,
        Op::Lt,
        Op::Lte,
        Op::Gt,
        Op::Gte,
    ];

    fn source(self) -> &'static str {
        match self {
            Op::Add => "a + b",
            Op::Mul => "a * b",
            Op::Concat => "a ~ b",
            Op::Slice => "a[b:c:d]",
            Op::In => "a in b",
            Op::Eq => "a == b",
            Op::Ne => "a != b",
            Op::Lt => "a < b",
            Op::Lte => "a <= b",
            Op::Gt => "a > b",
            Op::Gte => "a >= b",
        }
    }
}

/// The operators as minijinja itself evaluates them, for the cases not
/// done directly (mixed types, floats, errors), once their size is known
/// to be within the limits.
fn plain(op: Op, args: &[Value]) -> Result<Value, Error> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    static EXPRESSIONS: OnceLock<Vec<Option<Expression<'static, 'static>>>> = OnceLock::new();
    let expressions = EXPRESSIONS.get_or_init(|| {
        let env = ENV.get_or_init(|| {
            let mut env = Environment::new();
            env.set_undefined_behavior(UndefinedBehavior::Strict);
            env
        });
        Op::ALL
            .iter()
            .map(|op| env.compile_expression(op.source()).ok())
            .collect()
    });
    let Some(expression) = expressions.get(op as usize).and_then(Option::as_ref) else {
        return Err(Error::new(
            minijinja::ErrorKind::InvalidOperation,
            "operator unavailable",
        ));
    };
    let arg = |i: usize| args.get(i).cloned().unwrap_or(Value::UNDEFINED);
    let ctx = minijinja::context! { a => arg(0), b => arg(1), c => arg(2), d => arg(3) };
    // The error is the operator's, not the helper expression's: the
    // render names the template's own line.
    expression
        .eval(ctx)
        .map_err(|e| Error::new(e.kind(), e.detail().unwrap_or_default().to_string()))
}

fn int(v: &Value) -> Option<i64> {
    if v.is_integer() { v.as_i64() } else { None }
}

fn is_list(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|o| matches!(o.repr(), ObjectRepr::Seq | ObjectRepr::Iterable))
}

fn add(a: Value, b: Value) -> Result<Value, Error> {
    limits::enter(1)?;
    if let (Some(x), Some(y)) = (int(&a), int(&b))
        && let Some(sum) = x.checked_add(y)
    {
        return Ok(Value::from(sum));
    }
    if let (Some(x), Some(y)) = (a.as_str(), b.as_str()) {
        limits::string(x.len().saturating_add(y.len()))?;
        return Ok(Value::from([x, y].concat()));
    }
    if is_list(&a) && is_list(&b) {
        // minijinja joins lists lazily: nothing is copied, but the
        // result is one list.
        let n = a.len().unwrap_or(0).saturating_add(b.len().unwrap_or(0));
        limits::count(n)?;
    }
    plain(Op::Add, &[a, b])
}

fn mul(a: Value, b: Value) -> Result<Value, Error> {
    limits::enter(1)?;
    if let (Some(x), Some(y)) = (int(&a), int(&b))
        && let Some(product) = x.checked_mul(y)
    {
        return Ok(Value::from(product));
    }
    let (repeated, times) = if b.as_usize().is_some() {
        (&a, b.as_usize())
    } else {
        (&b, a.as_usize())
    };
    if let (Some(s), Some(n)) = (repeated.as_str(), times) {
        limits::string(s.len().saturating_mul(n))?;
    } else if let (true, Some(n)) = (is_list(repeated), times) {
        // A repeated list is made whole: minijinja's lazy repeat walks
        // the list again for every `[i]`.
        let total = repeated.len().unwrap_or(0).saturating_mul(n);
        limits::items(total)?;
        let out = plain(Op::Mul, &[a, b])?;
        let lazy = out
            .as_object()
            .is_some_and(|o| matches!(o.repr(), ObjectRepr::Iterable));
        if !lazy {
            return Ok(out);
        }
        return Ok(limits::listed(out.try_iter()?.collect()));
    }
    plain(Op::Mul, &[a, b])
}

fn concat(a: Value, b: Value) -> Result<Value, Error> {
    if a.is_undefined() || b.is_undefined() {
        return plain(Op::Concat, &[a, b]);
    }
    limits::enter(limits::weight(&a).saturating_add(limits::weight(&b)))?;
    let over = || {
        let mb = limits::MAX_STRING_BYTES / (1024 * 1024);
        limits::too_large(format!(
            "`~` would make a string of over {mb} MB; the limit is {mb} MB per string"
        ))
    };
    let left = limits::display_bounded(&a, limits::MAX_STRING_BYTES).ok_or_else(over)?;
    let rest = limits::MAX_STRING_BYTES - left.len();
    let right = limits::display_bounded(&b, rest).ok_or_else(over)?;
    limits::string(left.len() + right.len())?;
    Ok(Value::from(left + &right))
}

fn slice(value: Value, start: Value, stop: Value, step: Value) -> Result<Value, Error> {
    limits::enter(limits::weight(&value))?;
    let out = plain(Op::Slice, &[value, start, stop, step])?;
    limits::made(&out)?;
    Ok(out)
}

/// `x[i]`: one lookup in a list or map, but a walk along a string (by
/// character) or a lazily joined list, which is work like any other.
fn get_item(container: Value, key: Value) -> Result<Value, Error> {
    limits::enter(limits::lookup_work(&container))?;
    // Strict undefined: `x[i]` of an undefined `x` fails, a missing item
    // is undefined (its use then fails).
    container.get_item(&key)
}

fn contains(item: Value, container: Value) -> Result<Value, Error> {
    limits::enter(limits::weight(&container))?;
    plain(Op::In, &[item, container])
}

fn compare(op: Op, a: Value, b: Value) -> Result<Value, Error> {
    if a.is_undefined() || b.is_undefined() {
        // Strict undefined: minijinja's own error.
        return plain(op, &[a, b]);
    }
    limits::enter(limits::weight(&a).min(limits::weight(&b)))?;
    Ok(Value::from(match op {
        Op::Eq => a == b,
        Op::Ne => a != b,
        Op::Lt => a < b,
        Op::Lte => a <= b,
        Op::Gt => a > b,
        _ => a >= b,
    }))
}
