//! What one render may make, and how it is told to stop.
//!
//! Fuel bounds how many instructions a render runs; these bound what it
//! makes. Every filter, function, test and operator that can make a value
//! (or walk a big one) is a checked call ([`super::filters`],
//! [`super::ops`]): before it runs it calls [`enter`], which stops the
//! render once it is cancelled (its deadline passed on the async side) or,
//! for a render tried inline on the async runtime, once it turns out to be
//! more than small work; and what it makes is charged against the render's
//! budget. A render with no [`Budget`] installed (validation) gets the
//! per-value limits only.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use minijinja::value::{Enumerator, Object, ObjectExt, ObjectRepr};
use minijinja::{Error, ErrorKind, Value};

/// One string a template makes (a filter's or an operator's result).
pub const MAX_STRING_BYTES: usize = 16 * 1024 * 1024;
/// One list or map a template makes.
pub const MAX_ITEMS: usize = 1_000_000;
/// What one rendered string (or single-expression value) may be.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// All the strings, lists and output one render makes, together.
pub const RENDER_BUDGET_BYTES: usize = 64 * 1024 * 1024;
/// What the constant expressions of one template may fold to in all (they
/// are computed when it compiles, before any budget applies).
pub const MAX_CONSTANT_BYTES: usize = 1024 * 1024;
/// What a list item costs in the budget (one value).
pub const ITEM_BYTES: usize = std::mem::size_of::<Value>();

/// An inline render (on the async runtime) moves to a render thread once
/// it ran this many instructions ...
pub const INLINE_FUEL: u64 = 20_000;
/// ... or its checked calls touched this many bytes.
pub const INLINE_WORK: usize = 256 * 1024;

/// Tells a render on another thread to stop: set when its deadline passed
/// or its run was cancelled. Checked at every checked call.
#[derive(Debug, Clone, Default)]
pub struct Control(Arc<AtomicBool>);

impl Control {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why a render stopped before it failed on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// [`Control::cancel`] was called.
    Cancelled,
    /// An inline render found more than small work: run it on a thread.
    Escalate,
}

/// One render's account: installed on the rendering thread for its length.
#[derive(Debug)]
pub struct Budget {
    control: Control,
    inline: bool,
    used: usize,
    work: usize,
    stop: Option<Stop>,
}

impl Budget {
    pub fn new(control: &Control, inline: bool) -> Budget {
        Budget {
            control: control.clone(),
            inline,
            used: 0,
            work: 0,
            stop: None,
        }
    }

    pub fn is_inline(&self) -> bool {
        self.inline
    }

    /// The bytes the render's checked calls made (or were charged for).
    pub fn made(&self) -> usize {
        self.used
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Budget>> = const { RefCell::new(None) };
}

/// Runs `f` with `budget` installed on this thread (so the checked calls
/// charge it); returns what `f` returned, and why the render was stopped
/// if it was. One budget may serve several renders (a step's strings).
pub fn with_budget<R>(budget: &mut Budget, f: impl FnOnce() -> R) -> (R, Option<Stop>) {
    struct Installed<'a>(&'a mut Budget);
    impl Drop for Installed<'_> {
        fn drop(&mut self) {
            if let Some(b) = CURRENT.with(|c| c.borrow_mut().take()) {
                *self.0 = b;
            }
        }
    }
    let own = std::mem::replace(budget, Budget::new(&budget.control.clone(), budget.inline));
    CURRENT.with(|c| *c.borrow_mut() = Some(own));
    let installed = Installed(budget);
    let out = f();
    drop(installed);
    let stop = budget.stop;
    (out, stop)
}

fn with_current<R>(f: impl FnOnce(&mut Budget) -> R) -> Option<R> {
    CURRENT.with(|c| c.borrow_mut().as_mut().map(f))
}

/// Called by every checked call before it works on values of `work`
/// bytes: stops a cancelled render, and an inline render that is no
/// longer small (running out of its inline fuel does that too).
pub fn enter(work: usize) -> Result<(), Error> {
    with_current(|b| {
        if b.control.is_cancelled() {
            b.stop = Some(Stop::Cancelled);
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "the render was stopped (its deadline passed)",
            ));
        }
        b.work = b.work.saturating_add(work);
        escalate_past_inline_work(b)
    })
    .unwrap_or(Ok(()))
}

