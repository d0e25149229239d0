//! Copy of snapshots into another repository with its own master key.
//!
//! Blob ids are keyed, so the same content has another id in the target:
//! every data blob is read from the source, checked, hashed with the target
//! key and stored there unless the target already has it; every tree is then
//! rewritten bottom-up with the new content and subtree ids, and the snapshot
//! is saved with `original` = the source snapshot id, which is how a later
//! copy knows to skip it.
//!
//! What costs is reading source data, so it is avoided where possible:
//! - source blob id -> target id (and tree id -> tree id) is remembered across
//!   the snapshots of one run, so shared data is read once;
//! - before a snapshot is copied, the mapping is seeded from an earlier copy
//!   of a related snapshot (its parent, else the latest copy of the same host
//!   and paths) by walking the source and target trees side by side: copies
//!   have the same shape, so ids pair up by position. An incremental copy then
//!   reads only what changed, as an incremental backup does.
//!
//! Reads are grouped by pack and by nearby offsets (as restore does), on
//! several threads. The target's packer deduplicates against its index.
//! Each snapshot is flushed (packs, index) and saved before the next one
//! starts, so an interrupted copy keeps what it finished.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::Ordering;

use rayon::prelude::*;
use serde::Serialize;

use crate::blob::{self, BlobType};
use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::index::{BlobLocation, Index};
use crate::lock::{Lock, LockKind};
use crate::packer::Packer;
use crate::progress::Progress;
use crate::repo::{FileKind, Repository};
use crate::restore::{ranges, RangeLimits};
use crate::snapshot::Snapshot;
use crate::tree::{Node, NodeKind, Tree};
use crate::walk::{Visit, Visitor, Walker};

#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Parallel pack reads (default: the number of cores, at least 4, since
    /// storage latency as much as CPU bounds it).
    pub threads: Option<usize>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyOutcome {
    /// (source id, target id) of each snapshot copied now.
    pub copied: Vec<(Id, Id)>,
    /// Source snapshots the target already had.
    pub skipped: Vec<Id>,
    /// Data blobs read from the source, and their plaintext bytes.
    pub blobs_read: u64,
    pub bytes_read: u64,
    /// Blobs (data and trees) the target did not have, as plaintext and as stored.
    pub blobs_new: u64,
    pub bytes_new: u64,
    pub bytes_new_stored: u64,
}

/// Source snapshot ids the target already holds a copy of.
pub fn copied_originals(target: &[(Id, Snapshot)]) -> HashMap<Id, Id> {
    target
        .iter()
        .filter_map(|(id, s)| s.original.map(|o| (o, *id)))
        .collect()
}

