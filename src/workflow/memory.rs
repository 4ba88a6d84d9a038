//! Agent memory, the pure part: what an agent remembers of its tool calls
//! across runs. Each call is reduced to a signature (`http:GET /x`,
//! `message:ops`, `mcp:fs.read_file`, `command:git`), counted as a
//! success or a failure, and a signature that failed `avoid_after` times
//! in a row goes on the avoid list given to the model in its system
//! prompt, until `avoid_ttl` passes or a later success clears it.
//! Everything here takes `now` as an argument; the store-backed part is
//! `memory_store.rs`.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Key-value prefix of every memory (`__multijob/memory/<key>`).
pub const MEMORY_PREFIX: &str = "__multijob/memory/";
/// Failures in a row before a signature is avoided (step `avoid_after`).
pub const DEFAULT_AVOID_AFTER: u32 = 2;
/// How long an avoided signature stays avoided after its last failure.
pub const DEFAULT_AVOID_TTL: SignedDuration = SignedDuration::from_hours(7 * 24);
/// Characters of an error kept (a tool may fail with a whole HTML page).
pub const ERROR_EXCERPT_CHARS: usize = 200;
/// Signatures kept per memory; the least recently seen go first.
pub const MAX_SIGNATURES: usize = 256;
/// Longest memory key (`memory: KEY`).
pub const MAX_KEY_LEN: usize = 128;
/// Characters of a signature kept (a path may be long).
const MAX_SIGNATURE_CHARS: usize = 160;

/// What one memory holds about one signature.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub failures: u64,
    pub successes: u64,
    pub consecutive_failures: u32,
    /// An excerpt of the last failure's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// RFC 3339 UTC of the last call.
    pub last_seen: String,
}

/// One memory: entries by signature.
pub type Memory = BTreeMap<String, Entry>;

/// The store key of memory `key`.
pub fn store_key(key: &str) -> String {
    format!("{MEMORY_PREFIX}{key}")
}

/// Whether `key` may name a memory: a job id's characters, 1..=128 long,
/// so it cannot climb out of its prefix or fill the store.
pub fn check_key(key: &str) -> Result<(), String> {
    let ok_chars = key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(format!(
            "a memory key has 1 to {MAX_KEY_LEN} characters, not {}",
            key.len()
        ));
    }
    if !ok_chars || key.starts_with('.') || key.contains("..") {
        return Err(format!(
            "memory key {:?} may hold letters, digits, `-`, `_` and single inner dots only",
            excerpt(key, 40)
        ));
    }
    Ok(())
}

/// The signature of one tool call: what a failure is remembered under.
/// Arguments that vary call to call (query, body, text) are left out.
pub fn signature(tool: &str, args: &Value) -> String {
    let field = |k: &str| args.get(k).and_then(Value::as_str).unwrap_or("");
    let sig = match tool {
        "http" => {
            let method = match field("method") {
                "" => "GET".to_string(),
                m => m.to_ascii_uppercase(),
            };
            let target = match (field("path"), field("url")) {
                ("", url) => url_path(url),
                (path, _) => path.to_string(),
            };
            let target = target.split(['?', '#']).next().unwrap_or("");
            format!("http:{method} {target}")
        }
        "message" | "llm" => format!("{tool}:{}", field("connector")),
        "kv" => {
            let op = ["get", "set", "incr", "delete"]
                .into_iter()
                .find(|op| args.get(*op).is_some())
                .unwrap_or("?");
            format!("kv:{op}")
        }
        "schedule_job" => format!("schedule_job:{}", field("job")),
        "metric" => format!("metric:{}", field("name")),
        "command" => {
            let argv0 = args
                .get("argv")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(Value::as_str)
                .unwrap_or("");
            format!("command:{argv0}")
        }
        // `mcp:fs.read_file`, `skill:triage`, or a tool we do not know:
        // its name says what it is.
        other => other.to_string(),
    };
    excerpt(&sig, MAX_SIGNATURE_CHARS)
}

