//! PURE: what the `command` tool makes of a model's call. The call must be
//! `{"argv": [...]}` and nothing else (never a shell line); the argv is
//! matched on its prefix, element by element, exact strings, against the
//! job's `commands` lists. An `approve` prefix wins over an `allow` one, so
//! `allow: [[git]]` with `approve: [[git, push]]` still asks before a push.

use serde_json::Value;

use crate::spec::model::CommandPolicy;

/// Most argv elements a call may give.
pub const MAX_ARGS: usize = 256;

/// Most bytes of all argv elements together.
pub const MAX_ARGV_BYTES: usize = 64 * 1024;

/// What the policy says about one argv.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Runs now; the matching prefix.
    Allow(&'a [String]),
    /// Runs once an operator approves; the matching prefix.
    Approve(&'a [String]),
    /// Matches no prefix: nothing runs.
    Refuse,
}

pub fn judge<'a>(policy: &'a CommandPolicy, argv: &[String]) -> Verdict<'a> {
    let matching = |list: &'a [Vec<String>]| {
        list.iter()
            .find(|prefix| !prefix.is_empty() && argv.starts_with(prefix))
            .map(Vec::as_slice)
    };
    if let Some(prefix) = matching(&policy.approve) {
        Verdict::Approve(prefix)
    } else if let Some(prefix) = matching(&policy.allow) {
        Verdict::Allow(prefix)
    } else {
        Verdict::Refuse
    }
}

/// The argv of a call's arguments, or why the call is malformed (told to
/// the model, which may fix it).
pub fn argv_of(args: &Value) -> Result<Vec<String>, String> {
    let shape = "the command tool takes {\"argv\": [\"program\", \"arg\", ...]} only \
                 (an argv, run without a shell)";
    let Some(fields) = args.as_object() else {
        return Err(format!("{shape}; got {}", kind(args)));
    };
    if let Some(other) = fields.keys().find(|k| *k != "argv") {
        return Err(format!("{shape}; unknown field `{other}`"));
    }
    let Some(Value::Array(items)) = fields.get("argv") else {
        return Err(format!("{shape}; `argv` is missing or not a list"));
    };
    if items.is_empty() || items.len() > MAX_ARGS {
        return Err(format!(
            "argv must hold 1 to {MAX_ARGS} strings, not {}",
            items.len()
        ));
    }
    let mut argv = Vec::with_capacity(items.len());
    let mut bytes = 0;
    for (i, item) in items.iter().enumerate() {
        let Some(s) = item.as_str() else {
            return Err(format!("argv[{i}] must be a string, not {}", kind(item)));
        };
        if s.contains('\0') || (i == 0 && s.is_empty()) {
            return Err(format!("argv[{i}] is empty or holds a NUL byte"));
        }
        bytes += s.len();
        argv.push(s.to_string());
    }
    if bytes > MAX_ARGV_BYTES {
        return Err(format!("argv is {bytes} bytes; at most {MAX_ARGV_BYTES}"));
    }
    Ok(argv)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string (a shell line is not split: give a list)",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn policy() -> CommandPolicy {
        let v = |l: &[&[&str]]| -> Vec<Vec<String>> {
            l.iter()
                .map(|p| p.iter().map(|s| s.to_string()).collect())
                .collect()
        };
        CommandPolicy {
            allow: v(&[&["pytest", "-q"], &["git"]]),
            approve: v(&[&["git", "push"]]),
            ..CommandPolicy::default()
        }
    }

    fn argv(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn prefixes_match_element_by_element() {
        let p = policy();
        assert!(matches!(
            judge(&p, &argv(&["pytest", "-q"])),
            Verdict::Allow(_)
        ));
        // `&` and `rm` are arguments to pytest, not a second command.
        assert!(matches!(
            judge(&p, &argv(&["pytest", "-q", "&", "rm"])),
            Verdict::Allow(_)
        ));
        assert_eq!(judge(&p, &argv(&["pytest"])), Verdict::Refuse);
        assert_eq!(judge(&p, &argv(&["pytest", "-qx"])), Verdict::Refuse);
        assert_eq!(judge(&p, &argv(&["pytest -q"])), Verdict::Refuse);
        assert_eq!(
            judge(&p, &argv(&["sh", "-c", "pytest -q"])),
            Verdict::Refuse
        );
        assert_eq!(
            judge(&p, &argv(&["/usr/bin/pytest", "-q"])),
            Verdict::Refuse
        );
    }

    #[test]
    fn approve_wins_over_a_wider_allow() {
        let p = policy();
        assert!(matches!(
            judge(&p, &argv(&["git", "status"])),
            Verdict::Allow(_)
        ));
        assert_eq!(
            judge(&p, &argv(&["git", "push", "origin"])),
            Verdict::Approve(&argv(&["git", "push"])[..])
        );
    }

    #[test]
    fn an_empty_policy_refuses_everything() {
        let p = CommandPolicy::default();
        assert_eq!(judge(&p, &argv(&["ls"])), Verdict::Refuse);
    }

    #[test]
    fn only_an_argv_list_is_taken() {
        assert_eq!(
            argv_of(&json!({"argv": ["ls", "-l"]})),
            Ok(argv(&["ls", "-l"]))
        );
        for bad in [
            json!("ls -l"),
            json!({"argv": "ls -l"}),
            json!({"argv": []}),
            json!({"argv": ["ls"], "shell": true}),
            json!({"argv": ["ls", 3]}),
            json!({"argv": [""]}),
            json!({"argv": ["ls", "a\u{0}b"]}),
            json!({"cmd": ["ls"]}),
            json!({"argv": vec!["x"; MAX_ARGS + 1]}),
            json!({"argv": ["x".repeat(MAX_ARGV_BYTES + 1)]}),
        ] {
            assert!(argv_of(&bad).is_err(), "{bad}");
        }
    }
}