/// Copy `snapshots` of `src` into `dst`, skipping those already copied.
pub fn copy(
    src: &Repository,
    dst: &Repository,
    snapshots: &[(Id, Snapshot)],
    opts: &CopyOptions,
    progress: &dyn Progress,
) -> Result<CopyOutcome> {
    if src.config.id == dst.config.id {
        return Err(RepoError::Invalid(
            "source and target are the same repository".into(),
        ));
    }
    let dst_lock = Lock::acquire(dst, LockKind::Copy)?;
    // A Copy lock on the source too: nothing is written there but the lock,
    // and it makes a concurrent prune keep the packs being read.
    let src_lock = Lock::acquire(src, LockKind::Copy)?;
    let dst_snaps = dst.list_snapshots()?;
    let mut copied = copied_originals(&dst_snaps);
    let mut out = CopyOutcome::default();
    let mut todo: Vec<&(Id, Snapshot)> = Vec::new();
    for s in snapshots {
        let done =
            copied.contains_key(&s.0) || s.1.original.is_some_and(|o| copied.contains_key(&o));
        if done {
            out.skipped.push(s.0);
        } else if !todo.iter().any(|t| t.0 == s.0) {
            todo.push(s);
        }
    }
    if todo.is_empty() {
        src_lock.release();
        dst_lock.release();
        return Ok(out);
    }
    todo.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));

    progress.phase("loading indexes");
    let src_index = src.load_index()?;
    let dst_index = dst.load_index()?;
    let threads = opts.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .max(4)
    });
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("tidemark-copy-{i}"))
        .build()
        .map_err(|e| RepoError::Invalid(format!("thread pool: {e}")))?;
    let packer = Packer::new(dst, &dst_index);
    let mut m = Mapper {
        src,
        dst,
        src_index: &src_index,
        dst_index: &dst_index,
        packer: &packer,
        blobs: HashMap::new(),
        trees: HashMap::new(),
    };
    let (mut total_blobs, mut total_bytes) = (0u64, 0u64);
    for (n, (src_id, snap)) in todo.iter().enumerate() {
        progress.phase(&format!(
            "snapshot {} ({}/{})",
            src_id.short(),
            n + 1,
            todo.len()
        ));
        if let Some((s_tree, d_tree)) = related_copy(src, snap, &dst_snaps) {
            m.seed(s_tree, d_tree)?;
        }
        let (pending, need) = m.collect(&snap.tree)?;
        let wanted = m.locate(&need)?;
        total_blobs += need.len() as u64;
        total_bytes += wanted
            .iter()
            .flat_map(|(_, v)| v.iter())
            .map(|(_, l)| l.raw_len as u64)
            .sum::<u64>();
        progress.set_total(total_blobs, total_bytes);
        let pairs = pool.install(|| m.copy_data(&wanted, progress))?;
        out.blobs_read += pairs.len() as u64;
        out.bytes_read += pairs.iter().map(|p| p.2).sum::<u64>();
        m.blobs.extend(pairs.into_iter().map(|(s, d, _)| (s, d)));
        for (id, tree) in pending {
            let new = m.rewrite(&tree)?;
            m.trees.insert(id, new);
        }
        packer.flush()?;
        let root = *m.trees.get(&snap.tree).expect("root rewritten");
        let copy = Snapshot {
            tree: root,
            parent: snap.parent.and_then(|p| copied.get(&p).copied()),
            original: Some(*src_id),
            ..snap.clone()
        };
        let new_id = dst.save_snapshot(&copy)?;
        copied.insert(*src_id, new_id);
        out.copied.push((*src_id, new_id));
    }
    out.blobs_new = packer.stats.blobs_new.load(Ordering::Relaxed);
    out.bytes_new = packer.stats.bytes_new_raw.load(Ordering::Relaxed);
    out.bytes_new_stored = packer.stats.bytes_new_stored.load(Ordering::Relaxed);
    // Snapshots are stored before the locks go (prune relies on that order).
    src_lock.release();
    dst_lock.release();
    Ok(out)
}

/// (source root tree, target root tree) of an earlier copy close to `snap`:
/// its parent, else the latest copy of the same host and paths. None when
/// there is none or the source snapshot is gone.
fn related_copy(
    src: &Repository,
    snap: &Snapshot,
    dst_snaps: &[(Id, Snapshot)],
) -> Option<(Id, Id)> {
    let by_parent = snap
        .parent
        .and_then(|p| dst_snaps.iter().find(|(_, d)| d.original == Some(p)));
    let same_source = || {
        dst_snaps.iter().rev().find(|(_, d)| {
            d.original.is_some() && d.hostname == snap.hostname && d.paths == snap.paths
        })
    };
    let (_, d) = by_parent.or_else(same_source)?;
    // Only a speed-up: an unreadable source snapshot means reading data again.
    let s = src.load_snapshot(&d.original?).ok()?;
    Some((s.tree, d.tree))
}

struct Mapper<'a> {
    src: &'a Repository,
    dst: &'a Repository,
    src_index: &'a Index,
    dst_index: &'a Index,
    packer: &'a Packer<'a>,
    /// Source data blob id -> target id.
    blobs: HashMap<Id, Id>,
    /// Source tree id -> target tree id (stored in the target).
    trees: HashMap<Id, Id>,
}

