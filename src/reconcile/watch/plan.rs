//! What to watch for one config directory, and which events matter.
//!
//! inotify reports a change under the inode it watches, so swapping a symlink
//! (git-sync's `current`, a ConfigMap's `..data`, `DIR/jobs.d -> rev2/jobs.d`)
//! produces an event only in the directory that holds the link. A plan
//! resolves every symlink on the way to each config folder and to each file a
//! visible link points at, watches the directory holding each link, and keeps
//! the link's path as an anchor: an event on an anchor means the shape of the
//! tree may have changed, so the watches are resolved again.
//!
//! Every watched path is canonical: event paths compare by plain prefix, and no
//! inode is watched twice under two names (notify keys its watches by path,
//! inotify by inode; watching one directory under two names confuses both).

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsString;
use std::fs;
use std::path::{Component, Path, PathBuf};

use notify::RecursiveMode;

use crate::reconcile::source::CONFIG_FOLDERS;

/// More links than this on one path is a loop (the kernel's ELOOP limit).
const MAX_LINKS: usize = 40;
/// Deeper than this is a symlink loop or a mistake (as in `source`).
const MAX_DEPTH: usize = 32;

/// Names inside DIR that belong to git and to the embedded store: the
/// reconciler's own writes there must never look like a config change.
const OWN_NAMES: [&str; 2] = [".git", ".multijob"];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Plan {
    /// DIR, resolved, when it is a directory.
    dir: Option<PathBuf>,
    /// Watched with their subtrees: the config folders and every directory a
    /// visible symlink inside them leads to.
    roots: BTreeSet<PathBuf>,
    /// Watched alone: DIR and the directories that hold anchors.
    singles: BTreeSet<PathBuf>,
    /// An event here means "resolve again": DIR, every link on the way to a
    /// watched folder or file, and the first missing part of a missing path.
    anchors: BTreeSet<PathBuf>,
    /// Files that visible links point at (a ConfigMap's `..2024_…/a.yaml`).
    files: BTreeSet<PathBuf>,
    /// Device and inode of every watched directory: a directory deleted and
    /// created again under the same name needs a new watch.
    ids: BTreeSet<(PathBuf, u64, u64)>,
}

/// How much an event matters, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Relevance {
    Ignore,
    /// A config file may have changed; the watches still fit.
    Content,
    /// The tree may have changed shape; resolve the watches again.
    Structural,
}

/// One step of a path still to resolve.
enum Step {
    Up,
    Name(OsString),
}

impl Plan {
    /// Resolves what to watch for `dir` (absolute) as the disk is now.
    pub(super) fn compute(dir: &Path) -> Plan {
        let mut plan = Plan::default();
        if let Some(resolved) = plan.resolve(dir) {
            // DIR itself going away or being replaced shows in its parent.
            plan.anchor(&resolved);
            if resolved.is_dir() {
                plan.singles.insert(resolved.clone());
                plan.dir = Some(resolved);
            }
        }
        let mut queue = Vec::new();
        if let Some(dir) = plan.dir.clone() {
            for folder in CONFIG_FOLDERS {
                if let Some(root) = plan.resolve(&dir.join(folder))
                    && root.is_dir()
                {
                    queue.push((root, 0));
                }
            }
        }
        let mut seen = HashSet::new();
        while let Some((root, depth)) = queue.pop() {
            if seen.insert(root.clone()) {
                plan.roots.insert(root.clone());
                plan.scan(&root, depth, &mut queue);
            }
        }
        plan.finish();
        plan
    }

    /// What to hand to the backend. A poll backend re-resolves the plan on
    /// every tick itself, so it needs no directories watched for anchors (a
    /// poll of a busy parent directory would stat and hash all of it).
    pub(super) fn watches(&self, poll: bool) -> Vec<(&Path, RecursiveMode)> {
        let roots = self
            .roots
            .iter()
            .map(|p| (p.as_path(), RecursiveMode::Recursive));
        if poll {
            let files = self
                .files
                .iter()
                .filter(|f| !self.roots.iter().any(|r| f.starts_with(r)))
                .map(|p| (p.as_path(), RecursiveMode::NonRecursive));
            roots.chain(files).collect()
        } else {
            let singles = self
                .singles
                .iter()
                .map(|p| (p.as_path(), RecursiveMode::NonRecursive));
            roots.chain(singles).collect()
        }
    }

    /// How much an event on `path` (canonical, as the backend reports it) matters.
    pub(super) fn classify(&self, path: &Path) -> Relevance {
        if self.anchors.contains(path) {
            return Relevance::Structural;
        }
        if let Some(dir) = &self.dir
            && let Ok(rel) = path.strip_prefix(dir)
            && rel
                .components()
                .any(|c| OWN_NAMES.iter().any(|n| c.as_os_str() == *n))
        {
            return Relevance::Ignore;
        }
        if self.files.contains(path) {
            return Relevance::Content;
        }
        for root in &self.roots {
            if let Ok(rel) = path.strip_prefix(root) {
                if rel.as_os_str().is_empty() {
                    return Relevance::Structural;
                }
                // `source` skips these names, so they cannot change the config.
                if rel.components().any(|c| is_hidden(c.as_os_str())) {
                    return Relevance::Ignore;
                }
                return Relevance::Content;
            }
        }
        Relevance::Ignore
    }

