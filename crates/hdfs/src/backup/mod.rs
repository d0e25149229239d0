//! The coordinator's HDFS backup.
//!
//! 1. check: the active NameNode answers, is out of safe mode, and every
//!    agent is up and writes to this repository;
//! 2. cut: one snapshot `tidemark-<tag>` per root (each root made
//!    snapshottable first when allowed, else refused naming the admin
//!    command); a snapshot is atomic and O(1) in the NameNode;
//! 3. walk: the diff since the previous backup's snapshot of the root
//!    (full walk when there is none), listing only what changed (`walk`);
//! 4. read: the new and changed files' bytes go from the DataNodes through
//!    the agents straight into the repository (`read`); none through here;
//! 5. commit: the trees and one repository snapshot, then ONE cluster
//!    manifest in the catalog (a backup without a manifest does not exist);
//! 6. release: the snapshots older than this one are deleted; this one stays
//!    for the next diff. After a failure this one goes and the previous
//!    stays.

pub mod assemble;
pub mod diff;
pub mod read;
pub mod walk;

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tidemark_cluster::manifest::{self, ClusterManifest, NodeBackup, MANIFEST_VERSION};
use tidemark_cluster::AgentClient;
use tidemark_repo::index::Index;
use tidemark_repo::ingest::{Session, SessionStats};
use tidemark_repo::lock::{Lock, LockKind};
use tidemark_repo::progress::Progress;
use tidemark_repo::snapshot::{BackupSummary, Snapshot};
use tidemark_repo::tree::{Node, Tree};
use tidemark_repo::{Id, Repository};

use crate::api::{self, AgentStatus, FinishReply, SessionRequest};
use crate::config::ClusterConfig;
use crate::error::{HdfsError, Result};
use crate::manifest::{AgentWork, BackupDetail, RootCut, Timings, NAMESPACE};
use crate::topology;
use crate::webhdfs::WebHdfs;
use assemble::{Assembly, ToRead};
use diff::Changes;
use tokio::sync::mpsc;
use walk::{abs, Exclude, Found, Previous, Walk};

/// Every snapshot tidemark takes starts so (it is the backup's tag);
/// others are never touched.
pub use tidemark_cluster::tag::{new_tag, TAG_PREFIX as SNAPSHOT_PREFIX};
/// Tag of the repository snapshots of HDFS backups.
pub const STORE_TAG: &str = "hdfs";
/// Directories this deep below a root get their quotas recorded.
const QUOTA_DEPTH: usize = 2;
const STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Host name of the repository snapshots: `hdfs/<cluster>/namespace`.
pub fn hostname(cluster: &str) -> String {
    tidemark_cluster::tag::hostname(crate::STORE, cluster, NAMESPACE)
}

/// A committed backup.
#[derive(Debug)]
pub struct Outcome {
    pub id: Id,
    pub manifest: ClusterManifest,
    /// Files left out because they could not be read (path, reason).
    pub unreadable: Vec<(String, String)>,
}

