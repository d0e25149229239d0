//! Walking one root's snapshot into tree nodes, reusing the previous
//! backup wherever HDFS says nothing changed.
//!
//! A full walk lists every directory of the snapshot. An incremental walk
//! lists only the directories the snapshot diff touches (see `diff`): a
//! directory no diff path lies in or below keeps its previous tree blob as
//! it is, without a single NameNode call, and a renamed directory with
//! nothing changed inside is found at its old path and reused whole.
//!
//! In the directories that are listed, a file keeps its previous chunk list
//! (no read) when the previous backup has a file at the same path, or at
//! the path it was renamed from, with the same inode id, length and
//! modification time, and every chunk is still stored. Everything else is
//! marked for reading by the agents.
//!
//! Memory: the walk holds only the directories being listed and the paths
//! of those waiting to be; each listed directory goes straight to the
//! `assemble` step, which writes its tree as soon as it is complete.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures_util::stream::{FuturesUnordered, StreamExt};
use globset::{Glob, GlobSet, GlobSetBuilder};
use tidemark_repo::index::Index;
use tidemark_repo::tree::{Node, NodeKind, Tree};
use tidemark_repo::{Id, Repository};

use tokio::sync::mpsc;

use super::assemble::Parent;
use super::diff::Changes;
use crate::error::{HdfsError, Result};
use crate::manifest::attr;
use crate::webhdfs::{EntryKind, FileStatus, WebHdfs};

/// ACL and xattr calls in flight per listed directory.
const ATTR_CALLS: usize = 16;

/// Paths left out of every backup (globs over absolute paths).
#[derive(Debug, Clone)]
pub struct Exclude(GlobSet);

impl Exclude {
    pub fn new(patterns: &[String]) -> std::result::Result<Exclude, String> {
        let mut b = GlobSetBuilder::new();
        for p in patterns {
            let g = globset::GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("{p:?}: {e}"))?;
            b.add(g);
            // "a/**" should also leave out "a" itself.
            if let Some(dir) = p.strip_suffix("/**") {
                b.add(Glob::new(dir).map_err(|e| format!("{p:?}: {e}"))?);
            }
        }
        Ok(Exclude(b.build().map_err(|e| e.to_string())?))
    }

    pub fn matches(&self, path: &str) -> bool {
        self.0.is_match(path)
    }
}

/// One entry of a listed directory, on its way into a tree.
#[derive(Debug)]
pub struct Entry {
    pub node: Node,
    pub todo: Todo,
}

#[derive(Debug)]
pub enum Todo {
    /// Ready as it is (reused file, symlink, reused directory).
    Done,
    /// A file the agents must read (`length` bytes, from the snapshot).
    Read { length: u64 },
    /// A directory listed too: its tree is the walk's directory `index`.
    Dir(usize),
    /// Left out: a file that could not be read, a directory that could not
    /// be listed (named in the backup's `unreadable`).
    Skip,
}

/// A listed directory.
#[derive(Debug)]
pub struct DirWork {
    /// Path relative to the root ("" for the root itself).
    pub rel: String,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct WalkStats {
    pub dirs_listed: u64,
    pub dirs_reused: u64,
    pub files_reused: u64,
    pub files_to_read: u64,
    pub bytes_to_read: u64,
}

/// What the walk hands over, directory by directory, each after its
/// parent; directories are numbered in the order they are found, the root 0.
#[derive(Debug)]
pub enum Found {
    Dir { index: usize, parent: Parent, dir: DirWork },
    /// The backup user may not list it: left out of the tree, and named.
    Unlisted { index: usize, parent: Parent, rel: String, why: String },
}

/// The previous backup's trees, looked up by path (loaded on demand, cached).
pub struct Previous {
    repo: Arc<Repository>,
    index: Arc<Index>,
    /// The previous tree of this root, if any.
    root: Option<Id>,
    cache: Mutex<HashMap<Id, Arc<Tree>>>,
}

impl Previous {
    pub fn new(repo: Arc<Repository>, index: Arc<Index>, root: Option<Id>) -> Previous {
        Previous { repo, index, root, cache: Mutex::new(HashMap::new()) }
    }

    /// A tree of the previous backup by id (cached).
    pub fn tree_by_id(&self, id: &Id) -> Option<Arc<Tree>> {
        self.tree(id)
    }

    fn tree(&self, id: &Id) -> Option<Arc<Tree>> {
        if let Some(t) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            return Some(t.clone());
        }
        let t = Arc::new(self.repo.load_tree(&self.index, id).ok()?);
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() > 4096 {
            c.clear();
        }
        c.insert(*id, t.clone());
        Some(t)
    }