type PackReads = Vec<(Id, Vec<(Id, BlobLocation)>)>;
/// Trees to rewrite (children first) and the data blobs to read.
type Collected = (Vec<(Id, Tree)>, HashSet<Id>);

impl Mapper<'_> {
    /// Pair up ids of a source tree and its earlier copy, level by level
    /// (each level's trees fetched together). A directory whose shape differs
    /// is left out: this is an optimisation, never a guess.
    fn seed(&mut self, src_root: Id, dst_root: Id) -> Result<()> {
        let sw = Walker::new(self.src, self.src_index);
        let dw = Walker::new(self.dst, self.dst_index);
        let mut level = vec![(src_root, dst_root)];
        while !level.is_empty() {
            level.retain(|(s, _)| !self.trees.contains_key(s));
            let s_ids: Vec<Id> = level.iter().map(|p| p.0).collect();
            let d_ids: Vec<Id> = level.iter().map(|p| p.1).collect();
            let (a, b) = rayon::join(|| sw.load_many(&s_ids), || dw.load_many(&d_ids));
            let mut next = Vec::new();
            for ((s_id, d_id), (a, b)) in level.iter().zip(a?.iter().zip(b?.iter())) {
                if let Some(sub) = self.pair(a, b) {
                    self.trees.insert(*s_id, *d_id);
                    next.extend(sub);
                }
            }
            next.sort();
            next.dedup();
            level = next;
        }
        Ok(())
    }

    /// Record the blob pairs of two same-shaped trees; returns their subtree
    /// pairs, or None when the shapes differ.
    fn pair(&mut self, a: &Tree, b: &Tree) -> Option<Vec<(Id, Id)>> {
        let same = a.nodes.len() == b.nodes.len()
            && a.nodes.iter().zip(&b.nodes).all(|(x, y)| {
                x.name_os() == y.name_os()
                    && x.kind == y.kind
                    && x.size == y.size
                    && x.content.len() == y.content.len()
                    && x.subtree.is_some() == y.subtree.is_some()
                    && x.content.iter().zip(&y.content).all(|(s, d)| {
                        let sl = self.src_index.get(BlobType::Data, s).map(|l| l.raw_len);
                        sl.is_some()
                            && sl == self.dst_index.get(BlobType::Data, d).map(|l| l.raw_len)
                    })
            });
        if !same {
            return None;
        }
        let mut subs = Vec::new();
        for (x, y) in a.nodes.iter().zip(&b.nodes) {
            self.blobs
                .extend(x.content.iter().copied().zip(y.content.iter().copied()));
            if let (Some(s), Some(d)) = (x.subtree, y.subtree) {
                subs.push((s, d));
            }
        }
        Some(subs)
    }

    /// The trees of a snapshot not yet in the target (children before
    /// parents) and the data blobs whose target id is not known.
    fn collect(&self, root: &Id) -> Result<Collected> {
        if self.trees.contains_key(root) {
            return Ok((Vec::new(), HashSet::new()));
        }
        let mut c = Collect {
            m: self,
            stack: vec![Vec::new()],
            pending: Vec::new(),
            pending_ids: HashSet::new(),
            need: HashSet::new(),
        };
        Walker::new(self.src, self.src_index).walk_root(root, &mut c)?;
        let nodes = c.stack.pop().expect("root level");
        c.pending.push((*root, Tree { nodes }));
        Ok((c.pending, c.need))
    }

    /// Where the needed blobs are, grouped by pack, sorted by offset.
    fn locate(&self, need: &HashSet<Id>) -> Result<PackReads> {
        let mut by_pack: HashMap<Id, Vec<(Id, BlobLocation)>> = HashMap::new();
        for id in need {
            let l = self
                .src_index
                .get(BlobType::Data, id)
                .ok_or_else(|| RepoError::BlobNotFound { id: id.to_hex() })?;
            by_pack.entry(l.pack).or_default().push((*id, l));
        }
        let mut packs: PackReads = by_pack.into_iter().collect();
        for (_, v) in packs.iter_mut() {
            v.sort_by_key(|(_, l)| l.offset);
        }
        Ok(packs)
    }

    /// Read, check and re-store data blobs; returns (source id, target id,
    /// plaintext length) for each.
    fn copy_data(&self, packs: &PackReads, progress: &dyn Progress) -> Result<Vec<(Id, Id, u64)>> {
        let per_pack: Vec<Vec<(Id, Id, u64)>> = packs
            .par_iter()
            .map(|(pack, blobs)| {
                let mut out = Vec::with_capacity(blobs.len());
                for (start, range) in ranges(blobs, RangeLimits::HELD) {
                    let len = range
                        .iter()
                        .map(|(_, l)| l.offset + l.length)
                        .max()
                        .expect("non-empty")
                        - start;
                    let bytes = self.src.block_on(self.src.store().get_range(
                        &FileKind::Pack.key(pack),
                        start as u64,
                        len as u64,
                    ))?;
                    for (id, l) in range {
                        let s = (l.offset - start) as usize;
                        let what = || format!("blob {id} in pack {pack}");
                        let plain = blob::unseal(
                            self.src.cipher(),
                            &bytes[s..s + l.length as usize],
                            l.flags,
                            l.raw_len,
                            &what,
                        )?;
                        if self.src.key().blob_id(&plain) != *id {
                            return Err(RepoError::corrupt(
                                what(),
                                "content does not match its id",
                            ));
                        }
                        let new = self.dst.key().blob_id(&plain);
                        if self.packer.claim(BlobType::Data, &new) {
                            self.packer.save_claimed(BlobType::Data, new, &plain)?;
                        }
                        out.push((*id, new, plain.len() as u64));
                        progress.advance(1, plain.len() as u64);
                    }
                }
                Ok(out)
            })
            .collect::<Result<_>>()?;
        Ok(per_pack.into_iter().flatten().collect())
    }

    /// Store a tree in the target with target ids; its children are done.
    fn rewrite(&self, tree: &Tree) -> Result<Id> {
        let mut t = tree.clone();
        for n in &mut t.nodes {
            for c in &mut n.content {
                *c = *self.blobs.get(c).expect("every content blob was mapped");
            }
            if let Some(s) = &mut n.subtree {
                *s = *self
                    .trees
                    .get(s)
                    .expect("subtrees are rewritten before their parents");
            }
        }
        Ok(self.packer.save(BlobType::Tree, &t.encode())?.0)
    }
}