pub async fn backup(config: &ClusterConfig, repo: Arc<Repository>, progress: Option<&dyn Progress>) -> Result<Outcome> {
    let say = |m: &str| {
        tracing::info!("{m}");
        if let Some(p) = progress {
            p.phase(m);
        }
    };
    let t0 = Instant::now();
    let started = Utc::now();
    let hdfs = WebHdfs::new(&config.hdfs.namenodes, &config.hdfs.user, config.hdfs.request_timeout);
    say("checking the cluster (active NameNode, safe mode, agents)");
    let topo = topology::discover(&hdfs).await?;
    topology::refuse(&topo)?;
    let agents = agents(config)?;
    check_agents(&agents, &repo.config.id.to_hex()).await?;
    let check_secs = t0.elapsed().as_secs_f64();

    let tag = new_tag(started);
    say(&format!("snapshot {tag} of {} root(s)", config.hdfs.roots.len()));
    let t = Instant::now();
    let mut cuts = Vec::new();
    for root in &config.hdfs.roots {
        match cut(&hdfs, config, root, &tag).await {
            Ok(at) => cuts.push((root.clone(), at)),
            Err(e) => {
                release(&hdfs, &cuts, &tag, progress).await;
                return Err(e);
            }
        }
    }
    let snapshot_secs = t.elapsed().as_secs_f64();

    // Held until the snapshot and manifest are saved: prune must not take
    // the packs the agents write before a snapshot references them. Taken
    // and released on a blocking thread (its release touches the store).
    let (repo2, name) = (repo.clone(), config.name.clone());
    let locked = blocking(move || {
        let lock = Lock::acquire(&repo2, LockKind::Backup)?;
        let index = repo2.load_index()?;
        let before = previous(&repo2, &name)?;
        Ok((lock, index, before))
    })
    .await;
    let (lock, index, before) = match locked {
        Ok(x) => x,
        Err(e) => {
            release(&hdfs, &cuts, &tag, progress).await;
            return Err(e);
        }
    };
    let run = Run { config, repo: repo.clone(), hdfs: &hdfs, agents: &agents, tag: tag.clone(), progress };
    let result = run.capture(&topo, &cuts, Arc::new(index), before, started, t0, check_secs, snapshot_secs, &say).await;
    let _ = blocking(move || {
        lock.release();
        Ok(())
    })
    .await;
    match &result {
        Ok(_) => {
            // This snapshot is the next diff's base; older ones are not needed.
            for root in &config.hdfs.roots {
                if let Err(e) = delete_older(&hdfs, root, &tag).await {
                    warn(progress, &format!("deleting older tidemark snapshots of {root}: {e}"));
                }
            }
        }
        Err(_) => {
            let open: Vec<&read::Target> = agents.iter().collect();
            abort(&open, &tag).await;
            release(&hdfs, &cuts, &tag, progress).await;
        }
    }
    result
}

fn warn(progress: Option<&dyn Progress>, m: &str) {
    match progress {
        Some(p) => p.warn(m),
        None => tracing::warn!("{m}"),
    }
}

pub fn agents(config: &ClusterConfig) -> Result<Vec<read::Target>> {
    let token = config.token()?;
    Ok(config
        .agents
        .node
        .iter()
        .map(|a| read::Target { name: a.name.clone(), client: AgentClient::new(&a.url, token.clone()), datanode: a.datanode.clone() })
        .collect())
}

