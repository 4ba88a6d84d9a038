//! What a builtin filter is about to make, from its arguments, checked
//! before it runs: exactly where that is cheap (`replace` counts the
//! matches, `split` the pieces, `tojson` walks the value), otherwise by a
//! bound that is never below what the filter makes (`escape` makes at most
//! six bytes of each one).

use minijinja::value::{ObjectRepr, ValueKind};
use minijinja::{Error, Value};

use super::filters::Args;
use super::limits::{self, MAX_ITEMS, MAX_STRING_BYTES};

/// Copying stops (and the filter is refused) after this much work for a
/// `sum` of strings or lists, which copies the total once per item.
const MAX_SUM_COPY_BYTES: u128 = 1 << 30;

fn arg(a: &Args, i: usize, name: &str) -> Value {
    a.get(i, name).unwrap_or(Value::UNDEFINED)
}

fn over(what: &str, len: usize) -> Error {
    limits::too_large(format!(
        "{what} would make a string of over {len} bytes; the limit is {} MB per string",
        MAX_STRING_BYTES / (1024 * 1024)
    ))
}

/// The text of a value (what a filter taking a string sees), bounded.
fn text(v: &Value, what: &str) -> Result<String, Error> {
    match v.as_str() {
        Some(s) => Ok(s.to_string()),
        None => {
            limits::display_bounded(v, MAX_STRING_BYTES).ok_or_else(|| over(what, MAX_STRING_BYTES))
        }
    }
}

fn text_len(v: &Value, what: &str) -> Result<usize, Error> {
    limits::display_len(v, MAX_STRING_BYTES).ok_or_else(|| over(what, MAX_STRING_BYTES))
}

/// The number of items iterating `v` gives (a string's characters),
/// counted up to just over the limit when `v` does not know it.
fn len_of(v: &Value) -> usize {
    if let Some(n) = v.len() {
        return n;
    }
    match v.try_iter() {
        Ok(iter) => iter.take(MAX_ITEMS + 1).count(),
        Err(_) => 0,
    }
}

fn string(what: &str, len: usize) -> Result<(), Error> {
    if len > MAX_STRING_BYTES {
        return Err(over(what, len));
    }
    limits::room_for(len)
}

fn items(n: usize) -> Result<(), Error> {
    limits::count(n)?;
    limits::room_for(n.saturating_mul(limits::ITEM_BYTES))
}

pub(super) fn copy(a: &Args) -> Result<(), Error> {
    string("the filter", text_len(&arg(a, 0, ""), "the filter")?)
}

pub(super) fn copy_or_items(a: &Args) -> Result<(), Error> {
    let v = arg(a, 0, "");
    match v.as_str() {
        Some(s) => string("the filter", s.len()),
        None => items(len_of(&v)),
    }
}

/// `items`, `sort`, `map`, `chain` ...: as many items as they are given.
pub(super) fn items_of_all(a: &Args) -> Result<(), Error> {
    let n = a
        .positional()
        .iter()
        .filter(|v| v.kind() != ValueKind::String || a.positional().len() == 1)
        .map(len_of)
        .fold(0, usize::saturating_add);
    items(n)
}

pub(super) fn escape(a: &Args) -> Result<(), Error> {
    let v = arg(a, 0, "");
    let s = text(&v, "escape")?;
    if v.is_safe() {
        return string("escape", s.len());
    }
    let special = s.bytes().filter(|b| b"<>&\"'/".contains(b)).count();
    string("escape", s.len() + special * 5)
}

/// `upper`, `lower`, `title`, `capitalize`: ASCII keeps its length; any
/// other character becomes at most three times as many bytes (`ΐ` is
/// two bytes, its upper case six).
pub(super) fn case(a: &Args) -> Result<(), Error> {
    let s = text(&arg(a, 0, ""), "the filter")?;
    let ascii = s.bytes().filter(u8::is_ascii).count();
    string("the filter", ascii + 3 * (s.len() - ascii))
}

pub(super) fn replace(a: &Args) -> Result<(), Error> {
    let s = text(&arg(a, 0, ""), "replace")?;
    let from = text(&arg(a, 1, "old"), "replace")?;
    let to = text(&arg(a, 2, "new"), "replace")?;
    let count = if from.is_empty() {
        s.chars().count() + 1
    } else {
        s.matches(from.as_str()).count()
    };
    let len = (s.len() - count * from.len()).saturating_add(count.saturating_mul(to.len()));
    string("replace", len)
}

pub(super) fn join(a: &Args) -> Result<(), Error> {
    let v = arg(a, 0, "");
    let joiner = match a.get(1, "d") {
        Some(j) if !j.is_none() => text(&j, "join")?.len(),
        _ => 0,
    };
    let mut total = 0usize;
    for (i, item) in v.try_iter()?.enumerate() {
        limits::enter(1)?;
        let room = MAX_STRING_BYTES.saturating_sub(total);
        let len = limits::display_len(&item, room).ok_or_else(|| over("join", total + room))?;
        total = total
            .saturating_add(len)
            .saturating_add(if i > 0 { joiner } else { 0 });
        if total > MAX_STRING_BYTES {
            return Err(over("join", total));
        }
    }
    string("join", total)
}

pub(super) fn split(a: &Args) -> Result<(), Error> {
    let s = text(&arg(a, 0, ""), "split")?;
    let pieces = match a.get(1, "split").filter(|v| !v.is_none()) {
        None => s.split_whitespace().count(),
        Some(sep) => {
            let sep = text(&sep, "split")?;
            if sep.is_empty() {
                s.chars().count() + 2
            } else {
                s.matches(sep.as_str()).count() + 1
            }
        }
    };
    let pieces = match a.get(2, "maxsplits").and_then(|m| m.as_usize()) {
        Some(m) => pieces.min(m.saturating_add(1)),
        None => pieces,
    };
    items(pieces)?;
    string("split", s.len())
}

