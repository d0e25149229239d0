//! Backup of file trees into a snapshot.
//!
//! Directories are walked in parallel (rayon, nested: sibling entries and
//! sibling directories run on every core). A file is read in segments; each
//! segment is cut with FastCDC (seeded from the key) and its chunks are hashed,
//! deduplicated, compressed and sealed in parallel while the next segment is
//! read. A file whose size, mtime, ctime and inode match the parent snapshot's
//! entry at the same path is not read at all: its chunk list is reused
//! (incremental backup). Unreadable entries are reported and skipped; the
//! snapshot is then marked incomplete.
//!
//! Memory: read buffers come from one [`budget::Budget`] shared by all
//! readers (a few segments in all, whatever the thread count), and a full
//! pack waits for a free upload slot (see `packer`).
//!
//! Unchanged directories cost no tree encoding: when every entry of a
//! directory equals the parent snapshot's, the parent's tree id is reused as
//! it is. An entry that differs from the parent's only in its atime keeps the
//! parent's atime: listing a directory (and reading a file where O_NOATIME
//! is refused, see `source`) moves the atime, and recording each move would make every tree
//! differ from its parent at every backup.

mod budget;
mod links;
mod source;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;
use fastcdc::v2020::{FastCDC, Normalization};
use rayon::prelude::*;

use crate::blob::{BlobType, CompressProbe};
use crate::error::{RepoError, Result};
use crate::fsmeta::{node_from, set_link_target, Names};
use crate::id::Id;
use crate::index::Index;
use crate::lock::{Lock, LockKind};
use crate::packer::Packer;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::snapshot::{BackupSummary, Snapshot};
use crate::tree::{Node, NodeKind, Tree};
use budget::Budget;
use links::{Claim, Links};
use source::{Segment, Source};

/// Bytes read from a file before its chunks are processed in parallel
/// (raised to two maximal chunks when the chunker allows bigger ones).
#[cfg(not(test))]
const SEGMENT: usize = 8 * 1024 * 1024;
/// Read buffers of all readers together (see `budget`): room for a large
/// file double-buffered plus a few small files at a time (raised to two
/// segments).
#[cfg(not(test))]
const READ_BUDGET: usize = 32 * 1024 * 1024;
// Engine tests use the smallest sizes allowed, so their files of a few
// hundred KiB cross segment ends and readers run short of memory.
#[cfg(test)]
const SEGMENT: usize = 0;
#[cfg(test)]
const READ_BUDGET: usize = 0;
/// How long a second name of a file waits for the first name's read before
/// it reads the file itself (see `links`).
const LINK_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Default)]
pub enum ParentChoice {
    /// The latest snapshot of the same host and paths.
    #[default]
    Auto,
    /// Read every file again.
    None,
    Snapshot(Id),
}

#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    pub paths: Vec<PathBuf>,
    pub tags: Vec<String>,
    /// Host name recorded in the snapshot (default: this machine's).
    pub hostname: Option<String>,
    pub parent: ParentChoice,
    /// Worker threads (default: six per core).
    pub threads: Option<usize>,
    /// Match unchanged files without their ctime (see `Node::same_file_as`).
    pub ignore_ctime: bool,
}

#[derive(Debug)]
pub struct BackupOutcome {
    pub id: Id,
    pub snapshot: Snapshot,
    /// Entries that could not be read: (path, reason).
    pub errors: Vec<(PathBuf, String)>,
}

/// Make a source path absolute and lexically clean (no `.` or `..`).
pub fn clean_path(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p).map_err(|e| RepoError::io(p, e))?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Ok(out)
}