/// The path of an absolute URL (`https://h/x?q` → `/x?q`), or the text.
fn url_path(url: &str) -> String {
    match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]).to_string(),
        None => url.to_string(),
    }
}

/// What a tool call returned, as memory counts it: the error an agent
/// saw (`{"error": ...}`, or an HTTP answer of 400 and above).
pub fn failure_of(output: &Value) -> Option<String> {
    if let Some(e) = output.get("error") {
        return Some(e.as_str().map_or_else(|| e.to_string(), str::to_string));
    }
    match output.get("status").and_then(Value::as_u64) {
        Some(s) if s >= 400 => Some(format!("HTTP status {s}")),
        _ => None,
    }
}

/// Count one call of `sig`: a success clears its streak (and so its place
/// on the avoid list), a failure extends it and keeps an excerpt.
pub fn record(memory: &mut Memory, sig: &str, failure: Option<&str>, now: Timestamp) {
    let entry = memory.entry(sig.to_string()).or_default();
    entry.last_seen = now.to_string();
    match failure {
        None => {
            entry.successes += 1;
            entry.consecutive_failures = 0;
        }
        Some(error) => {
            entry.failures += 1;
            entry.consecutive_failures = entry.consecutive_failures.saturating_add(1);
            entry.last_error = Some(excerpt(error, ERROR_EXCERPT_CHARS));
        }
    }
    while memory.len() > MAX_SIGNATURES {
        let oldest = memory
            .iter()
            .min_by(|a, b| a.1.last_seen.cmp(&b.1.last_seen))
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => memory.remove(&k),
            None => break,
        };
    }
}

/// The signatures to avoid at `now`: `avoid_after` failures in a row,
/// the last one less than `ttl` ago. Most failures first.
pub fn avoid_list(
    memory: &Memory,
    avoid_after: u32,
    ttl: SignedDuration,
    now: Timestamp,
) -> Vec<(&str, &Entry)> {
    let mut list: Vec<(&str, &Entry)> = memory
        .iter()
        .filter(|(_, e)| e.consecutive_failures >= avoid_after.max(1))
        .filter(|(_, e)| {
            e.last_seen
                .parse::<Timestamp>()
                .is_ok_and(|seen| now.duration_since(seen) < ttl)
        })
        .map(|(k, e)| (k.as_str(), e))
        .collect();
    list.sort_by_key(|e| std::cmp::Reverse(e.1.consecutive_failures));
    list
}

/// The sentence added to the system prompt, when there is anything to avoid.
pub fn avoid_prompt(list: &[(&str, &Entry)]) -> Option<String> {
    if list.is_empty() {
        return None;
    }
    let items: Vec<String> = list
        .iter()
        .map(|(sig, e)| {
            let error = e.last_error.as_deref().unwrap_or("no error kept");
            let first_line = error.lines().next().unwrap_or("");
            format!("{sig} ({} failures: {first_line})", e.consecutive_failures)
        })
        .collect();
    Some(format!(
        "Avoid these; they failed recently: {}.",
        items.join("; ")
    ))
}

