//! The layer order of `src/lib.rs`, checked: every `crate::` path in a
//! module names a module of its own layer or one below it. A module that
//! reaches up (the queue importing the worker, the store building the
//! reconciler's plan) fails here with the file, the line and the path.
//!
//! Test code (a `#[cfg(test)]` item, a `tests.rs` file) may use anything:
//! tests assemble the layers they test.

use std::path::{Path, PathBuf};

/// Lowest first. Must match the order written in `src/lib.rs`.
const LAYERS: &[&str] = &[
    "clock",
    "logging",
    "regular_file",
    "listener",
    "otel",
    "signature",
    "calendar",
    "spec",
    "store",
    "run",
    "connectors",
    "queue",
    "schedule",
    "workflow",
    "jobs",
    "notify",
    "worker",
    "reconcile",
    "status",
    "inbound",
    "cluster",
    "daemon",
    "cli",
    // Test support: only test code may use it.
    "testkit",
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|m| *m == module)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file under `src/` belongs to (`queue` for
/// `src/queue/claim.rs` and `src/queue.rs`); `None` for the crate root.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// Every `crate::<module>` path on a line of code (comments aside).
fn crate_paths(line: &str) -> Vec<String> {
    let code = line.trim_start();
    if code.starts_with("//") {
        return Vec::new();
    }
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let preceded_by_ident = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$');
        let after = &rest[at + "crate::".len()..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !preceded_by_ident && !name.is_empty() {
            found.push(name);
        }
        rest = after;
    }
    found
}

/// The upward imports of one file's text: `(line, module it names)`.
fn upward_imports(own: &str, text: &str) -> Vec<(usize, String)> {
    let Some(own_layer) = layer_of(own) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut after_cfg_test = false;
    for (index, line) in text.lines().enumerate() {
        let code = line.trim();
        if code.starts_with("#[cfg(test)]") {
            after_cfg_test = true;
            continue;
        }
        if after_cfg_test {
            // A `#[cfg(test)] mod tests { … }` runs to the end of the file
            // (the crate's convention); a `#[cfg(test)]` item is one line.
            if code.starts_with("mod ") || code.starts_with("pub mod ") {
                if code.ends_with('{') {
                    break;
                }
                after_cfg_test = false;
                continue;
            }
            if code.starts_with("#[") {
                continue;
            }
            after_cfg_test = false;
            if code.ends_with(';') {
                continue;
            }
        }
        for module in crate_paths(line) {
            if module == own {
                continue;
            }
            match layer_of(&module) {
                Some(layer) if layer <= own_layer => {}
                _ => found.push((index + 1, module)),
            }
        }
    }
    found
}

#[test]
fn every_module_imports_only_its_own_layer_or_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    for file in &files {
        let Some(own) = module_of(&src, file) else {
            continue;
        };
        assert!(
            layer_of(&own).is_some(),
            "{}: module `{own}` has no place in the layer order; add it to LAYERS here and to src/lib.rs",
            file.display()
        );
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("a source file");
        for (line, module) in upward_imports(&own, &text) {
            let rel = file.strip_prefix(&src).unwrap_or(file);
            violations.push(format!(
                "src/{}:{line}: `{own}` uses `crate::{module}`, which is above it in the layer order",
                rel.display()
            ));
        }
    }
    assert!(
        violations.is_empty(),
        "imports that go up the layers ({}):\n{}",
        violations.len(),
        violations.join("\n")
    );
}

#[test]
fn the_layer_order_is_the_one_lib_rs_documents() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("src/lib.rs");
    let order = lib
        .lines()
        .find_map(|l| l.trim().strip_prefix("//! Layers, lowest first:"))
        .expect("src/lib.rs has a `//! Layers, lowest first:` line");
    let written: Vec<&str> = order
        .split(['→', ','])
        .map(|m| m.trim().trim_end_matches('.').trim_matches('`'))
        .filter(|m| !m.is_empty())
        .collect();
    assert_eq!(
        written, LAYERS,
        "the order in src/lib.rs and in this test differ"
    );
}

#[test]
fn the_checker_finds_an_upward_import_and_passes_test_code() {
    let text = "use crate::spec::model::Job;\n\
                use crate::worker::RunHost;\n\
                // crate::daemon in a comment is fine\n\
                #[cfg(test)]\n\
                use crate::testkit::RedisServer;\n\
                fn f() { crate::jobs::execute(); }\n\
                #[cfg(test)]\n\
                mod tests {\n\
                    use crate::daemon::Options;\n\
                }\n";
    let found = upward_imports("queue", text);
    assert_eq!(
        found,
        vec![(2, "worker".to_string()), (6, "jobs".to_string())]
    );
    assert_eq!(crate_paths("mycrate::a; $crate::b"), Vec::<String>::new());
}