pub fn backup(
    repo: &Repository,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    if opts.paths.is_empty() {
        return Err(RepoError::Invalid("no path to back up".into()));
    }
    let mut paths = Vec::new();
    for p in &opts.paths {
        let c = clean_path(p)?;
        std::fs::symlink_metadata(&c).map_err(|e| RepoError::io(&c, e))?;
        paths.push(c);
    }
    paths.sort();
    paths.dedup();
    // A path inside another given path is covered by it.
    let roots: Vec<PathBuf> = paths
        .iter()
        .filter(|p| !paths.iter().any(|q| q != *p && p.starts_with(q)))
        .cloned()
        .collect();
    let hostname = opts.hostname.clone().unwrap_or_else(crate::hostname);
    let path_strings: Vec<String> = roots.iter().map(|p| p.display().to_string()).collect();

    let lock = Lock::acquire(repo, LockKind::Backup)?;
    progress.phase("loading index");
    let index = repo.load_index()?;
    let parent = find_parent(repo, &opts.parent, &hostname, &path_strings)?;
    let parent_tree = match &parent {
        Some((_, s)) => Some(repo.load_tree(&index, &s.tree)?),
        None => None,
    };

    progress.phase("backing up");
    let scan_stop = std::sync::atomic::AtomicBool::new(false);
    // Six threads per core: a thread blocked reading a cold file leaves its
    // core to another. Measured on the mixed set from a cold page cache, 2
    // cores: 14.2 s with 2 threads, 9.6 s with 6 (a plain `tar` read: 15.1
    // s); with direct reads of big files, 6.07 s with 6 threads and 5.79 s
    // with 12 (means of 7 and 6 runs), the gain in the small files' part,
    // which waits on the disk. Memory does not grow with threads (budget).
    let threads = opts.threads.unwrap_or_else(|| {
        6 * std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("tidemark-backup-{i}"))
        .build()
        .map_err(|e| RepoError::Invalid(format!("thread pool: {e}")))?;
    let packer = Packer::new(repo, &index);
    // Room for two maximal chunks, and for aligning a direct read (`source`).
    let segment = tuned("TIDEMARK_SEGMENT_MIB", SEGMENT)
        .max(2 * repo.config.chunker.max_size as usize + 2 * source::ALIGN);
    let arch = Archiver {
        budget: Budget::new(
            tuned("TIDEMARK_READ_BUDGET_MIB", READ_BUDGET).max(2 * segment),
            segment,
        ),
        repo,
        index: &index,
        packer: &packer,
        progress,
        names: Names::default(),
        seed: repo.key().chunker_seed(),
        ignore_ctime: opts.ignore_ctime,
        errors: Mutex::new(Vec::new()),
        links: Links::new(LINK_WAIT),
        c: Counters::default(),
    };
    // The progress totals of an incremental backup are its parent's, close
    // enough for a progress bar: a second walk of the whole tree beside the
    // backup's own cost an unchanged re-backup about an eighth of its CPU.
    let estimate = parent
        .as_ref()
        .map(|(_, s)| (s.summary.total_files, s.summary.total_bytes))
        .filter(|&(files, _)| files > 0);
    let tree_id = std::thread::scope(|s| {
        s.spawn(|| match estimate {
            Some((files, bytes)) => progress.set_total(files, bytes),
            None => scan(&roots, progress, &scan_stop),
        });
        let r = pool
            .install(|| arch.virtual_root(&roots, parent_tree.as_ref()))
            .and_then(|t| arch.store_tree(t));
        scan_stop.store(true, Ordering::Relaxed);
        r
    })?;
    progress.phase("writing index");
    packer.flush()?;

    let errors = arch.errors.into_inner().expect("poisoned");
    let c = &arch.c;
    let summary = BackupSummary {
        files_new: c.files_new.load(Ordering::Relaxed),
        files_changed: c.files_changed.load(Ordering::Relaxed),
        files_unmodified: c.files_unmodified.load(Ordering::Relaxed),
        dirs: c.dirs.load(Ordering::Relaxed),
        errors: errors.len() as u64,
        total_files: c.files_new.load(Ordering::Relaxed)
            + c.files_changed.load(Ordering::Relaxed)
            + c.files_unmodified.load(Ordering::Relaxed),
        total_bytes: c.total_bytes.load(Ordering::Relaxed),
        bytes_read: c.bytes_read.load(Ordering::Relaxed),
        blobs_new: packer.stats.blobs_new.load(Ordering::Relaxed),
        data_added: packer.stats.bytes_new_raw.load(Ordering::Relaxed),
        data_added_stored: packer.stats.bytes_new_stored.load(Ordering::Relaxed),
        duration_secs: started.elapsed().as_secs_f64(),
    };
    let snapshot = Snapshot {
        time: Utc::now(),
        hostname,
        username: crate::username(),
        paths: path_strings,
        tags: opts.tags.clone(),
        tree: tree_id,
        parent: parent.map(|(id, _)| id),
        incomplete: !errors.is_empty(),
        program_version: concat!("tidemark ", env!("CARGO_PKG_VERSION")).into(),
        summary,
        original: None,
    };
    progress.phase("writing snapshot");
    let id = repo.save_snapshot(&snapshot)?;
    // The snapshot is stored before the lock goes: prune relies on that order.
    lock.release();
    Ok(BackupOutcome {
        id,
        snapshot,
        errors,
    })
}

fn find_parent(
    repo: &Repository,
    choice: &ParentChoice,
    host: &str,
    paths: &[String],
) -> Result<Option<(Id, Snapshot)>> {
    match choice {
        ParentChoice::None => Ok(None),
        ParentChoice::Snapshot(id) => Ok(Some((*id, repo.load_snapshot(id)?))),
        ParentChoice::Auto => Ok(repo
            .list_snapshots()?
            .into_iter()
            .rev()
            .find(|(_, s)| s.hostname == host && s.paths == paths)),
    }
}

/// Counts files and bytes beside the backup, so progress can show totals;
/// stops early when the backup is done first.
fn scan(roots: &[PathBuf], progress: &dyn Progress, stop: &std::sync::atomic::AtomicBool) {
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut dirs: Vec<PathBuf> = Vec::new();
    for r in roots {
        match std::fs::symlink_metadata(r) {
            Ok(m) if m.is_dir() => dirs.push(r.clone()),
            Ok(m) => {
                files += 1;
                bytes += m.len();
            }
            Err(_) => {}
        }
    }
    while let Some(d) = dirs.pop() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            // The entry's type needs no stat, and its size a stat relative to
            // the open directory (no walk of the whole path).
            match e.file_type() {
                Ok(t) if t.is_dir() => dirs.push(e.path()),
                Ok(_) => {
                    if let Ok(m) = e.metadata() {
                        files += 1;
                        bytes += m.len();
                        if files % 4096 == 0 {
                            progress.set_total(files, bytes);
                        }
                    }
                }
                Err(_) => {}
            }
        }
    }
    progress.set_total(files, bytes);
}

