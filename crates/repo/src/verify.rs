//! Verify: find every damaged object and say what it spoils.
//!
//! The structure check always runs: every index file and snapshot loads,
//! every tree reachable from a snapshot loads, every data blob a file needs is
//! indexed, and every pack the index names is stored with the size the index
//! implies (from the listing, nothing downloaded). With `read_data`, chosen
//! packs are also downloaded, a few at a time: the BLAKE3 of the bytes must
//! match the name, the header must match the index, and every blob must
//! decrypt, decompress and hash to its id.
//!
//! Damage is gathered first (pack checks before the tree walk, so the walk
//! knows which blobs are bad); the tree walk then visits each distinct tree
//! once and maps each bad blob or tree to the paths that use it, memoised per
//! tree, so shared subtrees cost nothing more.
//!
//! Parts: this file gathers the findings and runs the structure check;
//! `packs` downloads and checks packs; `walk` loads the trees and maps
//! damage to snapshots and paths.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rayon::prelude::*;
use serde::Serialize;

use crate::crypto::OVERHEAD;
use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::index::Index;
use crate::pack::{PackEntry, HEADER_ENTRY_LEN};
use crate::progress::Progress;
use crate::repo::{FileKind, Repository};

mod packs;
mod walk;

use packs::read_packs;
use walk::Walker;

/// Which packs `--read-data` downloads.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum ReadData {
    /// Structure check only.
    #[default]
    None,
    All,
    /// A random share of the packs (0 < p <= 100), different on every run.
    Percent(f64),
    /// Part `n` of `of` (1-based): packs whose id falls in that hash bucket,
    /// so runs with 1/5 .. 5/5 together read every pack exactly once.
    Part {
        n: u32,
        of: u32,
    },
}

impl std::str::FromStr for ReadData {
    type Err = RepoError;

    /// `N%` or `n/m`.
    fn from_str(s: &str) -> Result<ReadData> {
        let bad = || {
            RepoError::Invalid(format!(
                "read-data subset {s:?}: expected N% (0 < N <= 100) or n/m (1 <= n <= m)"
            ))
        };
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad());
            }
            return Ok(ReadData::Percent(p));
        }
        let (n, of) = s.split_once('/').ok_or_else(bad)?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        let of: u32 = of.trim().parse().map_err(|_| bad())?;
        if n == 0 || n > of {
            return Err(bad());
        }
        Ok(ReadData::Part { n, of })
    }
}

impl ReadData {
    /// The packs to download, out of `packs`.
    pub fn select(&self, packs: &[Id]) -> Vec<Id> {
        match *self {
            ReadData::None => Vec::new(),
            ReadData::All => packs.to_vec(),
            ReadData::Part { n, of } => packs
                .iter()
                .copied()
                .filter(|p| bucket(p) % of as u64 == (n - 1) as u64)
                .collect(),
            ReadData::Percent(pct) => {
                // Order by a hash keyed with a fresh random key: a uniformly
                // shuffled list, so each run reads a different share.
                let mut key = [0u8; 32];
                crate::crypto::fill_random(&mut key);
                let mut v: Vec<(blake3::Hash, Id)> = packs
                    .iter()
                    .map(|p| (blake3::keyed_hash(&key, &p.0), *p))
                    .collect();
                v.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                let want = ((packs.len() as f64) * pct / 100.0).ceil() as usize;
                v.into_iter()
                    .take(want.min(packs.len()))
                    .map(|(_, p)| p)
                    .collect()
            }
        }
    }
}

fn bucket(id: &Id) -> u64 {
    u64::from_le_bytes(id.0[..8].try_into().expect("8 bytes"))
}

#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    pub read_data: ReadData,
    /// Packs downloaded at once (default 4: storage latency bounds it).
    pub threads: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    Index,
    Snapshot,
    Pack,
    Tree,
    Blob,
}

impl ObjectKind {
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Index => "index",
            ObjectKind::Snapshot => "snapshot",
            ObjectKind::Pack => "pack",
            ObjectKind::Tree => "tree",
            ObjectKind::Blob => "blob",
        }
    }
}

/// Paths of one snapshot spoiled by a damaged object. Empty `paths` with
/// `whole` set: the snapshot itself cannot be read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Affected {
    pub snapshot: Id,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub whole: bool,
    pub paths: Vec<String>,
}

