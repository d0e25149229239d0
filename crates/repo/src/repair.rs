//! Repair: rebuild the index from the packs alone.
//!
//! Packs describe themselves (pack.rs): the last 4 bytes give the length of
//! the sealed header that lists every blob. So the index is rebuilt by
//! reading only the tail of each pack, writing new index files for every
//! readable pack, and only then deleting the old index files: a crash at any
//! point leaves an index at least as complete as before. Damaged packs are
//! skipped and named (their blobs become unreachable; verify names the files).
//!
//! It runs under a prune lock: prune must not delete packs (and their index
//! entries) while the index is being replaced, nor two repairs run at once.

use std::collections::HashMap;

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::index::{IndexFile, IndexPack};
use crate::lock::{live_locks, Lock, LockKind};
use crate::pack::{self, PackEntry};
use crate::progress::Progress;
use crate::repo::{FileKind, Repository};
use crate::verify::is_damage;

/// Blobs per new index file: files of about 2 MB before compression, so a
/// reader loads them in parallel and a rewrite touches little.
const BLOBS_PER_INDEX_FILE: usize = 50_000;
/// Bytes read from a pack's end in the first request: enough for the header
/// of a pack of about 1,500 blobs, so most packs need one request.
const TAIL_GUESS: u64 = 64 * 1024;

#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairReport {
    pub packs: u64,
    pub blobs: u64,
    pub index_files_written: Vec<Id>,
    pub index_files_removed: Vec<Id>,
    /// Obsolete marks carried over from readable old index files.
    pub obsolete_kept: u64,
    /// Packs whose header could not be read: (pack, reason).
    pub skipped: Vec<(Id, String)>,
}

/// Rebuild the index from the pack headers; refuses while another prune (or
/// repair) holds a live lock.
pub fn repair_index(repo: &Repository, progress: &dyn Progress) -> Result<RepairReport> {
    let lock = Lock::acquire(repo, LockKind::Prune)?;
    // Checked after taking ours, so two repairs starting together cannot both
    // miss each other (at worst both refuse).
    let mine = &lock.info;
    if let Some(other) = live_locks(repo)?.into_iter().find(|l| {
        l.kind == LockKind::Prune
            && !(l.pid == mine.pid && l.hostname == mine.hostname && l.started == mine.started)
    }) {
        return Err(RepoError::Locked {
            holder: other.describe(),
        });
    }
    let res = rebuild(repo, progress);
    lock.release();
    res
}

fn rebuild(repo: &Repository, progress: &dyn Progress) -> Result<RepairReport> {
    progress.phase("listing");
    // The old files are listed first: index files that a concurrent backup
    // writes from now on are not ours to delete.
    let mut old: Vec<Id> = repo
        .list(FileKind::Index)?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    old.sort();
    let mut packs: Vec<(Id, u64)> = repo
        .list(FileKind::Pack)?
        .into_iter()
        .map(|(id, m)| (id, m.size))
        .collect();
    packs.sort();

    progress.phase("reading pack headers");
    progress.set_total(packs.len() as u64, 0);
    let read: Vec<(Id, Result<Vec<PackEntry>>)> = crate::repo::io_pool().install(|| {
        packs
            .par_iter()
            .map(|(id, size)| {
                let r = read_header(repo, id, *size);
                progress.advance(1, 0);
                (*id, r)
            })
            .collect()
    });
    let mut report = RepairReport::default();
    let mut good = Vec::new();
    for (id, r) in read {
        match r {
            Ok(entries) => good.push(IndexPack { id, blobs: entries }),
            // Gone since the listing: nothing to index.
            Err(RepoError::Store(e)) if e.is_not_found() => {}
            Err(e) if is_damage(&e) => {
                progress.warn(&format!("skipping pack {id}: {e}"));
                report.skipped.push((id, e.to_string()));
            }
            // Storage trouble says nothing about the pack: stop before the
            // old index is touched.
            Err(e) => return Err(e),
        }
    }

    let obsolete = old_obsolete_marks(repo, &old, &good)?;
    report.obsolete_kept = obsolete.len() as u64;
    report.packs = good.len() as u64;
    report.blobs = good.iter().map(|p| p.blobs.len() as u64).sum();

    progress.phase("writing index");
    let mut obsolete = Some(obsolete);
    let mut file = IndexFile::default();
    let mut blobs = 0;
    for p in good {
        blobs += p.blobs.len();
        file.packs.push(p);
        if blobs >= BLOBS_PER_INDEX_FILE {
            file.obsolete = obsolete.take().unwrap_or_default();
            report.index_files_written.push(repo.save_index(&file)?);
            file = IndexFile::default();
            blobs = 0;
        }
    }
    if !file.packs.is_empty() || obsolete.as_ref().is_some_and(|o| !o.is_empty()) {
        file.obsolete = obsolete.take().unwrap_or_default();
        report.index_files_written.push(repo.save_index(&file)?);
    }

    progress.phase("removing old index files");
    // An unchanged repository rebuilds byte-identical content, but the
    // sealing nonce differs, so a new id never equals an old one.
    old.retain(|id| !report.index_files_written.contains(id));
    let keys: Vec<String> = old.iter().map(|id| FileKind::Index.key(id)).collect();
    if let Err(left) = repo.block_on(repo.store().delete_many(&keys)) {
        return Err(RepoError::Incomplete {
            done: format!(
                "repair wrote the new index but removed only {} of {} old index files",
                keys.len().saturating_sub(left.len()),
                keys.len()
            ),
            source: left.into(),
        });
    }
    report.index_files_removed = old;
    Ok(report)
}