#[derive(Default)]
struct Counters {
    files_new: AtomicU64,
    files_changed: AtomicU64,
    files_unmodified: AtomicU64,
    dirs: AtomicU64,
    total_bytes: AtomicU64,
    bytes_read: AtomicU64,
}

struct Archiver<'a> {
    repo: &'a Repository,
    index: &'a Index,
    packer: &'a Packer<'a>,
    progress: &'a dyn Progress,
    names: Names,
    seed: u64,
    ignore_ctime: bool,
    errors: Mutex<Vec<(PathBuf, String)>>,
    /// Multiply-linked files: read once, whichever name comes first.
    links: Links,
    c: Counters,
    budget: Budget,
}

impl<'a> Archiver<'a> {
    fn skip(&self, path: &Path, e: impl std::fmt::Display) {
        let msg = format!("{}: {e}", path.display());
        self.progress.warn(&msg);
        self.errors
            .lock()
            .expect("poisoned")
            .push((path.to_path_buf(), e.to_string()));
    }

    fn store_tree(&self, mut t: Tree) -> Result<Id> {
        t.sort();
        Ok(self.packer.save(BlobType::Tree, &t.encode())?.0)
    }

    fn parent_subtree(&self, parent: Option<&Node>) -> Option<Tree> {
        let id = parent?.subtree?;
        match self.repo.load_tree(self.index, &id) {
            Ok(t) => Some(t),
            Err(e) => {
                // Only costs speed: the directory is read in full instead.
                self.progress.warn(&format!(
                    "parent tree {id} unreadable, reading files again: {e}"
                ));
                None
            }
        }
    }

    /// The root tree: the given absolute paths, nested under their real
    /// ancestor directories.
    fn virtual_root(&self, roots: &[PathBuf], parent: Option<&Tree>) -> Result<Tree> {
        #[derive(Default)]
        struct Level {
            children: BTreeMap<OsString, Level>,
            leaf: bool,
        }
        let mut top = Level::default();
        for r in roots {
            let mut l = &mut top;
            for c in r.components() {
                if let Component::Normal(s) = c {
                    l = l.children.entry(s.to_os_string()).or_default();
                }
            }
            l.leaf = true;
        }
        fn build(
            a: &Archiver<'_>,
            dir: &Path,
            level: &Level,
            parent: Option<&Tree>,
        ) -> Result<Tree> {
            let nodes: Vec<Option<Node>> = level
                .children
                .par_iter()
                .map(|(name, sub)| {
                    let path = dir.join(name);
                    let pnode = parent.and_then(|t| t.find(name));
                    if sub.leaf {
                        return a.entry(&path, name, std::fs::symlink_metadata(&path), pnode);
                    }
                    let meta = match std::fs::symlink_metadata(&path) {
                        Ok(m) => m,
                        Err(e) => {
                            a.skip(&path, e);
                            return Ok(None);
                        }
                    };
                    let ptree = a.parent_subtree(pnode);
                    let tree = build(a, &path, sub, ptree.as_ref())?;
                    let mut n = node_from(name, &meta, &a.names);
                    n.subtree = Some(a.store_tree(tree)?);
                    if let Some(p) = pnode {
                        keep_parent_atime(&mut n, p);
                    }
                    Ok(Some(n))
                })
                .collect::<Result<_>>()?;
            Ok(Tree {
                nodes: nodes.into_iter().flatten().collect(),
            })
        }
        build(self, Path::new("/"), &top, parent)
    }