/// An inline render that has done more than [`INLINE_WORK`] stops here and
/// starts over on a render thread.
fn escalate_past_inline_work(b: &mut Budget) -> Result<(), Error> {
    if b.inline && b.work > INLINE_WORK {
        b.stop = Some(Stop::Escalate);
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "the render moves to a render thread",
        ));
    }
    Ok(())
}

/// Charges `bytes` the render made (or is about to make) to its budget.
/// Making them was work too: an inline render that made much moves.
pub fn charge(bytes: usize) -> Result<(), Error> {
    with_current(|b| {
        b.used = b.used.saturating_add(bytes);
        if b.used > RENDER_BUDGET_BYTES {
            return Err(too_large(format!(
                "the values this render made add up to over {}",
                mb(RENDER_BUDGET_BYTES)
            )));
        }
        b.work = b.work.saturating_add(bytes);
        escalate_past_inline_work(b)
    })
    .unwrap_or(Ok(()))
}

/// What is left of the render's budget (all of it outside a render).
pub fn room() -> usize {
    with_current(|b| RENDER_BUDGET_BYTES.saturating_sub(b.used)).unwrap_or(RENDER_BUDGET_BYTES)
}

/// Whether `bytes` more fit the render's budget (nothing is charged).
pub fn room_for(bytes: usize) -> Result<(), Error> {
    if bytes > room() {
        return Err(too_large(format!(
            "{bytes} more bytes would take the values this render made over {}",
            mb(RENDER_BUDGET_BYTES)
        )));
    }
    Ok(())
}

/// A list of `n` items that copies nothing (a lazy join) is about to be
/// made: only the per-list limit applies.
pub fn count(n: usize) -> Result<(), Error> {
    if n > MAX_ITEMS {
        return Err(too_large(format!(
            "a list of {n} items; the limit is {MAX_ITEMS} items per list"
        )));
    }
    Ok(())
}

/// A string of `len` bytes is about to be made.
pub fn string(len: usize) -> Result<(), Error> {
    if len > MAX_STRING_BYTES {
        return Err(too_large(format!(
            "a string of {len} bytes; the limit is {} per string",
            mb(MAX_STRING_BYTES)
        )));
    }
    charge(len)
}

/// A list or map of `n` items is about to be made.
pub fn items(n: usize) -> Result<(), Error> {
    count(n)?;
    charge(n.saturating_mul(ITEM_BYTES))
}

/// Charges a value a checked call made: its string bytes or its items.
pub fn made(value: &Value) -> Result<(), Error> {
    if let Some(s) = value.as_str() {
        return string(s.len());
    }
    match value.as_object().and_then(|o| o.enumerator_len()) {
        Some(n) => items(n),
        None => Ok(()),
    }
}

/// What a value weighs for [`enter`]: its bytes or items.
pub fn weight(value: &Value) -> usize {
    match value.as_str() {
        Some(s) => s.len(),
        None => value
            .as_object()
            .and_then(|o| o.enumerator_len())
            .map_or(1, |n| n.saturating_mul(ITEM_BYTES)),
    }
}

/// A list made whole from a lazy one: it still iterates as the lazy one
/// did (its kind stays `iterable`), but `[i]` is one lookup.
pub fn listed(items: Vec<Value>) -> Value {
    Value::from_object(Listed(items))
}

#[derive(Debug)]
struct Listed(Vec<Value>);

impl Object for Listed {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Iterable
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let i = key.as_i64()?;
        let i = if i < 0 {
            self.0
                .len()
                .checked_sub(usize::try_from(i.unsigned_abs()).ok()?)?
        } else {
            usize::try_from(i).ok()?
        };
        self.0.get(i).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        self.mapped_enumerator(|this| Box::new(this.0.iter().cloned()))
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.0.len())
    }
}

/// The work of `value[i]`: a walk along a string or a lazy list, one
/// lookup in a list, a map or a [`listed`] one.
pub fn lookup_work(value: &Value) -> usize {
    if let Some(s) = value.as_str() {
        return s.len();
    }
    match value.as_object() {
        Some(o)
            if o.repr() == ObjectRepr::Iterable
                && value.downcast_object_ref::<Listed>().is_none() =>
        {
            weight(value)
        }
        _ => 1,
    }
}

