//! Whole cluster backups into another repository (`tidemark cluster copy`,
//! an offsite copy), manifest included, so the copy is listed, verified and
//! restored there like the original.
//!
//! The engine's `copy` stores each node snapshot under the target's own
//! keys, so the copies get new snapshot ids and their files new chunk ids.
//! The manifest therefore cannot be saved as it is: each node's `snapshot`
//! is replaced by its copy's id, and each node's `detail` is rewritten by
//! the adapter ([`NodeRewrite`]) from the copied tree where it holds
//! key-dependent data (Cassandra's SSTable content hashes). The rewritten
//! manifest is saved last, after every node snapshot is in the target, so a
//! listed backup there is always complete. A backup whose tag the target
//! already lists is skipped; node snapshots copied by an interrupted earlier
//! run are reused (the engine skips them).
//!
//! - [`resolve`]: the backups to copy, and which the target has already;
//! - [`copy_backup`]: one backup, node snapshots then manifest.

use std::collections::HashMap;

use serde::Serialize;
use tidemark_repo::copy::{copied_originals, copy, CopyOptions};
use tidemark_repo::crypto::MasterKey;
use tidemark_repo::index::Index;
use tidemark_repo::lock::{Lock, LockKind};
use tidemark_repo::progress::Progress;
use tidemark_repo::snapshot::Snapshot;
use tidemark_repo::tree::NodeKind;
use tidemark_repo::{Id, Repository};

use crate::error::{ClusterError, Result};
use crate::manifest::{self, ClusterManifest, NodeBackup};

/// Path (`/dir/name` from the snapshot's root) -> (size, chunk ids) of every
/// file in a copied node snapshot.
pub type CopiedFiles = HashMap<String, (u64, Vec<Id>)>;

/// An adapter's rewrite of one node's `detail` for the target repository,
/// given the files of the node's copied snapshot and the target's key.
pub type NodeRewrite = fn(node: &NodeBackup, files: &CopiedFiles, key: &MasterKey) -> Result<serde_json::Value>;

/// The rewrite of a store whose details hold nothing key-dependent.
pub fn keep_detail(node: &NodeBackup, _files: &CopiedFiles, _key: &MasterKey) -> Result<serde_json::Value> {
    Ok(node.detail.clone())
}

