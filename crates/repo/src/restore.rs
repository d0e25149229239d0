//! Restore of a snapshot (or parts of it) into a directory.
//!
//! Plan first (walk the trees, select by `--include`), then create
//! directories and empty files of the right size, then fetch packs in
//! parallel, each blob once even when several files share it, writing each
//! blob with positioned writes into every place it belongs. All-zero blobs of
//! sparse files are not written, so holes stay holes. Metadata is applied
//! last (directories deepest first, so their times survive). A damaged or
//! missing blob spoils only the files that contain it: they are reported,
//! and every other file is restored.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::blob::{self, BlobType};
use crate::error::{RepoError, Result};
use crate::fsmeta::apply_metadata;
use crate::id::Id;
use crate::index::{BlobLocation, Index};
use crate::progress::Progress;
use crate::repo::{FileKind, Repository};
use crate::snapshot::Snapshot;
use crate::tree::{Node, NodeKind};
use crate::walk::{Visit, Visitor, Walker};

/// Packs read at once from a local disk, and from object storage (where each
/// read waits a round trip first); `--threads` or `--connections` override.
const READERS: usize = 4;
const READERS_REMOTE: usize = 8;

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Restore only these paths (as shown by `ls`) and what is below them.
    pub include: Vec<PathBuf>,
    /// Parallel pack downloads (default: 4 from a local disk, 8 from object
    /// storage, where each request waits a network round trip).
    pub threads: Option<usize>,
}

#[derive(Debug, Default)]
pub struct RestoreOutcome {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    /// Paths that could not be restored (fully), with the reason.
    pub errors: Vec<(PathBuf, String)>,
}

/// One file to write.
struct FilePlan {
    path: PathBuf,
    node: Node,
}

#[derive(Default)]
struct Plan {
    dirs: Vec<(PathBuf, Node)>,
    files: Vec<FilePlan>,
    /// (path, node): symlinks, fifos, devices, sockets are skipped.
    specials: Vec<(PathBuf, Node)>,
    /// (new path, existing path) created after the files.
    hardlinks: Vec<(PathBuf, PathBuf, Node)>,
}

/// Whether `p` (snapshot path) is selected by `include`.
fn selected(p: &Path, include: &[PathBuf]) -> (bool, bool) {
    if include.is_empty() {
        return (true, true);
    }
    // (restore this node itself, descend into it)
    let inside = include.iter().any(|i| p.starts_with(i));
    let ancestor = include.iter().any(|i| i.starts_with(p));
    (inside, inside || ancestor)
}

/// Collects what to restore while walking the snapshot (the walk fetches
/// the subtrees of a directory's selected children together, so a deep tree
/// costs round trips per level, not per directory).
struct Planner<'o> {
    opts: &'o RestoreOptions,
    plan: Plan,
    links: HashMap<(u64, u64), PathBuf>,
}

impl Visitor for Planner<'_> {
    fn enter(&mut self, spath: &Path, n: &Node) -> Result<Visit> {
        let (take, descend) = selected(spath, &self.opts.include);
        if !descend {
            return Ok(Visit::Skip);
        }
        let out = self.opts.target.join(spath.strip_prefix("/").expect("absolute"));
        let plan = &mut self.plan;
        match n.kind {
            NodeKind::Dir => plan.dirs.push((out, n.clone())),
            _ if !take => {}
            NodeKind::File => {
                if n.links > 1 {
                    if let Some(first) = self.links.get(&(n.device, n.inode)) {
                        plan.hardlinks.push((out, first.clone(), n.clone()));
                        return Ok(Visit::Skip);
                    }
                    self.links.insert((n.device, n.inode), out.clone());
                }
                plan.files.push(FilePlan { path: out, node: n.clone() });
            }
            _ => plan.specials.push((out, n.clone())),
        }
        Ok(Visit::Descend)
    }

    fn may_descend(&self, spath: &Path, _n: &Node) -> bool {
        selected(spath, &self.opts.include).1
    }
}