    /// Back up one directory entry; `None` when it could not be read.
    fn entry(
        &self,
        path: &Path,
        name: &OsStr,
        meta: std::io::Result<Metadata>,
        parent: Option<&Node>,
    ) -> Result<Option<Node>> {
        let meta = match meta {
            Ok(m) => m,
            Err(e) => {
                self.skip(path, e);
                return Ok(None);
            }
        };
        let mut node = node_from(name, &meta, &self.names);
        let kind = node.kind;
        match kind {
            NodeKind::Dir => match self.dir(path, parent)? {
                Some(id) => {
                    node.subtree = Some(id);
                    self.c.dirs.fetch_add(1, Ordering::Relaxed);
                }
                None => return Ok(None),
            },
            NodeKind::Symlink => match std::fs::read_link(path) {
                Ok(t) => set_link_target(&mut node, &t),
                Err(e) => {
                    self.skip(path, e);
                    return Ok(None);
                }
            },
            NodeKind::File if !self.file(path, &meta, &mut node, parent)? => return Ok(None),
            _ => {}
        }
        if let Some(p) = parent {
            keep_parent_atime(&mut node, p);
        }
        Ok(Some(node))
    }

    /// Back up a directory's entries; the id of its tree, `None` when it
    /// could not be listed.
    fn dir(&self, path: &Path, parent: Option<&Node>) -> Result<Option<Id>> {
        // The listing (disk) and the parent's tree (repository) load at once.
        let (entries, ptree) = rayon::join(|| self.list(path), || self.parent_subtree(parent));
        let Some(entries) = entries else {
            return Ok(None);
        };
        let nodes: Vec<Option<Node>> = entries
            .par_iter()
            .map(|(name, e)| {
                // stat relative to the open directory: no walk of the path.
                let pnode = ptree.as_ref().and_then(|t| t.find(name));
                self.entry(&path.join(name), name, e.metadata(), pnode)
            })
            .collect::<Result<_>>()?;
        drop(entries);
        let mut tree = Tree {
            nodes: nodes.into_iter().flatten().collect(),
        };
        tree.sort();
        // Nothing changed: the parent's tree blob is this one; skip encoding,
        // hashing and the lookup of a blob that is surely stored.
        if let (Some(pt), Some(pid)) = (&ptree, parent.and_then(|p| p.subtree)) {
            if pt.nodes == tree.nodes && self.packer.known(BlobType::Tree, &pid) {
                return Ok(Some(pid));
            }
        }
        Ok(Some(self.store_tree(tree)?))
    }