/// Every agent answers, is an HDFS agent and writes to this repository.
pub async fn check_agents(agents: &[read::Target], repository_id: &str) -> Result<()> {
    let replies = futures_util::future::join_all(agents.iter().map(|a| a.client.get::<AgentStatus>(api::STATUS, STATUS_TIMEOUT))).await;
    let mut problems = Vec::new();
    for (a, r) in agents.iter().zip(replies) {
        match r {
            Err(e) => problems.push(format!("{}: {e}", a.name)),
            Ok(s) if s.store != crate::STORE => problems.push(format!("{} is a {} agent, not an HDFS one", a.name, s.store)),
            Ok(s) if s.repository_id != repository_id => problems.push(format!(
                "{} writes to repository {}, this cluster's is {repository_id}",
                a.name, s.repository_id
            )),
            Ok(s) => {
                if let Err(e) = s.namenode {
                    problems.push(format!("{} cannot reach a NameNode: {e}", a.name));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(HdfsError::NotReady(format!("agents not ready: {}", problems.join("; "))))
    }
}

/// Makes `root` snapshottable if needed and allowed, and snapshots it.
async fn cut(hdfs: &WebHdfs, config: &ClusterConfig, root: &str, tag: &str) -> Result<DateTime<Utc>> {
    let st = hdfs.status(root).await.map_err(|e| {
        if e.is_not_found() {
            HdfsError::NotReady(format!("root {root} does not exist"))
        } else {
            e
        }
    })?;
    if st.kind != crate::webhdfs::EntryKind::Directory {
        return Err(HdfsError::NotReady(format!("root {root} is not a directory")));
    }
    let admin = format!("hdfs dfsadmin -allowSnapshot {root}");
    if st.snapshot_enabled != Some(true) {
        if !config.hdfs.allow_snapshot {
            return Err(HdfsError::NotReady(format!(
                "root {root} is not snapshottable and allow-snapshot is off; an HDFS admin must run: {admin}"
            )));
        }
        hdfs.allow_snapshot(root).await.map_err(|e| {
            HdfsError::NotReady(format!(
                "root {root} is not snapshottable, and user {} may not make it so ({e}); an HDFS admin must run: {admin}",
                hdfs.user()
            ))
        })?;
    }
    hdfs.create_snapshot(root, tag).await.map_err(|e| {
        if e.is_permission() {
            HdfsError::NotReady(format!(
                "user {} may not snapshot {root} ({e}); it must own the directory or be the HDFS superuser",
                hdfs.user()
            ))
        } else {
            e
        }
    })?;
    Ok(Utc::now())
}

/// Deletes this backup's snapshots (after a failure).
async fn release(hdfs: &WebHdfs, cuts: &[(String, DateTime<Utc>)], tag: &str, progress: Option<&dyn Progress>) {
    for (root, _) in cuts {
        if let Err(e) = hdfs.delete_snapshot(root, tag).await {
            warn(progress, &format!("deleting snapshot {tag} of {root} failed (remove it with: hdfs dfs -deleteSnapshot {root} {tag}): {e}"));
        }
    }
}

async fn delete_older(hdfs: &WebHdfs, root: &str, keep: &str) -> Result<()> {
    for name in hdfs.snapshots(root).await? {
        if name.starts_with(SNAPSHOT_PREFIX) && name.as_str() < keep {
            hdfs.delete_snapshot(root, &name).await?;
        }
    }
    Ok(())
}

async fn abort(agents: &[&read::Target], tag: &str) {
    let req = SessionRequest { tag: tag.to_string() };
    let _ = futures_util::future::join_all(agents.iter().map(|a| a.client.post::<_, bool>(api::ABORT, &req, STATUS_TIMEOUT))).await;
}

struct Run<'a> {
    config: &'a ClusterConfig,
    repo: Arc<Repository>,
    hdfs: &'a WebHdfs,
    agents: &'a [read::Target],
    tag: String,
    progress: Option<&'a dyn Progress>,
}

/// The previous backup of this cluster: its manifest's detail and snapshot.
struct Before {
    detail: BackupDetail,
    tree: Id,
}

impl Run<'_> {
    #[allow(clippy::too_many_arguments)]
    async fn capture(
        &self,
        topo: &topology::Topology,
        cuts: &[(String, DateTime<Utc>)],
        index: Arc<Index>,
        before: Option<Before>,
        started: DateTime<Utc>,
        t0: Instant,
        check_secs: f64,
        snapshot_secs: f64,
        say: &(dyn Fn(&str) + Sync),
    ) -> Result<Outcome> {
        let config = self.config;

        say(&format!("opening backup sessions on {} agents", self.agents.len()));
        let req = SessionRequest { tag: self.tag.clone() };
        for a in self.agents {
            a.client
                .post::<_, SessionRequest>(api::BEGIN, &req, STATUS_TIMEOUT)
                .await
                .map_err(|e| HdfsError::Agent { agent: a.name.clone(), reason: format!("opening the backup session: {e}") })?;
        }

        let exclude = Exclude::new(&config.hdfs.exclude).map_err(HdfsError::Invalid)?;
        // Trees are written as directories complete, all through one session.
        let session = Session::new(&self.repo, &index);
        let save = |t: Tree| tokio::task::block_in_place(|| session.save_tree(t));
        let mut done = Vec::new();
        let mut reads = Reads { shares: vec![read::Share::default(); self.agents.len()], ..Default::default() };
        let (mut walk_secs, mut files_reused) = (0.0, 0u64);
        for (root, at) in cuts {
            say(&format!("walking {root} and reading its new files"));
            let r = self.back_up_root(root, *at, before.as_ref(), &index, &exclude, &save, &mut reads).await?;
            walk_secs += r.walk_secs;
            files_reused += r.stats.files_reused;
            done.push(r);
        }
        let mut agent_stats: Vec<SessionStats> = Vec::new();
        for a in self.agents {
            let f: FinishReply = a
                .client
                .post(api::FINISH, &req, config.backup.timeout)
                .await
                .map_err(|e| HdfsError::Agent { agent: a.name.clone(), reason: format!("finishing the backup session: {e}") })?;
            agent_stats.push(f.stats);
        }
        let read_secs = reads.secs;
        let Reads { unreadable, files_read, shares, peak_held, .. } = reads;

        say("writing the top of the tree and the snapshot");
        // Ancestors of the roots, for the tree from "/" down.
        let mut ancestors = std::collections::BTreeMap::new();
        let mut top: Vec<(String, Node)> = Vec::new();
        let mut all_totals = (0u64, 0u64);
        let mut root_cuts = Vec::new();
        for r in done {
            let st = self.hdfs.status(&r.cut.path).await?;
            let mut n = walk::node_from(r.cut.path.rsplit('/').next().unwrap_or(""), &st);
            n.subtree = Some(r.tree.0);
            walk::set_tree_totals(&mut n, r.tree.1);
            all_totals = (all_totals.0 + r.tree.1 .0, all_totals.1 + r.tree.1 .1);
            let mut p = r.cut.path.as_str();
            while let Some(i) = p.rfind('/') {
                p = &p[..i];
                let a = if p.is_empty() { "/" } else { p };
                if !ancestors.contains_key(a) {
                    ancestors.insert(a.to_string(), self.hdfs.status(a).await?);
                }
                if p.is_empty() {
                    break;
                }
            }
            top.push((r.cut.path.clone(), n));
            root_cuts.push(r.cut);
        }
        let unread = unreadable.len() as u64;
        let tree = nest(top, &ancestors, &save)?;
        let coord_stats = tokio::task::block_in_place(|| session.finish())?;
        tracing::info!(peak_held, "entries held at most in directories in progress");

        let mut summary = BackupSummary {
            files_new: files_read,
            files_unmodified: files_reused,
            total_files: all_totals.0,
            total_bytes: all_totals.1,
            errors: unread,
            duration_secs: t0.elapsed().as_secs_f64(),
            ..Default::default()
        };
        for s in &agent_stats {
            summary.bytes_read += s.bytes_read;
            summary.blobs_new += s.blobs_new;
            summary.data_added += s.data_added;
            summary.data_added_stored += s.data_added_stored;
        }
        summary.blobs_new += coord_stats.blobs_new;
        summary.data_added += coord_stats.data_added;
        summary.data_added_stored += coord_stats.data_added_stored;
        for c in &root_cuts {
            summary.dirs += c.dirs_listed + c.dirs_reused;
        }

        let snapshot = Snapshot {
            time: Utc::now(),
            hostname: hostname(&config.name),
            username: config.hdfs.user.clone(),
            paths: config.hdfs.roots.clone(),
            tags: vec![self.tag.clone(), STORE_TAG.to_string()],
            tree,
            parent: before.as_ref().map(|b| b.tree),
            incomplete: unread > 0,
            program_version: concat!("tidemark ", env!("CARGO_PKG_VERSION")).into(),
            summary: summary.clone(),
            original: None,
        };
        let agents_work = self
            .agents
            .iter()
            .zip(shares.iter().zip(&agent_stats))
            .map(|(a, (sh, st))| AgentWork {
                name: a.name.clone(),
                files: sh.files,
                local_files: sh.local_files,
                bytes_read: st.bytes_read,
                data_added_stored: st.data_added_stored,
            })
            .collect();
        let conf = self.hdfs.conf().await.unwrap_or_else(|e| format!("<!-- not read: {e} -->"));
        let detail = BackupDetail {
            namenode: topo.namenode.clone(),
            version: topo.version.clone(),
            cluster_id: topo.cluster_id.clone(),
            user: config.hdfs.user.clone(),
            roots: root_cuts,
            exclude: config.hdfs.exclude.clone(),
            datanodes: topo.datanodes.clone(),
            storage_policies: topo.storage_policies.clone(),
            conf,
            agents: agents_work,
            unreadable: unreadable.clone(),
            timings: Timings { check_secs, snapshot_secs, walk_secs, read_secs, total_secs: t0.elapsed().as_secs_f64() },
        };
        let (repo, name, tag) = (self.repo.clone(), config.name.clone(), self.tag.clone());
        let cut_at = cuts.iter().map(|c| c.1).min().unwrap_or(started);
        let cluster_id = topo.cluster_id.clone();
        let (id, m) = blocking(move || {
            let snap_id = repo.save_snapshot(&snapshot)?;
            let m = ClusterManifest {
                version: MANIFEST_VERSION,
                store: crate::STORE.into(),
                cluster: name,
                tag,
                started,
                finished: Utc::now(),
                nodes: vec![NodeBackup {
                    node: NAMESPACE.into(),
                    host_id: cluster_id,
                    agent: "coordinator".into(),
                    snapshot: snap_id,
                    cut_at,
                    uploaded_at: snapshot.time,
                    summary: snapshot.summary.clone(),
                    detail: serde_json::Value::Null,
                }],
                detail: serde_json::to_value(detail).expect("detail serialises"),
                program_version: env!("CARGO_PKG_VERSION").into(),
            };
            // The snapshot and manifest are stored before the lock goes.
            let id = manifest::save(&repo, &m)?;
            Ok((id, m))
        })
        .await?;
        Ok(Outcome { id, manifest: m, unreadable })
    }
}

impl Run<'_> {
    /// Backs up one root: walks it (by the diff against the previous
    /// backup's snapshot of it when that snapshot is still there, else in
    /// full) while the agents read its new files slice by slice, and writes
    /// each directory's tree as soon as it is complete.
    #[allow(clippy::too_many_arguments)]
    async fn back_up_root(
        &self,
        root: &str,
        at: DateTime<Utc>,
        before: Option<&Before>,
        index: &Arc<Index>,
        exclude: &Exclude,
        save: &(dyn Fn(Tree) -> tidemark_repo::Result<Id> + Sync),
        reads: &mut Reads,
    ) -> Result<RootDone> {
        let prev_cut = before.and_then(|b| b.detail.roots.iter().find(|c| c.path == root));
        let prev_tree = match before {
            Some(b) => {
                let whole = Previous::new(self.repo.clone(), index.clone(), Some(b.tree));
                let rel = root.trim_start_matches('/').to_string();
                blocking(move || Ok(whole.node(&rel).and_then(|n| n.subtree))).await?
            }
            None => None,
        };
        let mut full_reason = None;
        let mut changes = None;
        match (prev_cut, before) {
            (None, _) | (_, None) => full_reason = Some("first backup of this root".to_string()),
            (Some(_), Some(b)) if b.detail.exclude != self.config.hdfs.exclude => {
                full_reason = Some("the exclude patterns changed since the previous backup".into())
            }
            (Some(c), Some(_)) if prev_tree.is_none() => {
                full_reason = Some(format!("the previous backup's tree of {} is not readable", c.path))
            }
            (Some(c), Some(_)) => {
                let present = self.hdfs.snapshots(root).await?;
                if present.contains(&c.snapshot) {
                    match Changes::load(self.hdfs, root, &c.snapshot, &self.tag).await {
                        Ok(ch) => changes = Some(ch),
                        // HDFS gives a diff only to a user who may read the
                        // whole tree below the root.
                        Err(e) if e.is_permission() => {
                            full_reason = Some(format!(
                                "the snapshot diff was refused ({e}): user {} may not read everything below {root}",
                                self.hdfs.user()
                            ))
                        }
                        Err(e) => return Err(e),
                    }
                } else {
                    full_reason = Some(format!(
                        "snapshot {} of the previous backup is gone from {root} (deleted by someone); \
                         walking the whole tree, reusing stored chunks of unchanged files",
                        c.snapshot
                    ));
                }
            }
        }
        if let Some(why) = &full_reason {
            if prev_cut.is_some() {
                warn(self.progress, &format!("{root}: full walk: {why}"));
            }
        }
        let previous = Arc::new(Previous::new(self.repo.clone(), index.clone(), prev_tree));
        let w = Walk {
            hdfs: self.hdfs,
            root,
            snap_root: format!("{}/.snapshot/{}", root.trim_end_matches('/'), self.tag),
            exclude,
            changes: changes.as_ref(),
            previous,
            listers: self.config.backup.listers,
            quota_depth: QUOTA_DEPTH,
        };
        let t = Instant::now();
        let (tx, mut rx) = mpsc::channel(WALK_QUEUE);
        let walker = async {
            let stats = w.run(tx).await?;
            Ok::<_, HdfsError>((stats, t.elapsed().as_secs_f64()))
        };
        let snap_root = w.snap_root.clone();
        let assemble = async {
            let mut asm = Assembly::default();
            let mut pending: Vec<ToRead> = Vec::new();
            let mut pending_bytes = 0u64;
            loop {
                let found = rx.recv().await;
                let end = found.is_none();
                match found {
                    Some(Found::Dir { index, parent, dir }) => {
                        let more = asm.listed(index, parent, dir, save)?;
                        pending_bytes += more.iter().map(|r| r.length).sum::<u64>();
                        pending.extend(more);
                    }
                    Some(Found::Unlisted { index, parent, rel, why }) => {
                        let path = abs(root, &rel);
                        warn(self.progress, &format!("{path}: directory not backed up: {why}"));
                        reads.unreadable.push((path, why));
                        asm.unlisted(index, parent, save)?;
                    }
                    None => {}
                }
                if !pending.is_empty() && (end || pending.len() >= SLICE_FILES || pending_bytes >= SLICE_BYTES) {
                    pending_bytes = 0;
                    self.read_slice(root, &snap_root, std::mem::take(&mut pending), &mut asm, save, reads).await?;
                }
                if end {
                    break;
                }
            }
            reads.peak_held = reads.peak_held.max(asm.peak_held);
            asm.finish().ok_or_else(|| HdfsError::Invalid(format!("the tree of {root} was not completed (a file's read result is missing)")))
        };
        let ((st, walk_secs), tree) = tokio::try_join!(walker, assemble)?;
        let cut = RootCut {
            path: root.to_string(),
            snapshot: self.tag.clone(),
            snapshot_at: at,
            diff_from: changes.as_ref().and(prev_cut.map(|c| c.snapshot.clone())),
            full_reason,
            diff_entries: changes.as_ref().map_or(0, |c| c.entries),
            dirs_listed: st.dirs_listed,
            dirs_reused: st.dirs_reused,
        };
        Ok(RootDone { tree, cut, stats: st, walk_secs })
    }

    /// Reads one slice of a root's files through the agents and fills them
    /// in; an unreadable file is named and left out.
    async fn read_slice(
        &self,
        root: &str,
        snap_root: &str,
        slice: Vec<ToRead>,
        asm: &mut Assembly,
        save: &assemble::Save<'_>,
        reads: &mut Reads,
    ) -> Result<()> {
        let t = Instant::now();
        let jobs: Vec<read::Job> =
            slice.iter().enumerate().map(|(k, r)| read::Job { slot: k, path: abs(snap_root, &r.rel), length: r.length }).collect();
        reads.files_total += jobs.len() as u64;
        reads.bytes_total += jobs.iter().map(|j| j.length).sum::<u64>();
        tracing::info!(files = jobs.len(), "reading a slice of {root} through {} agents", self.agents.len());
        if let Some(p) = self.progress {
            p.set_total(reads.files_total, reads.bytes_total);
        }
        let cfg = self.config;
        let (results, shares) = read::read_all(self.hdfs, self.agents, jobs, &cfg.backup, &self.tag, cfg.hdfs.checksums).await?;
        for (slot, r) in results {
            let item = &slice[slot];
            match &r.error {
                Some(why) => {
                    let path = abs(root, &item.rel);
                    warn(self.progress, &format!("{path}: not backed up: {why}"));
                    reads.unreadable.push((path, why.clone()));
                }
                None => reads.files_read += 1,
            }
            asm.read(item, r, save)?;
        }
        for (sum, sh) in reads.shares.iter_mut().zip(shares) {
            sum.files += sh.files;
            sum.local_files += sh.local_files;
            sum.bytes += sh.bytes;
        }
        reads.secs += t.elapsed().as_secs_f64();
        Ok(())
    }
}

