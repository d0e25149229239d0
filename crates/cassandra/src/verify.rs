//! Verify one cluster backup: is every node's part there and intact?
//!
//! Structure check (always): every node snapshot loads; every tree of it
//! loads (trees are read and authenticated); every SSTable the manifest lists
//! is in its node snapshot with the listed size and content id
//! ([`crate::api::file_content`], the function the agent used); every chunk
//! of the snapshot is in the index, and every pack holding one is stored
//! with the size its index entries imply.
//!
//! With `read_data`, every distinct chunk of the backup's node snapshots is
//! downloaded and authenticated by the engine's own reader
//! (`Repository::read_blob`: decrypt, decompress, keyed hash equals the id).
//! Unlike the engine's `verify --read-data`, which reads every pack of the
//! repository, this reads only what this backup needs.
//!
//! Damage is reported per node, table and file, so the operator knows which
//! table to restore from another backup.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::Serialize;
use tidemark_cluster::ClusterManifest;
use tidemark_repo::blob::BlobType;
use tidemark_repo::index::Index;
use tidemark_repo::pack::PackEntry;
use tidemark_repo::tree::NodeKind;
use tidemark_repo::verify::{expected_size, is_damage};
use tidemark_repo::{FileKind, Id, RepoError, Repository};

use crate::api::file_content;
use crate::error::Result;
use crate::manifest::NodeDetail;

/// Chunks downloaded at once with `read_data`: storage latency bounds it.
const READERS: usize = 4;
/// Reasons shown per damaged file; the rest are counted.
const MAX_REASONS: usize = 3;

/// One damaged part of the backup.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Damage {
    pub node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyspace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// The file or directory inside the node snapshot; none when the whole
    /// node snapshot is unreadable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub reason: String,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {}", self.node)?;
        if let (Some(k), Some(t)) = (&self.keyspace, &self.table) {
            write!(f, " table {k}.{t}")?;
        }
        if let Some(p) = &self.path {
            write!(f, " {p}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub nodes: u64,
    pub tables: u64,
    /// SSTable files the manifest lists.
    pub sstables: u64,
    /// All files of the node snapshots.
    pub files: u64,
    /// Distinct chunks of the node snapshots.
    pub chunks: u64,
    pub packs: u64,
    pub chunks_read: u64,
    pub bytes_read: u64,
    pub damage: Vec<Damage>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty()
    }
}

/// A file of a node snapshot, as its tree records it.
struct FileRef {
    size: u64,
    content: Vec<Id>,
}

/// What the walk of one node snapshot found.
#[derive(Default)]
struct Scan {
    files: BTreeMap<String, FileRef>,
    /// Directories whose tree cannot be read, with the reason.
    bad_dirs: Vec<(String, String)>,
}

/// (keyspace, table).
type TableName = (String, String);
/// Where a chunk is used: (node index, path, table of the path).
type Use = (usize, String, Option<TableName>);

/// Damage gathered per (node, path), reasons merged.
#[derive(Default)]
struct Found {
    by_place: BTreeMap<(String, String), (Option<TableName>, Vec<String>)>,
}

impl Found {
    fn add(&mut self, node: &str, table: Option<TableName>, path: &str, reason: String) {
        let e = self
            .by_place
            .entry((node.to_string(), path.to_string()))
            .or_insert((table, Vec::new()));
        if !e.1.contains(&reason) {
            e.1.push(reason);
        }
    }

    fn into_damage(self) -> Vec<Damage> {
        self.by_place
            .into_iter()
            .map(|((node, path), (table, reasons))| {
                let mut reason = reasons
                    .iter()
                    .take(MAX_REASONS)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ");
                if reasons.len() > MAX_REASONS {
                    reason.push_str(&format!("; and {} more", reasons.len() - MAX_REASONS));
                }
                let (keyspace, table) = table.map_or((None, None), |(k, t)| (Some(k), Some(t)));
                Damage {
                    node,
                    keyspace,
                    table,
                    path: (!path.is_empty()).then_some(path),
                    reason,
                }
            })
            .collect()
    }
}

