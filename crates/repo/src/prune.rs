//! `prune`: free the space of data no snapshot needs, beside running backups.
//!
//! There is no exclusive lock. Safety comes from delayed deletion (as in
//! rustic and Proxmox Backup Server) and from the order of reads:
//!
//! 1. Take a `Prune` lock; refuse when another prune is live.
//! 2. Read the live locks, *then* the snapshots, *then* the index. A backup
//!    writes its index files before its snapshot, and its snapshot before it
//!    removes its lock; so a backup that is not among the live locks read has
//!    either finished (its snapshot is read) or had not started yet (it will
//!    see this prune's index).
//! 3. Walk every snapshot's trees (each tree once) for the blobs in use.
//!    Packs: fully used are kept; fully unused are *marked obsolete*; partly
//!    used are repacked (their used blobs copied into new packs, the old pack
//!    marked obsolete) while the unused bytes exceed `max_unused` percent.
//! 4. Write index files naming every live pack, plus the obsolete packs with
//!    their blobs *and* their mark in the same file (a backup that loads one
//!    file without the other would otherwise see an obsolete pack as live),
//!    each mark with `marked_at`; then delete exactly the index files read.
//!    A backup that loads the new index sees the marked packs as obsolete and
//!    does not deduplicate against them; only a backup whose listing predates
//!    the new files (so which started before `marked_at`) can reference them.
//! 5. An obsolete pack is deleted by a *later* prune only when no snapshot
//!    needs it and `marked_at` is older than the start of every lock live at
//!    that prune's step 2 (its own included), minus a clock-skew margin: then
//!    every backup that could have seen the pack live has finished, and its
//!    snapshot was read. A pack a snapshot needs again is put back
//!    ("recovered").
//! 6. A pack in storage but in no index read (left by a killed backup, or
//!    uploaded by a running one that has not indexed it yet) is deleted only
//!    when older than that same horizon and than `keep_unindexed_for`: a
//!    running backup uploads packs only after its lock started.
//! 7. In a repository with Object Lock, the retention of everything still in
//!    use (packs, index files, snapshots, keys, config) is extended to now +
//!    the lock period. We keep no record of past extensions: every object whose
//!    own upload does not already guarantee half the window (modified more than
//!    half a window ago) is extended on every run; the S3 backend skips objects
//!    whose retention already reaches the date. Deleting in such a repository
//!    only writes delete markers; the locked versions stay until they expire.
//!
//! The margin also covers the few milliseconds between taking `marked_at` and
//! the new index files becoming visible.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rayon::prelude::*;
use serde::Serialize;

use crate::blob::{self, BlobType, SealedBlob};
use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::index::{Index, IndexFile, IndexPack};
use crate::lock::{self, Lock, LockInfo, LockKind};
use crate::pack::PackEntry;
use crate::packer::Packer;
use crate::progress::Progress;
use crate::repo::{io_pool, FileKind, Repository, CONFIG_KEY};
use crate::snapshot::Snapshot;

/// Blobs per written index file: keeps each file a few MB.
const BLOBS_PER_INDEX_FILE: usize = 50_000;

#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Repack partly used packs while unused bytes exceed this percentage of
    /// the pack bytes kept. 5% as in restic: a little waste saves much copying.
    pub max_unused_percent: f64,
    /// Minimum age of an unindexed pack before it is deleted: a running backup
    /// uploads packs a while before it indexes them.
    pub keep_unindexed_for: Duration,
    /// Allowance for clocks of different hosts (and storage) disagreeing.
    pub clock_skew: Duration,
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused_percent: 5.0,
            keep_unindexed_for: Duration::from_secs(3600),
            clock_skew: Duration::from_secs(300),
            dry_run: false,
        }
    }
}

/// What a prune did (or, with `dry_run`, would do).
#[derive(Debug, Default, Clone, Serialize)]
pub struct PruneStats {
    pub dry_run: bool,
    pub snapshots: u64,
    /// Live locks of other processes seen at the start.
    pub live_locks: u64,
    pub index_files_read: u64,
    pub index_files_written: u64,
    pub blobs_used: u64,
    /// Packs named by the index read.
    pub packs_total: u64,
    /// Live packs left as they are.
    pub packs_kept: u64,
    /// Partly used packs whose used blobs were copied into new packs.
    pub packs_repacked: u64,
    pub packs_new: u64,
    /// Packs taken out of use this run (unused, or repacked): deleted later.
    pub packs_marked_obsolete: u64,
    /// Obsolete packs that a snapshot needs again, back in use.
    pub packs_recovered: u64,
    /// Obsolete packs still too young to delete.
    pub packs_still_obsolete: u64,
    /// Obsolete packs deleted this run.
    pub packs_deleted: u64,
    /// Packs in no index deleted (left by killed backups) or kept (too young).
    pub unindexed_deleted: u64,
    pub unindexed_kept: u64,
    /// Temporaries of writers that died, deleted (local disks only).
    pub temporaries_deleted: u64,
    /// Unused blobs taken out of the live index this run.
    pub blobs_removed: u64,
    pub blobs_repacked: u64,
    pub bytes_repacked: u64,
    /// Bytes of packs deleted this run.
    pub bytes_freed: u64,
    /// Bytes of packs marked obsolete this run (freed by a later prune).
    pub bytes_marked: u64,
    /// Objects whose Object Lock retention was extended.
    pub retention_extended: u64,
}

