//! Walking the trees of a snapshot: every node with its full path.
//!
//! The root tree of a snapshot reproduces absolute paths from `/`, so a node's
//! path is `/` joined with the names on the way down. The walk is depth-first
//! in name order (the order `ls` prints). Before descending into a directory,
//! the subtrees of all its child directories are fetched together on the I/O
//! pool: on remote storage one tree per round trip would dominate the time.
//! Each tree is loaded at most once per walk.
//!
//! [`diff`] walks two snapshots side by side and does not load subtrees whose
//! ids are equal: they are the same directory, down to the last byte.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::index::Index;
use crate::repo::{io_pool, Repository};
use crate::tree::{Node, NodeKind, Tree};

/// What to do after visiting a directory node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visit {
    Descend,
    Skip,
}

/// Receives the nodes of a walk.
pub trait Visitor {
    /// Every node, parents before their content. The answer matters only for
    /// directories.
    fn enter(&mut self, path: &Path, node: &Node) -> Result<Visit>;
    /// A directory after its content was visited (only when it was descended).
    fn leave(&mut self, _path: &Path, _node: &Node) -> Result<()> {
        Ok(())
    }
}

impl<F: FnMut(&Path, &Node) -> Result<Visit>> Visitor for F {
    fn enter(&mut self, path: &Path, node: &Node) -> Result<Visit> {
        self(path, node)
    }
}

/// Where a walk starts: the snapshot root, or one node found by path.
#[derive(Debug, Clone)]
pub enum Start {
    Root(Id),
    Node(PathBuf, Box<Node>),
}

/// Loads trees for walks; keeps the ids of trees it walked completely, so a
/// visitor that skips repeated subtrees (stats, copy) does not make it fetch
/// them ahead for nothing.
pub struct Walker<'a> {
    repo: &'a Repository,
    index: &'a Index,
    walked: HashSet<Id>,
}

impl<'a> Walker<'a> {
    pub fn new(repo: &'a Repository, index: &'a Index) -> Walker<'a> {
        Walker {
            repo,
            index,
            walked: HashSet::new(),
        }
    }

    pub fn repo(&self) -> &'a Repository {
        self.repo
    }

    pub fn index(&self) -> &'a Index {
        self.index
    }

    pub fn load(&self, id: &Id) -> Result<Tree> {
        self.repo.load_tree(self.index, id)
    }

    /// Load several trees concurrently, in the order of `ids`.
    pub fn load_many(&self, ids: &[Id]) -> Result<Vec<Tree>> {
        use rayon::prelude::*;
        match ids.len() {
            0 => Ok(Vec::new()),
            1 => Ok(vec![self.load(&ids[0])?]),
            _ => io_pool().install(|| ids.par_iter().map(|id| self.load(id)).collect()),
        }
    }

    /// Find where a walk of `root` at `path` starts. `/` (or an empty path)
    /// is the root itself; a path that is not in the snapshot is an error.
    pub fn locate(&self, root: &Id, path: &Path) -> Result<Start> {
        let names: Vec<&OsStr> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s),
                _ => None,
            })
            .collect();
        let mut tree_id = *root;
        let mut at = PathBuf::from("/");
        let mut found: Option<Node> = None;
        for name in names {
            if let Some(n) = &found {
                tree_id = match (n.kind, n.subtree) {
                    (NodeKind::Dir, Some(t)) => t,
                    _ => return Err(not_found(path)),
                };
            }
            let tree = self.load(&tree_id)?;
            let node = tree.find(name).ok_or_else(|| not_found(path))?;
            at.push(name);
            found = Some(node.clone());
        }
        Ok(match found {
            None => Start::Root(*root),
            Some(n) => Start::Node(at, Box::new(n)),
        })
    }

    /// Walk everything below (and including) `start`.
    pub fn walk(&mut self, start: &Start, v: &mut dyn Visitor) -> Result<()> {
        match start {
            Start::Root(id) => {
                let tree = self.load(id)?;
                self.walk_tree(Path::new("/"), *id, tree, v)
            }
            Start::Node(path, node) => {
                let descend = v.enter(path, node)?;
                if let (Visit::Descend, NodeKind::Dir, Some(sub)) =
                    (descend, node.kind, node.subtree)
                {
                    let tree = self.load(&sub)?;
                    self.walk_tree(path, sub, tree, v)?;
                    v.leave(path, node)?;
                }
                Ok(())
            }
        }
    }

    /// Walk a whole snapshot from its root tree.
    pub fn walk_root(&mut self, root: &Id, v: &mut dyn Visitor) -> Result<()> {
        self.walk(&Start::Root(*root), v)
    }

    /// Walk the content of tree `id` as if it were the directory `dir`.
    pub fn walk_below(&mut self, dir: &Path, id: &Id, v: &mut dyn Visitor) -> Result<()> {
        let tree = self.load(id)?;
        self.walk_tree(dir, *id, tree, v)
    }

    fn walk_tree(&mut self, dir: &Path, id: Id, tree: Tree, v: &mut dyn Visitor) -> Result<()> {
        let ahead: Vec<Id> = tree
            .nodes
            .iter()
            .filter_map(|n| {
                n.subtree
                    .filter(|s| n.kind == NodeKind::Dir && !self.walked.contains(s))
            })
            .collect::<HashSet<Id>>()
            .into_iter()
            .collect();
        let mut fetched: std::collections::HashMap<Id, Tree> =
            ahead.iter().copied().zip(self.load_many(&ahead)?).collect();
        for n in &tree.nodes {
            let path = dir.join(n.name_os());
            let descend = v.enter(&path, n)?;
            let (Visit::Descend, NodeKind::Dir, Some(sub)) = (descend, n.kind, n.subtree) else {
                continue;
            };
            // The same subtree twice in one directory (identical siblings) is
            // fetched once and cloned for the second visit.
            let sub_tree = match fetched.get(&sub) {
                Some(t) if tree.nodes.iter().filter(|m| m.subtree == Some(sub)).count() > 1 => {
                    t.clone()
                }
                Some(_) => fetched.remove(&sub).expect("present"),
                None => self.load(&sub)?,
            };
            self.walk_tree(&path, sub, sub_tree, v)?;
            v.leave(&path, n)?;
        }
        self.walked.insert(id);
        Ok(())
    }
}