    /// The previous node at `rel` (relative to the root); for "" the root
    /// directory's tree as a node with only `subtree` set.
    pub fn node(&self, rel: &str) -> Option<Node> {
        let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
        let mut subtree = self.root?;
        if comps.is_empty() {
            let mut n = empty_node("");
            n.kind = NodeKind::Dir;
            n.subtree = Some(subtree);
            return Some(n);
        }
        let mut found = None;
        for (k, comp) in comps.iter().enumerate() {
            let t = self.tree(&subtree)?;
            let n = t.nodes.iter().find(|n| n.name == *comp)?.clone();
            if k + 1 < comps.len() {
                subtree = n.subtree?;
            }
            found = Some(n);
        }
        found
    }

    pub fn listing(&self, rel: &str) -> Option<Arc<Tree>> {
        let id = self.node(rel)?.subtree?;
        self.tree(&id)
    }

    pub fn has_all(&self, content: &[Id]) -> bool {
        content.iter().all(|id| self.index.has_live(tidemark_repo::blob::BlobType::Data, id))
    }
}

/// A tree node from an HDFS status (times in ns, type and permission in
/// `mode`, HDFS attributes in `extra`).
pub fn node_from(name: &str, s: &FileStatus) -> Node {
    let mut n = empty_node(name);
    let perm = s.mode_bits();
    let (kind, ty) = match s.kind {
        EntryKind::File => (NodeKind::File, 0o100000),
        EntryKind::Directory => (NodeKind::Dir, 0o040000),
        EntryKind::Symlink => (NodeKind::Symlink, 0o120000),
    };
    n.kind = kind;
    n.mode = ty | (perm & 0o7777);
    n.user = s.owner.clone();
    n.group = s.group.clone();
    n.mtime_ns = s.modification_time.saturating_mul(1_000_000);
    n.atime_ns = s.access_time.saturating_mul(1_000_000);
    n.inode = s.file_id;
    n.links = 1;
    if kind == NodeKind::File {
        n.size = s.length;
        n.extra.insert(attr::REPLICATION.into(), s.replication.to_string());
        n.extra.insert(attr::BLOCK_SIZE.into(), s.block_size.to_string());
    }
    n.extra.insert(attr::FILE_ID.into(), s.file_id.to_string());
    if let Some(p) = s.storage_policy.filter(|p| *p != 0) {
        n.extra.insert(attr::STORAGE_POLICY.into(), p.to_string());
    }
    if let Some(ec) = s.ec_policy.as_ref().filter(|e| !e.is_empty()) {
        n.extra.insert(attr::EC_POLICY.into(), ec.clone());
    }
    if let Some(t) = &s.symlink {
        n.target = Some(t.clone());
    }
    n
}

pub fn empty_node(name: &str) -> Node {
    Node::new(name, NodeKind::File)
}

/// Whether a previous node is the same file, unchanged: the inode id,
/// length and modification time agree.
fn same_file(prev: &Node, now: &Node) -> bool {
    prev.kind == NodeKind::File
        && now.kind == NodeKind::File
        && prev.extra.get(attr::FILE_ID) == now.extra.get(attr::FILE_ID)
        && prev.size == now.size
        && prev.mtime_ns == now.mtime_ns
}

/// The ACL and xattrs of the previous node, carried to `now`.
fn carry_attrs(prev: &Node, now: &mut Node) {
    for (k, v) in &prev.extra {
        if k == attr::ACL || k.starts_with(attr::XATTR) || k == attr::NS_QUOTA || k == attr::SPACE_QUOTA {
            now.extra.insert(k.clone(), v.clone());
        }
    }
}

/// What a walk needs to know about one root.
pub struct Walk<'a> {
    pub hdfs: &'a WebHdfs,
    pub root: &'a str,
    /// `<root>/.snapshot/<name>`: where the snapshot's entries are read.
    pub snap_root: String,
    pub exclude: &'a Exclude,
    /// None: a full walk (everything listed).
    pub changes: Option<&'a Changes>,
    pub previous: Arc<Previous>,
    pub listers: usize,
    /// Directories up to this depth below the root get their quotas read.
    pub quota_depth: usize,
}

pub fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

pub fn abs(root: &str, rel: &str) -> String {
    if rel.is_empty() {
        root.to_string()
    } else if root == "/" {
        format!("/{rel}")
    } else {
        format!("{root}/{rel}")
    }
}