    /// A directory's entries sorted by name; `None` when it cannot be read.
    fn list(&self, path: &Path) -> Option<Vec<(OsString, std::fs::DirEntry)>> {
        let rd = match std::fs::read_dir(path) {
            Ok(rd) => rd,
            Err(e) => {
                self.skip(path, e);
                return None;
            }
        };
        let mut entries = Vec::new();
        for e in rd {
            match e {
                Ok(e) => entries.push((e.file_name(), e)),
                Err(e) => self.skip(path, e),
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Some(entries)
    }

    /// Fill `node.content`; false when the file could not be read.
    fn file(
        &self,
        path: &Path,
        meta: &Metadata,
        node: &mut Node,
        parent: Option<&Node>,
    ) -> Result<bool> {
        self.c.total_bytes.fetch_add(node.size, Ordering::Relaxed);
        if let Some(p) = parent {
            // Unchanged since the parent snapshot, and every chunk still
            // stored: reuse the chunk list without reading the file.
            if p.same_file_as(node, self.ignore_ctime)
                && p.content
                    .iter()
                    .all(|id| self.packer.known(BlobType::Data, id))
            {
                node.content = p.content.clone();
                self.c.files_unmodified.fetch_add(1, Ordering::Relaxed);
                self.progress.advance(1, node.size);
                return Ok(true);
            }
        }
        let claim = if node.links > 1 {
            self.links.claim((node.device, node.inode))
        } else {
            Claim::Alone
        };
        let ticket = match claim {
            Claim::Read(content) => {
                node.content = content;
                // Counted like any file, so an unchanged tree has the same
                // total_files in every backup.
                let counter = if parent.is_some() {
                    &self.c.files_changed
                } else {
                    &self.c.files_new
                };
                counter.fetch_add(1, Ordering::Relaxed);
                self.progress.advance(1, node.size);
                return Ok(true);
            }
            Claim::Mine(ticket) => Some(ticket),
            Claim::Alone => None,
        };
        let content = match self.read_content(path, meta.len()) {
            Ok(c) => c,
            Err(ContentError::Source(e)) => {
                self.skip(path, e);
                return Ok(false);
            }
            Err(ContentError::Repo(e)) => return Err(e),
        };
        if let Some(t) = ticket {
            t.done(&content);
        }
        node.content = content;
        if parent.is_some() {
            self.c.files_changed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.c.files_new.fetch_add(1, Ordering::Relaxed);
        }
        self.progress.advance(1, 0);
        Ok(true)
    }

    fn read_content(&self, path: &Path, size_hint: u64) -> Result<Vec<Id>, ContentError> {
        let seg = self.budget.segment();
        let mut src = Source::open(path, size_hint >= seg as u64).map_err(ContentError::Source)?;
        let avg = self.repo.config.chunker.avg_size as u64;
        let mut ids = Vec::with_capacity((size_hint / avg + 1) as usize);
        // Stops compressing a file whose chunks do not shrink (see blob.rs).
        let probe = CompressProbe::default();
        // A small file borrows only its size (one byte more, so the first
        // read already sees the end).
        let mut cur = Segment::new(
            self.budget.take(
                usize::try_from(size_hint)
                    .unwrap_or(usize::MAX)
                    .saturating_add(1),
            ),
        );
        src.fill(&mut cur, &[]).map_err(ContentError::Source)?;
        let mut cuts = self.cut(cur.data(), src.eof());
        loop {
            // Read and cut the next segment while this one's chunks are
            // stored, when the budget has room for a second buffer; otherwise
            // one after the other in the same buffer. (Cutting is serial: a
            // large file alone would leave a core idle meanwhile.)
            let next = if src.eof() {
                None
            } else {
                self.budget.try_take(seg)
            };
            if let Some(next) = next {
                let mut next = Segment::new(next);
                let data = cur.data();
                let src = &mut src;
                let (seg_ids, read) = rayon::join(
                    || self.store_chunks(data, cuts.stored(), &probe),
                    || -> std::io::Result<Cuts> {
                        src.fill(&mut next, &data[cuts.done..])?;
                        Ok(self.cut(next.data(), src.eof()))
                    },
                );
                ids.extend(seg_ids.map_err(ContentError::Repo)?);
                self.account(cuts.done);
                cuts = read.map_err(ContentError::Source)?;
                cur = next;
                continue;
            }
            ids.extend(
                self.store_chunks(cur.data(), cuts.stored(), &probe)
                    .map_err(ContentError::Repo)?,
            );
            self.account(cuts.done);
            if src.eof() {
                return Ok(ids);
            }
            if cur.capacity() < seg {
                // The file grew past its size at stat time.
                let mut bigger = Segment::new(self.budget.take(seg));
                src.fill(&mut bigger, &cur.data()[cuts.done..])
                    .map_err(ContentError::Source)?;
                cur = bigger;
            } else {
                src.refill(&mut cur, cuts.done)
                    .map_err(ContentError::Source)?;
            }
            cuts = self.cut(cur.data(), src.eof());
        }
    }

    /// Chunk boundaries in a segment. The last chunk may be cut short by the
    /// segment's end: it is carried into the next segment unless the file
    /// ended.
    fn cut(&self, data: &[u8], eof: bool) -> Cuts {
        cut(&self.repo.config.chunker, self.seed, data, eof)
    }

    fn account(&self, bytes: usize) {
        self.c.bytes_read.fetch_add(bytes as u64, Ordering::Relaxed);
        self.progress.advance(0, bytes as u64);
    }

    fn store_chunks(
        &self,
        buf: &[u8],
        cuts: &[(usize, usize)],
        probe: &CompressProbe,
    ) -> Result<Vec<Id>> {
        let store = |&(o, l): &(usize, usize)| {
            let data = &buf[o..o + l];
            let id = self.repo.key().blob_id(data);
            if self.packer.claim(BlobType::Data, &id) {
                self.packer.save_chunk(id, data, probe)?;
            }
            Ok(id)
        };
        // A file's first chunk goes alone, so that the others (often the
        // whole file) know whether compressing is worth a try.
        let first = usize::from(probe.untested() && cuts.len() > 1);
        let mut ids = cuts[..first]
            .iter()
            .map(store)
            .collect::<Result<Vec<Id>>>()?;
        ids.extend(
            cuts[first..]
                .par_iter()
                .map(store)
                .collect::<Result<Vec<Id>>>()?,
        );
        Ok(ids)
    }
}

/// A segment's chunks: `all[..keep]` are stored now, and the bytes from
/// `done` on go to the next segment.
pub(crate) struct Cuts {
    all: Vec<(usize, usize)>,
    keep: usize,
    pub done: usize,
}

impl Cuts {
    pub fn stored(&self) -> &[(usize, usize)] {
        &self.all[..self.keep]
    }
}

/// Chunk boundaries (offset, length) in a segment, seeded FastCDC. The last
/// chunk may be cut short by the segment's end: it is carried into the next
/// segment unless the source ended (`eof`).
pub(crate) fn cut(cp: &crate::config::ChunkerParams, seed: u64, data: &[u8], eof: bool) -> Cuts {
    let all: Vec<(usize, usize)> = FastCDC::with_level_and_seed(
        data,
        cp.min_size as usize,
        cp.avg_size as usize,
        cp.max_size as usize,
        Normalization::Level1,
        seed,
    )
    .map(|c| (c.offset, c.length))
    .collect();
    let keep = if eof { all.len() } else { all.len().saturating_sub(1) };
    let done = all.get(keep).map(|c| c.0).unwrap_or(data.len());
    Cuts { all, keep, done }
}

/// A size in MiB from the environment, else `default` (bytes): for
/// measuring other settings without a rebuild; not a stable interface.
pub(crate) fn tuned(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(default, |mib| mib << 20)
}

/// An entry that differs from the parent's only in its atime takes the
/// parent's (see the module doc).
fn keep_parent_atime(node: &mut Node, parent: &Node) {
    if node.atime_ns == parent.atime_ns {
        return;
    }
    let now = std::mem::replace(&mut node.atime_ns, parent.atime_ns);
    if node != parent {
        node.atime_ns = now;
    }
}

enum ContentError {
    Source(std::io::Error),
    Repo(RepoError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::walk::tests::{random_bytes, TestRepo};
    use filetime::FileTime;
    use std::os::unix::fs::MetadataExt;

    fn whole_file_ids(repo: &Repository, data: &[u8]) -> Vec<Id> {
        let cp = &repo.config.chunker;
        FastCDC::with_level_and_seed(
            data,
            cp.min_size as usize,
            cp.avg_size as usize,
            cp.max_size as usize,
            Normalization::Level1,
            repo.key().chunker_seed(),
        )
        .map(|c| repo.key().blob_id(&data[c.offset..c.offset + c.length]))
        .collect()
    }

    /// The node at absolute `path` in a snapshot.
    fn node_at(repo: &Repository, snap: &Snapshot, path: &Path) -> Node {
        let index = repo.load_index().unwrap();
        let mut tree = repo.load_tree(&index, &snap.tree).unwrap();
        let names: Vec<&OsStr> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s),
                _ => None,
            })
            .collect();
        for (i, name) in names.iter().enumerate() {
            let n = tree
                .find(name)
                .unwrap_or_else(|| panic!("{} not in the snapshot", path.display()))
                .clone();
            if i + 1 == names.len() {
                return n;
            }
            tree = repo.load_tree(&index, &n.subtree.unwrap()).unwrap();
        }
        panic!("empty path")
    }