/// How a path differs between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// Only in the second snapshot.
    Added,
    /// Only in the first snapshot.
    Removed,
    /// Content (or, for links and devices, target) differs, or the type.
    Modified,
    /// Same content; mode, owner or modification time differ.
    Metadata,
}

impl Change {
    pub fn symbol(self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Modified => 'M',
            Change::Metadata => 'U',
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiffEntry {
    pub path: PathBuf,
    pub change: Change,
    /// The type in the second snapshot (in the first when removed).
    #[serde(rename = "type")]
    pub kind: NodeKind,
    pub size_before: Option<u64>,
    pub size_after: Option<u64>,
}

/// Counts of changed paths, and content bytes: `bytes_added` is the size of
/// added files plus the new size of modified files, `bytes_removed` the size
/// of removed files plus the old size of modified files.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DiffSummary {
    pub added: u64,
    pub removed: u64,
    pub modified: u64,
    pub metadata: u64,
    pub bytes_added: u64,
    pub bytes_removed: u64,
}

/// Compare two snapshot trees, calling `f` for each difference in path
/// order. Subtrees with equal ids are identical and are not loaded.
pub fn diff(
    repo: &Repository,
    index: &Index,
    a: &Id,
    b: &Id,
    f: &mut dyn FnMut(DiffEntry) -> Result<()>,
) -> Result<DiffSummary> {
    let mut d = Differ {
        w: Walker::new(repo, index),
        sum: DiffSummary::default(),
        f,
    };
    d.trees(Path::new("/"), a, b)?;
    Ok(d.sum)
}

struct Differ<'a, 'f> {
    w: Walker<'a>,
    sum: DiffSummary,
    f: &'f mut dyn FnMut(DiffEntry) -> Result<()>,
}

fn file_size(n: &Node) -> Option<u64> {
    (n.kind == NodeKind::File).then_some(n.size)
}

fn same_metadata(x: &Node, y: &Node) -> bool {
    (x.mode, x.uid, x.gid, x.mtime_ns, &x.user, &x.group)
        == (y.mode, y.uid, y.gid, y.mtime_ns, &y.user, &y.group)
}

fn same_content(x: &Node, y: &Node) -> bool {
    match x.kind {
        NodeKind::File => x.size == y.size && x.content == y.content,
        NodeKind::Symlink => x.target_os() == y.target_os(),
        NodeKind::Chardev | NodeKind::Blockdev => x.rdev == y.rdev,
        _ => true,
    }
}

impl Differ<'_, '_> {
    fn emit(
        &mut self,
        path: PathBuf,
        change: Change,
        before: Option<&Node>,
        after: Option<&Node>,
    ) -> Result<()> {
        let (size_before, size_after) = (before.and_then(file_size), after.and_then(file_size));
        let s = &mut self.sum;
        match change {
            Change::Added => s.added += 1,
            Change::Removed => s.removed += 1,
            Change::Modified => s.modified += 1,
            Change::Metadata => s.metadata += 1,
        }
        if change != Change::Metadata {
            s.bytes_added += size_after.unwrap_or(0);
            s.bytes_removed += size_before.unwrap_or(0);
        }
        let kind = after.or(before).expect("one side exists").kind;
        (self.f)(DiffEntry {
            path,
            change,
            kind,
            size_before,
            size_after,
        })
    }