/// One pack as the index files read describe it.
struct PackInfo {
    entries: Vec<PackEntry>,
    /// Bytes of the entries whose blob a snapshot needs from this pack.
    used_bytes: u64,
    used_blobs: u64,
    unused_bytes: u64,
}

enum Fate {
    Keep,
    Repack,
    Mark,
    StillObsolete(i64),
    Recover,
    Delete,
    /// Named by the index but no longer stored, and nothing needs it.
    Drop,
}

pub fn prune(
    repo: &Repository,
    opts: &PruneOptions,
    progress: &dyn Progress,
) -> Result<PruneStats> {
    let mut st = PruneStats {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let lock = Lock::acquire(repo, LockKind::Prune)?;
    let me = lock.info.clone();

    progress.phase("reading locks");
    let others = other_live_locks(repo, &me)?;
    if let Some(p) = others.iter().find(|l| l.kind == LockKind::Prune) {
        return Err(RepoError::Locked {
            holder: p.describe(),
        });
    }
    st.live_locks = others.len() as u64;
    let skew = chrono::Duration::from_std(opts.clock_skew).unwrap_or(chrono::Duration::MAX);
    // Every process that can still reference a pack it saw in use started
    // before this; our own start is included, since a backup starting after
    // the locks were read is not in `others`.
    let horizon = others
        .iter()
        .map(|l| l.started)
        .chain([me.started])
        .min()
        .expect("own lock")
        - skew;

    tracing::info!(
        "prune started {}; deleting packs marked before {horizon} ({} live locks of others)",
        me.started,
        others.len()
    );
    progress.phase("loading snapshots");
    let snaps = repo.list_snapshots()?;
    st.snapshots = snaps.len() as u64;
    progress.phase("loading index");
    let files = repo.load_index_files()?;
    st.index_files_read = files.len() as u64;
    let mut index = Index::default();
    for (id, f) in &files {
        index.add_file(Some(*id), f.clone());
    }
    index.finish();
    let mut packs = pack_table(&files);
    st.packs_total = packs.len() as u64;

    progress.phase("finding used blobs");
    let used = used_blobs(repo, &index, &snaps)?;
    st.blobs_used = used.len() as u64;
    let mut needed: HashMap<Id, HashSet<(BlobType, Id)>> = HashMap::new();
    for (kind, id) in &used {
        let loc = index
            .get(*kind, id)
            .ok_or_else(|| RepoError::BlobNotFound { id: id.to_hex() })?;
        needed.entry(loc.pack).or_default().insert((*kind, *id));
    }
    for (pid, p) in packs.iter_mut() {
        let need = needed.get(pid);
        let mut seen = HashSet::new();
        for e in &p.entries {
            if need.is_some_and(|n| n.contains(&(e.kind, e.id))) && seen.insert((e.kind, e.id)) {
                p.used_bytes += e.length as u64;
                p.used_blobs += 1;
            } else {
                p.unused_bytes += e.length as u64;
            }
        }
    }

    let stored: HashMap<Id, tidemark_store::ObjectMeta> =
        repo.list(FileKind::Pack)?.into_iter().collect();
    let mut fates: HashMap<Id, Fate> = HashMap::new();
    for (pid, p) in &packs {
        let in_storage = stored.contains_key(pid);
        let fate = if let Some(&marked) = index.obsolete.get(pid) {
            if p.used_blobs > 0 {
                Fate::Recover
            } else if !in_storage {
                Fate::Drop
            } else if marked < horizon.timestamp() {
                Fate::Delete
            } else {
                Fate::StillObsolete(marked)
            }
        } else if p.used_blobs == 0 {
            if in_storage {
                Fate::Mark
            } else {
                Fate::Drop
            }
        } else if p.unused_bytes == 0 {
            Fate::Keep
        } else {
            Fate::Repack // decided below against the unused limit
        };
        if p.used_blobs > 0 && !in_storage {
            return Err(RepoError::corrupt(
                format!("pack {pid}"),
                "needed by a snapshot but missing from storage",
            ));
        }
        fates.insert(*pid, fate);
    }
    choose_repacks(&packs, &mut fates, opts.max_unused_percent);

    // Copy the used blobs of the chosen packs into new packs.
    let to_repack: Vec<Id> = fates
        .iter()
        .filter(|(_, f)| matches!(f, Fate::Repack))
        .map(|(id, _)| *id)
        .collect();
    let mut new_index_files = Vec::new();
    if !to_repack.is_empty() {
        progress.phase("repacking");
        let bytes: u64 = to_repack.iter().map(|id| stored[id].size).sum();
        progress.set_total(to_repack.len() as u64, bytes);
        if opts.dry_run {
            st.blobs_repacked = to_repack.iter().map(|id| packs[id].used_blobs).sum();
            st.bytes_repacked = to_repack.iter().map(|id| packs[id].used_bytes).sum();
        } else {
            let (blobs, b, files, new_packs) =
                repack(repo, &to_repack, &packs, &needed, &stored, progress)?;
            st.blobs_repacked = blobs;
            st.bytes_repacked = b;
            st.packs_new = new_packs;
            new_index_files = files;
        }
    }

    // Tally, and build the new index.
    let marked_at = ceil_secs(Utc::now());
    let mut live = Vec::new();
    let mut obsolete = Vec::new();
    let mut deletions = Vec::new();
    let mut changed = false;
    for (pid, fate) in &fates {
        let p = &packs[pid];
        let entry = || IndexPack {
            id: *pid,
            blobs: p.entries.clone(),
        };
        match fate {
            Fate::Keep => {
                st.packs_kept += 1;
                live.push(entry());
            }
            Fate::Recover => {
                st.packs_recovered += 1;
                changed = true;
                live.push(entry());
            }
            Fate::Repack | Fate::Mark => {
                if matches!(fate, Fate::Repack) {
                    st.packs_repacked += 1;
                }
                st.packs_marked_obsolete += 1;
                st.blobs_removed += p.entries.len() as u64 - p.used_blobs;
                st.bytes_marked += stored[pid].size;
                changed = true;
                obsolete.push((entry(), marked_at));
            }
            Fate::StillObsolete(m) => {
                tracing::debug!(
                    "pack {pid} stays obsolete: marked at {m}, horizon {}",
                    horizon.timestamp()
                );
                st.packs_still_obsolete += 1;
                obsolete.push((entry(), *m));
            }
            Fate::Delete => {
                st.packs_deleted += 1;
                st.bytes_freed += stored[pid].size;
                changed = true;
                deletions.push(*pid);
            }
            Fate::Drop => changed = true,
        }
    }

    // Packs no index names: only old ones, never one a running backup may
    // still be about to index.
    let min_age =
        chrono::Duration::from_std(opts.keep_unindexed_for).unwrap_or(chrono::Duration::MAX);
    let young = Utc::now() - min_age;
    let mut unindexed = Vec::new();
    for (pid, meta) in &stored {
        if packs.contains_key(pid) {
            continue;
        }
        match meta.modified {
            Some(t) if t < horizon && t < young => {
                st.unindexed_deleted += 1;
                st.bytes_freed += meta.size;
                unindexed.push(*pid);
            }
            _ => st.unindexed_kept += 1,
        }
    }

    if !opts.dry_run {
        // Rewriting also merges the small index files backups leave.
        if changed || files.len() > 1 {
            progress.phase("writing index");
            st.index_files_written = write_index(repo, live, obsolete)? as u64;
            let read: Vec<&Id> = files.iter().map(|(id, _)| id).collect();
            delete_files(repo, FileKind::Index, read)?;
        }
        st.index_files_written += new_index_files.len() as u64;
        progress.phase("deleting packs");
        delete_files(repo, FileKind::Pack, deletions.iter().chain(&unindexed))?;
        // What killed writers left (a local disk's temporaries, among them
        // the pack a killed backup was filling), by the unindexed packs' rule.
        let before = horizon.min(young);
        st.temporaries_deleted = repo.block_on(repo.store().sweep_temporaries(before))?;
    }

    if let Some(days) = repo.config.object_lock_days {
        progress.phase("extending retention");
        st.retention_extended = extend_retention(repo, days, &fates, &stored, opts.dry_run)?;
    }
    lock.release();
    Ok(st)
}

/// Live locks of other processes. Read twice: a lock being refreshed is
/// written anew before the old file goes, so a listing that raced with the
/// swap misses it once but not twice.
fn other_live_locks(repo: &Repository, me: &LockInfo) -> Result<Vec<LockInfo>> {
    let same = |a: &LockInfo, b: &LockInfo| {
        a.kind == b.kind && a.hostname == b.hostname && a.pid == b.pid && a.started == b.started
    };
    let mut out: Vec<LockInfo> = Vec::new();
    for _ in 0..2 {
        for l in lock::live_locks(repo)? {
            if !same(&l, me) && !out.iter().any(|o| same(o, &l)) {
                out.push(l);
            }
        }
    }
    Ok(out)
}

/// Every pack named by the files, with all its entries (a blob stored twice
/// stays listed in both packs).
fn pack_table(files: &[(Id, IndexFile)]) -> HashMap<Id, PackInfo> {
    let mut packs: HashMap<Id, PackInfo> = HashMap::new();
    for (_, f) in files {
        for p in &f.packs {
            let info = packs.entry(p.id).or_insert_with(|| PackInfo {
                entries: Vec::new(),
                used_bytes: 0,
                used_blobs: 0,
                unused_bytes: 0,
            });
            info.entries.extend(&p.blobs);
        }
        for (id, _) in &f.obsolete {
            packs.entry(*id).or_insert_with(|| PackInfo {
                entries: Vec::new(),
                used_bytes: 0,
                used_blobs: 0,
                unused_bytes: 0,
            });
        }
    }
    for p in packs.values_mut() {
        // The same pack named by two index files (a crash between writing and
        // deleting) must not list its blobs twice.
        p.entries.sort_by_key(|e| (e.offset, e.kind, e.id));
        p.entries.dedup_by_key(|e| (e.offset, e.kind, e.id));
    }
    packs
}

/// Data and tree blobs referenced by the snapshots; trees are loaded level by
/// level, in parallel, each once.
fn used_blobs(
    repo: &Repository,
    index: &Index,
    snaps: &[(Id, Snapshot)],
) -> Result<HashSet<(BlobType, Id)>> {
    let mut used = HashSet::new();
    let mut frontier: Vec<Id> = Vec::new();
    for (_, s) in snaps {
        if used.insert((BlobType::Tree, s.tree)) {
            frontier.push(s.tree);
        }
    }
    while !frontier.is_empty() {
        let trees: Vec<_> = io_pool().install(|| {
            frontier
                .par_iter()
                .map(|id| repo.load_tree(index, id))
                .collect()
        });
        let mut next = Vec::new();
        for t in trees {
            for n in t?.nodes {
                used.extend(n.content.into_iter().map(|id| (BlobType::Data, id)));
                if let Some(sub) = n.subtree {
                    if used.insert((BlobType::Tree, sub)) {
                        next.push(sub);
                    }
                }
            }
        }
        frontier = next;
    }
    Ok(used)
}

/// Turn `Repack` candidates back into `Keep` while the unused bytes left
/// stay within the limit; the most wasteful packs are repacked first.
fn choose_repacks(
    packs: &HashMap<Id, PackInfo>,
    fates: &mut HashMap<Id, Fate>,
    max_unused_percent: f64,
) {
    let mut cands: Vec<Id> = fates
        .iter()
        .filter(|(_, f)| matches!(f, Fate::Repack))
        .map(|(id, _)| *id)
        .collect();
    cands.sort_by_key(|id| std::cmp::Reverse(packs[id].unused_bytes));
    let used: u64 = fates
        .iter()
        .filter(|(_, f)| matches!(f, Fate::Keep | Fate::Repack | Fate::Recover))
        .map(|(id, _)| packs[id].used_bytes)
        .sum();
    let mut unused: u64 = cands.iter().map(|id| packs[id].unused_bytes).sum();
    // unused / (used + unused) <= p  <=>  unused <= used * p / (1 - p)
    let p = (max_unused_percent / 100.0).clamp(0.0, 1.0);
    let allowed = if p >= 1.0 {
        u64::MAX
    } else {
        (used as f64 * p / (1.0 - p)) as u64
    };
    for id in cands {
        if unused > allowed {
            unused -= packs[&id].unused_bytes;
        } else {
            fates.insert(id, Fate::Keep);
        }
    }
}

/// Copy the needed blobs of `ids` into new packs (sealed bytes as they are,
/// after checking each one decrypts to its id). Returns (blobs, bytes, index
/// files written, new packs).
fn repack(
    repo: &Repository,
    ids: &[Id],
    packs: &HashMap<Id, PackInfo>,
    needed: &HashMap<Id, HashSet<(BlobType, Id)>>,
    stored: &HashMap<Id, tidemark_store::ObjectMeta>,
    progress: &dyn Progress,
) -> Result<(u64, u64, Vec<Id>, u64)> {
    // An empty index: the packer must store every blob given, even though the
    // repository index still lists it in the pack being replaced.
    let empty = Index::default();
    let packer = Packer::new(repo, &empty);
    let (blobs, bytes) = (AtomicU64::new(0), AtomicU64::new(0));
    io_pool().install(|| {
        ids.par_iter().try_for_each(|pid| -> Result<()> {
            let data = repo.get(&FileKind::Pack.key(pid))?;
            let need = &needed[pid];
            for e in &packs[pid].entries {
                if !need.contains(&(e.kind, e.id)) || !packer.claim(e.kind, &e.id) {
                    continue;
                }
                let what = || format!("blob {} in pack {pid}", e.id);
                let sealed = data
                    .get(e.offset as usize..e.offset as usize + e.length as usize)
                    .ok_or_else(|| RepoError::corrupt(what(), "beyond the end of its pack"))?;
                let plain = blob::unseal(repo.cipher(), sealed, e.flags, e.raw_len, &what)?;
                if repo.key().blob_id(&plain) != e.id {
                    return Err(RepoError::corrupt(what(), "content does not match its id"));
                }
                packer.add_sealed(SealedBlob {
                    id: e.id,
                    kind: e.kind,
                    flags: e.flags,
                    raw_len: e.raw_len,
                    bytes: sealed.to_vec(),
                })?;
                blobs.fetch_add(1, Ordering::Relaxed);
                bytes.fetch_add(e.length as u64, Ordering::Relaxed);
            }
            progress.advance(1, stored[pid].size);
            Ok(())
        })
    })?;
    let files = packer.flush()?;
    let new_packs = packer.stats.packs.load(Ordering::Relaxed);
    Ok((blobs.into_inner(), bytes.into_inner(), files, new_packs))
}

/// Write the live packs, then the obsolete packs with their marks (each
/// obsolete pack's blobs and mark in one file). Returns the files written.
fn write_index(
    repo: &Repository,
    live: Vec<IndexPack>,
    obsolete: Vec<(IndexPack, i64)>,
) -> Result<usize> {
    let mut written = 0;
    let mut f = IndexFile::default();
    let mut n = 0;
    let mut flush = |f: &mut IndexFile, n: &mut usize| -> Result<()> {
        if !f.packs.is_empty() || !f.obsolete.is_empty() {
            repo.save_index(f)?;
            written += 1;
        }
        *f = IndexFile::default();
        *n = 0;
        Ok(())
    };
    for p in live {
        n += p.blobs.len();
        f.packs.push(p);
        if n >= BLOBS_PER_INDEX_FILE {
            flush(&mut f, &mut n)?;
        }
    }
    for (p, marked) in obsolete {
        n += p.blobs.len();
        f.obsolete.push((p.id, marked));
        f.packs.push(p);
        if n >= BLOBS_PER_INDEX_FILE {
            flush(&mut f, &mut n)?;
        }
    }
    flush(&mut f, &mut n)?;
    Ok(written)
}

/// Deletes the files all at once ([`Store::delete_many`]: on object storage
/// one request per thousand); an error names each file left behind.
///
/// [`Store::delete_many`]: tidemark_store::Store::delete_many
fn delete_files<'a>(
    repo: &Repository,
    kind: FileKind,
    ids: impl IntoIterator<Item = &'a Id>,
) -> Result<()> {
    let keys: Vec<String> = ids.into_iter().map(|id| kind.key(id)).collect();
    repo.block_on(repo.store().delete_many(&keys))
        .map_err(|left| RepoError::Store(left.into()))
}

