//! Walking the trees of a snapshot: every node with its full path.
//!
//! The root tree of a snapshot reproduces absolute paths from `/`, so a node's
//! path is `/` joined with the names on the way down. The walk is depth-first
//! in name order (the order `ls` prints). Before descending into a directory,
//! the subtrees of all its child directories are fetched together on the I/O
//! pool: on remote storage one tree per round trip would dominate the time.
//! A tree is loaded once where it is walked; subtrees the visitor has
//! already seen whole in this walk (and may skip) are not fetched ahead.
//!
//! [`diff`] walks two snapshots side by side and does not load subtrees whose
//! ids are equal: they are the same directory, down to the last byte.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::index::Index;
use crate::repo::{io_pool, Repository};
use crate::tree::{Node, NodeKind, Tree};

mod diff;
pub use diff::{diff, Change, DiffEntry, DiffSummary};

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
    /// Whether the directory at `path` may be descended into, asked before
    /// its subtree is fetched ahead with its siblings': a visitor that
    /// selects a few paths (a restore of one file) keeps the walk from
    /// fetching every sibling's tree on the way down.
    fn may_descend(&self, _path: &Path, _node: &Node) -> bool {
        true
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
            .filter(|n| v.may_descend(&dir.join(n.name_os()), n))
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
    fn trees_of_a_pack_come_from_one_read_until_dropped() {
        let t = TestRepo::new();
        let src = t.dir.path().join("src");
        for d in ["a", "b/c", "d"] {
            std::fs::create_dir_all(src.join(d)).unwrap();
            std::fs::write(src.join(d).join("f"), d.as_bytes()).unwrap();
        }
        let (_, snap) = t.backup(&[&src]);
        let index = t.repo.load_index().unwrap();
        let all = list(&t.repo, &index, &snap.tree, Path::new("/")).unwrap();
        let tree_packs: HashSet<Id> = all
            .iter()
            .filter_map(|(_, n)| n.subtree)
            .map(|s| index.get(crate::blob::BlobType::Tree, &s).unwrap().pack)
            .collect();
        assert_eq!(tree_packs.len(), 1, "one backup's trees share a pack");
        // The pack is gone from storage: the walk still reads every tree,
        // from the copy read once.
        let pack = *tree_packs.iter().next().unwrap();
        t.repo.delete_file(crate::repo::FileKind::Pack, &pack).unwrap();
        let again = list(&t.repo, &index, &snap.tree, Path::new("/")).unwrap();
        assert_eq!(again.len(), all.len());
        // Dropped (as verify does): what is stored now is read, and its
        // absence is an error.
        t.repo.drop_held_trees();
        assert!(list(&t.repo, &index, &snap.tree, Path::new("/")).is_err());
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
}