/// One damaged object.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub kind: ObjectKind,
    pub id: Id,
    pub reason: String,
    pub affected: Vec<Affected>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyStats {
    pub index_files: u64,
    pub snapshots: u64,
    pub trees: u64,
    pub packs_indexed: u64,
    pub packs_stored: u64,
    pub packs_read: u64,
    pub bytes_read: u64,
    pub blobs_read: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub problems: Vec<Problem>,
    /// Findings that are not damage (unindexed packs left by an interrupted
    /// backup, which prune removes).
    pub notes: Vec<String>,
    pub stats: VerifyStats,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// A problem being gathered: its reasons, and the paths per snapshot.
#[derive(Default)]
struct Open {
    reasons: Vec<String>,
    affected: BTreeMap<Id, BTreeSet<String>>,
    /// The object is a snapshot that cannot be read at all.
    whole: bool,
}

/// Problems as they are found, merged per object; `bad` maps each bad blob
/// or tree to the problems it belongs to, for the path mapping.
#[derive(Default)]
struct Findings {
    problems: BTreeMap<(ObjectKind, Id), Open>,
    bad: HashMap<Id, Vec<(ObjectKind, Id)>>,
}

impl Findings {
    fn add(&mut self, kind: ObjectKind, id: Id, reason: impl Into<String>) {
        let reason = reason.into();
        let e = self.problems.entry((kind, id)).or_default();
        if !e.reasons.contains(&reason) {
            e.reasons.push(reason);
        }
    }

    /// Blob (or tree) `blob` is unreadable because of problem `owner`.
    fn taint(&mut self, blob: Id, owner: (ObjectKind, Id)) {
        let v = self.bad.entry(blob).or_default();
        if !v.contains(&owner) {
            v.push(owner);
        }
    }

    fn affect(&mut self, owner: (ObjectKind, Id), snapshot: Id, path: &str) {
        if let Some(p) = self.problems.get_mut(&owner) {
            p.affected
                .entry(snapshot)
                .or_default()
                .insert(path.to_string());
        }
    }

    fn into_problems(self) -> Vec<Problem> {
        self.problems
            .into_iter()
            .map(
                |(
                    (kind, id),
                    Open {
                        reasons,
                        affected,
                        whole,
                    },
                )| Problem {
                    kind,
                    id,
                    reason: reasons.join("; "),
                    affected: if whole {
                        vec![Affected {
                            snapshot: id,
                            whole: true,
                            paths: Vec::new(),
                        }]
                    } else {
                        affected
                            .into_iter()
                            .map(|(snapshot, paths)| Affected {
                                snapshot,
                                whole: false,
                                paths: paths.into_iter().collect(),
                            })
                            .collect()
                    },
                },
            )
            .collect()
    }
}

pub fn verify(
    repo: &Repository,
    opts: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    // What is stored now is checked, not a copy this process read earlier.
    repo.drop_held_trees();
    let mut f = Findings::default();
    let mut report = VerifyReport::default();

    progress.phase("loading index");
    let (index, pack_entries) = load_index(repo, &mut f, &mut report.stats)?;

    progress.phase("loading snapshots");
    let mut snapshots = Vec::new();
    for (id, res) in load_all(repo, FileKind::Snapshot, |id| repo.load_snapshot(id))? {
        match res {
            Ok(s) => snapshots.push((id, s)),
            Err(e) => {
                f.add(ObjectKind::Snapshot, id, reason_about(&e, &id));
                f.problems
                    .get_mut(&(ObjectKind::Snapshot, id))
                    .expect("just added")
                    .whole = true;
            }
        }
    }
    report.stats.snapshots = snapshots.len() as u64;

    progress.phase("checking packs");
    let stored: HashMap<Id, u64> = repo
        .list(FileKind::Pack)?
        .into_iter()
        .map(|(id, m)| (id, m.size))
        .collect();
    report.stats.packs_stored = stored.len() as u64;
    let mut indexed: Vec<Id> = pack_entries.keys().copied().collect();
    indexed.sort();
    for p in &indexed {
        let entries = &pack_entries[p];
        let reason = match stored.get(p) {
            None if index.obsolete.contains_key(p) => {
                // Prune deletes obsolete packs; only a blob still served from
                // it would be damage, and the walk finds that as a missing read.
                report
                    .notes
                    .push(format!("pack {p} is marked obsolete and already deleted"));
                continue;
            }
            None => "missing from storage".to_string(),
            Some(&size) => {
                let expected = expected_size(entries);
                if size == expected {
                    continue;
                }
                format!("size {size} bytes, the index implies {expected} (truncated or altered)")
            }
        };
        f.add(ObjectKind::Pack, *p, reason);
        for e in entries {
            f.taint(e.id, (ObjectKind::Pack, *p));
        }
    }
    let mut unindexed: Vec<&Id> = stored
        .keys()
        .filter(|p| !pack_entries.contains_key(p))
        .collect();
    unindexed.sort();
    for p in unindexed {
        report.notes.push(format!("pack {p} is not indexed (an interrupted backup leaves such packs: prune removes them, `repair index` indexes them)"));
    }

    if opts.read_data != ReadData::None {
        let present: Vec<Id> = indexed
            .iter()
            .copied()
            .filter(|p| stored.contains_key(p))
            .collect();
        let chosen = opts.read_data.select(&present);
        progress.phase("reading packs");
        read_packs(
            repo,
            &chosen,
            &pack_entries,
            &stored,
            opts.threads.unwrap_or(4),
            &mut f,
            &mut report,
            progress,
        )?;
    }

    progress.phase("checking trees");
    let index_damaged: Vec<Id> = f
        .problems
        .keys()
        .filter(|(k, _)| *k == ObjectKind::Index)
        .map(|(_, id)| *id)
        .collect();
    let mut walker = Walker {
        repo,
        index: &index,
        index_damaged,
        trees: HashMap::new(),
        memo: HashMap::new(),
        f: &mut f,
    };
    walker.load(snapshots.iter().map(|(_, s)| s.tree).collect())?;
    for (sid, snap) in &snapshots {
        for (path, bad) in walker.subtree(&snap.tree, "/") {
            let owners = walker.f.bad.get(&bad).cloned().unwrap_or_default();
            for o in owners {
                walker.f.affect(o, *sid, &path);
            }
        }
    }
    report.stats.trees = walker.trees.len() as u64;
    report.problems = f.into_problems();
    Ok(report)
}

/// Load every index file; damaged ones become problems. Also returns, per
/// pack, the entries exactly as the index files list them (the merged index
/// keeps one location per blob, which is not enough to check a pack).
fn load_index(
    repo: &Repository,
    f: &mut Findings,
    stats: &mut VerifyStats,
) -> Result<(Index, HashMap<Id, Vec<PackEntry>>)> {
    let mut index = Index::default();
    let mut per_pack: HashMap<Id, Vec<PackEntry>> = HashMap::new();
    for (id, res) in load_all(repo, FileKind::Index, |id| repo.load_index_file(id))? {
        match res {
            Ok(file) => {
                stats.index_files += 1;
                for p in &file.packs {
                    per_pack.entry(p.id).or_insert_with(|| {
                        let mut v = p.blobs.clone();
                        v.sort_by_key(|e| e.offset);
                        v
                    });
                }
                index.add_file(Some(id), file);
            }
            Err(e) => f.add(ObjectKind::Index, id, reason_about(&e, &id)),
        }
    }
    index.finish();
    stats.packs_indexed = per_pack.len() as u64;
    Ok((index, per_pack))
}

/// Load every file of a kind concurrently, keeping each one's error.
/// Storage errors other than damage abort: they say nothing about the data.
fn load_all<T: Send>(
    repo: &Repository,
    kind: FileKind,
    load: impl Fn(&Id) -> Result<T> + Sync,
) -> Result<Vec<(Id, Result<T>)>> {
    let mut ids: Vec<Id> = repo.list(kind)?.into_iter().map(|(id, _)| id).collect();
    ids.sort();
    let out: Vec<(Id, Result<T>)> =
        crate::repo::io_pool().install(|| ids.par_iter().map(|id| (*id, load(id))).collect());
    let mut kept = Vec::with_capacity(out.len());
    for (id, r) in out {
        match r {
            // Removed since the listing (forget, prune): not damage.
            Err(RepoError::Store(e)) if e.is_not_found() => {}
            Err(e) if !is_damage(&e) => return Err(e),
            r => kept.push((id, r)),
        }
    }
    Ok(kept)
}

/// Whether an error means the object is damaged (as opposed to storage being
/// unreachable, which must stop verify rather than be reported as damage).
pub fn is_damage(e: &RepoError) -> bool {
    match e {
        RepoError::Tampered { .. } | RepoError::Corrupt { .. } | RepoError::BlobNotFound { .. } => {
            true
        }
        RepoError::Store(s) => {
            s.is_not_found() || matches!(s, tidemark_store::StoreError::Truncated { .. })
        }
        _ => false,
    }
}

/// The exact size of a pack holding `entries` (sorted by offset): the blobs,
/// the sealed header (magic, version, one entry per blob) and its length.
pub fn expected_size(entries: &[PackEntry]) -> u64 {
    let blobs = entries
        .last()
        .map(|e| e.offset as u64 + e.length as u64)
        .unwrap_or(0);
    blobs + (OVERHEAD + 5 + HEADER_ENTRY_LEN * entries.len()) as u64 + 4
}

/// An error's message without the object's id, which the report line
/// already shows ("index X is corrupt: ..." becomes "index is corrupt: ...").
fn reason_about(e: &RepoError, id: &Id) -> String {
    e.to_string().replace(&format!(" {id}"), "")
}

/// The reason of a blob error without repeating "blob X in pack Y".
fn short_reason(e: &RepoError) -> String {
    match e {
        RepoError::Tampered { .. } => "authentication failed (altered or truncated)".into(),
        RepoError::Corrupt { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobType;

    #[test]
    fn subset_specs_parse_and_reject() {
        assert_eq!("10%".parse::<ReadData>().unwrap(), ReadData::Percent(10.0));
        assert_eq!(
            "2/5".parse::<ReadData>().unwrap(),
            ReadData::Part { n: 2, of: 5 }
        );
        for bad in ["0%", "101%", "x%", "0/5", "6/5", "3", "1/0"] {
            assert!(bad.parse::<ReadData>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn parts_cover_every_pack_once() {
        let packs: Vec<Id> = (0..200).map(|_| Id::random()).collect();
        let mut all: Vec<Id> = (1..=5)
            .flat_map(|n| ReadData::Part { n, of: 5 }.select(&packs))
            .collect();
        all.sort();
        let mut want = packs.clone();
        want.sort();
        assert_eq!(all, want);
    }

    #[test]
    fn percent_reads_that_share_and_differs_between_runs() {
        let packs: Vec<Id> = (0..100).map(|_| Id::random()).collect();
        let a = ReadData::Percent(10.0).select(&packs);
        let b = ReadData::Percent(10.0).select(&packs);
        assert_eq!(a.len(), 10);
        assert_ne!(a, b, "two random 10% samples of 100 packs were equal");
        assert_eq!(
            ReadData::Percent(0.5).select(&packs).len(),
            1,
            "a tiny share still reads one pack"
        );
    }

    #[test]
    fn expected_size_matches_a_real_pack() {
        use crate::blob::seal;
        use crate::crypto::MasterKey;
        use crate::pack::PackBuilder;
        let k = MasterKey::generate();
        let c = k.cipher();
        let mut b = PackBuilder::default();
        for i in 0..5u8 {
            let data = vec![i; 1000 * i as usize];
            b.add(seal(&c, k.blob_id(&data), BlobType::Data, 3, &data));
        }
        let p = b.finish(&c);
        assert_eq!(expected_size(&p.entries), p.bytes.len() as u64);
        assert_eq!(expected_size(&[]), (OVERHEAD + 9) as u64);
    }
}

#[cfg(test)]
mod engine_tests {
    use super::*;
    use crate::blob::BlobType;
    use crate::progress::NoProgress;
    use crate::walk::tests::{random_bytes, TestRepo};

    fn read_all() -> VerifyOptions {
        VerifyOptions {
            read_data: ReadData::All,
            threads: None,
        }
    }

    #[test]
    fn clean_repository_has_no_problems() {
        let t = TestRepo::new();
        let src = t.dir.path().join("src");
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::write(src.join("d/a"), random_bytes(200_000)).unwrap();
        t.backup(&[&src]);
        let r = verify(&t.repo, &read_all(), &NoProgress).unwrap();
        assert!(r.is_clean(), "{:?}", r.problems);
        assert!(
            r.stats.packs_read >= 2 && r.stats.trees >= 3,
            "{:?}",
            r.stats
        );
    }

    #[test]
    fn flipped_blob_names_pack_blob_and_file() {
        let t = TestRepo::new();
        let src = t.dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let data = random_bytes(100_000);
        std::fs::write(src.join("victim"), &data).unwrap();
        let (sid, _) = t.backup(&[&src]);
        let index = t.repo.load_index().unwrap();
        let (bid, loc) = index
            .iter()
            .find(|(_, l)| l.kind == BlobType::Data)
            .unwrap();
        let path = t
            .dir
            .path()
            .join("repo")
            .join(FileKind::Pack.key(&loc.pack));
        let mut b = std::fs::read(&path).unwrap();
        b[loc.offset as usize + 20] ^= 0x10;
        std::fs::write(&path, b).unwrap();

        let quick = verify(&t.repo, &VerifyOptions::default(), &NoProgress).unwrap();
        assert!(
            quick.is_clean(),
            "a flipped bit does not change the size: {:?}",
            quick.problems
        );
        let r = verify(&t.repo, &read_all(), &NoProgress).unwrap();
        let victim = format!("{}/victim", src.display());
        let pack = r
            .problems
            .iter()
            .find(|p| p.kind == ObjectKind::Pack)
            .expect("pack named");
        assert_eq!(pack.id, loc.pack);
        assert_eq!(
            pack.affected,
            vec![Affected {
                snapshot: sid,
                whole: false,
                paths: vec![victim.clone()]
            }]
        );
        let blob = r
            .problems
            .iter()
            .find(|p| p.kind == ObjectKind::Blob)
            .expect("blob named");
        assert_eq!(blob.id, bid);
        assert_eq!(blob.affected[0].paths, vec![victim]);
    }

    #[test]
    fn missing_pack_is_found_without_reading_data() {
        let t = TestRepo::new();
        let src = t.dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("f"), random_bytes(10_000)).unwrap();
        let (sid, _) = t.backup(&[&src]);
        let index = t.repo.load_index().unwrap();
        let (_, loc) = index
            .iter()
            .find(|(_, l)| l.kind == BlobType::Data)
            .unwrap();
        t.repo.delete_file(FileKind::Pack, &loc.pack).unwrap();
        let r = verify(&t.repo, &VerifyOptions::default(), &NoProgress).unwrap();
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        let p = &r.problems[0];
        assert_eq!((p.kind, p.id), (ObjectKind::Pack, loc.pack));
        assert!(p.reason.contains("missing"), "{}", p.reason);
        assert_eq!(p.affected[0].snapshot, sid);
        assert_eq!(p.affected[0].paths, vec![format!("{}/f", src.display())]);
    }

    #[test]
    fn damaged_tree_names_its_directory() {
        let t = TestRepo::new();
        let src = t.dir.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/f"), b"in the subtree").unwrap();
        let (sid, snap) = t.backup(&[&src]);
        let index = t.repo.load_index().unwrap();
        // Follow the source path down to the tree of `sub`.
        let mut tree = snap.tree;
        for c in src.join("sub").components().skip(1) {
            let node = t.repo.load_tree(&index, &tree).unwrap();
            tree = node.find(c.as_os_str()).unwrap().subtree.unwrap();
        }
        let loc = index.get(BlobType::Tree, &tree).unwrap();
        let path = t
            .dir
            .path()
            .join("repo")
            .join(FileKind::Pack.key(&loc.pack));
        let mut b = std::fs::read(&path).unwrap();
        b[loc.offset as usize + 15] ^= 1;
        std::fs::write(&path, b).unwrap();

        let r = verify(&t.repo, &VerifyOptions::default(), &NoProgress).unwrap();
        let p = r
            .problems
            .iter()
            .find(|p| p.kind == ObjectKind::Tree)
            .expect("tree named without read-data");
        assert_eq!(p.id, tree);
        let want = vec![Affected {
            snapshot: sid,
            whole: false,
            paths: vec![src.join("sub").display().to_string()],
        }];
        assert_eq!(p.affected, want);
        let r = verify(&t.repo, &read_all(), &NoProgress).unwrap();
        let pack = r
            .problems
            .iter()
            .find(|p| p.kind == ObjectKind::Pack)
            .unwrap();
        assert_eq!((pack.id, &pack.affected), (loc.pack, &want));
    }
}
