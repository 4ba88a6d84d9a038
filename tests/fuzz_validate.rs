//! A fuzzer for the config loader and validate: real config directories
//! (the bundled jobs.d/ and skills.d/, examples/, the seed fixtures),
//! mutated in structure and in bytes, go through `spec::build`, the pure
//! load + validate path of `multijob validate` and of every reload.
//!
//! It does not run in CI (`#[ignore]`). Run it for ten minutes with:
//!
//! ```text
//! MULTIJOB_FUZZ_SECS=600 nice -n 10 cargo test --test fuzz_validate -- \
//!     --ignored --nocapture --test-threads 1
//! ```
//!
//! `MULTIJOB_FUZZ_SEED=<n>` replays a run (each batch of cases prints its
//! seed). A failure is shrunk by proptest to the fewest, simplest mutations
//! and printed with the files it produced.
//!
//! Each case must: not panic; give every finding a file that was loaded, a
//! line within it and a column of 1 or more; when it has no error, give a
//! snapshot that survives its JSON round trip and diffs to nothing against
//! itself; and finish within `CASE_LIMIT`.

use std::path::Path;
use std::time::{Duration, Instant};

use multijob::reconcile::diff::diff;
use multijob::spec::snapshot::Snapshot;
use multijob::spec::{self, SourceFile};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use serde_json::{Map, Value};

/// A single case slower than this is a finding (a debug build loads the
/// largest base directory in well under a second).
const CASE_LIMIT: Duration = Duration::from_secs(10);

/// The daemon loads config on a tokio blocking thread: 2 MiB of stack.
const STACK: usize = 2 << 20;

// ---------------------------------------------------------------- corpus

/// How many of the bases [`corpus`] lists first are whole directories.
const DIRS: usize = 3;

/// The directories and files mutations start from, as `validate` reads them.
fn corpus() -> Vec<Vec<SourceFile>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut bases = vec![
        read_dir(root, &["jobs.d", "skills.d"]),
        read_dir(&root.join("examples/ops-247"), &["jobs.d", "skills.d"]),
        read_dir(&root.join("examples/heavy"), &["jobs.d", "skills.d"]),
    ];
    let seeds = root.join("tests/fixtures/seeds");
    let mut names: Vec<_> = std::fs::read_dir(&seeds)
        .expect("seed fixtures")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    for path in names {
        let text = std::fs::read_to_string(&path).expect("seed");
        bases.push(vec![SourceFile {
            path: "jobs.d/seed.json".into(),
            text,
        }]);
    }
    assert!(
        bases[..DIRS].iter().all(|b| b.len() > 1),
        "a directory is missing"
    );
    bases
}

fn read_dir(dir: &Path, subdirs: &[&str]) -> Vec<SourceFile> {
    let mut files = Vec::new();
    for sub in subdirs {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            if let (Some(name), Ok(text)) = (path.file_name(), std::fs::read_to_string(&path)) {
                files.push(SourceFile {
                    path: format!("{sub}/{}", name.to_string_lossy()),
                    text,
                });
            }
        }
    }
    files
}

// ------------------------------------------------------------- mutations

/// A value to put where another was.
#[derive(Debug, Clone)]
enum Odd {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A number past u64 and f64, as YAML text.
    Huge(String),
    Str(String),
    List(Vec<Odd>),
    Map(Vec<(String, Odd)>),
}

#[derive(Debug, Clone)]
enum ValueOp {
    Drop,
    Replace(Odd),
    /// Wrap in this many lists (or maps under key "k").
    Nest(u16, bool),
    RenameKey(String),
    /// Set `id` to the id of another resource (duplicates).
    CopyId(Index),
    /// Add or point a step's `uses` at another resource's id (loops).
    Uses(Index),
}