/// Extend Object Lock retention of what is still in use to now + `days`.
fn extend_retention(
    repo: &Repository,
    days: u32,
    fates: &HashMap<Id, Fate>,
    stored: &HashMap<Id, tidemark_store::ObjectMeta>,
    dry_run: bool,
) -> Result<u64> {
    let store = repo.store();
    if !store.capabilities().retention {
        return Err(RepoError::Invalid(format!(
            "the repository asks for Object Lock ({days} days) but {} cannot retain objects",
            store.describe()
        )));
    }
    let now = Utc::now();
    let until = now + chrono::Duration::days(days as i64);
    // An object uploaded less than half a window ago still holds more than
    // half of its own retention: leave it for a later run.
    let recent = now - chrono::Duration::seconds(days as i64 * 86_400 / 2);
    let needs = |m: &tidemark_store::ObjectMeta| m.modified.is_none_or(|t| t < recent);
    let mut keys: Vec<String> = stored
        .iter()
        .filter(|(id, m)| matches!(fates.get(id), Some(Fate::Keep | Fate::Recover)) && needs(m))
        .map(|(_, m)| m.key.clone())
        .collect();
    for kind in [
        FileKind::Index,
        FileKind::Snapshot,
        FileKind::Key,
        FileKind::Catalog,
    ] {
        keys.extend(
            repo.list(kind)?
                .into_iter()
                .filter(|(_, m)| needs(m))
                .map(|(_, m)| m.key),
        );
    }
    if let Some(m) = repo.block_on(store.head(CONFIG_KEY))? {
        if needs(&m) {
            keys.push(m.key);
        }
    }
    if !dry_run {
        io_pool().install(|| {
            keys.par_iter().try_for_each(|k| {
                repo.block_on(store.retain(k, until))
                    .map_err(RepoError::from)
            })
        })?;
    }
    Ok(keys.len() as u64)
}

