//! Constant expressions, bounded before minijinja folds them.
//!
//! minijinja computes an expression of constants while it compiles the
//! template (`'x' * 100000000` becomes a 100 MB constant), before any
//! render, budget or thread is involved, and it does so again for every
//! enclosing expression. So before a template is compiled, every constant
//! operator in it is computed here first with the limits of a render: a
//! result over [`MAX_CONSTANT_BYTES`] in all fails the template.

use minijinja::machinery::ast::{BinOpKind, CallArg, Expr, Stmt};
use minijinja::{Error, Value};

use super::limits::{self, MAX_CONSTANT_BYTES};

/// Walks every expression of `stmt`.
pub(super) fn check_stmt(stmt: &Stmt<'_>, folded: &mut usize) -> Result<(), Error> {
    let body = |stmts: &[Stmt<'_>], folded: &mut usize| -> Result<(), Error> {
        stmts.iter().try_for_each(|s| check_stmt(s, folded))
    };
    match stmt {
        Stmt::Template(t) => body(&t.children, folded),
        Stmt::EmitExpr(e) => check_expr(&e.expr, folded).map(drop),
        Stmt::EmitRaw(_) | Stmt::Continue(_) | Stmt::Break(_) => Ok(()),
        Stmt::ForLoop(l) => {
            exprs([&l.target, &l.iter], folded)?;
            if let Some(filter) = &l.filter_expr {
                check_expr(filter, folded)?;
            }
            body(&l.body, folded)?;
            body(&l.else_body, folded)
        }
        Stmt::IfCond(i) => {
            check_expr(&i.expr, folded)?;
            body(&i.true_body, folded)?;
            body(&i.false_body, folded)
        }
        Stmt::WithBlock(w) => {
            for (target, value) in &w.assignments {
                exprs([target, value], folded)?;
            }
            body(&w.body, folded)
        }
        Stmt::Set(s) => exprs([&s.target, &s.expr], folded),
        Stmt::SetBlock(s) => {
            check_expr(&s.target, folded)?;
            if let Some(filter) = &s.filter {
                check_expr(filter, folded)?;
            }
            body(&s.body, folded)
        }
        Stmt::AutoEscape(a) => {
            check_expr(&a.enabled, folded)?;
            body(&a.body, folded)
        }
        Stmt::FilterBlock(f) => {
            check_expr(&f.filter, folded)?;
            body(&f.body, folded)
        }
        Stmt::Block(b) => body(&b.body, folded),
        Stmt::Import(i) => exprs([&i.expr, &i.name], folded),
        Stmt::FromImport(i) => {
            check_expr(&i.expr, folded)?;
            for (name, alias) in &i.names {
                check_expr(name, folded)?;
                if let Some(alias) = alias {
                    check_expr(alias, folded)?;
                }
            }
            Ok(())
        }
        Stmt::Extends(e) => check_expr(&e.name, folded).map(drop),
        Stmt::Include(i) => check_expr(&i.name, folded).map(drop),
        Stmt::Macro(m) => {
            for e in m.args.iter().chain(&m.defaults) {
                check_expr(e, folded)?;
            }
            body(&m.body, folded)
        }
        Stmt::CallBlock(c) => {
            check_expr(&c.call.expr, folded)?;
            args(&c.call.args, folded)?;
            for e in c.macro_decl.args.iter().chain(&c.macro_decl.defaults) {
                check_expr(e, folded)?;
            }
            body(&c.macro_decl.body, folded)
        }
        Stmt::Do(d) => {
            check_expr(&d.call.expr, folded)?;
            args(&d.call.args, folded)
        }
    }
}