/// Gathers, during one walk of the source, the trees to rewrite (rebuilt
/// from their nodes, so each is loaded once) and the data blobs to read.
struct Collect<'m, 'a> {
    m: &'m Mapper<'a>,
    /// Nodes of each directory being walked, root first.
    stack: Vec<Vec<Node>>,
    pending: Vec<(Id, Tree)>,
    pending_ids: HashSet<Id>,
    need: HashSet<Id>,
}

impl Visitor for Collect<'_, '_> {
    fn enter(&mut self, _path: &Path, n: &Node) -> Result<Visit> {
        self.stack
            .last_mut()
            .expect("a level is open")
            .push(n.clone());
        match (n.kind, n.subtree) {
            (NodeKind::File, _) => {
                self.need.extend(
                    n.content
                        .iter()
                        .filter(|id| !self.m.blobs.contains_key(id))
                        .copied(),
                );
                Ok(Visit::Skip)
            }
            // A subtree already stored in the target, or met earlier in this
            // snapshot, is not walked again.
            (NodeKind::Dir, Some(sub))
                if !self.m.trees.contains_key(&sub) && !self.pending_ids.contains(&sub) =>
            {
                self.stack.push(Vec::new());
                Ok(Visit::Descend)
            }
            _ => Ok(Visit::Skip),
        }
    }