/// Files to read are handed to the agents in slices of this many files or
/// bytes (whichever comes first), so the directories waiting on them, and
/// the memory they hold, stay bounded while the agents get enough work to
/// keep busy.
const SLICE_FILES: usize = 20_000;
const SLICE_BYTES: u64 = 8 << 30;
/// Listed directories waiting for the assembly (the walk pauses beyond).
const WALK_QUEUE: usize = 256;

/// What the reads of every root came to.
#[derive(Debug, Default)]
struct Reads {
    unreadable: Vec<(String, String)>,
    files_read: u64,
    files_total: u64,
    bytes_total: u64,
    shares: Vec<read::Share>,
    secs: f64,
    peak_held: usize,
}

/// One root backed up.
struct RootDone {
    tree: (Id, (u64, u64)),
    cut: RootCut,
    stats: walk::WalkStats,
    walk_secs: f64,
}

/// The newest backup of this cluster, if any.
fn previous(repo: &Repository, cluster: &str) -> Result<Option<Before>> {
    let all = manifest::list(repo, Some(cluster))?;
    let Some((_, m)) = all.into_iter().rev().find(|(_, m)| m.store == crate::STORE) else {
        return Ok(None);
    };
    let detail: BackupDetail = m.detail()?;
    let Some(node) = m.nodes.first() else { return Ok(None) };
    let snap = repo.load_snapshot(&node.snapshot)?;
    Ok(Some(Before { detail, tree: snap.tree }))
}