fn plan(repo: &Repository, index: &Index, snap: &Snapshot, opts: &RestoreOptions) -> Result<Plan> {
    let mut planner = Planner { opts, plan: Plan::default(), links: HashMap::new() };
    Walker::new(repo, index).walk_root(&snap.tree, &mut planner)?;
    let plan = planner.plan;
    if !opts.include.is_empty() && plan.files.is_empty() && plan.specials.is_empty() && plan.hardlinks.is_empty()
        && !plan.dirs.iter().any(|(p, _)| opts.include.iter().any(|i| p.ends_with(i.strip_prefix("/").unwrap_or(i))))
    {
        return Err(RepoError::Invalid(format!(
            "nothing in the snapshot matches {}",
            opts.include.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(plan)
}

pub fn restore(repo: &Repository, snap: &Snapshot, opts: &RestoreOptions, progress: &dyn Progress) -> Result<RestoreOutcome> {
    progress.phase("loading index");
    let index = repo.load_index()?;
    let plan = plan(repo, &index, snap, opts)?;
    // The plan holds what it needs of the trees.
    repo.drop_held_trees();
    let total: u64 = plan.files.iter().map(|f| f.node.size).sum();
    progress.set_total(plan.files.len() as u64, total);
    progress.phase("restoring");
    let errors = Mutex::new(Vec::new());
    let fail = |p: &Path, e: &dyn std::fmt::Display| {
        progress.warn(&format!("{}: {e}", p.display()));
        errors.lock().expect("poisoned").push((p.to_path_buf(), e.to_string()));
    };

    std::fs::create_dir_all(&opts.target).map_err(|e| RepoError::io(&opts.target, e))?;
    for (p, _) in &plan.dirs {
        if let Err(e) = std::fs::create_dir_all(p) {
            fail(p, &e);
        }
    }
    // Create every file at its final size first; blobs then land anywhere.
    let mut uses: HashMap<Id, Vec<(usize, u64)>> = HashMap::new();
    let mut ok_files = vec![true; plan.files.len()];
    for (i, f) in plan.files.iter().enumerate() {
        if let Some(parent) = f.path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let made = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&f.path)
            .and_then(|h| h.set_len(f.node.size));
        if let Err(e) = made {
            fail(&f.path, &e);
            ok_files[i] = false;
            continue;
        }
        let mut off = 0u64;
        for id in &f.node.content {
            match index.get(BlobType::Data, id) {
                Some(l) => {
                    uses.entry(*id).or_default().push((i, off));
                    off += l.raw_len as u64;
                }
                None => {
                    fail(&f.path, &RepoError::BlobNotFound { id: id.to_hex() });
                    ok_files[i] = false;
                    break;
                }
            }
        }
    }
    let ok_files: Vec<std::sync::atomic::AtomicBool> = ok_files.into_iter().map(Into::into).collect();

    // Group blobs by pack, sorted by offset, for few large reads.
    let mut by_pack: HashMap<Id, Vec<(Id, BlobLocation)>> = HashMap::new();
    for id in uses.keys() {
        let l = index.get(BlobType::Data, id).expect("checked above");
        by_pack.entry(l.pack).or_default().push((*id, l));
    }
    let mut packs: Vec<(Id, Vec<(Id, BlobLocation)>)> = by_pack.into_iter().collect();
    for (_, v) in packs.iter_mut() {
        v.sort_by_key(|(_, l)| l.offset);
    }
    let bytes_done = AtomicU64::new(0);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.unwrap_or_else(|| repo.connections(READERS, READERS_REMOTE)).max(1))
        .thread_name(|i| format!("tidemark-restore-{i}"))
        .build()
        .map_err(|e| RepoError::Invalid(format!("thread pool: {e}")))?;
    let limits = RangeLimits::for_store(repo.store().capabilities().remote);
    pool.install(|| {
        packs.par_iter().for_each(|(pack, blobs)| {
            PENDING.with_borrow_mut(|(pending, out)| {
                for (range_start, range) in ranges(blobs, limits) {
                    let mut write = |id: &Id, l: &BlobLocation, sealed: &mut [u8]| {
                        let what = || format!("blob {id} in pack {pack}");
                        let plain = blob::unseal_in_place(repo.cipher(), sealed, l.flags, l.raw_len, &what, out)
                            .and_then(|p| {
                                if repo.key().blob_id(p) == *id {
                                    Ok(p)
                                } else {
                                    Err(RepoError::corrupt(what(), "content does not match its id"))
                                }
                            });
                        let plain = match plain {
                            Ok(p) => p,
                            Err(e) => return spoil(&plan, &uses[id], &ok_files, &fail, &e.to_string()),
                        };
                        let zero = plain.iter().all(|b| *b == 0);
                        for &(fi, off) in &uses[id] {
                            let f = &plan.files[fi];
                            if zero && f.node.sparse {
                                continue;
                            }
                            let w = OpenOptions::new().write(true).open(&f.path).and_then(|h| h.write_all_at(plain, off));
                            if let Err(e) = w {
                                if ok_files[fi].swap(false, Ordering::Relaxed) {
                                    fail(&f.path, &e);
                                }
                            }
                        }
                        let n = plain.len() as u64 * uses[id].len() as u64;
                        bytes_done.fetch_add(n, Ordering::Relaxed);
                        progress.advance(0, n);
                    };
                    if let Err((done, e)) = stream_range(repo, pack, range_start, range, pending, &mut write) {
                        for (id, _) in &range[done..] {
                            spoil(&plan, &uses[id], &ok_files, &fail, &format!("pack {pack}: {e}"));
                        }
                    }
                }
            })
        });
    });

    for (p, first, _) in &plan.hardlinks {
        let _ = std::fs::remove_file(p);
        if let Err(e) = std::fs::hard_link(first, p) {
            fail(p, &e);
        }
    }
    let as_root = nix::unistd::geteuid().is_root();
    for (p, n) in &plan.specials {
        if let Err(e) = make_special(p, n) {
            fail(p, &e);
            continue;
        }
        if let Err(e) = apply_metadata(p, n, as_root) {
            fail(p, &e);
        }
    }
    for (i, f) in plan.files.iter().enumerate() {
        if ok_files[i].load(Ordering::Relaxed) {
            if let Err(e) = apply_metadata(&f.path, &f.node, as_root) {
                fail(&f.path, &e);
            }
            progress.advance(1, 0);
        }
    }
    // Deepest directories first, so setting a parent's times comes last.
    let mut dirs: Vec<&(PathBuf, Node)> = plan.dirs.iter().collect();
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (p, n) in dirs {
        if let Err(e) = apply_metadata(p, n, as_root) {
            fail(p, &e);
        }
    }
    let errors = errors.into_inner().expect("poisoned");
    Ok(RestoreOutcome {
        files: plan.files.len() as u64 + plan.hardlinks.len() as u64,
        dirs: plan.dirs.len() as u64,
        bytes: bytes_done.load(Ordering::Relaxed),
        errors,
    })
}

thread_local! {
    /// A restore thread's buffers, reused for every range: the bytes of the
    /// blob being received, and its decompression buffer. Freed multi-MiB
    /// buffers would otherwise stay cached in every thread's malloc arena.
    static PENDING: std::cell::RefCell<(Vec<u8>, Vec<u8>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Reads one range of a pack and hands each wanted blob's sealed bytes to
/// `each` as soon as they have arrived, while the rest is still on the
/// wire: decoding overlaps the download, and a whole pack is one request
/// whose buffer holds about one blob. On failure: how many blobs were
/// handed over, and the error (the rest are lost).
fn stream_range(
    repo: &Repository,
    pack: &Id,
    range_start: u32,
    blobs: &[(Id, BlobLocation)],
    pending: &mut Vec<u8>,
    each: &mut dyn FnMut(&Id, &BlobLocation, &mut [u8]),
) -> std::result::Result<(), (usize, RepoError)> {
    use futures::StreamExt;
    let end = blobs.iter().map(|(_, l)| l.offset + l.length).max().expect("non-empty");
    let key = FileKind::Pack.key(pack);
    let mut pieces = repo
        .block_on(repo.store().get_range_stream(&key, range_start as u64, (end - range_start) as u64))
        .map_err(|e| (0, e.into()))?;
    let mut next_piece = || repo.block_on(pieces.next()).map(|r| r.map_err(RepoError::from));
    hand_over(&mut next_piece, range_start, blobs, pending, each).map_err(|(n, e)| {
        let e = e.unwrap_or_else(|| RepoError::corrupt(format!("pack {pack}"), "the range read ended early"));
        (n, e)
    })
}

/// Gathers pieces of a range starting at pack offset `range_start` in
/// `pending` and hands each blob over once all its bytes are there. On
/// failure: how many blobs were handed over, and the error (None: the
/// pieces ended early).
fn hand_over(
    next_piece: &mut dyn FnMut() -> Option<Result<bytes::Bytes>>,
    range_start: u32,
    blobs: &[(Id, BlobLocation)],
    pending: &mut Vec<u8>,
    each: &mut dyn FnMut(&Id, &BlobLocation, &mut [u8]),
) -> std::result::Result<(), (usize, Option<RepoError>)> {
    pending.clear();
    // Pack offset of pending[0]; the next blob to hand over.
    let mut base = range_start;
    let mut next = 0;
    while next < blobs.len() {
        match next_piece() {
            Some(Ok(piece)) => pending.extend_from_slice(&piece),
            Some(Err(e)) => return Err((next, Some(e))),
            None => return Err((next, None)),
        }
        let before = next;
        while let Some((id, l)) = blobs.get(next) {
            let s = (l.offset - base) as usize;
            if s + l.length as usize > pending.len() {
                break;
            }
            each(id, l, &mut pending[s..s + l.length as usize]);
            next += 1;
        }
        // Drop what no later blob needs: all of it inside a gap, else the
        // part before the next blob, once per blob handed over (not per
        // piece, which would move a large blob's head again and again).
        let keep = blobs.get(next).map_or(pending.len(), |(_, l)| ((l.offset - base) as usize).min(pending.len()));
        if keep == pending.len() || (next > before && keep > 0) {
            pending.drain(..keep);
            base += keep as u32;
        }
    }
    Ok(())
}

/// Mark every file using a blob as failed (once per file).
fn spoil(plan: &Plan, uses: &[(usize, u64)], ok: &[std::sync::atomic::AtomicBool], fail: &dyn Fn(&Path, &dyn std::fmt::Display), why: &str) {
    for &(fi, _) in uses {
        if ok[fi].swap(false, Ordering::Relaxed) {
            fail(&plan.files[fi].path, &format!("damaged data: {why}"));
        }
    }
}

/// How a pack's wanted blobs are grouped into read requests.
#[derive(Debug, Clone, Copy)]
pub struct RangeLimits {
    /// Unwanted bytes between two wanted blobs read through rather than
    /// starting another request.
    pub gap: u32,
    /// Most bytes per request.
    pub max: u32,
}

impl RangeLimits {
    /// For a reader that holds a whole range in memory: 8 MiB at most.
    pub const HELD: RangeLimits = RangeLimits { gap: 256 * 1024, max: 8 * 1024 * 1024 };

    /// Object storage: a request waits a round trip (tens of ms, in which
    /// a connection moves MiBs), so read through gaps of up to 2 MiB and a
    /// whole pack per request. A local disk: gaps of 256 KiB, 64 MiB.
    /// Ranges stream, so neither size is a buffer.
    pub fn for_store(remote: bool) -> RangeLimits {
        let gap = if remote { 2 * 1024 * 1024 } else { 256 * 1024 };
        RangeLimits { gap, max: 64 * 1024 * 1024 }
    }
}

/// Split a pack's wanted blobs (sorted by offset) into read ranges: blobs
/// closer than `limits.gap` are read together, up to `limits.max` bytes per
/// request (a larger blob is a range of its own).
pub fn ranges(blobs: &[(Id, BlobLocation)], limits: RangeLimits) -> Vec<(u32, &[(Id, BlobLocation)])> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=blobs.len() {
        let split = i == blobs.len() || {
            let prev = &blobs[i - 1].1;
            let cur = &blobs[i].1;
            cur.offset > prev.offset + prev.length + limits.gap
                || cur.offset + cur.length - blobs[start].1.offset > limits.max
        };
        if split {
            out.push((blobs[start].1.offset, &blobs[start..i]));
            start = i;
        }
    }
    out
}

fn make_special(p: &Path, n: &Node) -> std::io::Result<()> {
    use nix::sys::stat::{mknod, Mode, SFlag};
    let _ = std::fs::remove_file(p);
    let perm = Mode::from_bits_truncate(n.mode & 0o7777);
    let res = match n.kind {
        NodeKind::Symlink => {
            let t = n.target_os().unwrap_or_default();
            return std::os::unix::fs::symlink(t, p);
        }
        NodeKind::Fifo => nix::unistd::mkfifo(p, perm),
        NodeKind::Chardev => mknod(p, SFlag::S_IFCHR, perm, n.rdev as nix::libc::dev_t),
        NodeKind::Blockdev => mknod(p, SFlag::S_IFBLK, perm, n.rdev as nix::libc::dev_t),
        // A socket belongs to the process that bound it; it cannot be restored.
        NodeKind::Socket => return Ok(()),
        NodeKind::File | NodeKind::Dir => return Ok(()),
    };
    res.map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(offset: u32, length: u32) -> (Id, BlobLocation) {
        let l = BlobLocation { pack: Id::default(), kind: BlobType::Data, flags: 0, offset, length, raw_len: length };
        (Id::random(), l)
    }

    /// A pack of 400 bytes where byte i is i % 251; wanted blobs with gaps.
    fn wanted() -> (Vec<u8>, Vec<(Id, BlobLocation)>) {
        let pack: Vec<u8> = (0..400u32).map(|i| (i % 251) as u8).collect();
        let blobs = vec![blob(10, 30), blob(40, 1), blob(41, 100), blob(200, 60), blob(300, 100)];
        (pack, blobs)
    }

    #[test]
    fn every_blob_is_handed_over_whole_however_the_pieces_fall() {
        let (pack, blobs) = wanted();
        let mut pending = Vec::new();
        // Pieces of 1 byte, 7 bytes (straddling every boundary), and one.
        for piece in [1, 7, 64, 390] {
            let mut at = 10;
            let mut next = || {
                (at < 400).then(|| {
                    let end = (at + piece).min(400);
                    let b = bytes::Bytes::copy_from_slice(&pack[at..end]);
                    at = end;
                    Ok(b)
                })
            };
            let mut got = Vec::new();
            hand_over(&mut next, 10, &blobs, &mut pending, &mut |id, l, b| got.push((*id, l.offset, b.to_vec())))
                .unwrap();
            assert_eq!(got.len(), blobs.len(), "pieces of {piece}");
            for ((id, l), (gid, off, b)) in blobs.iter().zip(&got) {
                assert_eq!((id, l.offset), (gid, *off));
                assert_eq!(b, &pack[l.offset as usize..(l.offset + l.length) as usize], "pieces of {piece}");
            }
            // What is kept is at most the tail of one piece and one blob.
            assert!(pending.capacity() <= 100 + 2 * piece.max(100), "pieces of {piece}: {}", pending.capacity());
        }
    }

    #[test]
    fn a_broken_range_says_how_many_blobs_arrived() {
        let (pack, blobs) = wanted();
        let mut pending = Vec::new();
        let mut pieces = vec![Ok(bytes::Bytes::copy_from_slice(&pack[10..150]))].into_iter();
        let mut next = || pieces.next();
        let mut n = 0;
        let (done, e) = hand_over(&mut next, 10, &blobs, &mut pending, &mut |_, _, _| n += 1).unwrap_err();
        assert_eq!((done, n), (3, 3));
        assert!(e.is_none(), "ended early");
        let mut pieces = vec![
            Ok(bytes::Bytes::copy_from_slice(&pack[10..45])),
            Err(RepoError::Invalid("connection reset".into())),
        ]
        .into_iter();
        let mut next = || pieces.next();
        let (done, e) = hand_over(&mut next, 10, &blobs, &mut pending, &mut |_, _, _| {}).unwrap_err();
        assert_eq!(done, 2);
        assert!(e.unwrap().to_string().contains("connection reset"));
    }

    #[test]
    fn ranges_read_through_small_gaps_up_to_the_limit() {
        let blobs = vec![blob(0, 100), blob(100, 100), blob(300, 100), blob(1_000, 100), blob(1_100, 500)];
        let limits = RangeLimits { gap: 200, max: 1_000 };
        let got: Vec<(u32, usize)> = ranges(&blobs, limits).into_iter().map(|(s, r)| (s, r.len())).collect();
        // 200..300 is within the gap; 400..1000 is not; 1_000..1_600 fits in max.
        assert_eq!(got, vec![(0, 3), (1_000, 2)]);
        let limits = RangeLimits { gap: 1_000, max: 1_000 };
        let got: Vec<(u32, usize)> = ranges(&blobs, limits).into_iter().map(|(s, r)| (s, r.len())).collect();
        assert_eq!(got, vec![(0, 3), (1_000, 2)], "max splits where a blob would end past it");
        // A blob larger than max is a range of its own.
        let big = vec![blob(0, 10), blob(10, 5_000), blob(5_010, 10)];
        let got: Vec<usize> = ranges(&big, limits).into_iter().map(|(_, r)| r.len()).collect();
        assert_eq!(got, vec![1, 1, 1]);
    }
}