    fn leave(&mut self, _path: &Path, n: &Node) -> Result<()> {
        let nodes = self.stack.pop().expect("pushed on enter");
        let id = n.subtree.expect("descended only into subtrees");
        self.pending_ids.insert(id);
        self.pending.push((id, Tree { nodes }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use crate::walk::list;
    use crate::walk::tests::{backup_into, random_bytes, TestRepo};

    /// (path, size, content bytes) of every file in a snapshot.
    fn files(repo: &Repository, snap: &Snapshot) -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let index = repo.load_index().unwrap();
        list(repo, &index, &snap.tree, Path::new("/"))
            .unwrap()
            .into_iter()
            .filter(|(_, n)| n.kind == NodeKind::File)
            .map(|(p, n)| {
                let data = n
                    .content
                    .iter()
                    .flat_map(|id| repo.read_blob(&index, BlobType::Data, id).unwrap())
                    .collect();
                (p, data)
            })
            .collect()
    }

    #[test]
    fn copy_rekeys_everything_and_skips_what_is_there() {
        let t = TestRepo::new();
        let dst = t.other("dst", b"other");
        let src = t.dir.path().join("src");
        std::fs::create_dir_all(src.join("a")).unwrap();
        std::fs::create_dir_all(src.join("b")).unwrap();
        let shared = random_bytes(150_000);
        std::fs::write(src.join("a/f"), &shared).unwrap();
        std::fs::write(src.join("b/f"), &shared).unwrap();
        std::fs::write(src.join("text"), "hello ".repeat(20_000)).unwrap();
        let first = t.backup(&[&src]);
        let snaps = t.repo.list_snapshots().unwrap();
        let out = copy(&t.repo, &dst, &snaps, &CopyOptions::default(), &NoProgress).unwrap();
        assert_eq!(out.copied.len(), 1);
        // The shared content is read once.
        let index = t.repo.load_index().unwrap();
        let shared_blobs: u64 = list(&t.repo, &index, &first.1.tree, &src.join("a/f")).unwrap()[0]
            .1
            .content
            .len() as u64;
        let text_blobs = list(&t.repo, &index, &first.1.tree, &src.join("text")).unwrap()[0]
            .1
            .content
            .len() as u64;
        assert_eq!(out.blobs_read, shared_blobs + text_blobs);
        let (_, copy_snap) = dst.find_snapshot("latest").unwrap();
        assert_eq!(copy_snap.original, Some(first.0));
        assert_eq!(copy_snap.time, first.1.time);
        assert_ne!(
            copy_snap.tree, first.1.tree,
            "tree ids are keyed by the target"
        );
        assert_eq!(files(&dst, &copy_snap), files(&t.repo, &first.1));

        let again = copy(&t.repo, &dst, &snaps, &CopyOptions::default(), &NoProgress).unwrap();
        assert!(again.copied.is_empty());
        assert_eq!(again.skipped, vec![first.0]);

        // An incremental copy in a new run reads only the new file: the rest
        // is paired up from the earlier copy.
        let added = random_bytes(50_000);
        std::fs::write(src.join("new"), &added).unwrap();
        let second = backup_into(&t.repo, &[&src]);
        let snaps = t.repo.list_snapshots().unwrap();
        let out = copy(&t.repo, &dst, &snaps, &CopyOptions::default(), &NoProgress).unwrap();
        assert_eq!(out.skipped, vec![first.0]);
        assert_eq!(out.copied.len(), 1);
        assert_eq!(out.bytes_read, 50_000);
        let (_, copy2) = dst.find_snapshot(&out.copied[0].1.to_hex()).unwrap();
        assert_eq!(files(&dst, &copy2), files(&t.repo, &second.1));
        assert_eq!(copy2.parent, Some(copy_snap_id(&dst, first.0)));
    }

    fn copy_snap_id(dst: &Repository, original: Id) -> Id {
        dst.list_snapshots()
            .unwrap()
            .into_iter()
            .find(|(_, s)| s.original == Some(original))
            .unwrap()
            .0
    }
}