    /// Report everything below a directory that exists on one side only.
    fn one_sided(&mut self, dir: &Path, n: &Node, change: Change) -> Result<()> {
        let Some(sub) = n.subtree.filter(|_| n.kind == NodeKind::Dir) else {
            return Ok(());
        };
        let mut found = Vec::new();
        self.w.walk_below(dir, &sub, &mut |p: &Path, n: &Node| {
            found.push((p.to_path_buf(), n.clone()));
            Ok(Visit::Descend)
        })?;
        for (p, n) in found {
            let (before, after) = if change == Change::Added {
                (None, Some(&n))
            } else {
                (Some(&n), None)
            };
            self.emit(p, change, before, after)?;
        }
        Ok(())
    }

    fn trees(&mut self, dir: &Path, a: &Id, b: &Id) -> Result<()> {
        if a == b {
            return Ok(());
        }
        let mut both = self.w.load_many(&[*a, *b])?;
        let tb = both.pop().expect("two trees");
        let ta = both.pop().expect("two trees");
        let (mut i, mut j) = (0, 0);
        while i < ta.nodes.len() || j < tb.nodes.len() {
            let (x, y) = (ta.nodes.get(i), tb.nodes.get(j));
            let order = match (x, y) {
                (Some(x), Some(y)) => x.name_os().cmp(&y.name_os()),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Less => {
                    let x = x.expect("left side");
                    let p = dir.join(x.name_os());
                    self.emit(p.clone(), Change::Removed, Some(x), None)?;
                    self.one_sided(&p, x, Change::Removed)?;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    let y = y.expect("right side");
                    let p = dir.join(y.name_os());
                    self.emit(p.clone(), Change::Added, None, Some(y))?;
                    self.one_sided(&p, y, Change::Added)?;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    let (x, y) = (x.expect("both"), y.expect("both"));
                    self.pair(dir.join(x.name_os()), x, y)?;
                    i += 1;
                    j += 1;
                }
            }
        }
        Ok(())
    }