impl Walk<'_> {
    /// Lists what must be listed, handing each directory over as soon as
    /// it is listed (waiting while `tx` is full, so the walk never runs far
    /// ahead of the reads). A directory below the root that the backup user
    /// may not list is handed over as `Unlisted`; the root itself must be
    /// listable.
    pub async fn run(&self, tx: mpsc::Sender<Found>) -> Result<WalkStats> {
        let mut stats = WalkStats::default();
        let mut next = 1usize;
        // Last in, first out: deep before wide, so directories complete
        // (and leave memory) early.
        let mut queue: Vec<(usize, Parent, String)> = vec![(0, None, String::new())];
        let mut running = FuturesUnordered::new();
        loop {
            while running.len() < self.listers.max(1) {
                let Some((i, parent, rel)) = queue.pop() else { break };
                running.push(async move {
                    let listed = self.list_dir(&rel).await;
                    (i, parent, rel, listed)
                });
            }
            let Some((i, parent, rel, listed)) = running.next().await else { break };
            let found = match listed {
                Ok((mut entries, subdirs)) => {
                    stats.dirs_listed += 1;
                    for (entry_index, sub) in subdirs {
                        entries[entry_index].todo = Todo::Dir(next);
                        queue.push((next, Some((i, entry_index)), sub));
                        next += 1;
                    }
                    for e in &entries {
                        match (&e.todo, e.node.kind) {
                            (Todo::Read { length }, _) => {
                                stats.files_to_read += 1;
                                stats.bytes_to_read += length;
                            }
                            (Todo::Done, NodeKind::File) => stats.files_reused += 1,
                            (Todo::Done, NodeKind::Dir) => stats.dirs_reused += 1,
                            _ => {}
                        }
                    }
                    Found::Dir { index: i, parent, dir: DirWork { rel, entries } }
                }
                Err(e) if i != 0 && e.is_permission() => Found::Unlisted { index: i, parent, rel, why: e.to_string() },
                Err(e) => return Err(e),
            };
            tx.send(found).await.map_err(|_| HdfsError::Invalid("the backup stopped taking the walk's directories".into()))?;
        }
        Ok(stats)
    }

    /// Lists one directory of the snapshot; returns its entries and the
    /// subdirectories that must be listed too (entry index, rel path).
    async fn list_dir(&self, rel: &str) -> Result<(Vec<Entry>, Vec<(usize, String)>)> {
        let listing = self.hdfs.list(&abs(&self.snap_root, rel)).await?;
        let old_rel = self.changes.map_or_else(|| rel.to_string(), |c| c.old_path(rel));
        let prev = {
            let p = self.previous.clone();
            let o = old_rel.clone();
            tokio::task::spawn_blocking(move || p.listing(&o))
                .await
                .map_err(|e| HdfsError::Invalid(format!("loading the previous tree: {e}")))?
        };
        // By name: a directory of many entries is not searched once per entry.
        let prev_by_name: HashMap<&str, &Node> = prev.as_ref().map(|t| t.nodes.iter().map(|n| (n.name.as_str(), n)).collect()).unwrap_or_default();
        let depth = rel.split('/').filter(|c| !c.is_empty()).count();
        let mut entries = Vec::with_capacity(listing.len());
        let mut subdirs = Vec::new();
        // Entries whose ACL and xattrs must be asked for (by entry index),
        // and the status each came from.
        let mut fetch: Vec<usize> = Vec::new();
        let mut statuses: Vec<&FileStatus> = Vec::with_capacity(listing.len());
        for s in &listing {
            let name = s.path_suffix.as_str();
            let child = join(rel, name);
            if self.exclude.matches(&abs(self.root, &child)) {
                continue;
            }
            let mut node = node_from(name, s);
            // Where this entry was in the previous backup.
            let prev_node: Option<Node> = match self.changes {
                Some(c) if c.renamed_into(&child) => {
                    let (p, o) = (self.previous.clone(), c.old_path(&child));
                    tokio::task::spawn_blocking(move || p.node(&o)).await.ok().flatten()
                }
                _ => prev_by_name.get(name).map(|n| (*n).clone()),
            };
            // Attributes that need calls of their own are carried over
            // unless the diff names the entry (chmod, setfacl, setxattr).
            let touched = self.changes.is_none_or(|c| c.touched(&child));
            let same_inode = prev_node.as_ref().is_some_and(|p| p.extra.get(attr::FILE_ID) == node.extra.get(attr::FILE_ID));
            match (&prev_node, touched || !same_inode) {
                (Some(p), false) => carry_attrs(p, &mut node),
                _ => fetch.push(entries.len()),
            }
            let todo = match s.kind {
                EntryKind::File => match &prev_node {
                    Some(p) if same_file(p, &node) && self.previous.has_all(&p.content) => {
                        node.content = p.content.clone();
                        if let Some(c) = p.extra.get(attr::CHECKSUM) {
                            node.extra.insert(attr::CHECKSUM.into(), c.clone());
                        }
                        Todo::Done
                    }
                    // Nothing to read: no agent round trip for an empty file.
                    _ if s.length == 0 => Todo::Done,
                    _ => Todo::Read { length: s.length },
                },
                EntryKind::Directory => {
                    let dirty = self.changes.is_none_or(|c| c.dirty(&child));
                    match prev_node.as_ref().and_then(|p| p.subtree) {
                        Some(id) if !dirty && prev_node.as_ref().is_some_and(|p| p.kind == NodeKind::Dir) => {
                            node.subtree = Some(id);
                            for k in [attr::TREE_FILES, attr::TREE_BYTES] {
                                if let Some(v) = prev_node.as_ref().and_then(|p| p.extra.get(k)) {
                                    node.extra.insert(k.into(), v.clone());
                                }
                            }
                            Todo::Done
                        }
                        _ => {
                            subdirs.push((entries.len(), child));
                            Todo::Done
                        }
                    }
                }
                EntryKind::Symlink => Todo::Done,
            };
            entries.push(Entry { node, todo });
            statuses.push(s);
        }
        // One call or two per entry: several at once, so a directory of
        // many files does not wait on them one by one.
        let fetched: Vec<(usize, Result<Node>)> = futures_util::stream::iter(fetch)
            .map(|i| {
                let mut node = entries[i].node.clone();
                let path = abs(&self.snap_root, &join(rel, &node.name));
                let st = statuses[i];
                async move {
                    let r = self.fetch_attrs(&path, st, &mut node, depth + 1).await;
                    (i, r.map(|()| node))
                }
            })
            .buffer_unordered(ATTR_CALLS)
            .collect()
            .await;
        for (i, node) in fetched {
            let node = node?;
            entries[i].node.extra = node.extra;
        }
        Ok((entries, subdirs))
    }

    /// ACL, xattrs and (near the root) quotas of one entry.
    async fn fetch_attrs(&self, path: &str, s: &FileStatus, node: &mut Node, depth: usize) -> Result<()> {
        if s.acl_bit {
            let acl = self.hdfs.acl(path).await?;
            if !acl.entries.is_empty() {
                node.extra.insert(attr::ACL.into(), acl.entries.join(","));
            }
        }
        match self.hdfs.xattrs(path).await {
            Ok(x) => {
                for (k, v) in x {
                    node.extra.insert(format!("{}{k}", attr::XATTR), v);
                }
            }
            // Xattrs of namespaces the user may not read are not listed;
            // an entry the user may not read at all fails its read later.
            Err(e) if e.is_permission() => {}
            Err(e) => return Err(e),
        }
        if s.kind == EntryKind::Directory && depth <= self.quota_depth {
            if let Ok((q, sq)) = self.hdfs.quota(path).await {
                if q >= 0 {
                    node.extra.insert(attr::NS_QUOTA.into(), q.to_string());
                }
                if sq >= 0 {
                    node.extra.insert(attr::SPACE_QUOTA.into(), sq.to_string());
                }
            }
        }
        Ok(())
    }
}

