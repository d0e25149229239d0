//! Repository statistics: how much the snapshots hold, how much of it is
//! unique, and how much that takes in storage.
//!
//! Logical figures count every file of every chosen snapshot, repeats
//! included (what restoring each of them would write). Unique figures count
//! each blob once, sized from the index. A directory tree seen before (the
//! same subtree id, in this or an earlier snapshot) is not walked again: its
//! totals are remembered by id, so stats over many similar snapshots costs
//! about one walk of the distinct trees.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::Serialize;

use crate::blob::BlobType;
use crate::error::Result;
use crate::id::Id;
use crate::index::Index;
use crate::repo::{FileKind, Repository};
use crate::snapshot::Snapshot;
use crate::tree::{Node, NodeKind};
use crate::walk::{Visit, Visitor, Walker};

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    pub snapshots: u64,
    /// Regular files over all chosen snapshots, repeats included.
    pub files: u64,
    pub dirs: u64,
    /// Sum of file sizes over all chosen snapshots: what restore would write.
    pub logical_bytes: u64,
    /// Distinct data blobs the chosen snapshots reference.
    pub data_blobs: u64,
    /// Their plaintext size.
    pub data_raw_bytes: u64,
    /// Their size as stored in packs (compressed and encrypted).
    pub data_stored_bytes: u64,
    pub tree_blobs: u64,
    pub tree_raw_bytes: u64,
    pub tree_stored_bytes: u64,
    /// Referenced blobs the index does not know (damage; see verify).
    pub missing_blobs: u64,
    /// logical_bytes / data_raw_bytes; None when there is no data.
    pub dedup_ratio: Option<f64>,
    /// data_raw_bytes / data_stored_bytes; None when there is no data.
    pub compression_ratio: Option<f64>,
    pub repository: RepoSize,
}

/// The whole repository as stored, from a listing (whatever the snapshots
/// reference or not: unreferenced packs are counted too).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RepoSize {
    pub packs: u64,
    pub pack_bytes: u64,
    pub index_files: u64,
    pub index_bytes: u64,
    pub snapshot_files: u64,
    pub snapshot_bytes: u64,
    /// pack_bytes + index_bytes + snapshot_bytes.
    pub total_bytes: u64,
}

pub fn repo_size(repo: &Repository) -> Result<RepoSize> {
    let sum = |kind| -> Result<(u64, u64)> {
        let l = repo.list(kind)?;
        Ok((l.len() as u64, l.iter().map(|(_, m)| m.size).sum()))
    };
    let (packs, pack_bytes) = sum(FileKind::Pack)?;
    let (index_files, index_bytes) = sum(FileKind::Index)?;
    let (snapshot_files, snapshot_bytes) = sum(FileKind::Snapshot)?;
    Ok(RepoSize {
        packs,
        pack_bytes,
        index_files,
        index_bytes,
        snapshot_files,
        snapshot_bytes,
        total_bytes: pack_bytes + index_bytes + snapshot_bytes,
    })
}