    #[test]
    fn files_read_in_segments_chunk_as_a_whole() {
        let t = TestRepo::new();
        let src = t.dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        // Several segments (two maximal chunks each in tests), with an odd
        // tail, next to smaller files read at the same time.
        let big = random_bytes(1_000_000 + 777);
        std::fs::write(src.join("big"), &big).unwrap();
        let mut small = Vec::new();
        for i in 0..20 {
            let d = random_bytes(1000 * i + 1);
            std::fs::write(src.join(format!("s{i:02}")), &d).unwrap();
            small.push(d);
        }
        let (_, snap) = t.backup(&[&src]);
        let n = node_at(&t.repo, &snap, &src.join("big"));
        assert!(n.content.len() > 10);
        assert_eq!(n.content, whole_file_ids(&t.repo, &big));
        for (i, d) in small.iter().enumerate() {
            let n = node_at(&t.repo, &snap, &src.join(format!("s{i:02}")));
            assert_eq!(n.content, whole_file_ids(&t.repo, d), "s{i:02}");
        }
        let index = t.repo.load_index().unwrap();
        let back: Vec<u8> = n
            .content
            .iter()
            .flat_map(|id| t.repo.read_blob(&index, BlobType::Data, id).unwrap())
            .collect();
        assert_eq!(back, big);
    }