#[derive(Debug, Clone)]
enum TextOp {
    DuplicateLine,
    DeleteLine,
    SplitDocument,
    /// An anchor on one line's value and an alias of it on another.
    Anchor(Index),
    AliasBomb(u8),
    Insert(String),
    DeleteRange(u16),
    Truncate,
    Indent(bool),
    SpliceFrom(Index, Index),
    /// Raw bytes, made text as a reader would with invalid UTF-8 replaced.
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone)]
enum FileOp {
    MoveDir,
    Duplicate,
    Empty,
    /// A generated chain of this many skills, closed into a loop or not.
    Chain(u16, bool),
}

#[derive(Debug, Clone)]
enum Mutation {
    Value {
        file: Index,
        doc: Index,
        at: Index,
        op: ValueOp,
        yaml_out: bool,
    },
    Text {
        file: Index,
        at: Index,
        op: TextOp,
    },
    File {
        file: Index,
        op: FileOp,
    },
}

fn odd_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,40}",
        ".{0,20}",
        Just(String::new()),
        prop::sample::select(vec![
            "\u{202E}evil\u{202C}",
            "zero\u{200B}width",
            "\u{FEFF}bom",
            "nul\0byte",
            "line\u{2028}sep",
            "e\u{301}\u{301}\u{301}",
            "🦀🦀",
            "\t\r\n",
            "{{",
            "}}",
            "{{ steps.x.output }}",
            "{{ inputs | tojson }}",
            "{% for i in range(99999999) %}x{% endfor %}",
            "{{ 'x' * 999999999 }}",
            "{{ env.HOME }}",
            "${env:HOME}",
            "${file:/etc/passwd}",
            "${env:}",
            "../../etc/passwd",
            "* * * * *",
            "0 0 31 2 *",
            "1e999",
            "-0",
            ".inf",
            ".nan",
            "0x",
            "0o9",
            "~",
            "null",
            "yes",
            "on",
            "no",
            "007",
            "1_000",
            "Europe/Nowhere",
            "http://169.254.169.254/",
            "file:///etc/passwd",
            "agent.workflow",
            "noop",
            "Skill",
            "Job",
            "Flow",
            "Connector",
        ])
        .prop_map(str::to_string),
        (1usize..20_000).prop_map(|n| "x".repeat(n)),
    ]
}

fn odd() -> impl Strategy<Value = Odd> {
    let leaf = prop_oneof![
        Just(Odd::Null),
        any::<bool>().prop_map(Odd::Bool),
        prop_oneof![
            any::<i64>(),
            Just(i64::MIN),
            Just(i64::MAX),
            Just(0),
            Just(-1)
        ]
        .prop_map(Odd::Int),
        prop_oneof![
            any::<f64>(),
            Just(1e308),
            Just(-0.0),
            Just(f64::MIN_POSITIVE)
        ]
        .prop_map(Odd::Float),
        prop::sample::select(vec![
            "18446744073709551616",
            "-9223372036854775809",
            "1e400",
            "99999999999999999999999",
            "0.0000000000000000000000000000001",
        ])
        .prop_map(|s| Odd::Huge(s.to_string())),
        odd_string().prop_map(Odd::Str),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Odd::List),
            prop::collection::vec(("[a-z_]{1,8}", inner), 0..4).prop_map(Odd::Map),
        ]
    })
}

fn value_op() -> impl Strategy<Value = ValueOp> {
    prop_oneof![
        2 => Just(ValueOp::Drop),
        4 => odd().prop_map(ValueOp::Replace),
        1 => (1u16..300, any::<bool>()).prop_map(|(n, list)| ValueOp::Nest(n, list)),
        1 => prop_oneof!["[a-z_]{1,12}".boxed(), odd_string().boxed()].prop_map(ValueOp::RenameKey),
        1 => any::<Index>().prop_map(ValueOp::CopyId),
        2 => any::<Index>().prop_map(ValueOp::Uses),
    ]
}

