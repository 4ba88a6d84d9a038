//! Waiting for the inbox: a blocking `XREAD` that returns as soon as a
//! command is posted after the last one read. The leader polled every
//! 100 ms before, so a triggered run waited 50 ms in the inbox on average
//! and the commands of a steady stream of triggers queued up behind each
//! tick. The read blocks, so it has a connection of its own: on the shared
//! one it would hold up every command queued behind it.

use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;

use crate::store::StoreError;

pub(super) struct InboxWaiter {
    client: redis::Client,
    key: String,
    url: String,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

impl InboxWaiter {
    pub(super) fn new(client: redis::Client, prefix: &str, url: &str) -> InboxWaiter {
        InboxWaiter {
            client,
            key: format!("{prefix}inbox"),
            url: url.to_string(),
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// Returns once the inbox holds a command after `after` (inbox ids are
    /// `<seq>-1`), with the first one's seq, or `None` after `timeout` (at
    /// least 1 ms: `BLOCK 0` would wait for ever). A failed read drops the
    /// connection; the next call makes a new one.
    pub(super) async fn wait(
        &self,
        after: i64,
        timeout: Duration,
    ) -> Result<Option<i64>, StoreError> {
        let block = timeout.as_millis().clamp(1, u128::from(u32::MAX)) as u64;
        let mut conn = self.conn.lock().await;
        if conn.is_none() {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(timeout + Duration::from_secs(5)));
            *conn = Some(self.connect(config).await?);
        }
        let Some(c) = conn.as_mut() else {
            return Ok(None);
        };
        let read: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(block)
            .arg("STREAMS")
            .arg(&self.key)
            .arg(format!("{after}-{}", u64::MAX))
            .query_async(c)
            .await;
        match read {
            Ok(reply) => Ok(reply
                .iter()
                .flat_map(|r| &r.keys)
                .flat_map(|k| &k.ids)
                .find_map(|e| super::reads::entry_seq(&e.id))),
            Err(e) => {
                *conn = None;
                Err(StoreError::Redis {
                    url: self.url.clone(),
                    message: format!("waiting for the inbox: {e}"),
                })
            }
        }
    }

    async fn connect(
        &self,
        config: AsyncConnectionConfig,
    ) -> Result<MultiplexedConnection, StoreError> {
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| StoreError::Unreachable {
                url: self.url.clone(),
                message: e.to_string(),
            })
    }
}
