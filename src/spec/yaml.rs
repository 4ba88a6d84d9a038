//! YAML (and JSON, a YAML subset) text → `serde_json::Value` documents, each
//! with an index from JSON pointer to source position.
//!
//! Built directly on serde-saphyr's event parser so values and positions come
//! from one pass. Scalars resolve by the YAML 1.2 core schema with the
//! "Norway problem" closed: only `true`/`false` are booleans, and numbers with
//! leading zeros or underscores stay strings (chat ids, SKUs, zip codes).

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Number, Value};
use serde_saphyr::granit_parser::{Event, Marker, Parser, ScalarStyle, Span};

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

impl Pos {
    fn from_marker(m: &Marker) -> Pos {
        Pos {
            line: u32::try_from(m.line()).unwrap_or(u32::MAX),
            column: u32::try_from(m.col() + 1).unwrap_or(u32::MAX),
        }
    }
}

/// Where a node sits in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePos {
    /// Position of the mapping key that holds this node, if any.
    pub key: Option<Pos>,
    /// Position of the node itself.
    pub value: Pos,
    /// True for `|` and `>` scalars (their `value` position is the first
    /// content line, at the content's indentation).
    pub block_scalar: bool,
}

/// JSON pointer → position, for one document.
#[derive(Debug, Clone, Default)]
pub struct Positions {
    nodes: HashMap<String, NodePos>,
}

impl Positions {
    pub fn get(&self, pointer: &str) -> Option<&NodePos> {
        self.nodes.get(pointer)
    }

    /// Position of the node at `pointer`, or of its longest known ancestor.
    pub fn value_pos(&self, pointer: &str) -> Pos {
        self.closest(pointer).value
    }

    /// Position of the key naming the node at `pointer` (falling back to
    /// the value, then to the longest known ancestor).
    pub fn key_pos(&self, pointer: &str) -> Pos {
        let node = self.closest(pointer);
        node.key.unwrap_or(node.value)
    }

    fn closest(&self, pointer: &str) -> NodePos {
        let mut p = pointer;
        loop {
            if let Some(n) = self.nodes.get(p) {
                return *n;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => {
                    return self.nodes.get("").copied().unwrap_or(NodePos {
                        key: None,
                        value: Pos { line: 1, column: 1 },
                        block_scalar: false,
                    });
                }
            }
        }
    }
}

/// One document of a stream.
#[derive(Debug, Clone)]
pub struct YamlDoc {
    pub value: Value,
    pub positions: Positions,
    /// Where the document starts (its root node).
    pub start: Pos,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

impl std::fmt::Display for YamlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.pos.line, self.pos.column, self.message)
    }
}

/// The lines of `text` as YAML counts them: `\n`, `\r\n` and a lone `\r`
/// each end one. Findings' line numbers index these (`str::lines` does not
/// break at a lone `\r`).
pub fn source_lines(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut lines = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        if bytes[i] == b'\n' || bytes[i] == b'\r' {
            lines.push(&text[start..i]);
            if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
                i += 1;
            }
            start = i + 1;
        }
        i += 1;
    }
    if start < text.len() {
        lines.push(&text[start..]);
    }
    lines
}

/// Escape one reference token of a JSON pointer (RFC 6901).
pub fn escape_token(token: &str) -> std::borrow::Cow<'_, str> {
    if token.contains(['~', '/']) {
        token.replace('~', "~0").replace('/', "~1").into()
    } else {
        token.into()
    }
}

enum Frame {
    Seq {
        items: Vec<Value>,
        pointer_len: usize,
        anchor: usize,
    },
    Map {
        entries: Map<String, Value>,
        /// Keys written explicitly (merged `<<` keys may be overridden).
        explicit: HashSet<String>,
        pending_key: Option<(String, Pos)>,
        pointer_len: usize,
        anchor: usize,
    },
}

