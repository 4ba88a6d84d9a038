//! The tools each MCP server offers, kept per (revision, connector): a new
//! revision may start a different server, and the same revision's servers
//! are asked once. An entry is dropped when its server says
//! `notifications/tools/list_changed`. Bounded: past [`MAX_ENTRIES`] the
//! oldest revisions' entries go first (they cannot be asked for again once
//! a newer revision applies, except by runs still on it).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::ToolInfo;

const MAX_ENTRIES: usize = 512;

type Key = (String, String);

struct Cache {
    /// Entries by key, with the order they were filled in.
    entries: BTreeMap<Key, (u64, Arc<Vec<ToolInfo>>)>,
    next: u64,
}

static TOOLS: Mutex<Cache> = Mutex::new(Cache {
    entries: BTreeMap::new(),
    next: 0,
});

fn key(revision: &str, connector: &str) -> Key {
    (revision.to_string(), connector.to_string())
}

pub fn get(revision: &str, connector: &str) -> Option<Arc<Vec<ToolInfo>>> {
    let cache = TOOLS.lock().unwrap_or_else(|p| p.into_inner());
    cache
        .entries
        .get(&key(revision, connector))
        .map(|(_, t)| t.clone())
}

pub fn put(revision: &str, connector: &str, tools: Arc<Vec<ToolInfo>>) {
    let mut cache = TOOLS.lock().unwrap_or_else(|p| p.into_inner());
    if cache.entries.len() >= MAX_ENTRIES
        && let Some(oldest) = cache
            .entries
            .iter()
            .min_by_key(|(_, (n, _))| *n)
            .map(|(k, _)| k.clone())
    {
        cache.entries.remove(&oldest);
    }
    let n = cache.next;
    cache.next += 1;
    cache.entries.insert(key(revision, connector), (n, tools));
}

pub fn drop_entry(revision: &str, connector: &str) {
    let mut cache = TOOLS.lock().unwrap_or_else(|p| p.into_inner());
    cache.entries.remove(&key(revision, connector));
}
