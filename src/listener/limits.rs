//! The listener's numbers, as pure functions: how many connections the
//! file-descriptor budget allows, how many of them streams may hold, and
//! when a connection that is not inside a request has waited too long.

use std::time::Duration;

/// File descriptors kept for everything but API connections, at least:
/// SQLite (database, WAL, shared memory, per connection), the watcher,
/// outbound HTTP pools, command pipes, backups, logs and the runtime.
pub const FD_RESERVE_MIN: u64 = 256;

/// The default cap never goes above this, whatever the fd limit: each
/// connection also costs memory (up to [`MAX_HEADER_BYTES`] of buffered
/// head, plus its task), and a status API has no use for more.
pub const MAX_CONNECTIONS_CEILING: u64 = 4096;

/// The largest request head (request line and headers) a client may send;
/// more gets `431 Request Header Fields Too Large`.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The default `--max-connections` for a soft RLIMIT_NOFILE of `nofile`: a
/// quarter of the limit (at least [`FD_RESERVE_MIN`]) stays free for the
/// rest of the daemon, so sockets can never starve the store, the watcher
/// or outbound calls of descriptors. A tiny limit still gets half of it.
pub fn default_max_connections(nofile: u64) -> usize {
    let cap = default_room(nofile).clamp(2, MAX_CONNECTIONS_CEILING);
    usize::try_from(cap).unwrap_or(2)
}

/// Each listener's default cap when `listeners` of them (the API and the
/// inbound one) share the process's descriptors: together they take no
/// more than one listener alone would, while that leaves them at the
/// ceiling each.
pub fn default_max_connections_each(nofile: u64, listeners: usize) -> usize {
    let one = default_max_connections(nofile);
    let n = listeners.max(1);
    let room = default_room(nofile);
    if (one as u64).saturating_mul(n as u64) <= room {
        one
    } else {
        usize::try_from(room / n as u64).unwrap_or(2).max(2)
    }
}

/// The descriptors the default leaves to sockets, before the ceiling.
fn default_room(nofile: u64) -> u64 {
    let reserve = (nofile / 4).max(FD_RESERVE_MIN);
    nofile.saturating_sub(reserve).max(nofile / 2)
}

/// How many connections long-lived streams (SSE) may hold at once: all
/// but an eighth of the cap (at least one), so a probe or an API call
/// always finds a connection it can take over.
pub fn max_streams(max_connections: usize) -> usize {
    let headroom = max_connections.div_ceil(8).max(1);
    max_connections.saturating_sub(headroom)
}

/// How long a connection may wait outside a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From connecting (or from the first byte after a keep-alive pause)
    /// to a complete request head.
    pub header: Duration,
    /// Between the end of a response and the first byte of the next
    /// request on a kept-alive connection.
    pub idle: Duration,
}

/// Where a connection stands, in times since a common origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phase {
    /// A request is being handled, or its response is being sent (a
    /// stream stays busy for as long as it is open; a response the peer
    /// reads slowly, until its last byte went out).
    pub busy: bool,
    /// At least one request was received on it.
    pub served: bool,
    /// When it was accepted, or when its last response ended.
    pub idle_since: Duration,
    /// The first byte received since then.
    pub head_started: Option<Duration>,
}

/// Why a connection was closed by the listener, not by its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    HeaderTimeout,
    IdleTimeout,
}

impl Expiry {
    pub fn as_str(self) -> &'static str {
        match self {
            Expiry::HeaderTimeout => "header_timeout",
            Expiry::IdleTimeout => "idle_timeout",
        }
    }
}

/// When the connection is to be closed unless it changes phase; `None`
/// while it is busy (a request in flight is not timed here: the handlers
/// and the stalled-write guard bound it).
pub fn deadline(p: Phase, t: Timeouts) -> Option<(Duration, Expiry)> {
    if p.busy {
        return None;
    }
    if !p.served {
        // A new connection gets one header timeout for its first head,
        // however slowly its bytes trickle in.
        return Some((p.idle_since + t.header, Expiry::HeaderTimeout));
    }
    Some(match p.head_started {
        Some(first_byte) => (first_byte + t.header, Expiry::HeaderTimeout),
        None => (p.idle_since + t.idle, Expiry::IdleTimeout),
    })
}

/// A connection the listener may close to make room for a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub id: u64,
    pub busy: bool,
    pub served: bool,
    pub idle_since: Duration,
}