    #[test]
    fn incompressible_files_skip_compression_and_compressible_tails_do_not() {
        let t = TestRepo::new();
        let src = t.dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        // Random throughout: stored raw. Random head, then text: the probes
        // find the text and compress it. Text throughout: compressed.
        let random = random_bytes(2_000_000);
        let text: Vec<u8> = (0..100_000)
            .flat_map(|i| format!("line {i} of a log that compresses\n").into_bytes())
            .collect();
        // (Its text differs from the text file's: no chunk shared by both.)
        let mixed: Vec<u8> = random[..300_000]
            .iter()
            .copied()
            .chain(
                (0..100_000).flat_map(|i| format!("entry {i} after a random head\n").into_bytes()),
            )
            .collect();
        for (name, data) in [("random", &random), ("mixed", &mixed), ("text", &text)] {
            std::fs::write(src.join(name), data).unwrap();
        }
        let (_, snap) = t.backup(&[&src]);
        let index = t.repo.load_index().unwrap();
        let compressed = |name: &str| -> (usize, usize) {
            let n = node_at(&t.repo, &snap, &src.join(name));
            let c = n
                .content
                .iter()
                .filter(|id| {
                    let loc = index.get(BlobType::Data, id).unwrap();
                    loc.flags & crate::blob::FLAG_COMPRESSED != 0
                })
                .count();
            (c, n.content.len())
        };
        let (c, n) = compressed("random");
        assert!(n > 20 && c == 0, "random: {c} of {n} compressed");
        let (c, n) = compressed("mixed");
        assert!(c * 2 > n, "mixed: only {c} of {n} compressed");
        let (c, n) = compressed("text");
        assert_eq!(c, n, "text: {c} of {n} compressed");
        for (name, data) in [("random", &random), ("mixed", &mixed), ("text", &text)] {
            let n = node_at(&t.repo, &snap, &src.join(name));
            let back: Vec<u8> = n
                .content
                .iter()
                .flat_map(|id| t.repo.read_blob(&index, BlobType::Data, id).unwrap())
                .collect();
            assert_eq!(&back, data, "{name}");
        }
    }

    #[test]
    fn every_name_of_a_hard_linked_file_is_read_once() {
        let t = TestRepo::new();
        let src = t.dir.path().join("src");
        // Sixteen names in four directories, walked in parallel: without
        // the claim most names race the first read and read it again.
        let data = random_bytes(600_000 + 11);
        std::fs::create_dir_all(src.join("d0")).unwrap();
        std::fs::write(src.join("d0/n0"), &data).unwrap();
        let mut names = Vec::new();
        for d in 0..4 {
            std::fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
            for n in 0..4 {
                let p = src.join(format!("d{d}/n{n}"));
                if p != src.join("d0/n0") {
                    std::fs::hard_link(src.join("d0/n0"), &p).unwrap();
                }
                names.push(p);
            }
        }
        let (_, snap) = t.backup(&[&src]);
        let s = &snap.summary;
        assert_eq!(s.total_files, 16);
        assert_eq!(s.files_new, 16);
        assert_eq!(s.total_bytes, 16 * data.len() as u64);
        assert_eq!(s.bytes_read, data.len() as u64, "{s:?}");
        let want = whole_file_ids(&t.repo, &data);
        for p in &names {
            assert_eq!(node_at(&t.repo, &snap, p).content, want, "{}", p.display());
        }
    }

