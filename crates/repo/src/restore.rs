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
        .num_threads(opts.threads.unwrap_or(if repo.store().capabilities().remote { 8 } else { 4 }).max(1))
        .thread_name(|i| format!("tidemark-restore-{i}"))
        .build()
        .map_err(|e| RepoError::Invalid(format!("thread pool: {e}")))?;
    pool.install(|| {
        packs.par_iter().for_each(|(pack, blobs)| {
            BUFFERS.with_borrow_mut(|(range_buf, out)| {
            for (range_start, range) in ranges(blobs) {
                let len = range.iter().map(|(_, l)| l.offset + l.length).max().expect("non-empty") - range_start;
                let got = repo.block_on(repo.store().get_range_into(
                    &FileKind::Pack.key(pack),
                    range_start as u64,
                    len as u64,
                    std::mem::take(range_buf),
                ));
                match got {
                    Ok(b) => *range_buf = b,
                    Err(e) => {
                        for (id, _) in range {
                            spoil(&plan, &uses[id], &ok_files, &fail, &format!("pack {pack}: {e}"));
                        }
                        continue;
                    }
                };
                for (id, l) in range {
                    let s = (l.offset - range_start) as usize;
                    let what = || format!("blob {id} in pack {pack}");
                    let sealed = &mut range_buf[s..s + l.length as usize];
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
                        Err(e) => {
                            spoil(&plan, &uses[id], &ok_files, &fail, &e.to_string());
                            continue;
                        }
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
    /// A restore thread's range and decompression buffers, reused for every
    /// pack: freed multi-MiB buffers would otherwise stay cached in every
    /// thread's malloc arena (restore peaked at 190-230 MiB on the mixed set).
    static BUFFERS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Mark every file using a blob as failed (once per file).
fn spoil(plan: &Plan, uses: &[(usize, u64)], ok: &[std::sync::atomic::AtomicBool], fail: &dyn Fn(&Path, &dyn std::fmt::Display), why: &str) {
    for &(fi, _) in uses {
        if ok[fi].swap(false, Ordering::Relaxed) {
            fail(&plan.files[fi].path, &format!("damaged data: {why}"));
        }
    }
}

/// Split a pack's wanted blobs (sorted by offset) into read ranges: adjacent
/// or nearly adjacent blobs are read together, up to 8 MiB per request.
pub fn ranges(blobs: &[(Id, BlobLocation)]) -> Vec<(u32, &[(Id, BlobLocation)])> {
    const GAP: u32 = 256 * 1024;
    const MAX: u32 = 8 * 1024 * 1024;
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=blobs.len() {
        let split = i == blobs.len() || {
            let prev = &blobs[i - 1].1;
            let cur = &blobs[i].1;
            cur.offset > prev.offset + prev.length + GAP || cur.offset + cur.length - blobs[start].1.offset > MAX
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