pub(super) fn lines(a: &Args) -> Result<(), Error> {
    let s = text(&arg(a, 0, ""), "lines")?;
    items(s.lines().count())?;
    string("lines", s.len())
}

/// `batch` and `slice`: the items, plus up to `count` fill values, in up
/// to `count` lists.
pub(super) fn batch(a: &Args) -> Result<(), Error> {
    let count = arg(a, 1, "count").as_usize().unwrap_or(0);
    limits::count(count)?;
    items(len_of(&arg(a, 0, "")).saturating_add(count))
}

pub(super) fn sum(a: &Args) -> Result<(), Error> {
    let start = arg(a, 2, "start");
    if start.is_undefined() || start.is_number() {
        return Ok(());
    }
    let values = arg(a, 0, "");
    let n = len_of(&values);
    let mut total = limits::weight(&start);
    if let Ok(iter) = values.try_iter() {
        for item in iter.take(MAX_ITEMS) {
            total = total.saturating_add(limits::weight(&item));
        }
    }
    if (n as u128) * (total as u128) > MAX_SUM_COPY_BYTES {
        return Err(limits::too_large(format!(
            "summing {n} strings or lists copies {total} bytes per item; use `join` for strings"
        )));
    }
    match start.kind() {
        ValueKind::String => string("sum", total),
        _ => items(total / limits::ITEM_BYTES),
    }
}

pub(super) fn indent(a: &Args) -> Result<(), Error> {
    let s = text(&arg(a, 0, ""), "indent")?;
    let width = a.get(1, "width").and_then(|w| w.as_usize()).unwrap_or(4);
    let lines = s.matches('\n').count() + 2;
    string(
        "indent",
        s.len().saturating_add(lines.saturating_mul(width)),
    )
}

pub(super) fn pprint(a: &Args) -> Result<(), Error> {
    let v = arg(a, 0, "");
    let mut w = limits::Bounded {
        inner: limits::Discard,
        written: 0,
        limit: MAX_STRING_BYTES,
    };
    std::fmt::write(&mut w, format_args!("{v:#?}")).map_err(|_| over("pprint", w.written))?;
    string("pprint", w.written)
}

/// printf-style: each `%` may write the longest argument, padded to the
/// largest width or precision the format (or a `*` argument) names.
pub(super) fn format(a: &Args) -> Result<(), Error> {
    let fmt = text(&arg(a, 0, ""), "format")?;
    let args = a.0.get(1..).unwrap_or_default();
    let mut longest = 0usize;
    let mut widest = 0usize;
    for v in args {
        longest = longest.max(text_len(v, "format")?);
        if fmt.contains('*') {
            widest = widest.max(v.as_i64().map_or(0, |n| n.unsigned_abs() as usize));
        }
    }
    for run in fmt.split(|c: char| !c.is_ascii_digit()) {
        widest =
            widest.max(
                run.parse::<usize>()
                    .unwrap_or(if run.is_empty() { 0 } else { usize::MAX }),
            );
    }
    let uses = fmt.matches('%').count();
    let len = fmt
        .len()
        .saturating_add(uses.saturating_mul(longest.saturating_add(widest)));
    string("format", len)
}

pub(super) fn urlencode(a: &Args) -> Result<(), Error> {
    let v = arg(a, 0, "");
    let len = text_len(&v, "urlencode")?
        .saturating_mul(3)
        .saturating_add(len_of(&v).saturating_mul(2));
    string("urlencode", len)
}

pub(super) fn tojson(a: &Args) -> Result<(), Error> {
    let v = arg(a, 0, "");
    let indent = match a.get(1, "indent") {
        None => None,
        Some(i) if i.kind() == ValueKind::Bool => i.is_true().then_some(2),
        Some(i) => i.as_usize(),
    };
    let mut room = MAX_STRING_BYTES;
    json_len(&v, indent, 0, &mut room).map_err(|_| over("tojson", MAX_STRING_BYTES))?;
    string("tojson", MAX_STRING_BYTES - room)
}

/// Takes the length of `v` as JSON (as minijinja writes it, HTML-safe)
/// off `room`; fails once there is none left.
fn json_len(v: &Value, indent: Option<usize>, depth: usize, room: &mut usize) -> Result<(), ()> {
    fn take(n: usize, room: &mut usize) -> Result<(), ()> {
        *room = room.checked_sub(n).ok_or(())?;
        Ok(())
    }
    limits::enter(1).map_err(|_| ())?;
    let container = v
        .as_object()
        .map(|o| o.repr())
        .filter(|r| *r != ObjectRepr::Plain);
    let Some(repr) = container else {
        return match v.as_str() {
            Some(s) => take(json_str_len(s), room),
            None if v.as_bytes().is_some() => {
                take(v.as_bytes().map_or(0, |b| b.len() * 5 + 2), room)
            }
            None => {
                let n = limits::display_len(v, *room).ok_or(())?;
                take(n + 2, room)
            }
        };
    };
    let pad = |d: usize| indent.map_or(0, |i| 1 + i * d);
    take(2, room)?;
    let map = repr == ObjectRepr::Map;
    for key in v.try_iter().map_err(|_| ())? {
        take(2 + pad(depth + 1), room)?;
        if map {
            json_len(&key, indent, depth + 1, room)?;
            take(2, room)?;
            let value = v.get_item(&key).map_err(|_| ())?;
            json_len(&value, indent, depth + 1, room)?;
        } else {
            json_len(&key, indent, depth + 1, room)?;
        }
    }
    take(pad(depth), room)
}

fn json_str_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' => 2,
            b'<' | b'>' | b'&' | b'\'' => 6,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}
