//! A deployment for operator-command tests: a config dir, and for Redis
//! the server the daemon and the CLI share, so one table of checks runs
//! over both backends.

use std::time::{Duration, Instant};

use multijob::testkit::RedisServer;
use serde_json::Value;

use super::{ConfigDir, Daemon, Run};

/// A config dir and, for Redis, the server the daemon and CLI share.
pub struct Deployment {
    pub dir: ConfigDir,
    pub redis: Option<RedisServer>,
}

impl Deployment {
    pub fn new(redis: bool, jobs: &[(&str, &str)]) -> Deployment {
        let dir = ConfigDir::new();
        for (file, text) in jobs {
            dir.write(&format!("jobs.d/{file}"), text);
        }
        let redis = redis.then(|| RedisServer::start().expect("redis-server"));
        Deployment { dir, redis }
    }

    pub fn daemon(&self) -> Daemon {
        let url = self.redis.as_ref().map(RedisServer::url);
        let args: Vec<&str> = match &url {
            Some(u) => vec!["--redis", u.as_str()],
            None => vec![],
        };
        let d = Daemon::start(self.dir.path(), &args);
        d.wait_until("/readyz", "ready", |_| true);
        d
    }

    /// A CLI command on this deployment's store.
    pub fn cli(&self, args: &[&str]) -> Run {
        let mut all = args.to_vec();
        let url = self.redis.as_ref().map(RedisServer::url);
        if let Some(u) = &url {
            all.extend_from_slice(&["--redis", u.as_str()]);
        }
        self.dir.run(&all)
    }
}

pub fn runs(d: &Daemon, job: &str) -> Vec<Value> {
    let (_, body) = d.get(&format!("/api/v1/runs?job={job}&limit=500"));
    body["items"].as_array().cloned().unwrap_or_default()
}

pub fn events(d: &Daemon, kind: &str, job: &str) -> Vec<Value> {
    let (_, body) = d.get(&format!("/api/v1/events?type={kind}&job={job}&limit=500"));
    body["items"].as_array().cloned().unwrap_or_default()
}

#[track_caller]
pub fn wait_for<T>(what: &str, d: &Daemon, f: impl Fn() -> Option<T>) -> T {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "timed out waiting for {what}\n--- daemon log ---\n{}",
        d.log()
    );
}