#[derive(Debug, Serialize)]
pub struct Copied {
    /// The backup's id in the source repository.
    pub source: Id,
    /// Its id in the target (the rewritten manifest's).
    pub target: Id,
    /// Source node snapshot -> its copy.
    pub node_snapshots: Vec<(Id, Id)>,
    /// Whether the target already listed it (nothing copied).
    pub already_there: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct CopyReport {
    pub backups: Vec<Copied>,
    pub bytes_read: u64,
    pub bytes_new_stored: u64,
}

/// One backup to copy.
#[derive(Debug)]
pub struct Todo {
    pub id: Id,
    pub manifest: ClusterManifest,
    /// Its id in the target, when the target lists its tag already.
    pub in_target: Option<Id>,
}

/// The backups `specs` name (id prefixes or `latest`), each once, all
/// resolved before anything is copied.
pub fn resolve(src: &Repository, dst: &Repository, cluster: &str, specs: &[String]) -> Result<Vec<Todo>> {
    let mut todo: Vec<Todo> = Vec::new();
    for spec in specs {
        let (id, manifest) = manifest::find(src, Some(cluster), spec).map_err(|e| ClusterError::Stopped {
            what: format!("backup {spec} of cluster {cluster}: nothing was copied"),
            source: Some(Box::new(e)),
        })?;
        if !todo.iter().any(|t| t.id == id) {
            todo.push(Todo { id, manifest, in_target: None });
        }
    }
    let in_target: HashMap<String, Id> =
        manifest::list(dst, Some(cluster))?.into_iter().map(|(id, m)| (m.tag, id)).collect();
    for t in &mut todo {
        t.in_target = in_target.get(&t.manifest.tag).copied();
    }
    Ok(todo)
}

/// Copies one backup (nothing if the target has it) and adds it to the
/// report. `rewrite_for` gives the rewrite of the manifest's store, None for
/// a store this program has no adapter for.
pub fn copy_backup(
    src: &Repository,
    dst: &Repository,
    todo: Todo,
    opts: &CopyOptions,
    rewrite_for: fn(&str) -> Option<NodeRewrite>,
    progress: &dyn Progress,
    report: &mut CopyReport,
) -> Result<()> {
    let Todo { id, manifest: m, in_target } = todo;
    if let Some(target) = in_target {
        report.backups.push(Copied { source: id, target, node_snapshots: Vec::new(), already_there: true });
        return Ok(());
    }
    let stopped = |what: String| move |e: ClusterError| ClusterError::Stopped { what, source: Some(Box::new(e)) };
    let rewrite = rewrite_for(&m.store).ok_or_else(|| ClusterError::Manifest {
        id: id.to_string(),
        reason: format!("store {:?} has no adapter in this tidemark: nothing was copied", m.store),
    })?;
    let snaps: Vec<(Id, Snapshot)> = m
        .nodes
        .iter()
        .map(|n| Ok((n.snapshot, src.load_snapshot(&n.snapshot)?)))
        .collect::<Result<_>>()
        .map_err(stopped(format!("reading the node snapshots of backup {}", id.short())))?;
    // Held until the manifest is saved: until then the copied node
    // snapshots are referenced by nothing in the target, and a `cluster
    // forget` there must not take them for leftovers of a crash.
    let lock = Lock::acquire(dst, LockKind::Copy)?;
    let out = copy(src, dst, &snaps, opts, progress)
        .map_err(ClusterError::from)
        .map_err(stopped(format!("copying backup {}: its manifest was not saved in the target", id.short())))?;
    report.bytes_read += out.bytes_read;
    report.bytes_new_stored += out.bytes_new_stored;
    let copies = copied_originals(&dst.list_snapshots()?);
    let rewritten = rewrite_manifest(dst, &m, &copies, rewrite)
        .map_err(stopped(format!("rewriting the manifest of backup {}", id.short())))?;
    let target = manifest::save(dst, &rewritten)?;
    lock.release();
    report.backups.push(Copied {
        source: id,
        target,
        node_snapshots: m.nodes.iter().zip(&rewritten.nodes).map(|(a, b)| (a.snapshot, b.snapshot)).collect(),
        already_there: false,
    });
    Ok(())
}

/// The manifest as the target must hold it: node snapshot ids of the
/// copies, details as the adapter rewrites them from the copied trees.
fn rewrite_manifest(
    dst: &Repository,
    m: &ClusterManifest,
    copies: &HashMap<Id, Id>,
    rewrite: NodeRewrite,
) -> Result<ClusterManifest> {
    let index = dst.load_index()?;
    let mut out = m.clone();
    for n in &mut out.nodes {
        let copy = *copies.get(&n.snapshot).ok_or_else(|| ClusterError::Node {
            node: n.node.clone(),
            reason: format!("snapshot {} has no copy in the target", n.snapshot.short()),
        })?;
        let snap = dst.load_snapshot(&copy)?;
        let files = files_of(dst, &index, &snap.tree)?;
        n.detail = rewrite(n, &files, dst.key())?;
        n.snapshot = copy;
    }
    Ok(out)
}

/// Path -> (size, chunk ids) of every file in a snapshot's tree.
fn files_of(repo: &Repository, index: &Index, root: &Id) -> Result<CopiedFiles> {
    let mut files = HashMap::new();
    let mut todo = vec![(String::new(), *root)];
    while let Some((dir, id)) = todo.pop() {
        for n in repo.load_tree(index, &id)?.nodes {
            let path = format!("{dir}/{}", n.name);
            match (n.kind, n.subtree) {
                (NodeKind::Dir, Some(sub)) => todo.push((path, sub)),
                (NodeKind::File, _) => {
                    files.insert(path, (n.size, n.content));
                }
                _ => {}
            }
        }
    }
    Ok(files)
}
