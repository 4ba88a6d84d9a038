//! minijinja's filters, tests and functions as checked calls, and the
//! formatter every `{{ }}` writes through.
//!
//! Each builtin is registered again under its own name: a wrapper that
//! calls [`limits::enter`], checks what the builtin is about to make
//! (exactly, or by a bound from its arguments) before it runs, runs it,
//! and charges the result. Same names, same semantics, same results; only
//! the size of what they may make is bounded. Results that minijinja
//! leaves lazy are made whole ([`limits::listed`]) so that `[i]` on them
//! is one lookup, not a walk.

use minijinja::value::{Rest, ValueOrKwargs};
use minijinja::{AutoEscape, Environment, Error, State, Value};
use minijinja::{filters as f, functions as fun, tests as t};

use super::estimate as est;
use super::limits;

/// What a builtin is about to make, from its arguments (the filtered value
/// first, keyword arguments last): an error when over a limit.
type Estimate = fn(&Args) -> Result<(), Error>;

/// The arguments of one call.
pub(super) struct Args(pub Vec<Value>);

impl Args {
    /// The `i`th positional argument (0 is the filtered value), or the
    /// keyword argument `name`.
    pub(super) fn get(&self, i: usize, name: &str) -> Option<Value> {
        let kwargs = self.0.last().filter(|v| v.is_kwargs());
        let positional = self.0.len() - usize::from(kwargs.is_some());
        if i < positional {
            return self.0.get(i).cloned();
        }
        kwargs
            .and_then(|k| k.get_attr(name).ok())
            .filter(|v| !v.is_undefined())
    }

    pub(super) fn positional(&self) -> &[Value] {
        match self.0.last() {
            Some(last) if last.is_kwargs() => &self.0[..self.0.len() - 1],
            _ => &self.0,
        }
    }
}

/// Whether a builtin makes a new value (charged to the budget) or hands
/// out one it was given (`first`, `default`, `length`).
#[derive(Clone, Copy, PartialEq)]
enum Makes {
    New,
    Existing,
}

use Makes::{Existing, New};

macro_rules! v {
    ($f:expr) => {
        Value::from_function($f)
    };
}

fn filters() -> Vec<(&'static str, Value, Estimate, Makes)> {
    let none: Estimate = |_| Ok(());
    vec![
        ("safe", v!(f::safe), est::copy, New),
        ("escape", v!(f::escape), est::escape, New),
        ("e", v!(f::escape), est::escape, New),
        ("lower", v!(f::lower), est::case, New),
        ("upper", v!(f::upper), est::case, New),
        ("title", v!(f::title), est::case, New),
        ("capitalize", v!(f::capitalize), est::case, New),
        ("replace", v!(f::replace), est::replace, New),
        ("length", v!(f::length), none, Existing),
        ("count", v!(f::length), none, Existing),
        ("dictsort", v!(f::dictsort), est::items_of_all, New),
        ("items", v!(f::items), est::items_of_all, New),
        ("reverse", v!(f::reverse), est::copy_or_items, New),
        ("trim", v!(f::trim), est::copy, New),
        ("join", v!(f::join), est::join, New),
        ("split", v!(f::split), est::split, New),
        ("lines", v!(f::lines), est::lines, New),
        ("default", v!(f::default), none, Existing),
        ("d", v!(f::default), none, Existing),
        ("round", v!(f::round), none, Existing),
        ("abs", v!(f::abs), none, Existing),
        ("int", v!(f::int), none, Existing),
        ("float", v!(f::float), none, Existing),
        ("attr", v!(f::attr), none, Existing),
        ("first", v!(f::first), none, Existing),
        ("last", v!(f::last), none, Existing),
        ("min", v!(f::min), none, Existing),
        ("max", v!(f::max), none, Existing),
        ("sort", v!(f::sort), est::items_of_all, New),
        ("list", v!(f::list), est::copy_or_items, New),
        ("string", v!(f::string), est::copy, New),
        ("bool", v!(f::bool), none, Existing),
        ("batch", v!(f::batch), est::batch, New),
        ("slice", v!(f::slice), est::batch, New),
        ("sum", v!(f::sum), est::sum, New),
        ("indent", v!(f::indent), est::indent, New),
        ("select", v!(f::select), est::items_of_all, New),
        ("reject", v!(f::reject), est::items_of_all, New),
        ("selectattr", v!(f::selectattr), est::items_of_all, New),
        ("rejectattr", v!(f::rejectattr), est::items_of_all, New),
        ("map", v!(f::map), est::items_of_all, New),
        ("groupby", v!(f::groupby), est::items_of_all, New),
        ("unique", v!(f::unique), est::items_of_all, New),
        ("chain", v!(f::chain), est::items_of_all, New),
        ("zip", v!(f::zip), est::items_of_all, New),
        ("pprint", v!(f::pprint), est::pprint, New),
        ("format", v!(f::format), est::format, New),
        ("tojson", v!(f::tojson), est::tojson, New),
        ("urlencode", v!(f::urlencode), est::urlencode, New),
    ]
}