/// The tree from "/" down to the roots, through their real ancestors.
fn nest(
    roots: Vec<(String, Node)>,
    ancestors: &std::collections::BTreeMap<String, crate::webhdfs::FileStatus>,
    save: &dyn Fn(Tree) -> tidemark_repo::Result<Id>,
) -> tidemark_repo::Result<Id> {
    if let Some((_, n)) = roots.iter().find(|(r, _)| r == "/") {
        return Ok(n.subtree.expect("a root is a directory"));
    }
    fn build(
        dir: &str,
        roots: &[(String, Node)],
        ancestors: &std::collections::BTreeMap<String, crate::webhdfs::FileStatus>,
        save: &dyn Fn(Tree) -> tidemark_repo::Result<Id>,
    ) -> tidemark_repo::Result<Id> {
        let parent_of = |p: &str| -> String {
            match p.rfind('/') {
                Some(0) => "/".to_string(),
                Some(i) => p[..i].to_string(),
                None => "/".to_string(),
            }
        };
        let mut nodes = Vec::new();
        for (r, n) in roots {
            if parent_of(r) == dir {
                nodes.push(n.clone());
            }
        }
        for (a, st) in ancestors {
            if a != "/" && parent_of(a) == dir {
                let mut n = walk::node_from(a.rsplit('/').next().unwrap_or(""), st);
                n.subtree = Some(build(a, roots, ancestors, save)?);
                nodes.push(n);
            }
        }
        save(Tree { nodes })
    }
    build("/", &roots, ancestors, save)
}