    fn pair(&mut self, p: PathBuf, x: &Node, y: &Node) -> Result<()> {
        if x.kind != y.kind {
            self.emit(p.clone(), Change::Modified, Some(x), Some(y))?;
            self.one_sided(&p, x, Change::Removed)?;
            return self.one_sided(&p, y, Change::Added);
        }
        if !same_content(x, y) {
            self.emit(p.clone(), Change::Modified, Some(x), Some(y))?;
        } else if !same_metadata(x, y) {
            self.emit(p.clone(), Change::Metadata, Some(x), Some(y))?;
        }
        match (x.kind, x.subtree, y.subtree) {
            (NodeKind::Dir, Some(s), Some(t)) => self.trees(&p, &s, &t),
            (NodeKind::Dir, Some(_), None) => self.one_sided(&p, x, Change::Removed),
            (NodeKind::Dir, None, Some(_)) => self.one_sided(&p, y, Change::Added),
            _ => Ok(()),
        }
    }
}

fn not_found(path: &Path) -> RepoError {
    RepoError::Invalid(format!("{} is not in the snapshot", path.display()))
}

/// Every node of a snapshot below `path` (`/` for all), as (path, node), in
/// walk order. Convenient for small snapshots and tests; large listings
/// should use a [`Visitor`].
pub fn list(
    repo: &Repository,
    index: &Index,
    root: &Id,
    path: &Path,
) -> Result<Vec<(PathBuf, Node)>> {
    let mut w = Walker::new(repo, index);
    let start = w.locate(root, path)?;
    let mut out = Vec::new();
    w.walk(&start, &mut |p: &Path, n: &Node| {
        out.push((p.to_path_buf(), n.clone()));
        Ok(Visit::Descend)
    })?;
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::backup::{backup, BackupOptions};
    use crate::keyfile::KdfParams;
    use crate::progress::NoProgress;
    use crate::snapshot::Snapshot;
    use crate::InitOptions;

    /// A local repository in a temporary directory, for engine tests.
    pub(crate) struct TestRepo {
        pub dir: tempfile::TempDir,
        pub repo: Repository,
        _rt: tokio::runtime::Runtime,
    }

    impl TestRepo {
        pub fn new() -> TestRepo {
            Self::with_rt(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap(),
            )
        }

        fn with_rt(rt: tokio::runtime::Runtime) -> TestRepo {
            let dir = tempfile::tempdir().unwrap();
            let repo = Self::init_at(&rt, &dir.path().join("repo"), b"pw");
            TestRepo { dir, repo, _rt: rt }
        }

        /// Another repository (own key) sharing this one's runtime.
        pub fn other(&self, name: &str, password: &[u8]) -> Repository {
            Self::init_at(&self._rt, &self.dir.path().join(name), password)
        }

        fn init_at(rt: &tokio::runtime::Runtime, path: &Path, password: &[u8]) -> Repository {
            let store: tidemark_store::DynStore =
                std::sync::Arc::new(tidemark_store::LocalStore::new(path));
            let mut config = crate::config::RepoConfig::new();
            // Small chunks so a few hundred KiB make several blobs.
            config.chunker = crate::config::ChunkerParams {
                min_size: 4096,
                avg_size: 16384,
                max_size: 65536,
            };
            Repository::init(
                store,
                rt.handle().clone(),
                password,
                InitOptions {
                    kdf: KdfParams::insecure_fast(),
                    config,
                },
            )
            .unwrap()
        }

        pub fn backup(&self, paths: &[&Path]) -> (Id, Snapshot) {
            backup_into(&self.repo, paths)
        }
    }

    pub(crate) fn backup_into(repo: &Repository, paths: &[&Path]) -> (Id, Snapshot) {
        let opts = BackupOptions {
            paths: paths.iter().map(|p| p.to_path_buf()).collect(),
            ..Default::default()
        };
        let out = backup(repo, &opts, &NoProgress).unwrap();
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        (out.id, out.snapshot)
    }

    pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        crate::crypto::fill_random(&mut v);
        v
    }