    /// The config folders watched recursively (for logs and tests).
    pub(super) fn roots(&self) -> impl Iterator<Item = &Path> {
        self.roots.iter().map(PathBuf::as_path)
    }

    /// Follows `path` through every symlink like the kernel does, anchoring
    /// each link (and the first missing part, if any) on the way. Returns the
    /// canonical path when it exists.
    fn resolve(&mut self, path: &Path) -> Option<PathBuf> {
        let mut done = PathBuf::new();
        let mut todo = Vec::new();
        push_steps(path, &mut done, &mut todo);
        let mut links = 0;
        while let Some(step) = todo.pop() {
            let name = match step {
                Step::Up => {
                    done.pop();
                    continue;
                }
                Step::Name(name) => name,
            };
            let next = done.join(&name);
            match fs::symlink_metadata(&next) {
                Err(_) => {
                    // Appears later: its parent's watch reports it.
                    self.anchor(&next);
                    return None;
                }
                Ok(meta) if meta.file_type().is_symlink() => {
                    self.anchor(&next);
                    links += 1;
                    let target = fs::read_link(&next).ok()?;
                    if links > MAX_LINKS {
                        return None;
                    }
                    push_steps(&target, &mut done, &mut todo);
                }
                Ok(_) => done = next,
            }
        }
        Some(done)
    }

    /// An anchor is reported by a watch on the directory that holds it.
    fn anchor(&mut self, path: &Path) {
        self.anchors.insert(path.to_path_buf());
        if let Some(parent) = path.parent() {
            self.singles.insert(parent.to_path_buf());
        }
    }

    /// Finds the links among the visible entries under `dir` (a root or a real
    /// directory under one): linked directories become roots, linked files get
    /// their own watch.
    fn scan(&mut self, dir: &Path, depth: usize, queue: &mut Vec<(PathBuf, usize)>) {
        if depth > MAX_DEPTH {
            return;
        }
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            if is_hidden(&entry.file_name()) {
                continue;
            }
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                let Some(target) = self.resolve(&path) else {
                    continue;
                };
                if target.is_dir() {
                    queue.push((target, depth + 1));
                } else {
                    // Editors replace the target by rename: watch its directory.
                    if let Some(parent) = target.parent() {
                        self.singles.insert(parent.to_path_buf());
                    }
                    self.files.insert(target);
                }
            } else if meta.is_dir() {
                self.scan(&path, depth + 1, queue);
            }
        }
    }

    /// Drops watches another watch already covers, and records identities.
    fn finish(&mut self) {
        let roots: Vec<PathBuf> = self.roots.iter().cloned().collect();
        let inside = |p: &Path, except: &Path| {
            roots
                .iter()
                .any(|r| r.as_path() != except && p.starts_with(r))
        };
        self.roots.retain(|r| !inside(r, r));
        // A single watch inside a recursive one would replace it in notify's
        // table and stop new subdirectories from being watched.
        let roots = &self.roots;
        self.singles
            .retain(|s| !roots.iter().any(|r| s.starts_with(r)));
        let ids = self
            .roots
            .iter()
            .chain(&self.singles)
            .filter_map(|p| fs::metadata(p).ok().map(|m| (p.clone(), file_id(&m))))
            .map(|(p, (dev, ino))| (p, dev, ino))
            .collect();
        self.ids = ids;
    }
}

/// Queues the steps of `path`; an absolute path restarts from the root.
fn push_steps(path: &Path, done: &mut PathBuf, todo: &mut Vec<Step>) {
    let mut steps = Vec::new();
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => {
                done.clear();
                done.push(component.as_os_str());
            }
            Component::CurDir => {}
            Component::ParentDir => steps.push(Step::Up),
            Component::Normal(name) => steps.push(Step::Name(name.to_os_string())),
        }
    }
    todo.extend(steps.into_iter().rev());
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    let bytes = name.as_encoded_bytes();
    bytes.starts_with(b".") || bytes.starts_with(b"_")
}