/// At most `max` characters of `text`, marked when cut.
pub fn excerpt(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn signatures_keep_what_identifies_a_call_and_drop_what_varies() {
        let http = |args| signature("http", &args);
        assert_eq!(http(json!({"path": "/x?page=2"})), "http:GET /x");
        assert_eq!(
            http(json!({"method": "post", "path": "/a#f"})),
            "http:POST /a"
        );
        assert_eq!(
            http(json!({"url": "https://api.example/v1/items?q=1"})),
            "http:GET /v1/items"
        );
        assert_eq!(http(json!({"url": "https://api.example"})), "http:GET /");
        assert_eq!(
            signature("message", &json!({"connector": "ops", "text": "hi"})),
            "message:ops"
        );
        assert_eq!(signature("kv", &json!({"incr": "n"})), "kv:incr");
        assert_eq!(
            signature("command", &json!({"argv": ["git", "push"]})),
            "command:git"
        );
        assert_eq!(
            signature("mcp:fs.read_file", &json!({"path": "a"})),
            "mcp:fs.read_file"
        );
        let long = signature("http", &json!({"path": format!("/{}", "a".repeat(5000))}));
        assert!(long.chars().count() <= MAX_SIGNATURE_CHARS + 1, "{long}");
    }

    #[test]
    fn two_failures_in_a_row_avoid_and_a_success_clears() {
        let mut m = Memory::new();
        let t0 = at("2026-12-07T10:00:00Z");
        let ttl = DEFAULT_AVOID_TTL;
        record(&mut m, "http:GET /x", Some("404 Not Found"), t0);
        assert!(avoid_list(&m, 2, ttl, t0).is_empty());
        record(&mut m, "http:GET /x", Some("404 Not Found\n<html>"), t0);
        let list = avoid_list(&m, 2, ttl, t0);
        assert_eq!(list.len(), 1);
        assert_eq!(
            avoid_prompt(&list).as_deref(),
            Some("Avoid these; they failed recently: http:GET /x (2 failures: 404 Not Found).")
        );
        record(&mut m, "http:GET /x", None, t0);
        assert!(avoid_list(&m, 2, ttl, t0).is_empty());
        let e = &m["http:GET /x"];
        assert_eq!((e.failures, e.successes, e.consecutive_failures), (2, 1, 0));
    }

    #[test]
    fn an_avoided_signature_expires_after_the_ttl() {
        let mut m = Memory::new();
        let t0 = at("2026-12-07T10:00:00Z");
        record(&mut m, "s", Some("e"), t0);
        let ttl = SignedDuration::from_hours(1);
        assert_eq!(avoid_list(&m, 1, ttl, t0).len(), 1);
        let later = at("2026-12-07T10:59:59Z");
        assert_eq!(avoid_list(&m, 1, ttl, later).len(), 1);
        assert!(avoid_list(&m, 1, ttl, at("2026-12-07T11:00:00Z")).is_empty());
        // avoid_after 0 means 1: a never-failed signature is never avoided.
        record(&mut m, "ok", None, t0);
        assert_eq!(avoid_list(&m, 0, ttl, t0).len(), 1);
    }

    #[test]
    fn a_huge_error_is_cut_and_the_memory_is_bounded() {
        let mut m = Memory::new();
        let t0 = at("2026-12-07T10:00:00Z");
        record(&mut m, "s", Some(&"é".repeat(1_000_000)), t0);
        let kept = m["s"].last_error.clone().unwrap_or_default();
        assert_eq!(kept.chars().count(), ERROR_EXCERPT_CHARS + 1);
        for i in 0..MAX_SIGNATURES + 10 {
            let now = t0 + SignedDuration::from_secs(i as i64 + 1);
            record(&mut m, &format!("sig{i}"), None, now);
        }
        assert_eq!(m.len(), MAX_SIGNATURES);
        assert!(!m.contains_key("s"), "the least recently seen went first");
    }

    #[test]
    fn keys_that_could_escape_or_flood_are_refused() {
        assert!(check_key("shared-ops_1.v2").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "a..b", "a b", "ключ"] {
            assert!(check_key(bad).is_err(), "{bad:?} accepted");
        }
        let big = "k".repeat(10 * 1024);
        let err = check_key(&big).err().unwrap_or_default();
        assert!(err.contains("1 to 128"), "{err}");
    }

    #[test]
    fn failures_are_errors_or_http_statuses_from_400() {
        assert_eq!(
            failure_of(&json!({"error": "boom"})).as_deref(),
            Some("boom")
        );
        assert_eq!(
            failure_of(&json!({"status": 503, "body": ""})).as_deref(),
            Some("HTTP status 503")
        );
        assert_eq!(failure_of(&json!({"status": 200})), None);
        assert_eq!(failure_of(&json!("text")), None);
    }
}
