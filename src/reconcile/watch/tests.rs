//! The watcher against real directories and real file operations.
//!
//! "Is seen" waits up to [`SEEN`] for a signal; "is not seen" watches a short
//! [`QUIET`] window. Before a step whose effect is asserted, [`settle`] drains
//! the signals earlier steps may still produce.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::*;

const SEEN: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

struct Fixture {
    tmp: tempfile::TempDir,
    rx: Receiver<ChangeSignal>,
    probe: Probe,
    cancel: CancellationToken,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Fixture {
    /// Watches `tmp/<dir>` after `setup` has built the tree under `tmp`.
    fn start(dir: &str, opts: WatchOptions, setup: impl FnOnce(&Path)) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        setup(tmp.path());
        let cancel = CancellationToken::new();
        let (rx, probe) = spawn_inner(tmp.path().join(dir), opts, cancel.clone()).unwrap();
        Fixture {
            tmp,
            rx,
            probe,
            cancel,
        }
    }

    /// The usual tree: `cfg/jobs.d/a.yaml`, watched with inotify.
    fn plain() -> Fixture {
        Fixture::start("cfg", opts(), |t| {
            write(&t.join("cfg/jobs.d/a.yaml"), "id: a\n")
        })
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    async fn seen(&mut self, what: &str) -> ChangeSignal {
        match timeout(SEEN, self.rx.recv()).await {
            Ok(Some(signal)) => signal,
            Ok(None) => panic!("{what}: the watcher stopped"),
            Err(_) => panic!("{what}: no signal within {SEEN:?}\n{}", self.listing()),
        }
    }

    async fn not_seen(&mut self, what: &str) {
        if let Ok(signal) = timeout(QUIET, self.rx.recv()).await {
            panic!("{what}: unexpected {signal:?}\n{}", self.listing());
        }
    }

    /// Drains signals until none came for a while.
    async fn settle(&mut self) {
        let until = Instant::now() + SEEN;
        while Instant::now() < until {
            match timeout(Duration::from_millis(200), self.rx.recv()).await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the watcher stopped"),
                Err(_) => return,
            }
        }
        panic!("signals did not stop within {SEEN:?}\n{}", self.listing());
    }

    /// What the tree looked like, for failure messages.
    fn listing(&self) -> String {
        let mut out = String::new();
        for entry in walk(self.tmp.path()) {
            let rel = entry.strip_prefix(self.tmp.path()).unwrap();
            match fs::read_link(&entry) {
                Ok(target) => out += &format!("  {} -> {}\n", rel.display(), target.display()),
                Err(_) => out += &format!("  {}\n", rel.display()),
            }
        }
        out
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        out.push(path.clone());
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            out.extend(walk(&path));
        }
    }
    out
}