/// The error every limit gives.
pub fn too_large(what: String) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("template value too large ({what})"),
    )
}

fn mb(bytes: usize) -> String {
    format!("{} MB", bytes / (1024 * 1024))
}

/// A writer that fails once more than `limit` bytes were written to it:
/// a value's text is measured (or written) without ever holding more.
pub struct Bounded<W> {
    pub inner: W,
    pub written: usize,
    pub limit: usize,
}

impl<W: fmt::Write> fmt::Write for Bounded<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.written = self.written.saturating_add(s.len());
        if self.written > self.limit {
            return Err(fmt::Error);
        }
        self.inner.write_str(s)
    }
}

/// A writer that keeps nothing.
pub struct Discard;

impl fmt::Write for Discard {
    fn write_str(&mut self, _: &str) -> fmt::Result {
        Ok(())
    }
}

/// The length of `value`'s text, or `None` when it is over `limit`.
pub fn display_len(value: &Value, limit: usize) -> Option<usize> {
    if let Some(s) = value.as_str() {
        return (s.len() <= limit).then_some(s.len());
    }
    let mut w = Bounded {
        inner: Discard,
        written: 0,
        limit,
    };
    fmt::write(&mut w, format_args!("{value}")).ok()?;
    Some(w.written)
}

/// `value`'s text, made without ever holding more than `limit` bytes.
pub fn display_bounded(value: &Value, limit: usize) -> Option<String> {
    let mut w = Bounded {
        inner: String::new(),
        written: 0,
        limit,
    };
    fmt::write(&mut w, format_args!("{value}")).ok()?;
    Some(w.inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_counts_what_one_render_makes_and_is_gone_after_it() {
        let control = Control::default();
        let (r, stop) = with_budget(&mut Budget::new(&control, false), || {
            for _ in 0..RENDER_BUDGET_BYTES / MAX_STRING_BYTES {
                string(MAX_STRING_BYTES)?;
            }
            string(1)
        });
        let e = r.unwrap_err();
        assert!(e.to_string().contains("add up to over 64 MB"), "{e}");
        assert_eq!(stop, None);
        // Outside a render only the per-value limits hold.
        for _ in 0..RENDER_BUDGET_BYTES / MAX_STRING_BYTES + 1 {
            string(MAX_STRING_BYTES).unwrap();
        }
        let e = string(MAX_STRING_BYTES + 1).unwrap_err();
        assert!(e.to_string().contains("limit is 16 MB per string"), "{e}");
        items(MAX_ITEMS).unwrap();
        let e = items(MAX_ITEMS + 1).unwrap_err();
        assert!(
            e.to_string()
                .contains("template value too large (a list of 1000001 items"),
            "{e}"
        );
    }

    #[test]
    fn a_cancelled_render_stops_at_its_next_checked_call() {
        let control = Control::default();
        let (r, stop) = with_budget(&mut Budget::new(&control, false), || {
            enter(10)?;
            control.cancel();
            enter(10)
        });
        assert!(r.is_err());
        assert_eq!(stop, Some(Stop::Cancelled));
    }

    #[test]
    fn an_inline_render_escalates_once_its_work_is_not_small() {
        let control = Control::default();
        let (r, stop) = with_budget(&mut Budget::new(&control, true), || {
            enter(INLINE_WORK / 2)?;
            enter(INLINE_WORK)
        });
        assert!(r.is_err());
        assert_eq!(stop, Some(Stop::Escalate));
        let (r, stop) = with_budget(&mut Budget::new(&control, false), || enter(INLINE_WORK * 4));
        r.unwrap();
        assert_eq!(stop, None);
    }

    #[test]
    fn text_is_measured_without_being_held() {
        let big = Value::from(vec![Value::from("x".repeat(1000)); 1000]);
        assert_eq!(display_len(&big, 100), None);
        assert!(display_len(&big, 2_000_000).unwrap() > 1_000_000);
        assert_eq!(display_bounded(&Value::from(12), 5).unwrap(), "12");
        assert_eq!(display_bounded(&big, 5000), None);
    }
}