/// Which connection goes when a new one arrives at the cap: never one
/// inside a request; among the rest, first those that never completed a
/// request head (what a flood of idle or half-sent sockets looks like),
/// then kept-alive ones, the longest waiting first.
pub fn victim(candidates: impl IntoIterator<Item = Candidate>) -> Option<u64> {
    candidates
        .into_iter()
        .filter(|c| !c.busy)
        .min_by_key(|c| (c.served, c.idle_since, c.id))
        .map(|c| c.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        header: Duration::from_secs(5),
        idle: Duration::from_secs(30),
    };

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn the_default_cap_keeps_a_reserve_of_descriptors() {
        // A 1,024 limit (a common default): 768 sockets, 256 kept.
        assert_eq!(default_max_connections(1024), 768);
        assert_eq!(default_max_connections(4096), 3072);
        // Large limits stop at the ceiling.
        assert_eq!(default_max_connections(1 << 20), 4096);
        assert_eq!(default_max_connections(u64::MAX), 4096);
        // Tiny limits still serve: half of them.
        assert_eq!(default_max_connections(256), 128);
        assert_eq!(default_max_connections(512), 256);
        assert_eq!(default_max_connections(3), 2);
        assert_eq!(default_max_connections(0), 2);
        for nofile in [64, 300, 1000, 1024, 2048, 10_000, 65_536] {
            let cap = default_max_connections(nofile) as u64;
            assert!(
                cap <= nofile / 2 || nofile - cap >= FD_RESERVE_MIN,
                "{nofile}: {cap}"
            );
        }
    }

    #[test]
    fn two_listeners_share_the_room_one_would_have() {
        // A 1,024 limit: 384 each, the same 256 kept for the rest.
        assert_eq!(default_max_connections_each(1024, 2), 384);
        assert_eq!(default_max_connections_each(1024, 1), 768);
        // Room for both at the ceiling: each gets it.
        assert_eq!(default_max_connections_each(1 << 20, 2), 4096);
        assert_eq!(default_max_connections_each(8192, 2), 3072);
        assert_eq!(default_max_connections_each(3, 2), 2);
        for nofile in [64, 300, 1000, 1024, 2048, 10_000, 65_536] {
            let both = 2 * default_max_connections_each(nofile, 2) as u64;
            assert!(both <= default_room(nofile).max(4), "{nofile}: {both}");
        }
    }

    #[test]
    fn streams_leave_an_eighth_of_the_connections_free() {
        assert_eq!(max_streams(768), 672);
        assert_eq!(max_streams(4096), 3584);
        assert_eq!(max_streams(9), 7);
        assert_eq!(max_streams(2), 1);
        assert_eq!(max_streams(1), 0);
    }

    #[test]
    fn a_new_connection_has_one_header_timeout_from_accept() {
        let p = Phase {
            busy: false,
            served: false,
            idle_since: s(100),
            head_started: Some(s(104)),
        };
        // Bytes trickling in do not extend it.
        assert_eq!(deadline(p, T), Some((s(105), Expiry::HeaderTimeout)));
    }

    #[test]
    fn a_kept_alive_connection_waits_idle_then_gets_a_header_timeout() {
        let idle = Phase {
            busy: false,
            served: true,
            idle_since: s(100),
            head_started: None,
        };
        assert_eq!(deadline(idle, T), Some((s(130), Expiry::IdleTimeout)));
        let started = Phase {
            head_started: Some(s(128)),
            ..idle
        };
        assert_eq!(deadline(started, T), Some((s(133), Expiry::HeaderTimeout)));
    }

    #[test]
    fn a_busy_connection_is_not_timed() {
        let p = Phase {
            busy: true,
            served: true,
            idle_since: s(0),
            head_started: None,
        };
        assert_eq!(deadline(p, T), None);
    }

    fn c(id: u64, busy: bool, served: bool, idle_since: u64) -> Candidate {
        Candidate {
            id,
            busy,
            served,
            idle_since: s(idle_since),
        }
    }

    #[test]
    fn the_victim_is_never_busy_and_unserved_ones_go_first() {
        assert_eq!(victim([]), None);
        assert_eq!(victim([c(1, true, true, 0), c(2, true, false, 0)]), None);
        // The oldest idle one.
        assert_eq!(
            victim([
                c(1, true, true, 0),
                c(2, false, true, 9),
                c(3, false, true, 5)
            ]),
            Some(3)
        );
        // A never-served socket goes before a kept-alive one, even a newer one.
        assert_eq!(
            victim([c(1, false, true, 0), c(2, false, false, 50)]),
            Some(2)
        );
        // Ties: the lowest id (the first accepted).
        assert_eq!(
            victim([c(7, false, false, 3), c(4, false, false, 3)]),
            Some(4)
        );
    }
}
