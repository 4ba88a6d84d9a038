//! The event tail: one task per store follows the events stream with a
//! blocking XREAD on a connection of its own and broadcasts each event, so
//! subscribers see every process's events in id order. It outlives Redis
//! restarts: it reconnects and resumes after the last id it saw.

use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::super::Event;
use super::batch::Target;
use super::reads::{Entry, entry_seq, parse_events};

/// How long one XREAD blocks; the connection's timeout is longer.
const BLOCK: Duration = Duration::from_secs(5);

pub async fn tail(
    client: redis::Client,
    target: Target,
    mut last: i64,
    publisher: broadcast::Sender<Event>,
    shutdown: CancellationToken,
) {
    let key = format!("{}events", target.prefix);
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(BLOCK + Duration::from_secs(5)));
    let mut conn: Option<MultiplexedConnection> = None;
    let mut delay = Duration::from_millis(100);
    loop {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => {
                let connect = client.get_multiplexed_async_connection_with_config(&config);
                let connected = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = connect => r,
                };
                match connected {
                    Ok(c) => {
                        if delay > Duration::from_millis(100) {
                            tracing::info!(url = %target.url, after = last, "store: event tail reconnected");
                        }
                        delay = Duration::from_millis(100);
                        conn.insert(c)
                    }
                    Err(e) => {
                        tracing::warn!(url = %target.url, error = %e, "store: event tail cannot connect; retrying");
                        if pause(&shutdown, &mut delay).await {
                            return;
                        }
                        continue;
                    }
                }
            }
        };
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&key)
            // Entries are `<last event id>-<count>`: everything after the
            // entry that ended with `last`.
            .arg(format!("{last}-{}", u64::MAX));
        let read = cmd.query_async::<Option<Vec<(String, Vec<Entry>)>>>(c);
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = read => r,
        };
        match result {
            Ok(streams) => {
                for entry in streams.into_iter().flatten().flat_map(|(_, e)| e) {
                    let seq = entry_seq(&entry.0);
                    match parse_events(entry) {
                        Ok(events) => {
                            for event in events {
                                last = event.id;
                                // No subscriber is fine: nobody is listening yet.
                                let _ = publisher.send(event);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "store: unreadable event skipped");
                            if let Some(seq) = seq {
                                last = seq;
                            }
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(url = %target.url, error = %e, after = last, "store: event tail lost its connection; reconnecting");
                conn = None;
                if pause(&shutdown, &mut delay).await {
                    return;
                }
            }
        }
    }
}

/// Sleep with backoff; true when the store shut down meanwhile.
async fn pause(shutdown: &CancellationToken, delay: &mut Duration) -> bool {
    let wait = *delay;
    *delay = (*delay * 2).min(Duration::from_secs(2));
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(wait) => false,
    }
}