/// Files and bytes below a directory node (recorded in its `extra`).
pub fn tree_totals(n: &Node) -> (u64, u64) {
    let get = |k: &str| n.extra.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
    (get(attr::TREE_FILES), get(attr::TREE_BYTES))
}

pub fn set_tree_totals(n: &mut Node, (files, bytes): (u64, u64)) {
    n.extra.insert(attr::TREE_FILES.into(), files.to_string());
    n.extra.insert(attr::TREE_BYTES.into(), bytes.to_string());
}

/// Names in `set` and every ancestor of theirs (relative paths).
pub fn with_ancestors(paths: impl IntoIterator<Item = String>) -> HashSet<String> {
    let mut out = HashSet::new();
    for p in paths {
        let mut cur = p.trim_matches('/').to_string();
        loop {
            if !out.insert(cur.clone()) {
                break;
            }
            match cur.rfind('/') {
                Some(i) => cur.truncate(i),
                None if !cur.is_empty() => cur.clear(),
                None => break,
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_match_whole_components() {
        let e = Exclude::new(&["**/_temporary/**".into(), "/data/tmp/*.log".into()]).unwrap();
        assert!(e.matches("/data/x/_temporary"));
        assert!(e.matches("/data/x/_temporary/0/part"));
        assert!(!e.matches("/data/x/_temporary_not"));
        assert!(e.matches("/data/tmp/a.log"));
        assert!(!e.matches("/data/tmp/sub/a.log"));
        assert!(Exclude::new(&["[".into()]).is_err());
    }

    #[test]
    fn ancestors_are_included_up_to_the_root() {
        let s = with_ancestors(["a/b/c".to_string(), "x".to_string()]);
        for p in ["a/b/c", "a/b", "a", "", "x"] {
            assert!(s.contains(p), "{p} missing from {s:?}");
        }
        assert_eq!(s.len(), 5);
    }
}
