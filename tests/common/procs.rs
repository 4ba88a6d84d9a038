//! Processes of a test: whether a process group (a server an MCP session
//! or a command started) is gone, read from /proc.

use std::time::{Duration, Instant};

/// Whether any process of group `pgid` is alive (zombies do not count).
pub fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries.flatten().any(|e| {
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid pgrp ...: split after the command's `)`.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        f.len() > 3 && f[0] != "Z" && f[2] == pgid.to_string()
    })
}

#[track_caller]
pub fn assert_group_gone(pgid: i32) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while group_alive(pgid) {
        assert!(
            Instant::now() < deadline,
            "process group {pgid} still alive"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