/// Statistics over `snapshots` (pass all of them for the whole repository).
pub fn stats(repo: &Repository, index: &Index, snapshots: &[(Id, Snapshot)]) -> Result<Stats> {
    let mut walker = Walker::new(repo, index);
    let mut c = Counter::default();
    let mut total = Totals::default();
    for (_, snap) in snapshots {
        if let Some(t) = c.memo.get(&snap.tree) {
            total.add(t);
            continue;
        }
        c.trees.insert(snap.tree);
        c.stack.push(Totals::default());
        walker.walk_root(&snap.tree, &mut c)?;
        let t = c.stack.pop().expect("pushed above");
        c.memo.insert(snap.tree, t);
        total.add(&t);
    }
    let mut s = Stats {
        snapshots: snapshots.len() as u64,
        files: total.files,
        dirs: total.dirs,
        logical_bytes: total.bytes,
        ..Default::default()
    };
    for (kind, ids) in [(BlobType::Data, &c.data), (BlobType::Tree, &c.trees)] {
        for id in ids {
            let Some(l) = index.get(kind, id) else {
                s.missing_blobs += 1;
                continue;
            };
            let (n, raw, stored) = match kind {
                BlobType::Data => (
                    &mut s.data_blobs,
                    &mut s.data_raw_bytes,
                    &mut s.data_stored_bytes,
                ),
                BlobType::Tree => (
                    &mut s.tree_blobs,
                    &mut s.tree_raw_bytes,
                    &mut s.tree_stored_bytes,
                ),
            };
            *n += 1;
            *raw += l.raw_len as u64;
            *stored += l.length as u64;
        }
    }
    s.dedup_ratio = ratio(s.logical_bytes, s.data_raw_bytes);
    s.compression_ratio = ratio(s.data_raw_bytes, s.data_stored_bytes);
    s.repository = repo_size(repo)?;
    Ok(s)
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    files: u64,
    dirs: u64,
    bytes: u64,
}

impl Totals {
    fn add(&mut self, o: &Totals) {
        self.files += o.files;
        self.dirs += o.dirs;
        self.bytes += o.bytes;
    }
}

/// Sums per directory on a stack; a finished directory's totals are
/// remembered by subtree id for its next appearance.
#[derive(Default)]
struct Counter {
    stack: Vec<Totals>,
    memo: HashMap<Id, Totals>,
    data: HashSet<Id>,
    trees: HashSet<Id>,
}

impl Visitor for Counter {
    fn enter(&mut self, _path: &Path, n: &Node) -> Result<Visit> {
        let top = self.stack.last_mut().expect("a root is open");
        match n.kind {
            NodeKind::File => {
                top.files += 1;
                top.bytes += n.size;
                self.data.extend(n.content.iter().copied());
            }
            NodeKind::Dir => {
                top.dirs += 1;
                let Some(sub) = n.subtree else {
                    return Ok(Visit::Skip);
                };
                if let Some(t) = self.memo.get(&sub) {
                    top.add(t);
                    return Ok(Visit::Skip);
                }
                self.trees.insert(sub);
                self.stack.push(Totals::default());
                return Ok(Visit::Descend);
            }
            _ => {}
        }
        Ok(Visit::Skip)
    }

    fn leave(&mut self, _path: &Path, n: &Node) -> Result<()> {
        let t = self.stack.pop().expect("pushed on enter");
        if let Some(sub) = n.subtree {
            self.memo.insert(sub, t);
        }
        self.stack.last_mut().expect("a root is open").add(&t);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::walk::tests::TestRepo;

    #[test]
    fn identical_directories_count_twice_logically_once_uniquely() {
        let t = TestRepo::new();
        let src = t.dir.path().join("src");
        let content = crate::walk::tests::random_bytes(200_000);
        for d in ["a", "b"] {
            std::fs::create_dir_all(src.join(d)).unwrap();
            std::fs::write(src.join(d).join("f"), &content).unwrap();
        }
        let (id, snap) = t.backup(&[&src]);
        let index = t.repo.load_index().unwrap();
        let s = stats(&t.repo, &index, &[(id, snap.clone())]).unwrap();
        assert_eq!(s.files, 2);
        assert_eq!(s.logical_bytes, 400_000);
        assert_eq!(s.data_raw_bytes, 200_000);
        assert_eq!(s.dedup_ratio, Some(2.0));
        assert_eq!(s.missing_blobs, 0);
        // The same snapshot twice: twice the logical size, same unique data.
        let s2 = stats(&t.repo, &index, &[(id, snap.clone()), (id, snap)]).unwrap();
        assert_eq!(s2.logical_bytes, 800_000);
        assert_eq!(s2.data_raw_bytes, 200_000);
        assert!(s.repository.pack_bytes >= s.data_stored_bytes);
        assert!(s.repository.total_bytes > s.repository.pack_bytes);
    }
}
