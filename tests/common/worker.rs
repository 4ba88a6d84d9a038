//! A `multijob worker` process of a Redis deployment for tests, with
//! short leases so faults resolve in seconds.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};

use multijob::testkit::RedisServer;

/// Short leases so faults resolve in seconds.
pub const FAST: [(&str, &str); 2] = [
    ("MULTIJOB_LEASE_MS", "1500"),
    ("MULTIJOB_LEADER_TTL_MS", "1500"),
];

/// A `multijob worker` process, killed on drop.
pub struct WorkerProc {
    pub child: Child,
    /// Its node name, as its first line says (`worker <node> joined …`).
    pub node: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl WorkerProc {
    pub fn start(redis: &RedisServer, slots: usize) -> WorkerProc {
        Self::start_with(redis, slots, &[])
    }

    /// With `extra` arguments, such as `--allow-command`.
    pub fn start_with(redis: &RedisServer, slots: usize, extra: &[&str]) -> WorkerProc {
        let dir = tempfile::tempdir().expect("worker dir");
        let log = dir.path().join("worker.log");
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new(super::bin())
            .args(["worker", "--redis", &redis.url(), "--workers"])
            .arg(slots.to_string())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(extra)
            .envs(FAST)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn worker");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = std::io::BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).expect("first line");
        assert!(
            line.starts_with("worker "),
            "worker did not start: {line:?}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let node = line.split_whitespace().nth(1).unwrap_or("").to_string();
        std::thread::spawn(move || {
            let mut sink = String::new();
            while reader.read_line(&mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        WorkerProc {
            child,
            node,
            log,
            _dir: dir,
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}
