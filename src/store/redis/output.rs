//! A run's output chunks in Redis: a list per run (`output:<run id>`) of
//! JSON chunks, appended directly (not through the leader's fenced
//! writer: a worker process records its runs' output too), expiring
//! [`REDIS_OUTPUT_TTL_SEC`] after the last write and deleted with its run
//! when runs are pruned (`batch.lua`). A reader's position is the index
//! after the last chunk it read.

use super::RedisStore;
use super::reads::err;
use crate::store::StoreError;
use crate::store::output::{OUTPUT_PAGE, OutputChunk, REDIS_OUTPUT_TTL_SEC};

impl RedisStore {
    fn output_key(&self, run_id: &str) -> String {
        self.key(&format!("output:{run_id}"))
    }

    /// Append `chunks` (all of one run, as one writer sends them).
    pub async fn record_output(&self, chunks: Vec<OutputChunk>) -> Result<(), StoreError> {
        let mut by_run: Vec<(String, Vec<String>)> = Vec::new();
        for ch in &chunks {
            let text = serde_json::to_string(ch)
                .map_err(|e| StoreError::corrupt(&format!("output of run {}", ch.run_id), e))?;
            match by_run.iter_mut().find(|(id, _)| *id == ch.run_id) {
                Some((_, items)) => items.push(text),
                None => by_run.push((ch.run_id.clone(), vec![text])),
            }
        }
        if by_run.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (run_id, items) in &by_run {
            let key = self.output_key(run_id);
            pipe.cmd("RPUSH").arg(&key).arg(items).ignore();
            pipe.cmd("EXPIRE")
                .arg(&key)
                .arg(REDIS_OUTPUT_TTL_SEC)
                .ignore();
        }
        let mut c = self.connection();
        pipe.query_async::<()>(&mut c)
            .await
            .map_err(err(self.target(), "recording a run's output"))
    }

    /// The chunks of `run_id` after position `after`, oldest first.
    pub async fn output(&self, run_id: String, after: i64) -> Result<Vec<OutputChunk>, StoreError> {
        let start = after.max(0);
        let stop = start + OUTPUT_PAGE as i64 - 1;
        let mut c = self.connection();
        let items: Vec<String> = redis::cmd("LRANGE")
            .arg(self.output_key(&run_id))
            .arg(start)
            .arg(stop)
            .query_async(&mut c)
            .await
            .map_err(err(self.target(), "reading a run's output"))?;
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let mut chunk: OutputChunk = serde_json::from_str(item)
                    .map_err(|e| StoreError::corrupt(&format!("output of run {run_id}"), e))?;
                chunk.pos = start + i as i64 + 1;
                Ok(chunk)
            })
            .collect()
    }
}
