//! Restore of any part of an HDFS backup: one file, a tree, a root or
//! everything; to the original paths or under another directory; into the
//! same cluster or another one of any size (the data goes through the
//! target cluster's agents, straight from the repository to its DataNodes).
//!
//! 1. select: the backed-up paths asked for, found in the backup's tree;
//! 2. plan: where each lands; nothing existing is replaced without
//!    `overwrite` (a file that exists is refused and named, the rest goes
//!    on);
//! 3. execute: directories first (with their erasure-coding and storage
//!    policies, so files inherit them), then the files through the agents,
//!    each checked against the HDFS checksum recorded at backup, then
//!    owner, group, permission, ACL, xattrs and times (directories last,
//!    deepest first: creating a child moves its parent's mtime);
//! 4. report: counts, checks, what was capped or could not be set.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use tidemark_cluster::manifest::ClusterManifest;
use tidemark_repo::tree::{Node, NodeKind};
use tidemark_repo::{Id, Repository};

use crate::api::{self, WriteFile, WriteReply, WriteRequest};
use crate::backup::walk::Previous;
use crate::backup::{agents, blocking, check_agents};
use crate::config::{check_hdfs_path, nested, ClusterConfig};
use crate::error::{HdfsError, Result};
use crate::manifest::{attr, BackupDetail};
use crate::topology;
use crate::webhdfs::{FileChecksum, WebHdfs};

/// Attribute calls in flight at once.
const META_IN_FLIGHT: usize = 32;

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Backed-up paths to restore; empty: every root.
    pub paths: Vec<String>,
    /// Put each selected path under this directory (as `cp -r P DIR` does:
    /// DIR/<last name of P>) instead of at its own path.
    pub target_path: Option<String>,
    /// Replace files that exist.
    pub overwrite: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreReport {
    pub backup: String,
    pub source_cluster: String,
    pub target_cluster: String,
    /// (backed-up path, where it went).
    pub restored: Vec<(String, String)>,
    pub dirs: u64,
    pub files: u64,
    pub bytes: u64,
    /// Files whose HDFS checksum after the write equals the one recorded.
    pub checksums_matched: u64,
    /// Files with no comparable checksum (none recorded, or another kind).
    pub checksums_not_compared: u64,
    /// Files and directories that could not be restored (path, reason).
    pub failed: Vec<(String, String)>,
    pub notes: Vec<String>,
    pub duration_secs: f64,
}

/// One thing to create: where, and the backed-up node.
#[derive(Debug, Clone)]
struct Item {
    dest: String,
    node: Node,
    depth: usize,
}