/// Read and decode the header of one pack from its tail.
pub fn read_header(repo: &Repository, id: &Id, size: u64) -> Result<Vec<PackEntry>> {
    let key = FileKind::Pack.key(id);
    let what = || format!("pack {id}");
    if size < 4 {
        return Err(RepoError::corrupt(what(), "shorter than 4 bytes"));
    }
    let first = TAIL_GUESS.min(size);
    let tail = repo.block_on(repo.store().get_range(&key, size - first, first))?;
    let hl = pack::header_len(&tail, id)? as u64;
    if hl + 4 > size {
        return Err(RepoError::corrupt(
            what(),
            "header length beyond the file (truncated)",
        ));
    }
    let sealed = if hl + 4 <= first {
        tail.slice((first - 4 - hl) as usize..(first - 4) as usize)
    } else {
        repo.block_on(repo.store().get_range(&key, size - 4 - hl, hl))?
    };
    pack::parse_header(repo.cipher(), &sealed, id, size)
}

/// Obsolete marks of the old index files that still apply: the pack is
/// still stored and indexed anew. Unreadable old files simply lose theirs
/// (the pack then counts as in use again, which is the safe side).
fn old_obsolete_marks(repo: &Repository, old: &[Id], good: &[IndexPack]) -> Result<Vec<(Id, i64)>> {
    let present: std::collections::HashSet<Id> = good.iter().map(|p| p.id).collect();
    let mut marks: HashMap<Id, i64> = HashMap::new();
    for id in old {
        match repo.load_index_file(id) {
            Ok(f) => {
                for (p, t) in f.obsolete {
                    if present.contains(&p) {
                        let slot = marks.entry(p).or_insert(t);
                        *slot = (*slot).min(t);
                    }
                }
            }
            Err(e) if is_damage(&e) => {}
            Err(e) => return Err(e),
        }
    }
    let mut v: Vec<(Id, i64)> = marks.into_iter().collect();
    v.sort();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobType;
    use crate::progress::NoProgress;
    use crate::walk::tests::{random_bytes, TestRepo};

    #[test]
    fn rebuilt_index_finds_every_blob_again() {
        let t = TestRepo::new();
        let src = t.dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("a"), random_bytes(300_000)).unwrap();
        std::fs::write(src.join("b"), b"small").unwrap();
        t.backup(&[&src]);
        let before = t.repo.load_index().unwrap();
        let mut want: Vec<_> = before.iter().collect();
        want.sort_by_key(|(id, _)| *id);
        for (id, _) in t.repo.list(FileKind::Index).unwrap() {
            t.repo.delete_file(FileKind::Index, &id).unwrap();
        }
        assert_eq!(t.repo.load_index().unwrap().blob_count(), 0);

        let r = repair_index(&t.repo, &NoProgress).unwrap();
        assert!(r.skipped.is_empty(), "{:?}", r.skipped);
        assert_eq!(r.blobs as usize, want.len());
        let after = t.repo.load_index().unwrap();
        let mut got: Vec<_> = after.iter().collect();
        got.sort_by_key(|(id, _)| *id);
        assert_eq!(got, want);
        // Running it again replaces the index files it wrote.
        let again = repair_index(&t.repo, &NoProgress).unwrap();
        assert_eq!(again.index_files_removed, r.index_files_written);
        assert_eq!(
            t.repo.list(FileKind::Index).unwrap().len(),
            again.index_files_written.len()
        );
    }

    #[test]
    fn damaged_pack_is_skipped_and_named() {
        let t = TestRepo::new();
        let src = t.dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("a"), random_bytes(50_000)).unwrap();
        t.backup(&[&src]);
        let index = t.repo.load_index().unwrap();
        let (_, loc) = index
            .iter()
            .find(|(_, l)| l.kind == BlobType::Data)
            .unwrap();
        let path = t
            .dir
            .path()
            .join("repo")
            .join(FileKind::Pack.key(&loc.pack));
        let mut b = std::fs::read(&path).unwrap();
        let n = b.len();
        b[n - 10] ^= 1; // inside the sealed header
        std::fs::write(&path, b).unwrap();
        let r = repair_index(&t.repo, &NoProgress).unwrap();
        assert_eq!(r.skipped.len(), 1);
        assert_eq!(r.skipped[0].0, loc.pack);
        assert!(t
            .repo
            .load_index()
            .unwrap()
            .get(BlobType::Data, &index.iter().next().unwrap().0)
            .is_none());
    }

    #[test]
    fn refuses_while_another_prune_lock_is_live() {
        let t = TestRepo::new();
        let other = Lock::acquire(&t.repo, LockKind::Prune).unwrap();
        let err = repair_index(&t.repo, &NoProgress).unwrap_err();
        assert!(matches!(err, RepoError::Locked { .. }), "{err}");
        // Our own lock is gone again; only the other one remains.
        assert_eq!(crate::lock::live_locks(&t.repo).unwrap().len(), 1);
        other.release();
        repair_index(&t.repo, &NoProgress).unwrap();
        assert!(crate::lock::live_locks(&t.repo).unwrap().is_empty());
    }
}
