//! The tree walk of verify: every tree loads, every blob is indexed, and
//! each bad blob or tree is mapped to the paths that use it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use rayon::prelude::*;

use super::{is_damage, short_reason, Findings, ObjectKind};
use crate::blob::BlobType;
use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::index::Index;
use crate::repo::Repository;
use crate::tree::NodeKind;

/// What the path mapping needs of one readable tree: its subdirectories,
/// and its files that use a bad or unindexed blob. Much smaller than the
/// tree itself, so every tree of the repository can be held at once.
pub(super) struct TreeInfo {
    dirs: Vec<(String, Id)>,
    hits: Vec<(String, Id)>,
}

/// Loads every distinct tree once, level by level, in parallel; checks that
/// each loads and that every blob a file needs is indexed; then maps bad
/// blobs and trees to paths, memoised per tree.
pub(super) struct Walker<'a> {
    pub(super) repo: &'a Repository,
    pub(super) index: &'a Index,
    /// Damaged index files: blobs missing from the index are charged to them.
    pub(super) index_damaged: Vec<Id>,
    /// Every tree reached; `None` when it cannot be read.
    pub(super) trees: HashMap<Id, Option<TreeInfo>>,
    pub(super) memo: HashMap<Id, Arc<Vec<(String, Id)>>>,
    pub(super) f: &'a mut Findings,
}

impl Walker<'_> {
    pub(super) fn load(&mut self, roots: Vec<Id>) -> Result<()> {
        let mut frontier: Vec<Id> = roots
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        while !frontier.is_empty() {
            let (repo, index) = (self.repo, self.index);
            let loaded: Vec<(Id, Result<crate::tree::Tree>)> =
                crate::repo::io_pool().install(|| {
                    frontier
                        .par_iter()
                        .map(|id| (*id, repo.load_tree(index, id)))
                        .collect()
                });
            let current: std::collections::HashSet<Id> = frontier.iter().copied().collect();
            let mut next = BTreeSet::new();
            for (id, res) in loaded {
                let tree = match res {
                    Ok(t) => t,
                    Err(RepoError::BlobNotFound { .. }) => {
                        // The parent (or the snapshot) charges the tree to its path.
                        self.missing(ObjectKind::Tree, id);
                        self.trees.insert(id, None);
                        continue;
                    }
                    Err(e) if is_damage(&e) => {
                        // A damaged pack may already taint it; still name the tree.
                        self.f.add(ObjectKind::Tree, id, short_reason(&e));
                        self.f.taint(id, (ObjectKind::Tree, id));
                        self.trees.insert(id, None);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let mut info = TreeInfo {
                    dirs: Vec::new(),
                    hits: Vec::new(),
                };
                for n in tree.nodes {
                    match n.kind {
                        NodeKind::File => {
                            for b in &n.content {
                                if !self.f.bad.contains_key(b)
                                    && self.index.get(BlobType::Data, b).is_none()
                                {
                                    self.missing(ObjectKind::Blob, *b);
                                }
                                if self.f.bad.contains_key(b) {
                                    info.hits.push((n.name.clone(), *b));
                                }
                            }
                        }
                        NodeKind::Dir => {
                            if let Some(sub) = n.subtree {
                                // Guards against cycles in a corrupt repository too.
                                if !self.trees.contains_key(&sub) && !current.contains(&sub) {
                                    next.insert(sub);
                                }
                                info.dirs.push((n.name.clone(), sub));
                            }
                        }
                        _ => {}
                    }
                }
                self.trees.insert(id, Some(info));
            }
            frontier = next
                .into_iter()
                .filter(|id| !self.trees.contains_key(id))
                .collect();
        }
        Ok(())
    }

    /// Hits under the tree `id` found at `path` (the tree's own path, "/"
    /// for a root), with absolute paths.
    pub(super) fn subtree(&mut self, id: &Id, path: &str) -> Vec<(String, Id)> {
        let mut out = Vec::new();
        if self.f.bad.contains_key(id) {
            out.push((path.to_string(), *id));
        }
        let rel = self.tree_hits(id);
        let prefix = if path.ends_with('/') {
            path.to_string()
        } else {
            format!("{path}/")
        };
        out.extend(rel.iter().map(|(p, b)| (format!("{prefix}{p}"), *b)));
        out
    }

    /// Hits under tree `id`, relative to it.
    fn tree_hits(&mut self, id: &Id) -> Arc<Vec<(String, Id)>> {
        if let Some(h) = self.memo.get(id) {
            return h.clone();
        }
        // Guards against cycles in a corrupt repository.
        self.memo.insert(*id, Arc::new(Vec::new()));
        let mut hits = Vec::new();
        let (dirs, own) = match self.trees.get(id) {
            Some(Some(info)) => (info.dirs.clone(), info.hits.clone()),
            _ => (Vec::new(), Vec::new()),
        };
        hits.extend(own);
        for (name, sub) in dirs {
            if self.f.bad.contains_key(&sub) {
                hits.push((name.clone(), sub));
            }
            let rel = self.tree_hits(&sub);
            hits.extend(rel.iter().map(|(p, b)| (format!("{name}/{p}"), *b)));
        }
        let hits = Arc::new(hits);
        self.memo.insert(*id, hits.clone());
        hits
    }

    /// A blob or tree not in the index: charged to the damaged index files
    /// when there are any (they most likely listed it), else named itself.
    fn missing(&mut self, kind: ObjectKind, id: Id) {
        if self.index_damaged.is_empty() {
            self.f.add(
                kind,
                id,
                "not in the index (its pack is missing or was never indexed)",
            );
            self.f.taint(id, (kind, id));
        } else {
            for i in self.index_damaged.clone() {
                self.f.taint(id, (ObjectKind::Index, i));
            }
        }
    }
}