pub async fn restore(
    repo: Arc<Repository>,
    backup_id: &Id,
    m: &ClusterManifest,
    target: &ClusterConfig,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    let t0 = Instant::now();
    let detail: BackupDetail = m.detail()?;
    let snap_id = m.nodes.first().ok_or_else(|| HdfsError::Invalid("the manifest has no namespace snapshot".into()))?.snapshot;
    if let Some(t) = &opts.target_path {
        check_hdfs_path(t).map_err(|e| HdfsError::Invalid(format!("--target-path: {e}")))?;
    }
    let paths: Vec<String> = if opts.paths.is_empty() { detail.roots.iter().map(|r| r.path.clone()).collect() } else { opts.paths.clone() };
    for p in &paths {
        check_hdfs_path(p).map_err(|e| HdfsError::Invalid(format!("--path: {e}")))?;
        if !detail.roots.iter().any(|r| nested(&r.path, p)) {
            let roots: Vec<&str> = detail.roots.iter().map(|r| r.path.as_str()).collect();
            return Err(HdfsError::Invalid(format!("{p} is not inside a root of this backup ({})", roots.join(", "))));
        }
    }

    // Select: every item below each path, parents before children.
    let (repo2, paths2, target_path) = (repo.clone(), paths.clone(), opts.target_path.clone());
    let (items, restored) = blocking(move || {
        let snap = repo2.load_snapshot(&snap_id)?;
        let index = Arc::new(repo2.load_index()?);
        let prev = Previous::new(repo2.clone(), index, Some(snap.tree));
        let mut items = Vec::new();
        let mut restored = Vec::new();
        for p in &paths2 {
            let node = prev
                .node(p.trim_start_matches('/'))
                .ok_or_else(|| HdfsError::Invalid(format!("{p} is not in backup {}", snap_id.short())))?;
            let dest = match &target_path {
                Some(t) => crate::backup::walk::abs(t, &node.name),
                None => p.clone(),
            };
            restored.push((p.clone(), dest.clone()));
            collect(&prev, node, dest, 0, &mut items)?;
        }
        Ok((items, restored))
    })
    .await?;

    let hdfs = WebHdfs::new(&target.hdfs.namenodes, &target.hdfs.user, target.hdfs.request_timeout);
    let topo = topology::discover(&hdfs).await?;
    if !topo.safe_mode.is_empty() {
        return Err(HdfsError::NotReady(format!("target NameNode {} is in safe mode: {}", topo.namenode, topo.safe_mode)));
    }
    let targets = agents(target)?;
    check_agents(&targets, &repo.config.id.to_hex()).await?;
    let live = topo.live_datanodes().max(1) as u16;

    let mut report = RestoreReport {
        backup: backup_id.to_hex(),
        source_cluster: m.cluster.clone(),
        target_cluster: target.name.clone(),
        restored: restored.clone(),
        ..Default::default()
    };

    // Plan: a selected file that exists is refused up front without overwrite.
    if !opts.overwrite {
        for (_, dest) in &restored {
            if let Some(it) = items.iter().find(|i| &i.dest == dest) {
                if it.node.kind == NodeKind::File {
                    match hdfs.status(dest).await {
                        Ok(_) => {
                            return Err(HdfsError::Invalid(format!(
                                "{dest} exists on {}; give --overwrite to replace it, or --target-path to restore elsewhere",
                                target.name
                            )))
                        }
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    // Directories, parents first, with the policies their files inherit.
    let dirs: Vec<&Item> = items.iter().filter(|i| i.node.kind == NodeKind::Dir).collect();
    for d in &dirs {
        // Writable by us until the attributes are set at the end.
        let res = async {
            hdfs.mkdirs(&d.dest, (d.node.mode & 0o7777) | 0o700).await?;
            if let Some(ec) = d.node.extra.get(attr::EC_POLICY) {
                hdfs.set_ec_policy(&d.dest, ec).await?;
            }
            if let Some(sp) = policy_name(&d.node, &detail) {
                hdfs.set_storage_policy(&d.dest, &sp).await?;
            }
            Ok::<_, HdfsError>(())
        }
        .await;
        match res {
            Ok(()) => report.dirs += 1,
            Err(e) => report.failed.push((d.dest.clone(), e.to_string())),
        }
    }

    // Files, through the agents.
    let mut capped = 0u64;
    let files: Vec<WriteFile> = items
        .iter()
        .filter(|i| i.node.kind == NodeKind::File)
        .map(|i| {
            let repl: Option<u16> = i.node.extra.get(attr::REPLICATION).and_then(|r| r.parse().ok());
            let replication = repl.map(|r| {
                if r > live {
                    capped += 1;
                }
                r.min(live)
            });
            WriteFile {
                path: i.dest.clone(),
                content: i.node.content.clone(),
                size: i.node.size,
                permission: (i.node.mode & 0o7777) | 0o600,
                replication,
                block_size: i.node.extra.get(attr::BLOCK_SIZE).and_then(|b| b.parse().ok()).filter(|b| *b > 0),
                overwrite: opts.overwrite,
                checksum: checksum_of(&i.node),
            }
        })
        .collect();
    if capped > 0 {
        report.notes.push(format!(
            "{capped} file(s) had a replication above the {live} live DataNode(s) of {}: restored with replication {live}",
            target.name
        ));
    }
    let restore_id = Id::random().to_hex();
    let mut batches: Vec<Vec<WriteFile>> = vec![Vec::new()];
    let mut bytes_in = 0u64;
    for f in files {
        let last = batches.last_mut().expect("one batch");
        if !last.is_empty() && (last.len() >= target.backup.batch_files || bytes_in + f.size > target.backup.batch_bytes) {
            batches.push(Vec::new());
            bytes_in = 0;
        }
        bytes_in += f.size;
        batches.last_mut().expect("one batch").push(f);
    }
    batches.retain(|b| !b.is_empty());
    let in_flight = targets.len() * target.backup.in_flight.max(1);
    let timeout = target.restore.timeout;
    let results: Vec<(Vec<WriteFile>, Result<WriteReply>)> = stream::iter(batches.into_iter().enumerate())
        .map(|(k, batch)| {
            let agent = &targets[k % targets.len()];
            let req = WriteRequest { restore: restore_id.clone(), files: batch };
            async move {
                let r = agent
                    .client
                    .post::<_, WriteReply>(api::WRITE, &req, timeout)
                    .await
                    .map_err(|e| HdfsError::Agent { agent: agent.name.clone(), reason: format!("writing files: {e}") });
                (req.files, r)
            }
        })
        .buffer_unordered(in_flight.max(1))
        .collect()
        .await;
    for (batch, r) in results {
        let reply = r?;
        for (f, w) in batch.iter().zip(reply.files) {
            match w.error {
                Some(e) => report.failed.push((f.path.clone(), e)),
                None => {
                    report.files += 1;
                    report.bytes += w.bytes;
                    match w.checksum_ok {
                        Some(true) => report.checksums_matched += 1,
                        _ => report.checksums_not_compared += 1,
                    }
                }
            }
        }
    }

    // Attributes: files first, then directories deepest first.
    let failed: std::collections::HashSet<String> = report.failed.iter().map(|(p, _)| p.clone()).collect();
    let mut order: Vec<&Item> = items.iter().filter(|i| i.node.kind != NodeKind::Symlink && !failed.contains(&i.dest)).collect();
    order.sort_by_key(|i| (i.node.kind == NodeKind::Dir, std::cmp::Reverse(i.depth)));
    let mut owner_refused = 0u64;
    let files_first: Vec<&Item> = order.iter().copied().filter(|i| i.node.kind == NodeKind::File).collect();
    let mut by_depth: BTreeMap<std::cmp::Reverse<usize>, Vec<&Item>> = BTreeMap::new();
    for d in order.iter().copied().filter(|i| i.node.kind == NodeKind::Dir) {
        by_depth.entry(std::cmp::Reverse(d.depth)).or_default().push(d);
    }
    let mut waves = vec![files_first];
    waves.extend(by_depth.into_values());
    for wave in waves {
        let outcomes: Vec<(String, Result<bool>)> = stream::iter(wave)
            .map(|i| {
                let (hdfs, detail) = (&hdfs, &detail);
                async move { (i.dest.clone(), set_attributes(hdfs, i, detail).await) }
            })
            .buffer_unordered(META_IN_FLIGHT)
            .collect()
            .await;
        for (path, r) in outcomes {
            match r {
                Ok(true) => {}
                Ok(false) => owner_refused += 1,
                Err(e) => report.failed.push((path, format!("setting attributes: {e}"))),
            }
        }
    }
    if owner_refused > 0 {
        report.notes.push(format!(
            "{owner_refused} entries keep user {} as owner: only the HDFS superuser may give files to other users",
            target.hdfs.user
        ));
    }
    let skipped = items.iter().filter(|i| i.node.kind == NodeKind::Symlink).count();
    if skipped > 0 {
        report.notes.push(format!("{skipped} symlink(s) not restored (WebHDFS symlinks are disabled on most clusters)"));
    }
    for i in items.iter().filter(|i| i.node.kind == NodeKind::Dir) {
        let q = i.node.extra.get(attr::NS_QUOTA);
        let sq = i.node.extra.get(attr::SPACE_QUOTA);
        if let Some(q) = q {
            report.notes.push(format!("quota of {}: hdfs dfsadmin -setQuota {q} {}", i.dest, i.dest));
        }
        if let Some(sq) = sq {
            report.notes.push(format!("space quota of {}: hdfs dfsadmin -setSpaceQuota {sq} {}", i.dest, i.dest));
        }
    }
    report.duration_secs = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// The items below `node` (included), parents first.
fn collect(prev: &Previous, node: Node, dest: String, depth: usize, out: &mut Vec<Item>) -> Result<()> {
    let subtree = node.subtree;
    let is_dir = node.kind == NodeKind::Dir;
    out.push(Item { dest: dest.clone(), node, depth });
    if is_dir {
        let id = subtree.ok_or_else(|| HdfsError::Invalid(format!("{dest}: directory without a tree in the backup")))?;
        let tree = prev.tree_by_id(&id).ok_or_else(|| HdfsError::Invalid(format!("{dest}: its tree {} cannot be read", id.short())))?;
        for child in &tree.nodes {
            collect(prev, child.clone(), crate::backup::walk::abs(&dest, &child.name), depth + 1, out)?;
        }
    }
    Ok(())
}

fn checksum_of(n: &Node) -> Option<FileChecksum> {
    let (alg, bytes) = n.extra.get(attr::CHECKSUM)?.split_once(':')?;
    Some(FileChecksum { algorithm: alg.into(), bytes: bytes.into(), length: 0 })
}

fn policy_name(n: &Node, d: &BackupDetail) -> Option<String> {
    let id: u8 = n.extra.get(attr::STORAGE_POLICY)?.parse().ok()?;
    d.storage_policies.get(&id).cloned()
}

/// Owner, permission, ACL, xattrs, storage policy, times. Ok(false) when
/// the owner could not be set (not the superuser); the rest is still set.
async fn set_attributes(hdfs: &WebHdfs, i: &Item, d: &BackupDetail) -> Result<bool> {
    let n = &i.node;
    let mut owner_set = true;
    let nothing_to_change = n.user.is_empty() || (n.user == hdfs.user() && n.group.is_empty());
    if !nothing_to_change {
        if let Err(e) = hdfs.set_owner(&i.dest, &n.user, &n.group).await {
            if !e.is_permission() {
                return Err(e);
            }
            owner_set = n.user == hdfs.user();
            // A non-superuser may still give the file to one of its groups.
            let _ = hdfs.set_owner(&i.dest, hdfs.user(), &n.group).await;
        }
    }
    if let Some(acl) = n.extra.get(attr::ACL) {
        hdfs.modify_acl(&i.dest, acl).await?;
    }
    // After the ACL: the group bits of the permission are the ACL's mask.
    hdfs.set_permission(&i.dest, n.mode & 0o7777).await?;
    for (k, v) in &n.extra {
        if let Some(name) = k.strip_prefix(attr::XATTR) {
            // CREATE on a new file; REPLACE where an overwritten one had it.
            if let Err(e) = hdfs.set_xattr(&i.dest, name, v, false).await {
                hdfs.set_xattr(&i.dest, name, v, true).await.map_err(|_| e)?;
            }
        }
    }
    if n.kind == NodeKind::File {
        if let Some(sp) = policy_name(n, d) {
            hdfs.set_storage_policy(&i.dest, &sp).await?;
        }
    }
    hdfs.set_times(&i.dest, n.mtime_ns / 1_000_000, n.atime_ns / 1_000_000).await?;
    Ok(owner_set)
}