fn exprs<const N: usize>(list: [&Expr<'_>; N], folded: &mut usize) -> Result<(), Error> {
    list.into_iter()
        .try_for_each(|e| check_expr(e, folded).map(drop))
}

fn args(list: &[CallArg<'_>], folded: &mut usize) -> Result<(), Error> {
    list.iter().try_for_each(|a| match a {
        CallArg::Pos(e) | CallArg::Kwarg(_, e) | CallArg::PosSplat(e) | CallArg::KwargSplat(e) => {
            check_expr(e, folded).map(drop)
        }
    })
}

/// Checks the constants inside `expr`; its value when minijinja would
/// fold it (the same value, computed once the parts are known to be small).
pub(super) fn check_expr(expr: &Expr<'_>, folded: &mut usize) -> Result<Option<Value>, Error> {
    match expr {
        Expr::Const(c) => Ok(Some(c.value.clone())),
        Expr::Var(_) => Ok(None),
        Expr::List(l) => items(&l.items, expr, folded),
        Expr::Tuple(t) => items(&t.items, expr, folded),
        Expr::Map(m) => {
            let keys = items(&m.keys, expr, folded)?;
            let values = items(&m.values, expr, folded)?;
            Ok(keys.and(values))
        }
        Expr::UnaryOp(u) => Ok(check_expr(&u.expr, folded)?.and_then(|_| expr.as_const())),
        Expr::BinOp(b) => {
            let left = check_expr(&b.left, folded)?;
            let right = check_expr(&b.right, folded)?;
            let (Some(left), Some(right)) = (left, right) else {
                return Ok(None);
            };
            let size = folded_size(b.op, &left, &right)?;
            *folded = folded.saturating_add(size);
            if *folded > MAX_CONSTANT_BYTES {
                return Err(limits::too_large(format!(
                    "the constant expressions of this template would make over {} bytes; \
                     the limit is {MAX_CONSTANT_BYTES}",
                    *folded
                )));
            }
            Ok(expr.as_const())
        }
        Expr::Compare(c) => {
            let mut all = check_expr(&c.expr, folded)?.is_some();
            for op in &c.ops {
                all &= check_expr(&op.expr, folded)?.is_some();
            }
            Ok(if all { expr.as_const() } else { None })
        }
        Expr::Slice(s) => {
            check_expr(&s.expr, folded)?;
            for part in [&s.start, &s.stop, &s.step].into_iter().flatten() {
                check_expr(part, folded)?;
            }
            Ok(None)
        }
        Expr::IfExpr(i) => {
            exprs([&i.test_expr, &i.true_expr], folded)?;
            if let Some(e) = &i.false_expr {
                check_expr(e, folded)?;
            }
            Ok(None)
        }
        Expr::Filter(f) => {
            if let Some(e) = &f.expr {
                check_expr(e, folded)?;
            }
            args(&f.args, folded).map(|_| None)
        }
        Expr::Test(t) => {
            check_expr(&t.expr, folded)?;
            args(&t.args, folded).map(|_| None)
        }
        Expr::GetAttr(g) => check_expr(&g.expr, folded).map(|_| None),
        Expr::GetItem(g) => exprs([&g.expr, &g.subscript_expr], folded).map(|_| None),
        Expr::Call(c) => {
            check_expr(&c.expr, folded)?;
            args(&c.args, folded).map(|_| None)
        }
    }
}

/// A literal list, tuple or map is constant when all its items are
/// literals (minijinja folds no operator inside one).
fn items(list: &[Expr<'_>], expr: &Expr<'_>, folded: &mut usize) -> Result<Option<Value>, Error> {
    for item in list {
        check_expr(item, folded)?;
    }
    Ok(expr.as_const())
}

/// What folding `left op right` makes, in bytes, or an error when it is
/// over the limits of one value.
fn folded_size(op: BinOpKind, left: &Value, right: &Value) -> Result<usize, Error> {
    let over = |what: String| {
        limits::too_large(format!(
            "a constant expression would make {what}; the limit is {MAX_CONSTANT_BYTES} bytes"
        ))
    };
    let list_len = |v: &Value| v.as_object().and_then(|o| o.enumerator_len());
    match op {
        BinOpKind::Concat => {
            let l = limits::display_len(left, MAX_CONSTANT_BYTES);
            let r = limits::display_len(right, MAX_CONSTANT_BYTES);
            match (l, r) {
                (Some(l), Some(r)) => Ok(l + r),
                _ => Err(over(format!("a string over {MAX_CONSTANT_BYTES} bytes"))),
            }
        }
        BinOpKind::Add => {
            match (left.as_str(), right.as_str()) {
                (Some(l), Some(r)) => Ok(l.len() + r.len()),
                _ => Ok((list_len(left).unwrap_or(0) + list_len(right).unwrap_or(0))
                    * limits::ITEM_BYTES),
            }
        }
        BinOpKind::Mul => {
            let (value, times) = match (right.as_usize(), left.as_usize()) {
                (Some(n), _) => (left, n),
                (None, Some(n)) => (right, n),
                _ => return Ok(0),
            };
            let unit = match value.as_str() {
                Some(s) => s.len(),
                None => list_len(value).map_or(0, |n| n * limits::ITEM_BYTES),
            };
            let size = unit.saturating_mul(times);
            if size > MAX_CONSTANT_BYTES {
                return Err(over(format!("{size} bytes")));
            }
            Ok(size)
        }
        _ => Ok(0),
    }
}