fn tests() -> Vec<(&'static str, Value)> {
    vec![
        ("undefined", v!(t::is_undefined)),
        ("defined", v!(t::is_defined)),
        ("none", v!(t::is_none)),
        ("safe", v!(t::is_safe)),
        ("escaped", v!(t::is_safe)),
        ("boolean", v!(t::is_boolean)),
        ("odd", v!(t::is_odd)),
        ("even", v!(t::is_even)),
        ("divisibleby", v!(t::is_divisibleby)),
        ("number", v!(t::is_number)),
        ("integer", v!(t::is_integer)),
        ("int", v!(t::is_integer)),
        ("float", v!(t::is_float)),
        ("string", v!(t::is_string)),
        ("sequence", v!(t::is_sequence)),
        ("iterable", v!(t::is_iterable)),
        ("mapping", v!(t::is_mapping)),
        ("startingwith", v!(t::is_startingwith)),
        ("endingwith", v!(t::is_endingwith)),
        ("lower", v!(t::is_lower)),
        ("upper", v!(t::is_upper)),
        ("sameas", v!(t::is_sameas)),
        ("eq", v!(t::is_eq)),
        ("equalto", v!(t::is_eq)),
        ("==", v!(t::is_eq)),
        ("ne", v!(t::is_ne)),
        ("!=", v!(t::is_ne)),
        ("lt", v!(t::is_lt)),
        ("lessthan", v!(t::is_lt)),
        ("<", v!(t::is_lt)),
        ("le", v!(t::is_le)),
        ("<=", v!(t::is_le)),
        ("gt", v!(t::is_gt)),
        ("greaterthan", v!(t::is_gt)),
        (">", v!(t::is_gt)),
        ("ge", v!(t::is_ge)),
        (">=", v!(t::is_ge)),
        ("in", v!(t::is_in)),
        ("true", v!(t::is_true)),
        ("false", v!(t::is_false)),
        ("filter", v!(t::is_filter)),
        ("test", v!(t::is_test)),
    ]
}

/// The names of every filter (for "did you mean").
pub(super) fn filter_names() -> Vec<&'static str> {
    filters().into_iter().map(|(name, ..)| name).collect()
}

/// The names of every test (for "did you mean").
pub(super) fn test_names() -> Vec<&'static str> {
    tests().into_iter().map(|(name, _)| name).collect()
}

/// Registers the checked builtins and the checked formatter.
pub(super) fn register(env: &mut Environment<'static>) {
    for (name, original, estimate, makes) in filters() {
        env.add_filter(name, move |state: &mut State, args: Rest<ValueOrKwargs>| {
            let args = Args(args.into_values());
            limits::enter(work(&args))?;
            estimate(&args)?;
            let out = original.call(state, &args.0)?;
            settle(out, makes)
        });
    }
    for (name, original) in tests() {
        env.add_test(
            name,
            move |state: &mut State, args: Rest<ValueOrKwargs>| -> Result<bool, Error> {
                let args = args.into_values();
                limits::enter(args.iter().map(limits::weight).sum())?;
                Ok(original.call(state, &args)?.is_true())
            },
        );
    }
    let functions = [
        ("range", Value::from_function(fun::range)),
        ("dict", Value::from_function(fun::dict)),
        ("namespace", Value::from_function(fun::namespace)),
        ("debug", Value::from_function(fun::debug)),
    ];
    for (name, original) in functions {
        env.add_function(name, move |state: &mut State, args: Rest<ValueOrKwargs>| {
            let args = Args(args.into_values());
            limits::enter(work(&args))?;
            let out = original.call(state, &args.0)?;
            settle(out, New)
        });
    }
    env.set_formatter(format_checked);
}

fn work(args: &Args) -> usize {
    args.0
        .iter()
        .map(limits::weight)
        .fold(1, usize::saturating_add)
}

/// A builtin's result: lazy lists made whole, new values charged.
fn settle(out: Value, makes: Makes) -> Result<Value, Error> {
    let lazy = out
        .as_object()
        .is_some_and(|o| matches!(o.repr(), minijinja::value::ObjectRepr::Iterable));
    if lazy {
        let mut items = Vec::new();
        for item in out.try_iter()? {
            if items.len() == limits::MAX_ITEMS {
                return Err(limits::too_large(format!(
                    "a list of over {} items; the limit is {} items per list",
                    limits::MAX_ITEMS,
                    limits::MAX_ITEMS
                )));
            }
            limits::enter(1)?;
            items.push(item);
        }
        limits::items(items.len())?;
        return Ok(limits::listed(items));
    }
    if makes == New {
        limits::made(&out)?;
    }
    Ok(out)
}

/// Writes one `{{ }}` value, after checking its text fits the render's
/// budget (HTML or JSON escaping can make text up to six times longer).
fn format_checked(
    out: &mut minijinja::Output<'_>,
    state: &mut State<'_, '_>,
    value: &Value,
) -> Result<(), Error> {
    limits::enter(limits::weight(value))?;
    let factor = match state.auto_escape() {
        AutoEscape::None => 1,
        _ if value.is_safe() => 1,
        _ => 6,
    };
    let room = limits::room() / factor;
    let len = limits::display_len(value, room).ok_or_else(|| {
        limits::too_large(format!(
            "the text written would be over {} MB, the budget of one render",
            limits::RENDER_BUDGET_BYTES / (1024 * 1024)
        ))
    })?;
    limits::charge(len * factor)?;
    minijinja::escape_formatter(out, state, value)
}