/// Runs synchronous (engine) work on a blocking thread.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HdfsError::Invalid(format!("blocking task ended abnormally: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_repo::tree::NodeKind;

    #[test]
    fn roots_nest_under_their_ancestors() {
        let st = |name: &str| crate::webhdfs::FileStatus {
            path_suffix: name.into(),
            kind: crate::webhdfs::EntryKind::Directory,
            length: 0,
            owner: "hdfs".into(),
            group: "supergroup".into(),
            permission: "755".into(),
            access_time: 0,
            modification_time: 0,
            block_size: 0,
            replication: 0,
            file_id: 1,
            children_num: None,
            storage_policy: None,
            acl_bit: false,
            ec_bit: false,
            ec_policy: None,
            symlink: None,
            snapshot_enabled: None,
        };
        let mut anc = std::collections::BTreeMap::new();
        anc.insert("/".to_string(), st(""));
        anc.insert("/data".to_string(), st("data"));
        anc.insert("/user".to_string(), st("user"));
        let mut wh = walk::empty_node("warehouse");
        wh.kind = NodeKind::Dir;
        wh.subtree = Some(Id([7; 32]));
        let mut etl = wh.clone();
        etl.name = "etl".into();
        let saved = std::sync::Mutex::new(Vec::new());
        let save = |t: Tree| {
            let mut s = saved.lock().unwrap();
            s.push(t);
            Ok(Id([s.len() as u8; 32]))
        };
        nest(vec![("/data/warehouse".into(), wh), ("/user/etl".into(), etl)], &anc, &save).unwrap();
        let saved = saved.into_inner().unwrap();
        let top = saved.last().unwrap();
        let names: Vec<&str> = top.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["data", "user"]);
        assert_eq!(saved.len(), 3);
    }

    #[test]
    fn tags_have_the_documented_shape() {
        let now = DateTime::parse_from_rfc3339("2026-12-07T16:05:09Z").unwrap().with_timezone(&Utc);
        let t = new_tag(now);
        assert!(t.starts_with("tidemark-20261207T160509Z-"), "{t}");
    }
}