/// Most values aliases may add to one document. Each alias copies its
/// anchor's value, so nested aliases grow exponentially: a 500-byte
/// "billion laughs" file would exhaust memory at every reload.
const ALIAS_BUDGET: usize = 100_000;

/// Most levels lists and maps may nest in one document. The applied config
/// is stored as JSON, and JSON readers (serde_json) refuse more than 128
/// levels: a document nested deeper validated, ran, and then the daemon
/// could not start from its own store. Real config nests a few levels.
pub const MAX_NESTING: usize = 64;

struct Builder {
    stack: Vec<Frame>,
    pointer: String,
    positions: Positions,
    /// Anchored values, their size in values (see [`size_of`]) and how
    /// many levels they nest (see [`depth_of`]).
    anchors: HashMap<usize, (Value, usize, usize)>,
    /// Values added by aliases so far in this document.
    aliased: usize,
    root: Option<Value>,
}

/// The number of values in `v` (itself and everything under it), counted
/// up to `cap`: enough to tell whether an alias fits the budget.
fn size_of(v: &Value, cap: usize) -> usize {
    let mut n = 1;
    let children: Box<dyn Iterator<Item = &Value>> = match v {
        Value::Array(items) => Box::new(items.iter()),
        Value::Object(map) => Box::new(map.values()),
        _ => return 1,
    };
    for child in children {
        if n > cap {
            break;
        }
        n += size_of(child, cap - n);
    }
    n
}

/// How many levels of lists and maps `v` is (0 for a scalar). Only called
/// on values built under [`MAX_NESTING`], so the recursion is shallow.
fn depth_of(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth_of).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth_of).max().unwrap_or(0),
        _ => 0,
    }
}

/// The error for a list or map that would nest past [`MAX_NESTING`].
fn too_deep(pos: Pos) -> YamlError {
    YamlError {
        pos,
        message: format!(
            "lists and maps nest deeper than {MAX_NESTING} levels here: flatten this value"
        ),
    }
}

impl Builder {
    /// Refuse a collection that would nest past [`MAX_NESTING`].
    fn check_nesting(&self, span: &Span) -> Result<(), YamlError> {
        if self.stack.len() >= MAX_NESTING {
            return Err(too_deep(Pos::from_marker(&span.start)));
        }
        Ok(())
    }

    fn new() -> Self {
        Builder {
            stack: Vec::new(),
            pointer: String::new(),
            positions: Positions::default(),
            anchors: HashMap::new(),
            aliased: 0,
            root: None,
        }
    }

    /// Called before a node starts: extends the pointer with the node's
    /// place in its parent and records its position.
    fn enter_node(&mut self, span: &Span, block_scalar: bool) -> Result<(), YamlError> {
        let pos = Pos::from_marker(&span.start);
        let key_pos = match self.stack.last_mut() {
            None => None,
            Some(Frame::Seq { items, .. }) => {
                self.pointer.push('/');
                self.pointer.push_str(&items.len().to_string());
                None
            }
            Some(Frame::Map { pending_key, .. }) => match pending_key {
                Some((key, key_pos)) => {
                    self.pointer.push('/');
                    self.pointer.push_str(&escape_token(key));
                    Some(*key_pos)
                }
                None => {
                    return Err(YamlError {
                        pos,
                        message: "mapping keys must be plain strings, not lists or maps"
                            .to_string(),
                    });
                }
            },
        };
        self.positions.nodes.insert(
            self.pointer.clone(),
            NodePos {
                key: key_pos,
                value: pos,
                block_scalar,
            },
        );
        Ok(())
    }

