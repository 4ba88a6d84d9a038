//! A real `redis-server` for tests and benchmarks: started on a free
//! loopback port with its own data directory, stopped on drop; and a
//! sample run record.
//!
//! Not used by the daemon; it lives in the library so unit tests,
//! integration tests and the bench binary share one way to start Redis.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::spec::model::Priority;
use crate::store::runs::{Run, RunStatus, Trigger, Usage};

pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// Removes the data directory when we created it.
    owned_dir: bool,
    aof: bool,
}

impl RedisServer {
    /// Start a server with persistence off (fast; for most tests).
    pub fn start() -> std::io::Result<RedisServer> {
        Self::start_with(false)
    }

    /// Start a server; `aof` turns on the append-only file with
    /// `appendfsync always`, so whatever it acknowledged survives a restart.
    pub fn start_with(aof: bool) -> std::io::Result<RedisServer> {
        Self::start_in(aof, None)
    }

    /// Start a server (persistence off) holding what the snapshot `rdb`
    /// holds, as Redis loads its `dump.rdb` at start.
    pub fn start_from_snapshot(rdb: &Path) -> std::io::Result<RedisServer> {
        Self::start_in(false, Some(rdb))
    }

    fn start_in(aof: bool, rdb: Option<&Path>) -> std::io::Result<RedisServer> {
        let dir = std::env::temp_dir().join(format!(
            "multijob-redis-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&dir)?;
        if let Some(rdb) = rdb {
            std::fs::copy(rdb, dir.join("dump.rdb"))?;
        }
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir,
            owned_dir: true,
            aof,
        };
        // A port picked free can be taken before redis binds it: retry.
        let mut last = None;
        for _ in 0..5 {
            server.port = free_port()?;
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("redis-server did not start")))
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--protected-mode",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.aof {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let mut child = cmd.spawn().map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot start redis-server (is it installed? scripts/test installs it): {e}"
                ),
            )
        })?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Err(std::io::Error::other(format!(
                    "redis-server exited at start ({status}) on port {}",
                    self.port
                )));
            }
            if ping(self.port) {
                self.child = Some(child);
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(std::io::Error::other(
            "redis-server did not answer PING in 10 s",
        ))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `kill -9` the server (its AOF stays).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port and directory (after [`kill`]).
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                // The old socket may linger a moment.
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if self.owned_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A plain RESP PING over a socket: no client library needed.
fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

/// A manual run as tests need one: its id, job, run key and status set,
/// queued now, the rest empty.
pub fn sample_run(id: &str, job: &str, run_key: &str, status: RunStatus) -> Run {
    Run {
        id: id.into(),
        job_id: job.into(),
        status,
        trigger: Trigger::Manual,
        inputs: serde_json::Value::Object(Default::default()),
        attempt: 0,
        attempts: Vec::new(),
        scheduled_at: None,
        queued_at: crate::store::now_rfc3339(),
        started_at: None,
        finished_at: None,
        duration_ms: None,
        error: None,
        spec_hash: "h".into(),
        revision: "r".into(),
        steps: Vec::new(),
        usage: Usage::default(),
        output: None,
        run_key: run_key.into(),
        due_at: None,
        priority: Priority::Normal,
        flow: None,
        chain_depth: 0,
        lease_owner: None,
        cancelled_by: None,
        cancel_reason: None,
        trace_id: String::new(),
        trace_parent_span: None,
    }
}

/// The snapshot of one config file's `text` (at `jobs.d/a.yaml`), which
/// must be valid.
pub fn snapshot_of(text: &str) -> crate::spec::snapshot::Snapshot {
    let loaded = crate::spec::build(&[crate::spec::SourceFile {
        path: "jobs.d/a.yaml".into(),
        text: text.into(),
    }]);
    assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
    loaded.snapshot
}

/// A revision record as tests write one: `id` with `status`, now, one
/// create, no git.
pub fn revision_record(
    id: &str,
    status: crate::store::RevisionStatus,
) -> crate::store::RevisionRecord {
    crate::store::RevisionRecord {
        seq: 0,
        id: id.into(),
        status,
        at: crate::store::now_rfc3339(),
        git_commit: None,
        git_dirty: false,
        content_hash: "h".into(),
        summary: serde_json::json!({"create": 1}),
        changes: serde_json::json!([]),
        errors: vec![],
    }
}

/// A connector spec as tests write one: `id`, `provider`, `base_url`, no
/// secrets, config, rate limit or allowed hosts.
pub fn connector_spec(
    id: &str,
    provider: crate::spec::model::Provider,
    base_url: &str,
) -> crate::spec::model::Connector {
    crate::spec::model::Connector {
        id: id.to_string(),
        provider,
        base_url: Some(base_url.to_string()),
        secrets: Default::default(),
        config: Default::default(),
        rate_limit: None,
        allowed_hosts: Vec::new(),
        description: None,
        bridge: None,
        mcp: Default::default(),
    }
}

/// The connectors of `specs`, each as if read from
/// `connectors.d/<id>.yaml`.
pub fn connectors_of(specs: Vec<crate::spec::model::Connector>) -> crate::connectors::Connectors {
    let map = specs
        .into_iter()
        .map(|c| {
            let file = format!("connectors.d/{}.yaml", c.id);
            (
                c.id.clone(),
                crate::spec::snapshot::Resource::new(c, file, 1, 1),
            )
        })
        .collect();
    crate::connectors::Connectors::new(&map)
}

/// A run queue over one job file's `yaml` on a SQLite store in `dir`,
/// without workers, its clock frozen at `at` (RFC 3339).
pub fn queue_over(
    dir: &Path,
    yaml: &str,
    config: crate::queue::QueueConfig,
    at: &str,
) -> (crate::store::Store, std::sync::Arc<crate::queue::RunQueue>) {
    let store = crate::store::Store::open_sqlite(&dir.join("state.db")).expect("a store");
    let loaded = crate::spec::build(&[crate::spec::SourceFile {
        path: "jobs.d/t.yaml".into(),
        text: yaml.into(),
    }]);
    assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
    let applied = std::sync::Arc::new(crate::store::Applied {
        revision: None,
        snapshot: loaded.snapshot,
    });
    let clock = crate::clock::Clock::virtual_at(at.parse().expect("an RFC 3339 time"));
    let queue = crate::queue::RunQueue::new(store.clone(), applied, config, clock);
    (store, queue)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_restarts_on_the_same_port() {
        let mut r = RedisServer::start_with(true).expect("redis-server");
        let port = r.port();
        assert!(ping(port));
        r.kill();
        assert!(!ping(port));
        r.restart().expect("restart");
        assert_eq!(r.port(), port);
        assert!(ping(port));
    }
}