fn opts() -> WatchOptions {
    WatchOptions {
        debounce: Duration::from_millis(50),
        poll: None,
        // Out of the way: only the resync test wants it.
        resync: Duration::from_secs(3600),
    }
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// Replaces the link at `link` with one to `target`, atomically, the way
/// git-sync and kubelet do: a new link under a temporary name, renamed over.
fn swap_link(target: &str, link: &Path) {
    let tmp = link.with_file_name(".tmp-link");
    symlink(target, &tmp).unwrap();
    fs::rename(&tmp, link).unwrap();
}

/// Runs git in `dir` with a fixed identity (the git module's test helper).
fn git(dir: &Path, args: &[&str]) {
    crate::reconcile::git::tests::git_sync(dir, args);
}

#[tokio::test]
async fn a_write_is_seen() {
    let mut f = Fixture::plain();
    write(&f.path("cfg/jobs.d/a.yaml"), "id: a\ntype: noop\n");
    assert_eq!(f.seen("write in place").await, ChangeSignal::Files);
    write(&f.path("cfg/jobs.d/team/b.yaml"), "id: b\n");
    f.seen("new file in a new subfolder").await;
    f.settle().await;
    write(&f.path("cfg/jobs.d/team/b.yaml"), "id: b\ntype: noop\n");
    f.seen("write in the new subfolder").await;
}

#[tokio::test]
async fn editors_rename_on_save_is_seen() {
    let mut f = Fixture::plain();
    for round in 0..3 {
        let tmp = f.path("cfg/jobs.d/.a.yaml.tmp");
        write(&tmp, &format!("id: a\n# save {round}\n"));
        fs::rename(&tmp, f.path("cfg/jobs.d/a.yaml")).unwrap();
        f.seen(&format!("rename-on-save #{round}")).await;
        f.settle().await;
    }
}

#[tokio::test]
async fn git_checkout_is_seen() {
    let mut f = Fixture::start("cfg", opts(), |t| {
        let c = t.join("cfg");
        write(&c.join("jobs.d/a.yaml"), "id: a\n");
        git(&c, &["init", "-q"]);
        git(&c, &["add", "."]);
        git(&c, &["commit", "-q", "-m", "one"]);
        git(&c, &["rm", "-q", "jobs.d/a.yaml"]);
        write(&c.join("jobs.d/team/b.yaml"), "id: b\n");
        git(&c, &["add", "."]);
        git(&c, &["commit", "-q", "-m", "two"]);
    });
    let c = f.path("cfg");
    git(&c, &["checkout", "-q", "HEAD~1"]);
    assert!(f.path("cfg/jobs.d/a.yaml").exists());
    f.seen("checkout of the first commit").await;
    f.settle().await;
    git(&c, &["checkout", "-q", "main"]);
    assert!(f.path("cfg/jobs.d/team/b.yaml").exists());
    f.seen("checkout back to main").await;
    f.settle().await;
    write(&f.path("cfg/jobs.d/team/b.yaml"), "id: b\ntype: noop\n");
    f.seen("a write after the checkouts").await;
}

#[tokio::test]
async fn swapped_folder_symlink_is_seen() {
    let mut f = Fixture::start("cfg", opts(), |t| {
        write(&t.join("rev1/jobs.d/a.yaml"), "id: a\n");
        write(&t.join("rev2/jobs.d/a.yaml"), "id: a\ntype: noop\n");
        fs::create_dir_all(t.join("cfg")).unwrap();
        symlink("../rev1/jobs.d", t.join("cfg/jobs.d")).unwrap();
    });
    swap_link("../rev2/jobs.d", &f.path("cfg/jobs.d"));
    f.seen("cfg/jobs.d -> rev2/jobs.d").await;
    f.settle().await;
    // The watch followed the link to rev2 and left rev1.
    write(&f.path("rev2/jobs.d/a.yaml"), "id: a\ntype: http.request\n");
    f.seen("a write in the new target").await;
    f.settle().await;
    write(&f.path("rev1/jobs.d/a.yaml"), "id: a\ntype: http.request\n");
    f.not_seen("a write in the old target").await;
}

#[tokio::test]
async fn swapped_dir_symlink_is_seen() {
    // git-sync: DIR is `current`, a link to the checked-out revision.
    let mut f = Fixture::start("current", opts(), |t| {
        write(&t.join("rev1/jobs.d/a.yaml"), "id: a\n");
        write(&t.join("rev2/jobs.d/a.yaml"), "id: a\ntype: noop\n");
        symlink("rev1", t.join("current")).unwrap();
    });
    swap_link("rev2", &f.path("current"));
    f.seen("current -> rev2").await;
    f.settle().await;
    write(&f.path("rev2/jobs.d/a.yaml"), "id: a\ntype: http.request\n");
    f.seen("a write in the new revision").await;
    f.settle().await;
    fs::remove_dir_all(f.path("rev1")).unwrap();
    f.not_seen("removing the old revision").await;
}

#[tokio::test]
async fn swapped_configmap_data_link_is_seen() {
    // A ConfigMap mounted at jobs.d: a.yaml -> ..data/a.yaml, ..data -> ..v1.
    let mut f = Fixture::start("cfg", opts(), |t| {
        let j = t.join("cfg/jobs.d");
        write(&j.join("..v1/a.yaml"), "id: a\n");
        symlink("..v1", j.join("..data")).unwrap();
        symlink("..data/a.yaml", j.join("a.yaml")).unwrap();
    });
    write(&f.path("cfg/jobs.d/..v2/a.yaml"), "id: a\ntype: noop\n");
    f.not_seen("kubelet writing the next version aside").await;
    swap_link("..v2", &f.path("cfg/jobs.d/..data"));
    f.seen("..data -> ..v2").await;
    f.settle().await;
    fs::remove_dir_all(f.path("cfg/jobs.d/..v1")).unwrap();
    f.not_seen("kubelet removing the old version").await;
}

#[tokio::test]
async fn folder_that_disappears_and_comes_back_is_seen() {
    let mut f = Fixture::plain();
    fs::remove_dir_all(f.path("cfg/jobs.d")).unwrap();
    f.seen("jobs.d removed").await;
    f.settle().await;
    write(&f.path("cfg/jobs.d/a.yaml"), "id: a\n");
    f.seen("jobs.d back").await;
    f.settle().await;
    write(&f.path("cfg/jobs.d/a.yaml"), "id: a\ntype: noop\n");
    f.seen("a write in the recreated jobs.d").await;
    f.settle().await;
    // A folder that was missing from the start counts too.
    write(&f.path("cfg/skills.d/s.yaml"), "kind: Skill\nid: s\n");
    f.seen("skills.d created").await;
    f.settle().await;
    write(
        &f.path("cfg/skills.d/s.yaml"),
        "kind: Skill\nid: s\n# edit\n",
    );
    f.seen("a write in the new skills.d").await;
}

#[tokio::test]
async fn dir_that_disappears_and_comes_back_is_seen() {
    let mut f = Fixture::plain();
    fs::remove_dir_all(f.path("cfg")).unwrap();
    f.seen("DIR removed").await;
    f.settle().await;
    // Gone for a while: no signals, no spinning.
    f.not_seen("DIR missing").await;
    assert!(!f.probe.events.is_closed(), "the watcher died");
    write(&f.path("cfg/jobs.d/a.yaml"), "id: a\n");
    f.seen("DIR back").await;
    f.settle().await;
    write(&f.path("cfg/jobs.d/a.yaml"), "id: a\ntype: noop\n");
    f.seen("a write in the recreated DIR").await;
}

#[tokio::test]
async fn own_reads_are_not_seen() {
    let mut f = Fixture::start("cfg", opts(), |t| {
        let c = t.join("cfg");
        write(&c.join("jobs.d/a.yaml"), "id: a\n");
        write(&c.join("jobs.d/team/b.yaml"), "id: b\n");
        git(&c, &["init", "-q"]);
        git(&c, &["add", "."]);
        git(&c, &["commit", "-q", "-m", "one"]);
    });
    f.settle().await;
    let c = f.path("cfg");
    for _ in 0..5 {
        let read = crate::reconcile::source::read_config_dir(&c).unwrap();
        assert_eq!(read.files.len(), 2);
        for path in walk(&c) {
            let _ = fs::read(&path);
        }
        assert!(crate::reconcile::git::git_state(&c).await.is_some());
    }
    f.not_seen("reading the config and asking git").await;
}

#[tokio::test]
async fn store_git_and_neighbour_writes_are_not_seen() {
    let mut f = Fixture::plain();
    f.settle().await;
    for i in 0..20 {
        write(&f.path("cfg/.multijob/state.db"), &format!("page {i}"));
        write(&f.path("cfg/.multijob/state.db-wal"), &format!("wal {i}"));
        write(&f.path(&format!("cfg/.git/objects/{i:02}/x")), "blob");
        write(&f.path("cfg/.git/index"), &format!("index {i}"));
        // Siblings of DIR are in the watched parent but are not DIR.
        write(&f.path("neighbour/file"), &format!("{i}"));
        write(&f.path("cfg/jobs.d/.a.yaml.swp"), &format!("{i}"));
        write(&f.path("cfg/README.md"), &format!("{i}"));
    }
    f.not_seen("writes to .multijob, .git, a neighbour, hidden and top-level files")
        .await;
    write(&f.path("cfg/jobs.d/a.yaml"), "id: a\ntype: noop\n");
    f.seen("and still alive").await;
}

#[tokio::test]
async fn a_burst_yields_few_signals() {
    let mut f = Fixture::plain();
    f.settle().await;
    let dir = f.path("cfg/jobs.d");
    let writer = tokio::task::spawn_blocking(move || {
        for i in 0..100 {
            write(
                &dir.join(format!("j{}.yaml", i % 10)),
                &format!("id: j{i}\n"),
            );
        }
    });
    // Count while the burst runs, so coalescing in the channel does not hide
    // a flood; then until the watcher is quiet.
    let mut signals = 0;
    let until = Instant::now() + SEEN;
    loop {
        assert!(
            Instant::now() < until,
            "{signals} signals and still going after {SEEN:?}"
        );
        match timeout(Duration::from_millis(500), f.rx.recv()).await {
            Ok(Some(_)) => signals += 1,
            Ok(None) => panic!("the watcher stopped"),
            Err(_) if writer.is_finished() && signals > 0 => break,
            Err(_) => {}
        }
    }
    writer.await.unwrap();
    assert!(
        (1..=5).contains(&signals),
        "{signals} signals for one burst"
    );
}

#[tokio::test]
async fn polling_sees_changes() {
    let poll = WatchOptions {
        poll: Some(Duration::from_millis(100)),
        ..opts()
    };
    let mut f = Fixture::start("current", poll, |t| {
        write(&t.join("rev1/jobs.d/a.yaml"), "id: a\n");
        write(&t.join("rev2/jobs.d/a.yaml"), "id: a\n");
        symlink("rev1", t.join("current")).unwrap();
    });
    assert_eq!(*f.probe.mode.borrow(), Mode::Poll);
    // Same second, same size: only the content differs.
    write(&f.path("rev1/jobs.d/a.yaml"), "id: b\n");
    f.seen("a write, polled").await;
    f.settle().await;
    swap_link("rev2", &f.path("current"));
    f.seen("current -> rev2, polled").await;
    f.settle().await;
    write(&f.path("rev2/jobs.d/b.yaml"), "id: b\n");
    f.seen("a new file in the new revision, polled").await;
    f.settle().await;
    fs::remove_dir_all(f.path("rev2/jobs.d")).unwrap();
    f.seen("jobs.d removed, polled").await;
}

#[tokio::test]
async fn inotify_limit_falls_back_to_polling() {
    let mut f = Fixture::plain();
    assert_eq!(*f.probe.mode.borrow(), Mode::Inotify);
    // What inotify reports when fs.inotify.max_user_watches is exhausted.
    let enospc = notify::Error::io(io::Error::from_raw_os_error(ENOSPC));
    assert!(is_watch_limit(&enospc));
    assert!(is_watch_limit(&notify::Error::new(
        notify::ErrorKind::MaxFilesWatch
    )));
    assert!(!is_watch_limit(&notify::Error::path_not_found()));
    f.probe.events.send(Err(enospc)).unwrap();
    let mut mode = f.probe.mode.clone();
    timeout(SEEN, mode.wait_for(|m| *m == Mode::Poll))
        .await
        .expect("no fallback to polling")
        .unwrap();
    f.seen("events may have been lost: reload").await;
    f.settle().await;
    write(&f.path("cfg/jobs.d/a.yaml"), "id: a\ntype: noop\n");
    f.seen("a write while polling").await;
}

#[tokio::test]
async fn resync_ticks() {
    let mut f = Fixture::start(
        "cfg",
        WatchOptions {
            resync: Duration::from_millis(200),
            ..opts()
        },
        |t| write(&t.join("cfg/jobs.d/a.yaml"), "id: a\n"),
    );
    assert_eq!(f.seen("resync").await, ChangeSignal::Resync);
    assert_eq!(f.seen("resync again").await, ChangeSignal::Resync);
}

#[tokio::test]
async fn cancel_stops_it() {
    let mut f = Fixture::plain();
    f.cancel.cancel();
    match timeout(SEEN, f.rx.recv()).await {
        Ok(None) => {}
        other => panic!("still running after cancel: {other:?}"),
    }
}

/// Write → signal latency, for the README's hot-reload figures:
/// `cargo test --lib watch::tests::latency -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn latency() {
    let mut f = Fixture::plain();
    f.settle().await;
    let mut took = Vec::new();
    for i in 0..50 {
        let start = Instant::now();
        write(&f.path("cfg/jobs.d/a.yaml"), &format!("id: a\n# {i}\n"));
        f.seen("a write").await;
        took.push(start.elapsed());
        f.settle().await;
    }
    took.sort();
    println!(
        "write -> signal: p50 {:?}, p99 {:?}, max {:?}",
        took[took.len() / 2],
        took[took.len() * 99 / 100],
        took[took.len() - 1]
    );
}