    /// Attach a finished node to its parent (or make it the root).
    fn finish_node(&mut self, value: Value, anchor: usize, pos: Pos) -> Result<(), YamlError> {
        if anchor != 0 {
            let size = size_of(&value, ALIAS_BUDGET + 1);
            let depth = depth_of(&value);
            self.anchors.insert(anchor, (value.clone(), size, depth));
        }
        match self.stack.last_mut() {
            None => {
                self.root = Some(value);
            }
            Some(Frame::Seq {
                items, pointer_len, ..
            }) => {
                items.push(value);
                self.pointer.truncate(*pointer_len);
            }
            Some(Frame::Map {
                entries,
                explicit,
                pending_key,
                pointer_len,
                ..
            }) => {
                let Some((key, key_pos)) = pending_key.take() else {
                    return Err(YamlError {
                        pos,
                        message: "internal: value without a key".to_string(),
                    });
                };
                self.pointer.truncate(*pointer_len);
                if key == "<<" {
                    merge_into(entries, explicit, value, key_pos)?;
                } else {
                    if !explicit.insert(key.clone()) {
                        return Err(YamlError {
                            pos: key_pos,
                            message: format!("duplicate key `{key}`"),
                        });
                    }
                    entries.insert(key, value);
                }
            }
        }
        Ok(())
    }

    fn scalar(
        &mut self,
        text: &str,
        style: ScalarStyle,
        anchor: usize,
        tag: Option<(&str, &str)>,
        span: &Span,
    ) -> Result<(), YamlError> {
        let pos = Pos::from_marker(&span.start);
        // A scalar in key position of a mapping is a key, not a node.
        if let Some(Frame::Map { pending_key, .. }) = self.stack.last_mut()
            && pending_key.is_none()
        {
            *pending_key = Some((text.to_string(), pos));
            return Ok(());
        }
        let block = matches!(style, ScalarStyle::Literal | ScalarStyle::Folded);
        self.enter_node(span, block)?;
        let value =
            resolve_scalar(text, style, tag).map_err(|message| YamlError { pos, message })?;
        self.finish_node(value, anchor, pos)
    }

    fn alias(&mut self, id: usize, span: &Span) -> Result<(), YamlError> {
        let pos = Pos::from_marker(&span.start);
        let (value, size, depth) = self.anchors.get(&id).ok_or_else(|| YamlError {
            pos,
            message: "alias refers to an unknown anchor".to_string(),
        })?;
        if self.stack.len() + depth > MAX_NESTING {
            return Err(too_deep(pos));
        }
        self.aliased = self.aliased.saturating_add(*size);
        if self.aliased > ALIAS_BUDGET {
            return Err(YamlError {
                pos,
                message: format!(
                    "aliases expand to more than {ALIAS_BUDGET} values in this document (nested aliases multiply): write the values out or use fewer aliases"
                ),
            });
        }
        let value = value.clone();
        if let Some(Frame::Map { pending_key, .. }) = self.stack.last_mut()
            && pending_key.is_none()
        {
            return match value {
                Value::String(s) => {
                    *pending_key = Some((s, pos));
                    Ok(())
                }
                _ => Err(YamlError {
                    pos,
                    message: "mapping keys must be plain strings".to_string(),
                }),
            };
        }
        self.enter_node(span, false)?;
        self.finish_node(value, 0, pos)
    }
}

fn merge_into(
    entries: &mut Map<String, Value>,
    explicit: &HashSet<String>,
    value: Value,
    pos: Pos,
) -> Result<(), YamlError> {
    let sources = match value {
        Value::Object(m) => vec![m],
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::Object(m) => Ok(m),
                _ => Err(()),
            })
            .collect::<Result<Vec<_>, ()>>()
            .map_err(|()| YamlError {
                pos,
                message: "`<<` merges maps only".to_string(),
            })?,
        _ => {
            return Err(YamlError {
                pos,
                message: "`<<` merges maps only".to_string(),
            });
        }
    };
    for source in sources {
        for (k, v) in source {
            if !explicit.contains(&k) && !entries.contains_key(&k) {
                entries.insert(k, v);
            }
        }
    }
    Ok(())
}