    #[test]
    fn walk_lists_every_path_in_order_and_from_a_sub_path() {
        let t = TestRepo::new();
        let src = t.dir.path().join("src");
        std::fs::create_dir_all(src.join("d/e")).unwrap();
        std::fs::create_dir_all(src.join("same1")).unwrap();
        std::fs::create_dir_all(src.join("same2")).unwrap();
        std::fs::write(src.join("a.txt"), b"a").unwrap();
        std::fs::write(src.join("d/e/f"), b"f").unwrap();
        std::fs::write(src.join("same1/x"), b"x").unwrap();
        std::fs::write(src.join("same2/x"), b"x").unwrap();
        let (_, snap) = t.backup(&[&src]);
        let index = t.repo.load_index().unwrap();
        let all = list(&t.repo, &index, &snap.tree, Path::new("/")).unwrap();
        let paths: Vec<PathBuf> = all.iter().map(|(p, _)| p.clone()).collect();
        let s = |rel: &str| {
            if rel.is_empty() {
                src.clone()
            } else {
                src.join(rel)
            }
        };
        let below: Vec<PathBuf> = paths
            .iter()
            .filter(|p| p.starts_with(&src))
            .cloned()
            .collect();
        let want: Vec<PathBuf> = [
            "", "a.txt", "d", "d/e", "d/e/f", "same1", "same1/x", "same2", "same2/x",
        ]
        .iter()
        .map(|r| s(r))
        .collect();
        assert_eq!(below, want);
        // Every ancestor of the source is there too, before it.
        assert_eq!(paths.len(), want.len() + src.ancestors().count() - 2);

        let sub = list(&t.repo, &index, &snap.tree, &src.join("d")).unwrap();
        let sub: Vec<PathBuf> = sub.into_iter().map(|(p, _)| p).collect();
        assert_eq!(sub, vec![s("d"), s("d/e"), s("d/e/f")]);
        let file = list(&t.repo, &index, &snap.tree, &src.join("a.txt")).unwrap();
        assert_eq!(file.len(), 1);
        assert_eq!(file[0].1.size, 1);
        assert!(list(&t.repo, &index, &snap.tree, &src.join("nope")).is_err());
        assert!(list(&t.repo, &index, &snap.tree, &src.join("a.txt/below")).is_err());
    }

    #[test]
    fn diff_reports_added_removed_modified_and_metadata() {
        use std::os::unix::fs::PermissionsExt;
        let t = TestRepo::new();
        let src = t.dir.path().join("src");
        std::fs::create_dir_all(src.join("keep/deep")).unwrap();
        std::fs::create_dir_all(src.join("gone")).unwrap();
        std::fs::write(src.join("keep/deep/same"), b"same").unwrap();
        std::fs::write(src.join("gone/x"), b"12345").unwrap();
        std::fs::write(src.join("edit"), b"before").unwrap();
        std::fs::write(src.join("chmod"), b"c").unwrap();
        std::fs::write(src.join("becomes_dir"), b"bd").unwrap();
        let (_, a) = t.backup(&[&src]);
        std::fs::remove_dir_all(src.join("gone")).unwrap();
        std::fs::write(src.join("edit"), b"after!!").unwrap();
        std::fs::set_permissions(src.join("chmod"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::fs::remove_file(src.join("becomes_dir")).unwrap();
        std::fs::create_dir(src.join("becomes_dir")).unwrap();
        std::fs::write(src.join("becomes_dir/inner"), b"in").unwrap();
        std::fs::write(src.join("new"), b"0123456789").unwrap();
        let (_, b) = t.backup(&[&src]);
        let index = t.repo.load_index().unwrap();
        let mut got = Vec::new();
        let sum = diff(&t.repo, &index, &a.tree, &b.tree, &mut |e| {
            got.push(e);
            Ok(())
        })
        .unwrap();
        let rel = |e: &DiffEntry| {
            e.path
                .strip_prefix(&src)
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        let mut files: Vec<(String, char)> = got
            .iter()
            .filter(|e| !(e.kind == NodeKind::Dir && e.change == Change::Metadata))
            .map(|e| (rel(e), e.change.symbol()))
            .collect();
        files.sort();
        let want = [
            ("becomes_dir", 'M'),
            ("becomes_dir/inner", '+'),
            ("chmod", 'U'),
            ("edit", 'M'),
            ("gone", '-'),
            ("gone/x", '-'),
            ("new", '+'),
        ];
        let want: Vec<(String, char)> = want.iter().map(|(p, c)| (p.to_string(), *c)).collect();
        assert_eq!(files, want);
        // Only the changed directory (and its ancestors) show up as metadata changes.
        assert!(got
            .iter()
            .filter(|e| e.kind == NodeKind::Dir && e.change == Change::Metadata)
            .all(|e| src.starts_with(&e.path)));
        assert_eq!((sum.added, sum.removed, sum.modified), (2, 2, 2));
        assert_eq!(sum.bytes_added, 10 + 2 + 7);
        assert_eq!(sum.bytes_removed, 5 + 6 + 2);
        // Identical snapshots: nothing.
        let none = diff(&t.repo, &index, &a.tree, &a.tree, &mut |_| {
            panic!("no change expected")
        })
        .unwrap();
        assert_eq!(none, DiffSummary::default());
    }
}