fn text_op() -> impl Strategy<Value = TextOp> {
    prop_oneof![
        2 => Just(TextOp::DuplicateLine),
        2 => Just(TextOp::DeleteLine),
        1 => Just(TextOp::SplitDocument),
        1 => any::<Index>().prop_map(TextOp::Anchor),
        1 => (1u8..12).prop_map(TextOp::AliasBomb),
        2 => prop_oneof![
            odd_string(),
            prop::sample::select(vec![
                "---\n", "...\n", "%YAML 1.2\n", "- ", ": ", "? ", "&a ", "*a", "!!str ",
                "!!binary ", "!custom ", "<<: *a\n", "{", "}", "[", "]", "\"", "'", "|\n", ">-\n",
                "#", "\t", "\r", "\n\n\n", "kind: Skill\n", "kind: Flow\n", "id: dup\n",
            ])
            .prop_map(str::to_string),
        ]
        .prop_map(TextOp::Insert),
        1 => (1u16..400).prop_map(TextOp::DeleteRange),
        1 => Just(TextOp::Truncate),
        1 => any::<bool>().prop_map(TextOp::Indent),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(f, l)| TextOp::SpliceFrom(f, l)),
        2 => prop::collection::vec(any::<u8>(), 1..16).prop_map(TextOp::Bytes),
    ]
}

fn file_op() -> impl Strategy<Value = FileOp> {
    prop_oneof![
        Just(FileOp::MoveDir),
        Just(FileOp::Duplicate),
        Just(FileOp::Empty),
        (1u16..40, any::<bool>()).prop_map(|(n, closed)| FileOp::Chain(n, closed)),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        5 => (any::<Index>(), any::<Index>(), any::<Index>(), value_op(), any::<bool>())
            .prop_map(|(file, doc, at, op, yaml_out)| Mutation::Value { file, doc, at, op, yaml_out }),
        4 => (any::<Index>(), any::<Index>(), text_op())
            .prop_map(|(file, at, op)| Mutation::Text { file, at, op }),
        1 => (any::<Index>(), file_op()).prop_map(|(file, op)| Mutation::File { file, op }),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    /// Half the cases start from one of the whole directories (where skills
    /// and connectors are referenced), the rest from any base.
    whole_dir: bool,
    base: Index,
    mutations: Vec<Mutation>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<bool>(),
        any::<Index>(),
        prop::collection::vec(mutation(), 1..8),
    )
        .prop_map(|(whole_dir, base, mutations)| Case {
            whole_dir,
            base,
            mutations,
        })
}

// ------------------------------------------------------- applying them

fn odd_value(o: &Odd) -> Value {
    match o {
        Odd::Null => Value::Null,
        Odd::Bool(b) => Value::Bool(*b),
        Odd::Int(i) => Value::from(*i),
        Odd::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        // Emitted as a string here; `TextOp::Insert` puts raw ones in text.
        Odd::Huge(s) | Odd::Str(s) => Value::String(s.clone()),
        Odd::List(items) => Value::Array(items.iter().map(odd_value).collect()),
        Odd::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), odd_value(v)))
                .collect::<Map<_, _>>(),
        ),
    }
}

/// Every JSON pointer in `v`, the root first.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Array(items) => {
            out.push(at.clone());
            for (i, item) in items.iter().enumerate() {
                pointers(item, format!("{at}/{i}"), out);
            }
        }
        Value::Object(map) => {
            out.push(at.clone());
            for (k, item) in map {
                let token = k.replace('~', "~0").replace('/', "~1");
                pointers(item, format!("{at}/{token}"), out);
            }
        }
        _ => out.push(at),
    }
}