/// Resolve a scalar by the YAML 1.2 core schema, strictly.
fn resolve_scalar(
    text: &str,
    style: ScalarStyle,
    tag: Option<(&str, &str)>,
) -> Result<Value, String> {
    if let Some((handle, suffix)) = tag {
        if handle == "tag:yaml.org,2002:" {
            return match suffix {
                "str" => Ok(Value::String(text.to_string())),
                "int" | "float" => plain_number(text)
                    .ok_or_else(|| format!("`{text}` is not a number (tagged !!{suffix})")),
                "bool" => match text {
                    "true" | "True" | "TRUE" => Ok(Value::Bool(true)),
                    "false" | "False" | "FALSE" => Ok(Value::Bool(false)),
                    _ => Err(format!("`{text}` is not a boolean (tagged !!bool)")),
                },
                "null" => Ok(Value::Null),
                other => Err(format!("unsupported tag !!{other}")),
            };
        }
        return Err(format!("unsupported tag {handle}{suffix}"));
    }
    if style != ScalarStyle::Plain {
        return Ok(Value::String(text.to_string()));
    }
    Ok(match text {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        _ => plain_number(text).unwrap_or_else(|| Value::String(text.to_string())),
    })
}

/// A plain scalar that reads as a number, or `None` when it should stay a
/// string (leading zeros, underscores, infinities and NaN included).
fn plain_number(text: &str) -> Option<Value> {
    let bytes = text.as_bytes();
    let first = *bytes.first()?;
    if !(first.is_ascii_digit() || first == b'-' || first == b'+' || first == b'.') {
        return None;
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return u64::from_str_radix(hex, 16).ok().map(Value::from);
    }
    if let Some(oct) = text.strip_prefix("0o") {
        return u64::from_str_radix(oct, 8).ok().map(Value::from);
    }
    let digits = text.trim_start_matches(['-', '+']);
    // "0123" and "007" stay strings; "0", "0.5" are numbers.
    if digits.len() > 1 && digits.starts_with('0') && digits.as_bytes()[1].is_ascii_digit() {
        return None;
    }
    if !text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
    {
        return None;
    }
    if let Ok(i) = text.parse::<i64>() {
        return Some(Value::from(i));
    }
    if let Ok(u) = text.parse::<u64>() {
        return Some(Value::from(u));
    }
    let f = text.parse::<f64>().ok()?;
    Number::from_f64(f).map(Value::Number)
}

