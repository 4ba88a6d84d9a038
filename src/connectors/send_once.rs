//! Idempotent sending: a message goes out once per record key, whatever
//! retries, reclaimed runs or restarts do. The result of a call is recorded
//! in the store before the caller hears of it, so the next call with the
//! same key returns the recorded result instead of sending again.

use serde_json::Value;

use super::{Connectors, OutboundMessage};
use crate::run::RunError;
use crate::store::{KvOp, Store, StoreError};

/// How long idempotency records are kept.
pub const IDEMPOTENCY_TTL_SEC: u64 = 30 * 24 * 3600;

/// Where the result of the call keyed `key` is recorded.
fn record_key(key: &str) -> String {
    format!("idem:{key}")
}

/// A store failure while reading or writing a record: worth retrying.
pub fn store_error(e: StoreError) -> RunError {
    RunError::retryable(format!("store: {e}"))
}

/// The recorded result of the idempotent call keyed `key`, if it happened.
pub async fn recorded(store: &Store, key: &str) -> Result<Option<Value>, RunError> {
    store
        .kv(&record_key(key), KvOp::Get)
        .await
        .map_err(store_error)
}

/// Record the result of the idempotent call keyed `key`.
pub async fn record(store: &Store, key: &str, value: &Value) -> Result<(), RunError> {
    store
        .kv(
            &record_key(key),
            KvOp::Set {
                value: value.clone(),
                ttl_sec: Some(IDEMPOTENCY_TTL_SEC),
            },
        )
        .await
        .map(|_| ())
        .map_err(store_error)
}

/// Send a message unless one was already sent under `key`: the delivery
/// is recorded in the store before this returns, so a retried or
/// reclaimed run gets the recorded delivery instead of sending again.
pub async fn send_once(
    store: &Store,
    connectors: &Connectors,
    connector: &str,
    key: &str,
    msg: OutboundMessage,
) -> Result<Value, RunError> {
    if let Some(done) = recorded(store, key).await? {
        return Ok(done);
    }
    let delivery = connectors.send_message(connector, msg).await?;
    let output = serde_json::to_value(delivery).unwrap_or(Value::Null);
    record(store, key, &output).await?;
    Ok(output)
}
