//! `run --git`: a real `git` against a local bare repository, over
//! `file://` and over `git://` (a `git daemon --export-all` on a free
//! port), with the embedded store and with Redis.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::origin::{Origin, applied};
use common::{Daemon, git};

const JOB: &str = "id: tick\ntype: noop\nschedule: {every: 1h}\n";

/// `git daemon` serving the origin's parent directory on a fixed port.
struct GitDaemon {
    child: Child,
    port: u16,
    base: PathBuf,
}

impl GitDaemon {
    fn start(base: &Path) -> GitDaemon {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Self::spawn(base, port);
        GitDaemon {
            child,
            port,
            base: base.to_path_buf(),
        }
    }

    fn spawn(base: &Path, port: u16) -> Child {
        // git-daemon itself: `git daemon` runs it as a child, which a kill
        // of `git` would leave serving.
        let exec_path = git(Path::new("."), &["--exec-path"]);
        let child = Command::new(Path::new(&exec_path).join("git-daemon"))
            .args(["--export-all", "--reuseaddr", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "git daemon did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    fn url(&self) -> String {
        format!("git://127.0.0.1:{}/origin.git", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        self.child = Self::spawn(&self.base, self.port);
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How the remote goes away and comes back.
enum Outage<'a> {
    /// Rename the bare repository.
    Rename(&'a Origin),
    Daemon(&'a mut GitDaemon),
}

impl Outage<'_> {
    fn down(&mut self) {
        match self {
            Outage::Rename(o) => {
                std::fs::rename(o.bare(), o.bare().with_extension("gone")).expect("rename")
            }
            Outage::Daemon(g) => g.stop(),
        }
    }
    fn up(&mut self) {
        match self {
            Outage::Rename(o) => {
                std::fs::rename(o.bare().with_extension("gone"), o.bare()).expect("rename")
            }
            Outage::Daemon(g) => g.restart(),
        }
    }
}

/// The whole life of a pulled config: pushes, a bad push, a force-push,
/// the remote away and back.
fn pull_lifecycle(origin: &Origin, url: &str, redis: Option<&str>, mut outage: Outage<'_>) {
    let first = origin.push(&[("jobs.d/tick.yaml", JOB)], "first");
    let cfg = tempfile::tempdir().expect("dir");
    let mut args = vec!["--git", url, "--git-interval", "1s"];
    if let Some(r) = redis {
        args.extend(["--redis", r]);
    }
    let d = Daemon::start(cfg.path(), &args);
    let status = applied(&d, &first);
    assert_eq!(status["git"]["commit"], first.as_str(), "{status:#}");
    assert_eq!(status["git"]["branch"], "main");
    assert_eq!(status["git"]["remote"], url);
    assert!(status["git"]["last_fetch_at"].is_string(), "{status:#}");

    // Pushes are running within the interval plus the reload.
    let mut last = first.clone();
    for i in 0..3 {
        let job = format!("id: tick\ntype: noop\nschedule: {{every: {}h}}\n", i + 2);
        last = origin.push(&[("jobs.d/tick.yaml", &job)], &format!("push {i}"));
        let started = Instant::now();
        applied(&d, &last);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
    }

    // A commit that does not validate is rejected; the last good one runs.
    let bad = origin.push(
        &[("jobs.d/bad.yaml", "id: bad\ntype: no-such-type\n")],
        "bad",
    );
    let status = d.wait_until("/api/v1/status", "the bad commit's rejection", |v| {
        v["last_reconcile"]["result"] == "rejected"
            && v["last_reconcile"]["revision"]
                .as_str()
                .is_some_and(|r| r.starts_with(&bad))
    });
    assert!(
        status["revision"]
            .as_str()
            .is_some_and(|r| r.starts_with(&last)),
        "{status:#}"
    );
    assert_eq!(status["git"]["fetched"], bad.as_str());
    let (_, events) = d.get("/api/v1/events?type=reconcile.rejected");
    assert!(events.to_string().contains(&bad), "{events:#}");

    // A force-push to an older commit is followed.
    origin.force_push(&first);
    applied(&d, &first);

    // The remote goes away: the last commit keeps running, the error shows.
    outage.down();
    let status = d.wait_until("/api/v1/status", "the fetch error", |v| {
        v["git"]["last_error"].is_string()
    });
    assert!(
        status["revision"]
            .as_str()
            .is_some_and(|r| r.starts_with(&first)),
        "{status:#}"
    );
    let (_, metrics) = common::http_raw(&d.url, "GET", "/metrics", &[]);
    assert!(
        metrics.contains("multijob_git_fetch_total{result=\"error\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("multijob_git_fetch_total{result=\"ok\"}"),
        "{metrics}"
    );
    // ... and it comes back on its own.
    outage.up();
    let back = origin.push(&[("jobs.d/back.yaml", "id: back\ntype: noop\n")], "back");
    let status = applied(&d, &back);
    assert!(status["git"]["last_error"].is_null(), "{status:#}");
    assert_eq!(status["counts"]["jobs"], 2);
    // Only the current and the previous checkouts are kept.
    let kept = std::fs::read_dir(cfg.path().join(".multijob/data/git/commits"))
        .expect("commits")
        .count();
    assert!(kept <= 2, "{kept} checkouts kept");
}

#[test]
fn a_file_remote_is_followed_with_the_embedded_store() {
    let origin = Origin::new();
    let url = origin.file_url();
    pull_lifecycle(&origin, &url, None, Outage::Rename(&origin));
}

#[test]
fn a_git_daemon_remote_is_followed_with_redis() {
    let origin = Origin::new();
    let mut server = GitDaemon::start(origin.tmp.path());
    let url = server.url();
    let redis = multijob::testkit::RedisServer::start().expect("redis-server");
    pull_lifecycle(
        &origin,
        &url,
        Some(&redis.url()),
        Outage::Daemon(&mut server),
    );
}

#[test]
fn sighup_fetches_at_once() {
    let origin = Origin::new();
    let first = origin.push(&[("jobs.d/tick.yaml", JOB)], "first");
    let cfg = tempfile::tempdir().expect("dir");
    let url = origin.file_url();
    let d = Daemon::start(cfg.path(), &["--git", &url, "--git-interval", "1h"]);
    applied(&d, &first);
    let next = origin.push(&[("jobs.d/more.yaml", "id: more\ntype: noop\n")], "next");
    d.signal("HUP");
    applied(&d, &next);
}

#[test]
fn credentials_in_the_url_never_show() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    // Nothing listens there: every fetch fails, with git's message.
    let url = format!("http://bob:s3cretpw@127.0.0.1:{port}/org/repo.git");
    let cfg = tempfile::tempdir().expect("dir");
    let d = Daemon::start(cfg.path(), &["--git", &url, "--git-interval", "1s"]);
    let status = d.wait_until("/api/v1/status", "a fetch error", |v| {
        v["git"]["last_error"].is_string()
    });
    assert_eq!(
        status["git"]["remote"],
        format!("http://127.0.0.1:{port}/org/repo.git")
    );
    // The daemon keeps serving; a SIGHUP fetches again at once.
    d.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.get("/healthz").0, 200);
    let (_, all) = d.get("/api/v1/status");
    assert!(!all.to_string().contains("s3cretpw"), "{all:#}");
    assert!(!d.log().contains("s3cretpw"), "{}", d.log());
    assert!(d.log().contains("git fetch failed"), "{}", d.log());
}

#[test]
fn a_git_path_out_of_the_repository_is_refused() {
    let cfg = tempfile::tempdir().expect("dir");
    for bad in ["../..", "/etc", "a/../../b"] {
        let run = common::run(
            &[
                "run".into(),
                "--dir".into(),
                cfg.path().display().to_string(),
                "--git".into(),
                "file:///nowhere.git".into(),
                "--git-path".into(),
                bad.into(),
            ],
            None,
        );
        run.assert_code(1).assert_stderr_has("--git-path");
    }
    let run = common::run(
        &[
            "run".into(),
            "--git".into(),
            "--upload-pack=touch /tmp/x".into(),
        ],
        Some(cfg.path()),
    );
    assert_ne!(run.code(), Some(0), "{}", run.explain());
}

#[test]
fn a_symlink_out_of_the_checkout_is_not_read() {
    let origin = Origin::new();
    let secret = origin.tmp.path().join("secret.yaml");
    std::fs::write(&secret, "id: stolen\ntype: noop\n").expect("secret");
    let good = origin.push(&[("jobs.d/tick.yaml", JOB)], "good");
    std::os::unix::fs::symlink(&secret, origin.work().join("jobs.d/stolen.yaml")).expect("link");
    let evil = origin.push(&[], "a link out");
    let cfg = tempfile::tempdir().expect("dir");
    let url = origin.file_url();
    git(&origin.work(), &["reset", "-q", "--hard", &good]);
    git(
        &origin.work(),
        &["push", "-q", "--force", "origin", "HEAD:main"],
    );
    let d = Daemon::start(cfg.path(), &["--git", &url, "--git-interval", "1s"]);
    applied(&d, &good);
    origin.force_push(&evil);
    let status = d.wait_until("/api/v1/status", "the link's rejection", |v| {
        v["last_reconcile"]["result"] == "rejected"
    });
    let errors = status["last_reconcile"]["errors"].to_string();
    assert!(
        errors.contains("outside the repository checkout"),
        "{status:#}"
    );
    assert!(
        status["revision"]
            .as_str()
            .is_some_and(|r| r.starts_with(&good))
    );
    let (_, jobs) = d.get("/api/v1/snapshot");
    assert!(!jobs.to_string().contains("stolen"), "{jobs:#}");
}

/// p50/p99 of push → applied over 20 pushes at `--git-interval 5s`.
#[test]
#[ignore = "slow (about 1 min): the figure for the README; run with --ignored"]
fn push_to_applied_latency() {
    let origin = Origin::new();
    let first = origin.push(&[("jobs.d/tick.yaml", JOB)], "first");
    let cfg = tempfile::tempdir().expect("dir");
    let url = origin.file_url();
    let d = Daemon::start(cfg.path(), &["--git", &url, "--git-interval", "5s"]);
    applied(&d, &first);
    let mut took = Vec::new();
    for i in 0..20u64 {
        // Pushes land at every phase of the fetch interval (right after
        // an apply is right after a fetch: the worst case, every time).
        std::thread::sleep(Duration::from_millis(i * 250 % 5000));
        let job = format!("id: tick\ntype: noop\nschedule: {{every: {}h}}\n", i + 2);
        let sha = origin.push(&[("jobs.d/tick.yaml", &job)], &format!("push {i}"));
        let start = Instant::now();
        applied(&d, &sha);
        took.push(start.elapsed());
    }
    took.sort();
    let p = |q: f64| took[((took.len() as f64 * q).ceil() as usize).saturating_sub(1)];
    println!(
        "push -> applied over {} pushes (--git-interval 5s): p50 {:?}, p99 {:?}",
        took.len(),
        p(0.5),
        p(0.99)
    );
}

#[test]
fn plan_git_plans_a_branch_against_the_running_daemon() {
    let origin = Origin::new();
    let first = origin.push(&[("ops/jobs.d/tick.yaml", JOB)], "first");
    let cfg = tempfile::tempdir().expect("dir");
    let url = origin.file_url();
    let d = Daemon::start(
        cfg.path(),
        &["--git", &url, "--git-path", "ops", "--git-interval", "1s"],
    );
    applied(&d, &first);
    git(&origin.work(), &["checkout", "-q", "-b", "feature"]);
    let work = origin.work();
    std::fs::write(
        work.join("ops/jobs.d/fresh.yaml"),
        "id: fresh\ntype: noop\n",
    )
    .expect("write");
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "fresh"]);
    git(&work, &["push", "-q", "origin", "feature"]);
    let plan = |branch: &str| {
        common::run(
            &[
                "plan",
                "--git",
                &url,
                "--branch",
                branch,
                "--git-path",
                "ops",
                "--server",
                &d.url,
                "--detailed-exitcode",
            ]
            .map(String::from),
            Some(cfg.path()),
        )
    };
    let run = plan("feature");
    run.assert_code(2);
    assert!(run.stdout().contains("fresh"), "{}", run.explain());
    plan("main").assert_code(0);
    // An unknown branch fails and says so; the daemon keeps serving.
    plan("no-such-branch")
        .assert_code(1)
        .assert_stderr_has("couldn't find remote ref refs/heads/no-such-branch");
    assert_eq!(d.get("/healthz").0, 200);
    // No temporary checkout is left behind.
    let left = std::fs::read_dir(std::env::temp_dir())
        .expect("tmp")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("multijob-plan-")
        })
        .count();
    assert_eq!(left, 0);
}