/// Parse every document of a YAML (or JSON) text. Empty documents (only
/// comments) are dropped.
pub fn parse_documents(text: &str) -> Result<Vec<YamlDoc>, YamlError> {
    let mut docs = Vec::new();
    let mut builder = Builder::new();
    let mut doc_start = Pos { line: 1, column: 1 };
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| YamlError {
            pos: Pos::from_marker(e.marker()),
            message: e
                .info()
                .lines()
                .next()
                .unwrap_or("invalid YAML")
                .to_string(),
        })?;
        match event {
            Event::StreamStart | Event::StreamEnd => {}
            Event::DocumentStart(..) => {
                builder = Builder::new();
                doc_start = Pos::from_marker(&span.start);
            }
            Event::DocumentEnd => {
                let b = std::mem::replace(&mut builder, Builder::new());
                if let Some(value) = b.root.filter(|v| !v.is_null()) {
                    let start = b.positions.get("").map(|n| n.value).unwrap_or(doc_start);
                    docs.push(YamlDoc {
                        value,
                        positions: b.positions,
                        start,
                    });
                }
            }
            Event::Alias(id) => builder.alias(id, &span)?,
            Event::Scalar(text, style, anchor, tag) => {
                let tag = tag.as_ref().map(|t| (t.handle(), t.suffix()));
                builder.scalar(&text, style, anchor, tag, &span)?;
            }
            Event::SequenceStart(_, anchor, _) => {
                builder.check_nesting(&span)?;
                builder.enter_node(&span, false)?;
                builder.stack.push(Frame::Seq {
                    items: Vec::new(),
                    pointer_len: builder.pointer.len(),
                    anchor,
                });
            }
            Event::MappingStart(_, anchor, _) => {
                builder.check_nesting(&span)?;
                builder.enter_node(&span, false)?;
                builder.stack.push(Frame::Map {
                    entries: Map::new(),
                    explicit: HashSet::new(),
                    pending_key: None,
                    pointer_len: builder.pointer.len(),
                    anchor,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let pos = Pos::from_marker(&span.start);
                let (value, anchor, pointer_len) = match builder.stack.pop() {
                    Some(Frame::Seq {
                        items,
                        anchor,
                        pointer_len,
                    }) => (Value::Array(items), anchor, pointer_len),
                    Some(Frame::Map {
                        entries,
                        anchor,
                        pointer_len,
                        ..
                    }) => (Value::Object(entries), anchor, pointer_len),
                    None => {
                        return Err(YamlError {
                            pos,
                            message: "unbalanced collection end".to_string(),
                        });
                    }
                };
                // The pointer still names this collection; its parent
                // truncates it back when the node is attached.
                builder.pointer.truncate(pointer_len);
                builder.finish_node(value, anchor, pos)?;
            }
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(text: &str) -> YamlDoc {
        let mut docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 1);
        docs.remove(0)
    }

    #[test]
    fn norway_problem_is_closed() {
        let d = one("a: no\nb: on\nc: yes\nd: n\ne: true\nf: False\n");
        assert_eq!(
            d.value,
            json!({"a": "no", "b": "on", "c": "yes", "d": "n", "e": true, "f": false})
        );
    }

    #[test]
    fn numbers_with_leading_zeros_or_underscores_stay_strings() {
        let d = one(
            "zip: 01234\nbig: 1_000\nn: 42\nneg: -1001234567890\nf: 0.5\nz: 0\nhex: 0x1F\ninf: .inf\n",
        );
        assert_eq!(
            d.value,
            json!({"zip": "01234", "big": "1_000", "n": 42, "neg": -1001234567890_i64,
                   "f": 0.5, "z": 0, "hex": 31, "inf": ".inf"})
        );
    }

    #[test]
    fn quoted_and_null_scalars() {
        let d = one("a: '42'\nb: \"true\"\nc: ~\nd:\ne: null\n");
        assert_eq!(
            d.value,
            json!({"a": "42", "b": "true", "c": null, "d": null, "e": null})
        );
    }

    #[test]
    fn positions_of_nested_keys_and_items() {
        let text = "kind: Job\nid: x\nschedule:\n  cron: \"0 9 * * 11-24\"\nsteps:\n  - id: a\n    http: {url: x}\n";
        let d = one(text);
        let cron = d.positions.get("/schedule/cron").unwrap();
        assert_eq!(cron.key, Some(Pos { line: 4, column: 3 }));
        assert_eq!(cron.value, Pos { line: 4, column: 9 });
        assert_eq!(
            d.positions.key_pos("/steps/0/id"),
            Pos { line: 6, column: 5 }
        );
        assert_eq!(
            d.positions.value_pos("/steps/0/http/url"),
            Pos {
                line: 7,
                column: 17
            }
        );
        // Unknown pointers fall back to the closest ancestor.
        assert_eq!(
            d.positions.value_pos("/steps/0/http/nope/deeper"),
            Pos {
                line: 7,
                column: 11
            }
        );
    }

    #[test]
    fn multiple_documents_and_empty_ones() {
        let docs =
            parse_documents("# only a comment\n---\na: 1\n---\n# empty\n---\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].value, json!({"b": 2}));
        assert_eq!(docs[1].start.line, 7);
    }

    #[test]
    fn duplicate_keys_are_errors_with_position() {
        let err = parse_documents("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.pos, Pos { line: 3, column: 1 });
        assert!(err.message.contains("duplicate key `a`"), "{}", err.message);
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let d = one("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\nlist: [*b]\n");
        assert_eq!(
            d.value,
            json!({"base": {"x": 1, "y": 2}, "other": {"x": 1, "y": 3}, "list": [{"x": 1, "y": 2}]})
        );
    }

    #[test]
    fn an_alias_bomb_is_refused_before_it_grows() {
        // Each level doubles ten times: 10^9 values from a few hundred bytes.
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for (name, prev) in ["b", "c", "d", "e", "f", "g", "h", "i"]
            .iter()
            .zip(["a", "b", "c", "d", "e", "f", "g", "h"])
        {
            text.push_str(&format!(
                "{name}: &{name} [{}]\n",
                vec![format!("*{prev}"); 10].join(", ")
            ));
        }
        let err = parse_documents(&text).unwrap_err();
        assert!(err.message.contains("aliases expand"), "{}", err.message);
        assert!(err.pos.line <= 5, "{:?}", err.pos);
        // Ordinary reuse is fine.
        let ok = "base: &b {x: 1}\nl: [*b, *b, *b]\n";
        assert_eq!(parse_documents(ok).map(|d| d.len()).ok(), Some(1));
    }

    #[test]
    fn nesting_past_the_limit_is_refused_where_it_starts() {
        // The root map is one level, each `[` one more.
        let n = MAX_NESTING - 1;
        let ok = format!("x: {}{}\n", "[".repeat(n), "]".repeat(n));
        assert!(parse_documents(&ok).is_ok());
        let deep = format!("x: {}{}\n", "[".repeat(n + 1), "]".repeat(n + 1));
        let e = parse_documents(&deep).unwrap_err();
        let column = u32::try_from(4 + n).unwrap();
        assert_eq!(e.pos, Pos { line: 1, column });
        assert!(e.message.contains("nest deeper than 64 levels"), "{e}");
        // An alias adds its anchor's levels where it stands.
        let shallow = format!("a: &a {}{}\n", "[".repeat(10), "]".repeat(10));
        let aliased = format!(
            "{shallow}b: {}*a{}\n",
            "[".repeat(n - 10),
            "]".repeat(n - 10)
        );
        assert!(parse_documents(&aliased).is_ok());
        let aliased = format!("{shallow}b: {}*a{}\n", "[".repeat(n - 9), "]".repeat(n - 9));
        let e = parse_documents(&aliased).unwrap_err();
        assert_eq!(e.pos.line, 2, "{e}");
    }

    #[test]
    fn source_lines_break_where_the_parser_does() {
        assert_eq!(source_lines("a\nb\r\nc\rd"), ["a", "b", "c", "d"]);
        assert_eq!(source_lines("a\n\nb\n"), ["a", "", "b"]);
        assert_eq!(source_lines(""), Vec::<&str>::new());
        // A lone `\r` ends a line for the parser too.
        let text = "a: 1\rb: 2\r\nc: 3\r";
        let docs = parse_documents(text).unwrap();
        let line = docs[0].positions.value_pos("/c").line as usize;
        assert_eq!(source_lines(text)[line - 1], "c: 3");
    }

    #[test]
    fn json_is_yaml() {
        let d = one("{\n  \"job_id\": \"a\",\n  \"schedule\": {\"interval_sec\": 30}\n}\n");
        assert_eq!(
            d.value,
            json!({"job_id": "a", "schedule": {"interval_sec": 30}})
        );
        assert_eq!(d.positions.key_pos("/schedule/interval_sec").line, 3);
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let err = parse_documents("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.line >= 1);
        assert!(!err.message.is_empty());
    }

    #[test]
    fn block_scalars_are_marked() {
        let d = one("t: |\n  hello {{ x }\n");
        let t = d.positions.get("/t").unwrap();
        assert!(t.block_scalar);
        assert_eq!(t.value, Pos { line: 2, column: 3 });
        assert_eq!(d.value, json!({"t": "hello {{ x }\n"}));
    }

    #[test]
    fn pointer_tokens_are_escaped() {
        let d = one("a/b:\n  c~d: 1\n");
        assert!(d.positions.get("/a~1b/c~0d").is_some());
    }
}