    #[test]
    fn backup_leaves_atimes_of_files_it_reads_alone() {
        let t = TestRepo::new();
        let src = t.dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let f = src.join("f");
        std::fs::write(&f, random_bytes(5000)).unwrap();
        // An atime before the mtime: a plain read moves it even on relatime.
        let m = std::fs::metadata(&f).unwrap();
        let old = FileTime::from_unix_time(1_000_000_000, 0);
        filetime::set_file_times(&f, old, FileTime::from_last_modification_time(&m)).unwrap();
        let (_, snap) = t.backup(&[&src]);
        let atime = |p: &Path| FileTime::from_last_access_time(&std::fs::metadata(p).unwrap());
        // This process owns the file, so O_NOATIME is allowed.
        assert_eq!(atime(&f), old, "the backup moved the atime");
        assert_eq!(
            node_at(&t.repo, &snap, &f).atime_ns,
            1_000_000_000 * 1_000_000_000
        );
        // The check can fail: a plain read moves it.
        std::fs::read(&f).unwrap();
        assert_ne!(atime(&f), old, "this file system does not record atimes");
    }

    #[test]
    fn unchanged_trees_are_reused_even_when_atimes_moved() {
        let t = TestRepo::new();
        let src = t.dir.path().join("src");
        std::fs::create_dir_all(src.join("a/b")).unwrap();
        std::fs::write(src.join("a/b/f"), random_bytes(5000)).unwrap();
        std::fs::write(src.join("a/g"), b"gee").unwrap();
        std::fs::write(src.join("top"), b"top").unwrap();
        let atime = |p: &Path, secs: i64| {
            let m = std::fs::symlink_metadata(p).unwrap();
            filetime::set_file_times(
                p,
                FileTime::from_unix_time(secs, 0),
                FileTime::from_last_modification_time(&m),
            )
            .unwrap();
        };
        // Old atimes, set before the first backup (setting times moves the
        // ctime): reading and listing then move the atimes (relatime).
        for p in ["a/b/f", "a/b", "a", "top"] {
            atime(&src.join(p), 1_000_000_000);
        }
        let (id1, s1) = t.backup(&[&src]);
        let f1 = node_at(&t.repo, &s1, &src.join("a/b/f"));

        // Only atimes move, as reading and listing do: the same trees.
        for p in ["a/b/f", "top"] {
            std::fs::read(src.join(p)).unwrap();
        }
        for p in ["a/b", "a"] {
            std::fs::read_dir(src.join(p)).unwrap().for_each(drop);
        }
        let moved = std::fs::metadata(src.join("a/b/f")).unwrap();
        assert_ne!(
            moved.atime() * 1_000_000_000 + moved.atime_nsec(),
            f1.atime_ns,
            "atime did not move"
        );
        let (id2, s2) = t.backup(&[&src]);
        assert_ne!(id1, id2);
        // (The ancestors of src, such as /tmp, may change meanwhile.)
        assert_eq!(node_at(&t.repo, &s2, &src), node_at(&t.repo, &s1, &src));
        assert_eq!(
            node_at(&t.repo, &s2, &src.join("a")),
            node_at(&t.repo, &s1, &src.join("a"))
        );
        assert_eq!(s2.summary.files_unmodified, 3);
        assert_eq!(
            node_at(&t.repo, &s2, &src.join("a/b/f")).atime_ns,
            f1.atime_ns
        );

        // A real change in a/b: new trees up to the root, and that file's
        // node records its own times; the untouched sibling keeps its tree.
        std::fs::write(src.join("a/b/f"), random_bytes(6000)).unwrap();
        atime(&src.join("a/b/f"), 1_100_000_000);
        let (_, s3) = t.backup(&[&src]);
        assert_ne!(
            node_at(&t.repo, &s3, &src).subtree,
            node_at(&t.repo, &s1, &src).subtree
        );
        let f3 = node_at(&t.repo, &s3, &src.join("a/b/f"));
        assert_eq!(f3.atime_ns, 1_100_000_000 * 1_000_000_000);
        assert_ne!(f3.content, f1.content);
        assert_eq!(s3.summary.files_changed, 1);
        assert_eq!(
            node_at(&t.repo, &s3, &src.join("top")),
            node_at(&t.repo, &s1, &src.join("top"))
        );
    }
}