/// Unix seconds, rounded up: a mark is never earlier than the moment taken.
fn ceil_secs(t: DateTime<Utc>) -> i64 {
    t.timestamp() + i64::from(t.timestamp_subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use crate::restore::{restore, RestoreOptions};
    use crate::walk::tests::TestRepo;
    use std::path::Path;

    fn random(n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        crate::crypto::fill_random(&mut v);
        v
    }

    /// Delete at once what is old enough: no skew margin, no minimum age.
    fn eager() -> PruneOptions {
        PruneOptions {
            clock_skew: Duration::ZERO,
            keep_unindexed_for: Duration::ZERO,
            ..Default::default()
        }
    }

    /// Marks carry whole seconds rounded up; a later prune must start in a
    /// later second to see them as older than itself.
    fn let_marks_age() {
        std::thread::sleep(Duration::from_millis(2100));
    }

    fn pack_ids(t: &TestRepo) -> HashSet<Id> {
        t.repo
            .list(FileKind::Pack)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    fn assert_restores(t: &TestRepo, snap: &Snapshot, src: &Path, name: &str) {
        let target = t.dir.path().join(name);
        let out = restore(
            &t.repo,
            snap,
            &RestoreOptions {
                target: target.clone(),
                ..Default::default()
            },
            &NoProgress,
        )
        .unwrap();
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        for e in std::fs::read_dir(src).unwrap() {
            let p = e.unwrap().path();
            let back = target.join(p.strip_prefix("/").unwrap());
            assert_eq!(
                std::fs::read(&p).unwrap(),
                std::fs::read(&back).unwrap(),
                "{}",
                p.display()
            );
        }
    }

    #[test]
    fn unused_packs_are_marked_first_and_deleted_by_a_later_prune() {
        let t = TestRepo::new();
        let (a, b) = (t.dir.path().join("a"), t.dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("f"), random(300_000)).unwrap();
        std::fs::write(b.join("g"), random(300_000)).unwrap();
        let (sa, _) = t.backup(&[&a]);
        let before = pack_ids(&t);
        let (_, snap_b) = t.backup(&[&b]);
        t.repo.delete_file(FileKind::Snapshot, &sa).unwrap();

        let st = prune(&t.repo, &eager(), &NoProgress).unwrap();
        assert_eq!(st.packs_marked_obsolete, 2, "{st:?}"); // a's data and tree packs
        assert_eq!(
            st.packs_deleted, 0,
            "a pack is never deleted in the run that marks it"
        );
        let index = t.repo.load_index().unwrap();
        assert_eq!(
            index.obsolete.keys().copied().collect::<HashSet<_>>(),
            before
        );
        assert_eq!(pack_ids(&t).len(), 4);

        let_marks_age();
        let st = prune(&t.repo, &eager(), &NoProgress).unwrap();
        assert_eq!(st.packs_deleted, 2, "{st:?}");
        let left = pack_ids(&t);
        assert!(left.is_disjoint(&before) && left.len() == 2);
        assert!(t.repo.load_index().unwrap().obsolete.is_empty());
        assert_restores(&t, &snap_b, &b, "out");
    }

    #[test]
    fn a_live_lock_older_than_the_mark_keeps_the_pack() {
        let t = TestRepo::new();
        let a = t.dir.path().join("a");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::write(a.join("f"), random(200_000)).unwrap();
        let (sa, _) = t.backup(&[&a]);
        // A backup that started before the mark could still reference the pack.
        let running = Lock::acquire(&t.repo, LockKind::Backup).unwrap();
        t.repo.delete_file(FileKind::Snapshot, &sa).unwrap();
        prune(&t.repo, &eager(), &NoProgress).unwrap();
        let_marks_age();
        let st = prune(&t.repo, &eager(), &NoProgress).unwrap();
        assert_eq!(
            (st.live_locks, st.packs_deleted, st.packs_still_obsolete),
            (1, 0, 2),
            "{st:?}"
        );
        running.release();
        let st = prune(&t.repo, &eager(), &NoProgress).unwrap();
        assert_eq!(st.packs_deleted, 2, "{st:?}");
        assert!(pack_ids(&t).is_empty());
    }

    #[test]
    fn a_snapshot_that_needs_an_obsolete_pack_again_recovers_it() {
        let t = TestRepo::new();
        let a = t.dir.path().join("a");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::write(a.join("f"), random(200_000)).unwrap();
        let (sa, snap) = t.backup(&[&a]);
        t.repo.delete_file(FileKind::Snapshot, &sa).unwrap();
        prune(&t.repo, &eager(), &NoProgress).unwrap();
        // As if a backup that saw the pack live finished after the mark.
        t.repo.save_snapshot(&snap).unwrap();
        let_marks_age();
        let st = prune(&t.repo, &eager(), &NoProgress).unwrap();
        assert_eq!((st.packs_recovered, st.packs_deleted), (2, 0), "{st:?}");
        assert!(t.repo.load_index().unwrap().obsolete.is_empty());
        assert_restores(&t, &snap, &a, "out");
    }

    #[test]
    fn partly_used_packs_are_repacked_and_snapshots_still_restore() {
        let t = TestRepo::new();
        let a = t.dir.path().join("a");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::write(a.join("keep"), random(200_000)).unwrap();
        std::fs::write(a.join("drop"), random(600_000)).unwrap();
        let (s1, _) = t.backup(&[&a]);
        std::fs::remove_file(a.join("drop")).unwrap();
        let (_, s2) = t.backup(&[&a]);
        t.repo.delete_file(FileKind::Snapshot, &s1).unwrap();
        let old = pack_ids(&t);

        // Within a generous limit nothing is copied.
        let lenient = PruneOptions {
            max_unused_percent: 90.0,
            ..eager()
        };
        let st = prune(
            &t.repo,
            &PruneOptions {
                dry_run: true,
                ..lenient.clone()
            },
            &NoProgress,
        )
        .unwrap();
        assert_eq!(st.packs_repacked, 0, "{st:?}");
        let st = prune(
            &t.repo,
            &PruneOptions {
                max_unused_percent: 0.0,
                ..eager()
            },
            &NoProgress,
        )
        .unwrap();
        assert!(
            st.packs_repacked >= 1 && st.packs_new >= 1 && st.blobs_repacked > 0,
            "{st:?}"
        );
        assert!(st.blobs_removed > 0);
        let_marks_age();
        let st = prune(&t.repo, &eager(), &NoProgress).unwrap();
        assert!(st.packs_deleted >= 1 && st.bytes_freed >= 600_000, "{st:?}");
        assert!(pack_ids(&t)
            .iter()
            .all(|p| !old.contains(p) || t.repo.load_index().unwrap().pack_ids().contains(p)));
        assert_restores(&t, &s2, &a, "out");
    }

    #[test]
    fn unindexed_packs_go_only_when_old_enough() {
        let t = TestRepo::new();
        let junk = random(1000);
        let id = Id::of_stored(&junk);
        t.repo.put(&FileKind::Pack.key(&id), junk).unwrap();
        // The pack a killed backup was writing: a temporary, by the same rule.
        let temp = t.dir.path().join("repo/data/.tidemark-tmp.killed");
        std::fs::write(&temp, b"half a pack").unwrap();
        let st = prune(
            &t.repo,
            &PruneOptions {
                clock_skew: Duration::ZERO,
                ..Default::default()
            },
            &NoProgress,
        )
        .unwrap();
        assert_eq!(
            (st.unindexed_deleted, st.unindexed_kept),
            (0, 1),
            "younger than an hour: kept"
        );
        let st = prune(
            &t.repo,
            &PruneOptions {
                keep_unindexed_for: Duration::ZERO,
                ..Default::default()
            },
            &NoProgress,
        )
        .unwrap();
        assert_eq!(
            st.unindexed_deleted, 0,
            "within the clock-skew margin of the prune's start: kept"
        );
        let st = prune(
            &t.repo,
            &PruneOptions {
                dry_run: true,
                ..eager()
            },
            &NoProgress,
        )
        .unwrap();
        assert_eq!(st.unindexed_deleted, 1);
        assert!(pack_ids(&t).contains(&id), "dry run deletes nothing");
        assert!(
            temp.exists(),
            "young, within the skew margin, or a dry run: kept"
        );
        let st = prune(&t.repo, &eager(), &NoProgress).unwrap();
        assert!(!pack_ids(&t).contains(&id));
        assert_eq!(st.temporaries_deleted, 1);
        assert!(!temp.exists());
    }

    #[test]
    fn a_second_prune_is_refused_while_one_is_live() {
        let t = TestRepo::new();
        let other = Lock::acquire(&t.repo, LockKind::Prune).unwrap();
        let err = prune(&t.repo, &eager(), &NoProgress).unwrap_err();
        assert!(matches!(err, RepoError::Locked { .. }), "{err}");
        other.release();
        prune(&t.repo, &eager(), &NoProgress).unwrap();
    }

    /// A local store that claims Object Lock: it records `retain` calls and
    /// reports every object as uploaded 30 days ago.
    #[derive(Debug)]
    struct LockingStore {
        inner: tidemark_store::LocalStore,
        retained: std::sync::Mutex<Vec<(String, DateTime<Utc>)>>,
    }

    impl LockingStore {
        fn aged(mut m: tidemark_store::ObjectMeta) -> tidemark_store::ObjectMeta {
            m.modified = Some(Utc::now() - chrono::Duration::days(30));
            m
        }
    }

    #[async_trait::async_trait]
    impl tidemark_store::Store for LockingStore {
        fn capabilities(&self) -> tidemark_store::Capabilities {
            tidemark_store::Capabilities {
                retention: true,
                range_reads: true,
                remote: false,
            }
        }
        fn describe(&self) -> String {
            "locking test store".into()
        }
        async fn create(&self, _object_lock: bool) -> tidemark_store::Result<()> {
            self.inner.create(false).await
        }
        async fn put(&self, key: &str, data: bytes::Bytes) -> tidemark_store::Result<()> {
            self.inner.put(key, data).await
        }
        async fn get(&self, key: &str) -> tidemark_store::Result<bytes::Bytes> {
            self.inner.get(key).await
        }
        async fn get_range(
            &self,
            key: &str,
            offset: u64,
            len: u64,
        ) -> tidemark_store::Result<bytes::Bytes> {
            self.inner.get_range(key, offset, len).await
        }
        async fn head(
            &self,
            key: &str,
        ) -> tidemark_store::Result<Option<tidemark_store::ObjectMeta>> {
            Ok(self.inner.head(key).await?.map(Self::aged))
        }
        async fn list(
            &self,
            prefix: &str,
        ) -> tidemark_store::Result<Vec<tidemark_store::ObjectMeta>> {
            Ok(self
                .inner
                .list(prefix)
                .await?
                .into_iter()
                .map(Self::aged)
                .collect())
        }
        async fn delete(&self, key: &str) -> tidemark_store::Result<()> {
            self.inner.delete(key).await
        }
        async fn retain(&self, key: &str, until: DateTime<Utc>) -> tidemark_store::Result<()> {
            self.retained.lock().unwrap().push((key.to_string(), until));
            Ok(())
        }
    }

    #[test]
    fn object_lock_extends_retention_of_everything_still_in_use_only() {
        use tidemark_store::Store as _;
        let t = TestRepo::new();
        let store = std::sync::Arc::new(LockingStore {
            inner: tidemark_store::LocalStore::new(t.dir.path().join("locked")),
            retained: Default::default(),
        });
        let mut config = crate::config::RepoConfig::new();
        config.object_lock_days = Some(10);
        let repo = Repository::init(
            store.clone(),
            t.repo.runtime().clone(),
            b"pw",
            crate::InitOptions {
                kdf: crate::keyfile::KdfParams::insecure_fast(),
                config,
            },
        )
        .unwrap();
        let (a, b) = (t.dir.path().join("a"), t.dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("f"), random(100_000)).unwrap();
        std::fs::write(b.join("g"), random(100_000)).unwrap();
        let (sa, _) = crate::walk::tests::backup_into(&repo, &[&a]);
        let a_packs: HashSet<Id> = repo
            .list(FileKind::Pack)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        crate::walk::tests::backup_into(&repo, &[&b]);
        repo.delete_file(FileKind::Snapshot, &sa).unwrap();

        let st = prune(
            &repo,
            &PruneOptions {
                dry_run: true,
                ..eager()
            },
            &NoProgress,
        )
        .unwrap();
        assert!(
            st.retention_extended > 0 && store.retained.lock().unwrap().is_empty(),
            "dry run extends nothing"
        );
        let before = Utc::now();
        let st = prune(&repo, &eager(), &NoProgress).unwrap();
        let retained = store.retained.lock().unwrap().clone();
        assert_eq!(st.retention_extended as usize, retained.len());
        let keys: HashSet<&str> = retained.iter().map(|(k, _)| k.as_str()).collect();
        assert!(retained
            .iter()
            .all(|(_, u)| *u >= before + chrono::Duration::days(10)));
        let live_packs: Vec<Id> = repo
            .list(FileKind::Pack)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| !a_packs.contains(id))
            .collect();
        assert_eq!(live_packs.len(), 2);
        for id in &live_packs {
            assert!(
                keys.contains(FileKind::Pack.key(id).as_str()),
                "live pack {id} extended"
            );
        }
        for id in &a_packs {
            assert!(
                !keys.contains(FileKind::Pack.key(id).as_str()),
                "obsolete pack {id} left to expire"
            );
        }
        for kind in [FileKind::Snapshot, FileKind::Key, FileKind::Index] {
            for (id, _) in repo.list(kind).unwrap() {
                assert!(
                    keys.contains(kind.key(&id).as_str()),
                    "{} {id} extended",
                    kind.name()
                );
            }
        }
        assert!(keys.contains(CONFIG_KEY));
        assert!(store.capabilities().retention);
    }

    #[test]
    fn repacks_the_most_wasteful_packs_until_within_the_limit() {
        let info = |used: u64, unused: u64| PackInfo {
            entries: Vec::new(),
            used_bytes: used,
            used_blobs: 1,
            unused_bytes: unused,
        };
        let ids: Vec<Id> = (0..4).map(|i| Id([i; 32])).collect();
        let packs: HashMap<Id, PackInfo> = [
            (ids[0], info(100, 0)),
            (ids[1], info(50, 50)),
            (ids[2], info(90, 10)),
            (ids[3], info(95, 5)),
        ]
        .into_iter()
        .collect();
        let fates = |p: f64| {
            let mut f: HashMap<Id, Fate> = ids.iter().map(|id| (*id, Fate::Repack)).collect();
            f.insert(ids[0], Fate::Keep);
            choose_repacks(&packs, &mut f, p);
            let mut r: Vec<u8> = f
                .iter()
                .filter(|(_, f)| matches!(f, Fate::Repack))
                .map(|(id, _)| id.0[0])
                .collect();
            r.sort();
            r
        };
        // used 335, unused 65 (16%): 10% allows 37, so the 50 go, 15 stay.
        assert_eq!(fates(10.0), vec![1]);
        assert_eq!(fates(0.0), vec![1, 2, 3]);
        assert_eq!(fates(20.0), Vec::<u8>::new());
        assert_eq!(fates(100.0), Vec::<u8>::new());
    }
}