/// Checks the backup `m`; see the module doc. Errors are kept for what says
/// nothing about the data (storage unreachable); damage goes in the report.
/// Synchronous: call it from a blocking thread.
pub fn verify(repo: &Repository, m: &ClusterManifest, read_data: bool) -> Result<VerifyReport> {
    let mut report = VerifyReport {
        nodes: m.nodes.len() as u64,
        ..Default::default()
    };
    let mut found = Found::default();

    // The per-file entries of every pack, as the engine's verify keeps them:
    // the merged index holds one location per blob, not enough for sizes.
    let mut index = Index::default();
    let mut pack_entries: HashMap<Id, Vec<PackEntry>> = HashMap::new();
    for (id, file) in repo.load_index_files()? {
        for p in &file.packs {
            pack_entries.entry(p.id).or_insert_with(|| {
                let mut v = p.blobs.clone();
                v.sort_by_key(|e| e.offset);
                v
            });
        }
        index.add_file(Some(id), file);
    }
    index.finish();
    let stored: HashMap<Id, u64> = repo
        .list(FileKind::Pack)?
        .into_iter()
        .map(|(id, o)| (id, o.size))
        .collect();
    let mut pack_state: HashMap<Id, Option<String>> = HashMap::new();
    let mut pack_problem = |p: Id| -> Option<String> {
        pack_state
            .entry(p)
            .or_insert_with(|| match stored.get(&p) {
                None => Some(format!("pack {p} is missing from storage")),
                Some(&size) => {
                    let want = pack_entries
                        .get(&p)
                        .map(|e| expected_size(e))
                        .unwrap_or(size);
                    (size != want).then(|| {
                        format!("pack {p} has {size} bytes, its index entries imply {want}")
                    })
                }
            })
            .clone()
    };

    // chunk -> every (node, path, table) using it, for read_data.
    let mut users: HashMap<Id, Vec<Use>> = HashMap::new();
    let mut tables = BTreeSet::new();
    for (ni, nb) in m.nodes.iter().enumerate() {
        let node = nb.node.as_str();
        let snap = match repo.load_snapshot(&nb.snapshot) {
            Ok(s) => s,
            Err(e) if is_damage(&e) => {
                found.add(
                    node,
                    None,
                    "",
                    format!("repository snapshot {} cannot be read: {e}", nb.snapshot),
                );
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let detail: NodeDetail = match nb.detail() {
            Ok(d) => d,
            Err(e) => {
                found.add(node, None, "", e.to_string());
                continue;
            }
        };
        let scan = walk(repo, &index, &snap.tree)?;
        report.files += scan.files.len() as u64;
        // Paths of the manifest's SSTables, with their table.
        let mut listed: HashMap<String, (String, String)> = HashMap::new();
        for t in &detail.tables {
            tables.insert((t.keyspace.clone(), t.table.clone()));
            let dir = t.dir.trim_end_matches('/');
            for f in &t.files {
                report.sstables += 1;
                let path = format!("{dir}/{}", f.name);
                let table = Some((t.keyspace.clone(), t.table.clone()));
                listed.insert(path.clone(), (t.keyspace.clone(), t.table.clone()));
                let Some(have) = scan.files.get(&path) else {
                    let why = match scan
                        .bad_dirs
                        .iter()
                        .find(|(d, _)| path.starts_with(&format!("{d}/")))
                    {
                        Some((d, r)) => format!("its directory {d} cannot be read: {r}"),
                        None => format!("missing from the node snapshot {}", nb.snapshot.short()),
                    };
                    found.add(node, table, &path, why);
                    continue;
                };
                if have.size != f.size {
                    found.add(
                        node,
                        table.clone(),
                        &path,
                        format!(
                            "{} bytes in the snapshot, {} in the manifest",
                            have.size, f.size
                        ),
                    );
                }
                if file_content(repo.key(), &have.content) != f.content {
                    found.add(
                        node,
                        table,
                        &path,
                        "content differs from what the manifest recorded".into(),
                    );
                }
            }
        }
        for (d, r) in &scan.bad_dirs {
            let hit = listed.keys().any(|p| p.starts_with(&format!("{d}/")));
            if !hit {
                found.add(node, None, d, format!("directory cannot be read: {r}"));
            }
        }
        for (path, f) in &scan.files {
            let table = listed.get(path).cloned();
            for c in &f.content {
                match index.get(BlobType::Data, c) {
                    None => found.add(
                        node,
                        table.clone(),
                        path,
                        format!("chunk {c} is not in the index"),
                    ),
                    Some(loc) => {
                        if let Some(why) = pack_problem(loc.pack) {
                            found.add(node, table.clone(), path, why);
                        }
                        users
                            .entry(*c)
                            .or_default()
                            .push((ni, path.clone(), table.clone()));
                    }
                }
            }
        }
    }
    report.tables = tables.len() as u64;
    report.chunks = users.len() as u64;
    report.packs = users
        .keys()
        .filter_map(|c| index.get(BlobType::Data, c).map(|l| l.pack))
        .collect::<BTreeSet<_>>()
        .len() as u64;

    if read_data {
        let chunks: Vec<Id> = users.keys().copied().collect();
        let ReadOutcome { bad, read, bytes } = read_chunks(repo, &index, &chunks)?;
        report.chunks_read = read;
        report.bytes_read = bytes;
        for (c, why) in bad {
            for (ni, path, table) in &users[&c] {
                found.add(
                    &m.nodes[*ni].node,
                    table.clone(),
                    path,
                    format!("chunk {c}: {why}"),
                );
            }
        }
    }
    report.damage = found.into_damage();
    Ok(report)
}

/// Walks a node snapshot from its root; a tree that cannot be read is
/// recorded with its path and the walk goes on beside it.
fn walk(repo: &Repository, index: &Index, root: &Id) -> Result<Scan> {
    let mut scan = Scan::default();
    let mut todo = vec![(String::new(), *root)];
    while let Some((dir, id)) = todo.pop() {
        let tree = match repo.load_tree(index, &id) {
            Ok(t) => t,
            Err(e) if is_damage(&e) => {
                let shown = if dir.is_empty() { "/".to_string() } else { dir };
                scan.bad_dirs.push((shown, short(&e)));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        for n in tree.nodes {
            let path = format!("{dir}/{}", n.name);
            match (n.kind, n.subtree) {
                (NodeKind::Dir, Some(sub)) => todo.push((path, sub)),
                (NodeKind::File, _) => {
                    scan.files.insert(
                        path,
                        FileRef {
                            size: n.size,
                            content: n.content,
                        },
                    );
                }
                _ => {}
            }
        }
    }
    Ok(scan)
}

/// What reading the chunks found.
struct ReadOutcome {
    /// Damaged chunks with the reason.
    bad: Vec<(Id, String)>,
    read: u64,
    /// Plaintext bytes of the chunks read.
    bytes: u64,
}

/// Downloads and authenticates every chunk, a few at a time.
fn read_chunks(repo: &Repository, index: &Index, chunks: &[Id]) -> Result<ReadOutcome> {
    let next = AtomicUsize::new(0);
    let bytes = AtomicU64::new(0);
    let read = AtomicU64::new(0);
    let bad = Mutex::new(Vec::new());
    let fatal: Mutex<Option<RepoError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..READERS {
            s.spawn(|| loop {
                if fatal.lock().expect("poisoned").is_some() {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(c) = chunks.get(i) else { return };
                match repo.read_blob(index, BlobType::Data, c) {
                    Ok(plain) => {
                        read.fetch_add(1, Ordering::Relaxed);
                        bytes.fetch_add(plain.len() as u64, Ordering::Relaxed);
                    }
                    Err(e) if is_damage(&e) => bad.lock().expect("poisoned").push((*c, short(&e))),
                    Err(e) => *fatal.lock().expect("poisoned") = Some(e),
                }
            });
        }
    });
    if let Some(e) = fatal.into_inner().expect("poisoned") {
        return Err(e.into());
    }
    Ok(ReadOutcome {
        bad: bad.into_inner().expect("poisoned"),
        read: read.into_inner(),
        bytes: bytes.into_inner(),
    })
}

fn short(e: &RepoError) -> String {
    match e {
        RepoError::Tampered { .. } => format!("authentication failed (altered or truncated): {e}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{SstableFile, TableFiles};
    use tidemark_cluster::NodeBackup;
    use tidemark_repo::keyfile::KdfParams;
    use tidemark_repo::{InitOptions, RepoError};

    struct Fixture {
        dir: tempfile::TempDir,
        repo: Repository,
        _rt: tokio::runtime::Runtime,
    }

    /// A real repository holding one node snapshot with two tables, and
    /// the manifest an agent would have written for it.
    fn fixture() -> (Fixture, ClusterManifest) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store: tidemark_store::DynStore =
            std::sync::Arc::new(tidemark_store::LocalStore::new(dir.path().join("repo")));
        let mut config = tidemark_repo::config::RepoConfig::new();
        config.chunker = tidemark_repo::config::ChunkerParams {
            min_size: 4096,
            avg_size: 16384,
            max_size: 65536,
        };
        let repo = Repository::init(
            store,
            rt.handle().clone(),
            b"pw",
            InitOptions {
                kdf: KdfParams::insecure_fast(),
                config,
            },
        )
        .unwrap();
        let node = dir.path().join("node1");
        for (t, n) in [("ks/t1-aaaa", 200_000usize), ("ks/t2-bbbb", 30_000)] {
            std::fs::create_dir_all(node.join(t)).unwrap();
            let mut data = vec![0u8; n];
            tidemark_repo::crypto::fill_random(&mut data);
            std::fs::write(node.join(t).join("nb-1-big-Data.db"), &data).unwrap();
            std::fs::write(node.join(t).join("nb-1-big-TOC.txt"), b"Data.db\nTOC.txt\n").unwrap();
        }
        std::fs::write(node.join("cassandra.yaml"), b"cluster_name: c\n").unwrap();
        let opts = tidemark_repo::backup::BackupOptions {
            paths: vec![node.clone()],
            ..Default::default()
        };
        let out = tidemark_repo::backup::backup(&repo, &opts, &tidemark_repo::progress::NoProgress)
            .unwrap();
        let index = repo.load_index().unwrap();
        let scan = walk(&repo, &index, &out.snapshot.tree).unwrap();
        let tables = ["t1-aaaa", "t2-bbbb"]
            .iter()
            .map(|t| {
                let d = format!("{}/ks/{t}", node.display());
                let files = scan
                    .files
                    .iter()
                    .filter(|(p, _)| p.starts_with(&format!("{d}/")))
                    .map(|(p, f)| SstableFile {
                        name: p.rsplit('/').next().unwrap().into(),
                        size: f.size,
                        content: file_content(repo.key(), &f.content),
                    })
                    .collect();
                TableFiles {
                    keyspace: "ks".into(),
                    table: t[..2].into(),
                    table_id: t[3..].into(),
                    dir: d,
                    files,
                }
            })
            .collect();
        let detail = NodeDetail {
            datacenter: "dc1".into(),
            rack: "rack1".into(),
            tokens: vec!["1".into()],
            release_version: "5.0".into(),
            tables,
            cassandra_yaml: format!("{}/cassandra.yaml", node.display()),
        };
        let m = ClusterManifest {
            version: 1,
            store: "cassandra".into(),
            cluster: "c".into(),
            tag: "t".into(),
            started: chrono::Utc::now(),
            finished: chrono::Utc::now(),
            nodes: vec![NodeBackup {
                node: "127.0.1.1".into(),
                host_id: "h1".into(),
                agent: "http://127.0.0.1:7401".into(),
                snapshot: out.id,
                cut_at: chrono::Utc::now(),
                uploaded_at: chrono::Utc::now(),
                summary: out.snapshot.summary.clone(),
                detail: serde_json::to_value(detail).unwrap(),
            }],
            detail: serde_json::Value::Null,
            program_version: String::new(),
        };
        (Fixture { dir, repo, _rt: rt }, m)
    }

    fn detail(m: &ClusterManifest) -> NodeDetail {
        m.nodes[0].detail().unwrap()
    }

    #[test]
    fn intact_backup_is_clean_and_read_whole() {
        let (f, m) = fixture();
        let r = verify(&f.repo, &m, false).unwrap();
        assert!(r.is_clean(), "{:?}", r.damage);
        assert_eq!((r.nodes, r.tables, r.sstables, r.files), (1, 2, 4, 5));
        assert_eq!(r.chunks_read, 0);
        let r = verify(&f.repo, &m, true).unwrap();
        assert!(r.is_clean(), "{:?}", r.damage);
        assert_eq!(r.chunks_read, r.chunks);
        assert!(r.bytes_read >= 230_000, "{}", r.bytes_read);
    }

    #[test]
    fn a_file_unlike_the_manifest_is_named_with_its_table() {
        let (f, mut m) = fixture();
        let mut d = detail(&m);
        d.tables[1].files[0].size += 1;
        d.tables[1].files[1].content = "00".repeat(32);
        d.tables[0].files.push(SstableFile {
            name: "nb-2-big-Data.db".into(),
            size: 1,
            content: String::new(),
        });
        m.nodes[0].detail = serde_json::to_value(&d).unwrap();
        let r = verify(&f.repo, &m, false).unwrap();
        let got: Vec<String> = r.damage.iter().map(|d| d.to_string()).collect();
        assert_eq!(r.damage.len(), 3, "{got:?}");
        assert!(
            got.iter()
                .any(|s| s.starts_with("node 127.0.1.1 table ks.t1 ")
                    && s.contains("nb-2-big-Data.db: missing")),
            "{got:?}"
        );
        let t2: Vec<&Damage> = r
            .damage
            .iter()
            .filter(|x| x.table.as_deref() == Some("t2"))
            .collect();
        assert_eq!(t2.len(), 2, "{got:?}");
        assert!(
            t2.iter()
                .any(|x| x.reason.contains("bytes in the snapshot")),
            "{got:?}"
        );
        assert!(
            t2.iter().any(|x| x.reason.contains("content differs")),
            "{got:?}"
        );
    }

    #[test]
    fn a_damaged_pack_is_found_by_read_data_and_a_missing_one_without() {
        let (f, m) = fixture();
        let d = detail(&m);
        let index = f.repo.load_index().unwrap();
        let scan = walk(
            &f.repo,
            &index,
            &f.repo.load_snapshot(&m.nodes[0].snapshot).unwrap().tree,
        )
        .unwrap();
        let data1 = format!("{}/nb-1-big-Data.db", d.tables[0].dir);
        let chunk = scan.files[&data1].content[1];
        let loc = index.get(BlobType::Data, &chunk).unwrap();
        let path = f
            .dir
            .path()
            .join("repo")
            .join(FileKind::Pack.key(&loc.pack));
        let mut b = std::fs::read(&path).unwrap();
        b[loc.offset as usize + 20] ^= 1;
        std::fs::write(&path, &b).unwrap();

        // Same size: only reading the data finds it.
        assert!(verify(&f.repo, &m, false).unwrap().is_clean());
        let r = verify(&f.repo, &m, true).unwrap();
        let hit = r
            .damage
            .iter()
            .find(|x| x.path.as_deref() == Some(data1.as_str()))
            .expect("damaged file named");
        assert_eq!(
            (
                hit.node.as_str(),
                hit.keyspace.as_deref(),
                hit.table.as_deref()
            ),
            ("127.0.1.1", Some("ks"), Some("t1"))
        );
        assert!(hit.reason.contains(&chunk.to_string()), "{}", hit.reason);

        std::fs::remove_file(&path).unwrap();
        let r = verify(&f.repo, &m, false).unwrap();
        let hit = r
            .damage
            .iter()
            .find(|x| x.path.as_deref() == Some(data1.as_str()))
            .expect("file of the missing pack named");
        assert!(
            hit.reason.contains("missing from storage"),
            "{}",
            hit.reason
        );
        assert!(matches!(
            f.repo.load_snapshot(&m.nodes[0].snapshot),
            Ok(_) | Err(RepoError::Store(_))
        ));
    }
}
