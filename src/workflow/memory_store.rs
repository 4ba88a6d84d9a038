//! Agent memory, the store-backed part: one key-value entry per memory
//! (`__multijob/memory/<key>`, the step's `memory:` or the job id), on
//! the embedded store and on Redis alike. Runs of one job may record at
//! once, on one process or several, so each read-modify-write holds a
//! short lock: a `SetIfAbsent` claim of `__multijob/memory-lock/<key>`
//! with a token (atomic on both stores) and a TTL, so a crashed holder
//! cannot wedge the memory. Memory is advice: when the store fails, the
//! agent goes on without it (and the log says so).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::memory::{self, DEFAULT_AVOID_AFTER, DEFAULT_AVOID_TTL, Memory};
use super::runtime::{RuntimeActions, text};
use crate::store::{KvOp, Store, StoreError};

/// How long a lock holder may keep a memory (a read and a write).
const LOCK_TTL_SEC: u64 = 10;
/// Attempts to take the lock before recording without it is given up.
const LOCK_ATTEMPTS: u32 = 200;

/// The memory `key` holds (empty when nothing was recorded).
pub async fn load(store: &Store, key: &str) -> Result<Memory, StoreError> {
    let skey = memory::store_key(key);
    match store.kv(&skey, KvOp::Get).await? {
        None | Some(Value::Null) => Ok(Memory::new()),
        Some(v) => serde_json::from_value(v).map_err(|e| StoreError::corrupt(&skey, e)),
    }
}

/// Forget memory `key`; returns what it held (`None`: nothing was stored).
pub async fn reset(store: &Store, key: &str) -> Result<Option<Memory>, StoreError> {
    let _lock = Lock::take(store, key).await?;
    let previous = load(store, key).await?;
    store.kv(&memory::store_key(key), KvOp::Delete).await?;
    Ok((!previous.is_empty()).then_some(previous))
}

/// Record one call of `sig` in memory `key`, under its lock.
pub async fn record(
    store: &Store,
    key: &str,
    sig: &str,
    failure: Option<&str>,
) -> Result<(), StoreError> {
    let _lock = Lock::take(store, key).await?;
    let mut m = load(store, key).await?;
    memory::record(&mut m, sig, failure, Timestamp::now());
    let value = serde_json::to_value(&m).unwrap_or_else(|_| json!({}));
    store
        .kv(
            &memory::store_key(key),
            KvOp::Set {
                value,
                ttl_sec: None,
            },
        )
        .await?;
    Ok(())
}

/// A held memory lock; released on drop (or by its TTL).
struct Lock {
    store: Store,
    key: String,
}

impl Lock {
    async fn take(store: &Store, key: &str) -> Result<Lock, StoreError> {
        let lock_key = format!("__multijob/memory-lock/{key}");
        let token = json!(uuid::Uuid::now_v7().to_string());
        for _ in 0..LOCK_ATTEMPTS {
            let op = KvOp::SetIfAbsent {
                value: token.clone(),
                ttl_sec: LOCK_TTL_SEC,
            };
            if store.kv(&lock_key, op).await?.as_ref() == Some(&token) {
                return Ok(Lock {
                    store: store.clone(),
                    key: lock_key,
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(StoreError::corrupt(
            &lock_key,
            format!(
                "memory lock held for more than {}s",
                LOCK_ATTEMPTS * 25 / 1000
            ),
        ))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let (store, key) = (self.store.clone(), std::mem::take(&mut self.key));
        tokio::spawn(async move {
            if let Err(e) = store.kv(&key, KvOp::Delete).await {
                tracing::warn!(key, error = %e, "agent memory: lock not released (it expires)");
            }
        });
    }
}

/// An agent step's memory: where it lives and when a signature is avoided.
pub(super) struct AgentMemory {
    key: String,
    avoid_after: u32,
    ttl: SignedDuration,
}

impl RuntimeActions {
    /// The step's memory settings (`memory`, `avoid_after`, `avoid_ttl_sec`).
    pub(super) fn agent_memory(&self, args: &Value) -> Result<AgentMemory, crate::run::RunError> {
        let key = text(args.get("memory")).unwrap_or_else(|| self.job.id.clone());
        memory::check_key(&key).map_err(crate::run::RunError::Permanent)?;
        let ttl = args
            .get("avoid_ttl_sec")
            .and_then(Value::as_u64)
            .map_or(DEFAULT_AVOID_TTL, |s| {
                SignedDuration::from_secs(s.min(i64::MAX as u64) as i64)
            });
        let avoid_after = args
            .get("avoid_after")
            .and_then(Value::as_u64)
            .map_or(DEFAULT_AVOID_AFTER, |n| n.clamp(1, 1000) as u32);
        Ok(AgentMemory {
            key,
            avoid_after,
            ttl,
        })
    }
}

impl AgentMemory {
    /// The avoid-list sentence for the system prompt, if any.
    pub(super) async fn prompt(&self, store: &Store) -> Option<String> {
        match load(store, &self.key).await {
            Ok(m) => memory::avoid_prompt(&memory::avoid_list(
                &m,
                self.avoid_after,
                self.ttl,
                Timestamp::now(),
            )),
            Err(e) => {
                tracing::warn!(memory = %self.key, error = %e, "agent memory not read; the agent runs without its avoid list");
                None
            }
        }
    }

    /// Count one tool call's outcome.
    pub(super) async fn record(&self, store: &Store, tool: &str, args: &Value, output: &Value) {
        let sig = memory::signature(tool, args);
        let failure = memory::failure_of(output);
        if let Err(e) = record(store, &self.key, &sig, failure.as_deref()).await {
            tracing::warn!(memory = %self.key, signature = %sig, error = %e, "agent memory: call not recorded");
        }
    }
}