/// The ids of every document of every file (for duplicates and `uses`).
fn ids(files: &[SourceFile]) -> Vec<String> {
    files
        .iter()
        .filter_map(|f| spec::yaml::parse_documents(&f.text).ok())
        .flatten()
        .filter_map(|d| {
            d.value
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect()
}

fn apply_value(
    files: &mut [SourceFile],
    (file, doc, at): (&Index, &Index, &Index),
    op: &ValueOp,
    yaml_out: bool,
) {
    let known = ids(files);
    let f = &mut files[file.index(files.len())];
    let Ok(mut docs) = spec::yaml::parse_documents(&f.text) else {
        return;
    };
    if docs.is_empty() {
        return;
    }
    let d = doc.index(docs.len());
    let mut all = Vec::new();
    pointers(&docs[d].value, String::new(), &mut all);
    let pointer = all[at.index(all.len())].clone();
    let (parent, last) = match pointer.rfind('/') {
        Some(i) => (pointer[..i].to_string(), Some(pointer[i + 1..].to_string())),
        None => (String::new(), None),
    };
    let root = &mut docs[d].value;
    let pick = |i: &Index| (!known.is_empty()).then(|| known[i.index(known.len())].clone());
    match op {
        ValueOp::Drop => match (root.pointer_mut(&parent), last) {
            (Some(Value::Object(m)), Some(k)) => {
                m.remove(&k.replace("~1", "/").replace("~0", "~"));
            }
            (Some(Value::Array(a)), Some(k)) => {
                if let Ok(i) = k.parse::<usize>()
                    && i < a.len()
                {
                    a.remove(i);
                }
            }
            _ => *root = Value::Null,
        },
        ValueOp::Replace(o) => {
            if let Some(v) = root.pointer_mut(&pointer) {
                *v = odd_value(o);
            }
        }
        ValueOp::Nest(n, list) => {
            if let Some(v) = root.pointer_mut(&pointer) {
                let mut inner = v.take();
                for _ in 0..*n {
                    inner = if *list {
                        Value::Array(vec![inner])
                    } else {
                        Value::Object(Map::from_iter([("k".to_string(), inner)]))
                    };
                }
                *v = inner;
            }
        }
        ValueOp::RenameKey(new) => {
            if let (Some(Value::Object(m)), Some(k)) = (root.pointer_mut(&parent), last)
                && let Some(v) = m.remove(&k.replace("~1", "/").replace("~0", "~"))
            {
                m.insert(new.clone(), v);
            }
        }
        ValueOp::CopyId(i) => {
            if let (Some(Value::Object(m)), Some(id)) = (root.pointer_mut(&parent), pick(i)) {
                m.insert("id".into(), Value::String(id));
            }
        }
        ValueOp::Uses(i) => {
            if let (Some(Value::Object(m)), Some(id)) = (root.pointer_mut(&pointer), pick(i)) {
                m.retain(|k, _| k == "id" || k == "when" || k == "with");
                m.insert("uses".into(), Value::String(id));
            }
        }
    }
    f.text = docs
        .iter()
        .map(|d| {
            if yaml_out {
                serde_saphyr::to_string(&d.value).unwrap_or_default()
            } else {
                serde_json::to_string_pretty(&d.value).unwrap_or_default()
            }
        })
        .collect::<Vec<_>>()
        .join("\n---\n");
}

fn apply_text(files: &mut [SourceFile], file: &Index, at: &Index, op: &TextOp) {
    let splice = match op {
        TextOp::SpliceFrom(f, l) => {
            let lines: Vec<String> = files[f.index(files.len())]
                .text
                .lines()
                .map(str::to_string)
                .collect();
            (!lines.is_empty()).then(|| lines[l.index(lines.len())].clone())
        }
        _ => None,
    };
    let f = &mut files[file.index(files.len())];
    let mut lines: Vec<String> = f.text.split('\n').map(str::to_string).collect();
    let n = at.index(lines.len());
    // A char boundary in the whole text, for byte-level edits.
    let mut byte = at.index(f.text.len() + 1);
    while !f.text.is_char_boundary(byte) {
        byte -= 1;
    }
    match op {
        TextOp::DuplicateLine => lines.insert(n, lines[n].clone()),
        TextOp::DeleteLine => {
            lines.remove(n);
        }
        TextOp::SplitDocument => lines.insert(n, "---".into()),
        TextOp::Anchor(other) => {
            if let Some((key, _)) = lines[n].split_once(": ") {
                lines[n] = format!("{key}: &fz {}", &lines[n][key.len() + 2..]);
                let m = other.index(lines.len());
                if let Some((k2, _)) = lines[m].split_once(": ") {
                    lines[m] = format!("{k2}: *fz");
                }
            }
        }
        TextOp::AliasBomb(depth) => {
            let mut bomb = "bomb0: &b0 [x, x, x, x, x, x, x, x, x, x]\n".to_string();
            for i in 1..=*depth {
                let j = i - 1;
                bomb.push_str(&format!(
                    "bomb{i}: &b{i} [*b{j}, *b{j}, *b{j}, *b{j}, *b{j}, *b{j}, *b{j}, *b{j}, *b{j}, *b{j}]\n"
                ));
            }
            lines.insert(n, bomb);
        }
        TextOp::Insert(s) => {
            f.text.insert_str(byte, s);
            return;
        }
        TextOp::DeleteRange(len) => {
            let mut end = (byte + *len as usize).min(f.text.len());
            while !f.text.is_char_boundary(end) {
                end += 1;
            }
            f.text.replace_range(byte..end, "");
            return;
        }
        TextOp::Truncate => {
            f.text.truncate(byte);
            return;
        }
        TextOp::Indent(deeper) => {
            lines[n] = if *deeper {
                format!("  {}", lines[n])
            } else {
                lines[n].trim_start().to_string()
            };
        }
        TextOp::SpliceFrom(..) => lines.insert(n, splice.unwrap_or_default()),
        TextOp::Bytes(bytes) => {
            let mut raw = f.text.clone().into_bytes();
            raw.splice(byte..byte, bytes.iter().copied());
            f.text = String::from_utf8_lossy(&raw).into_owned();
            return;
        }
    }
    f.text = lines.join("\n");
}

fn apply_file(files: &mut Vec<SourceFile>, file: &Index, op: &FileOp) {
    let i = file.index(files.len());
    match op {
        FileOp::MoveDir => {
            let f = &mut files[i];
            f.path = match f.path.strip_prefix("jobs.d/") {
                Some(rest) => format!("skills.d/{rest}"),
                None => format!("jobs.d/{}", f.path.trim_start_matches("skills.d/")),
            };
        }
        FileOp::Duplicate => {
            // A path of its own in the same directory, as a reader gives.
            let mut copy = files[i].clone();
            let (dir, name) = copy.path.split_once('/').unwrap_or(("jobs.d", "x.yaml"));
            copy.path = format!("{dir}/copy{}-{name}", files.len());
            files.push(copy);
        }
        FileOp::Empty => files[i].text.clear(),
        FileOp::Chain(n, closed) => {
            let n = *n as usize;
            let text: String = (0..n)
                .map(|k| {
                    let next = if k + 1 < n {
                        Some(k + 1)
                    } else {
                        closed.then_some(0)
                    };
                    match next {
                        Some(t) => format!("---\nid: fz{k}\nsteps:\n  - id: a\n    uses: fz{t}\n"),
                        None => format!("---\nid: fz{k}\nsteps:\n  - id: a\n    set: {{x: 1}}\n"),
                    }
                })
                .collect();
            files.push(SourceFile {
                path: format!("skills.d/fz-chain-{}.yaml", files.len()),
                text,
            });
        }
    }
}

fn apply(bases: &[Vec<SourceFile>], case: &Case) -> Vec<SourceFile> {
    let from = if case.whole_dir { DIRS } else { bases.len() };
    let mut files = bases[case.base.index(from)].clone();
    for m in &case.mutations {
        match m {
            Mutation::Value {
                file,
                doc,
                at,
                op,
                yaml_out,
            } => apply_value(&mut files, (file, doc, at), op, *yaml_out),
            Mutation::Text { file, at, op } => apply_text(&mut files, file, at, op),
            Mutation::File { file, op } => apply_file(&mut files, file, op),
        }
    }
    // A directory never holds two files of one path.
    let mut paths = std::collections::HashSet::new();
    for (i, f) in files.iter_mut().enumerate() {
        if !paths.insert(f.path.clone()) {
            f.path = format!("{}.{i}", f.path);
            paths.insert(f.path.clone());
        }
    }
    files
}

// ------------------------------------------------------------ the check

/// Checks one case; returns the codes of its findings (for the summary).
fn check(files: &[SourceFile]) -> Result<Vec<String>, TestCaseError> {
    let started = Instant::now();
    let loaded = spec::build(files);
    let took = started.elapsed();
    prop_assert!(took < CASE_LIMIT, "load + validate took {took:?}");
    for d in &loaded.diagnostics {
        let Some(f) = files.iter().find(|f| f.path == d.file) else {
            return Err(TestCaseError::fail(format!(
                "finding names no loaded file: {d}"
            )));
        };
        // The line after the last is where an unfinished file ends.
        let lines = spec::yaml::source_lines(&f.text).len() as u32 + 1;
        prop_assert!(
            d.line >= 1 && d.line <= lines && d.column >= 1,
            "finding without a position in its file ({lines} lines): {d}"
        );
        prop_assert!(
            !d.message.is_empty() && !d.code.is_empty(),
            "empty finding: {d}"
        );
    }
    if !loaded.has_errors() {
        let snapshot = &loaded.snapshot;
        let json =
            serde_json::to_string(snapshot).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: Snapshot = serde_json::from_str(&json)
            .map_err(|e| TestCaseError::fail(format!("snapshot JSON does not load: {e}")))?;
        prop_assert_eq!(back.content_hash(), snapshot.content_hash());
        prop_assert!(
            diff(snapshot, snapshot).is_empty(),
            "a snapshot differs from itself"
        );
        let _ = diff(&Snapshot::default(), snapshot);
    }
    Ok(loaded.diagnostics.into_iter().map(|d| d.code).collect())
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
#[ignore = "a fuzzer: MULTIJOB_FUZZ_SECS=600 cargo test --test fuzz_validate -- --ignored"]
fn fuzz_load_and_validate() {
    let secs = env_u64("MULTIJOB_FUZZ_SECS").unwrap_or(60);
    let first_seed = env_u64("MULTIJOB_FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    let bases = corpus();
    assert!(bases.len() > 10, "the corpus is missing files");
    let worker = std::thread::Builder::new()
        .name("fuzz".into())
        .stack_size(STACK)
        .spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(secs);
            let cases = std::cell::Cell::new(0u64);
            // How many cases had a finding of each code, and none at all.
            let codes = std::cell::RefCell::new(std::collections::BTreeMap::<String, u64>::new());
            let slowest = std::cell::Cell::new(Duration::ZERO);
            let mut batches = 0u64;
            let mut seed = first_seed;
            while Instant::now() < deadline {
                let mut bytes = [0u8; 32];
                bytes[..8].copy_from_slice(&seed.to_le_bytes());
                let config = Config {
                    cases: 64,
                    failure_persistence: None,
                    max_shrink_iters: 4096,
                    ..Config::default()
                };
                let mut runner =
                    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
                let result = runner.run(&case(), |c| {
                    let files = apply(&bases, &c);
                    let started = Instant::now();
                    let outcome = check(&files);
                    slowest.set(slowest.get().max(started.elapsed()));
                    cases.set(cases.get() + 1);
                    let mut found = outcome.map_err(|e| {
                        TestCaseError::fail(format!("{e}\n--- files ---\n{}", show(&files)))
                    })?;
                    found.sort();
                    found.dedup();
                    if found.is_empty() {
                        found.push("(none)".into());
                    }
                    for code in found {
                        *codes.borrow_mut().entry(code).or_default() += 1;
                    }
                    Ok(())
                });
                if let Err(e) = result {
                    panic!("seed {seed}: {e}");
                }
                batches += 1;
                seed += 1;
            }
            println!(
                "fuzz: {} cases in {batches} batches (seeds {first_seed}..{seed}), 0 failures, slowest case {:?}",
                cases.get(),
                slowest.get()
            );
            println!("cases with a finding of each code: {:?}", codes.borrow());
        })
        .expect("fuzz thread");
    if let Err(panic) = worker.join() {
        std::panic::resume_unwind(panic);
    }
}

fn show(files: &[SourceFile]) -> String {
    files
        .iter()
        .map(|f| {
            let text: String = f.text.chars().take(4000).collect();
            format!("== {} ==\n{text}\n", f.path)
        })
        .collect()
}
