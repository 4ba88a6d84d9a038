//! Agent tool names and the globs that pick them: a step's `tools` list
//! and the job's `tools` policy (`allow`/`deny`) name built-ins (`http`),
//! MCP tools (`mcp:<connector>.<tool>`) and skills (`skill:<id>`), with
//! `*` and `?` as globs (`mcp:fs.*`, `skill:*`). A tool is offered when the
//! step asks for it, the policy allows it and does not deny it.
//!
//! The model sees each tool as a function whose name OpenAI accepts
//! (`^[a-zA-Z0-9_-]{1,64}$`): [`function_name`] maps `mcp:fs.read_file` to
//! `mcp__fs__read_file`; the agent keeps the table of what it offered, so
//! a function name maps back to exactly one tool.

use crate::spec::model::ToolPolicy;

/// Whether `name` matches `pattern`: `*` is any run of characters (none
/// too), `?` exactly one; everything else matches itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was, and how much of the name it covers so far.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether `pattern` has a glob character.
pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

/// Whether any of `patterns` matches `name`.
pub fn any_match(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| glob_match(p, name))
}

/// Whether the job's policy lets an agent call `tool`.
pub fn policy_allows(policy: &ToolPolicy, tool: &str) -> bool {
    policy.allow.as_ref().is_none_or(|a| any_match(a, tool)) && !any_match(&policy.deny, tool)
}

/// `mcp:<connector>.<tool>` split in its two parts; the tool may hold
/// dots, the connector may not.
pub fn split_mcp(tool: &str) -> Option<(&str, &str)> {
    tool.strip_prefix("mcp:")?.split_once('.')
}

/// The function name a model sees for `tool`: `:` and `.` become `__`,
/// anything else outside `[a-zA-Z0-9_-]` becomes `_`, cut to 64 chars.
/// Two tools may map to one name; the agent offers only the first.
pub fn function_name(tool: &str) -> String {
    let mut out = String::with_capacity(tool.len() + 4);
    for c in tool.chars() {
        match c {
            ':' | '.' => out.push_str("__"),
            c if c.is_ascii_alphanumeric() || c == '_' || c == '-' => out.push(c),
            _ => out.push('_'),
        }
    }
    out.chars().take(64).collect()
}

/// The tool a function name that was not offered stands for, for the
/// record of a refused call: `mcp__fs__write` → `mcp:fs.write`.
pub fn tool_name_of(function: &str) -> String {
    if let Some(rest) = function.strip_prefix("mcp__")
        && let Some((connector, tool)) = rest.split_once("__")
    {
        return format!("mcp:{connector}.{tool}");
    }
    match function.strip_prefix("skill__") {
        Some(id) => format!("skill:{id}"),
        None => function.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_star_and_question_mark_only() {
        for (p, n) in [
            ("mcp:fs.*", "mcp:fs.read_file"),
            ("mcp:*", "mcp:github.delete_repo"),
            ("mcp:github.delete_*", "mcp:github.delete_repo"),
            ("skill:*", "skill:x"),
            ("mcp:fs.rea?_file", "mcp:fs.read_file"),
            ("*", ""),
            ("a*b*c", "aXXbYYc"),
            ("http", "http"),
        ] {
            assert!(glob_match(p, n), "{p} should match {n}");
        }
        for (p, n) in [
            ("mcp:fs.*", "mcp:fsx.read"),
            ("mcp:fs.write*", "mcp:fs.read_file"),
            ("?", ""),
            ("a*b", "aXbY"),
            ("http", "https"),
            ("mcp:[f]s.x", "mcp:fs.x"),
        ] {
            assert!(!glob_match(p, n), "{p} should not match {n}");
        }
    }

    #[test]
    fn policy_allow_and_deny_take_globs() {
        let policy = ToolPolicy {
            allow: Some(vec!["mcp:github.*".into(), "http".into()]),
            deny: vec!["mcp:github.delete_*".into()],
        };
        assert!(policy_allows(&policy, "mcp:github.list_issues"));
        assert!(policy_allows(&policy, "http"));
        assert!(!policy_allows(&policy, "mcp:github.delete_repo"));
        assert!(!policy_allows(&policy, "mcp:fs.read_file"));
        assert!(policy_allows(&ToolPolicy::default(), "skill:any"));
    }

    #[test]
    fn function_names_are_openai_safe_and_map_back() {
        assert_eq!(function_name("mcp:fs.read_file"), "mcp__fs__read_file");
        assert_eq!(function_name("skill:sum-up"), "skill__sum-up");
        assert_eq!(function_name("mcp:fs.a/b c"), "mcp__fs__a_b_c");
        assert_eq!(
            function_name(&format!("mcp:x.{}", "y".repeat(100))).len(),
            64
        );
        assert_eq!(tool_name_of("mcp__fs__write_file"), "mcp:fs.write_file");
        assert_eq!(tool_name_of("skill__sum-up"), "skill:sum-up");
        assert_eq!(tool_name_of("http"), "http");
        assert_eq!(split_mcp("mcp:fs.a.b"), Some(("fs", "a.b")));
        assert_eq!(split_mcp("mcp:fs"), None);
    }
}