#[cfg(unix)]
fn file_id(meta: &fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn file_id(_meta: &fs::Metadata) -> (u64, u64) {
    (0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn canonical(p: &Path) -> PathBuf {
        fs::canonicalize(p).unwrap()
    }

    #[test]
    fn plain_dir_watches_its_folders_and_itself() {
        let tmp = tempfile::tempdir().unwrap();
        let t = canonical(tmp.path());
        fs::create_dir_all(t.join("cfg/jobs.d/team")).unwrap();
        let plan = Plan::compute(&t.join("cfg"));
        assert_eq!(plan.roots().collect::<Vec<_>>(), [t.join("cfg/jobs.d")]);
        assert!(plan.singles.contains(&t.join("cfg")));
        assert!(plan.singles.contains(&t));
        use Relevance::*;
        let c = t.join("cfg");
        assert_eq!(plan.classify(&c.join("jobs.d/team/a.yaml")), Content);
        assert_eq!(plan.classify(&c.join("jobs.d/.a.yaml.swp")), Ignore);
        assert_eq!(plan.classify(&c.join("jobs.d/_drafts/a.yaml")), Ignore);
        assert_eq!(plan.classify(&c.join("jobs.d")), Structural);
        // Missing skills.d: its creation is an anchor.
        assert_eq!(plan.classify(&c.join("skills.d")), Structural);
        assert_eq!(plan.classify(&c), Structural);
        assert_eq!(plan.classify(&c.join(".git/index")), Ignore);
        assert_eq!(plan.classify(&c.join(".multijob/state.db")), Ignore);
        assert_eq!(plan.classify(&c.join("README.md")), Ignore);
        assert_eq!(plan.classify(&t.join("neighbour")), Ignore);
    }

    #[test]
    fn git_sync_layout_anchors_the_current_link() {
        let tmp = tempfile::tempdir().unwrap();
        let t = canonical(tmp.path());
        fs::create_dir_all(t.join("rev1/jobs.d")).unwrap();
        symlink("rev1", t.join("current")).unwrap();
        let plan = Plan::compute(&t.join("current"));
        assert_eq!(plan.roots().collect::<Vec<_>>(), [t.join("rev1/jobs.d")]);
        assert_eq!(plan.classify(&t.join("current")), Relevance::Structural);
        assert!(plan.singles.contains(&t));
        assert_eq!(
            plan.classify(&t.join("rev1/jobs.d/a.yaml")),
            Relevance::Content
        );
    }

    #[test]
    fn configmap_links_inside_a_folder_are_anchors() {
        let tmp = tempfile::tempdir().unwrap();
        let j = canonical(tmp.path()).join("jobs.d");
        fs::create_dir_all(j.join("..2024_1")).unwrap();
        fs::write(j.join("..2024_1/a.yaml"), "id: a\n").unwrap();
        symlink("..2024_1", j.join("..data")).unwrap();
        symlink("..data/a.yaml", j.join("a.yaml")).unwrap();
        let plan = Plan::compute(j.parent().unwrap());
        assert_eq!(plan.classify(&j.join("..data")), Relevance::Structural);
        assert_eq!(
            plan.classify(&j.join("..2024_1/a.yaml")),
            Relevance::Content
        );
        assert_eq!(plan.classify(&j.join("..2024_2")), Relevance::Ignore);
        // Everything lives inside the one recursive root.
        assert_eq!(plan.watches(false).len(), 3, "{plan:#?}");
    }

    #[test]
    fn linked_files_outside_get_their_own_watch() {
        let tmp = tempfile::tempdir().unwrap();
        let t = canonical(tmp.path());
        fs::create_dir_all(t.join("cfg/jobs.d")).unwrap();
        fs::create_dir_all(t.join("shared")).unwrap();
        fs::write(t.join("shared/a.yaml"), "id: a\n").unwrap();
        symlink(t.join("shared/a.yaml"), t.join("cfg/jobs.d/a.yaml")).unwrap();
        let plan = Plan::compute(&t.join("cfg"));
        assert!(plan.singles.contains(&t.join("shared")));
        assert_eq!(plan.classify(&t.join("shared/a.yaml")), Relevance::Content);
        assert_eq!(plan.classify(&t.join("shared/b.yaml")), Relevance::Ignore);
        let poll = plan.watches(true);
        assert!(poll.contains(&(
            t.join("shared/a.yaml").as_path(),
            RecursiveMode::NonRecursive
        )));
    }

    #[test]
    fn missing_dir_anchors_its_first_missing_part() {
        let tmp = tempfile::tempdir().unwrap();
        let t = canonical(tmp.path());
        let plan = Plan::compute(&t.join("a/b/cfg"));
        assert_eq!(plan.classify(&t.join("a")), Relevance::Structural);
        assert!(plan.singles.contains(&t));
        assert_eq!(plan.roots().count(), 0);
    }

    #[test]
    fn symlink_loops_end() {
        let tmp = tempfile::tempdir().unwrap();
        let t = canonical(tmp.path());
        fs::create_dir_all(t.join("cfg/jobs.d")).unwrap();
        symlink("..", t.join("cfg/jobs.d/up")).unwrap();
        symlink("loop", t.join("cfg/skills.d")).unwrap();
        symlink("skills.d", t.join("cfg/loop")).unwrap();
        let plan = Plan::compute(&t.join("cfg"));
        // `up` leads to cfg, which then holds jobs.d: one root covers both.
        assert_eq!(plan.roots().collect::<Vec<_>>(), [t.join("cfg")]);
    }
}
