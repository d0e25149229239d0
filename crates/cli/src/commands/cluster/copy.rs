//! `tidemark cluster copy`: whole cluster backups into another repository
//! (an offsite copy), manifest included, so the copy is listed, verified and
//! restored there like the original.
//!
//! The engine's `copy` stores each node snapshot under the target's own
//! keys, so the copies get new snapshot ids and their files new chunk ids.
//! The manifest therefore cannot be saved as it is: each node's `snapshot`
//! is replaced by its copy's id, and each SSTable's `content` (a keyed hash
//! of its chunk ids under the repository's key) is recomputed from the
//! copied tree. The rewritten manifest is saved last, after every node
//! snapshot is in the target, so a listed backup there is always complete.
//! A backup whose tag the target already lists is skipped; node snapshots
//! copied by an interrupted earlier run are reused (the engine skips them).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tidemark_cassandra::api::file_content;
use tidemark_cassandra::manifest::NodeDetail;
use tidemark_cluster::manifest::{self, ClusterManifest};
use tidemark_repo::copy::{copied_originals, copy, CopyOptions};
use tidemark_repo::index::Index;
use tidemark_repo::lock::{Lock, LockKind};
use tidemark_repo::snapshot::Snapshot;
use tidemark_repo::tree::NodeKind;
use tidemark_repo::{Id, Repository};

use super::config::AnyConfig;
use crate::commands::snapshots::human;
use crate::ctx::{print_json, read_password, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The cluster's TOML file (its repository is the source)
    #[arg(long)]
    pub config: PathBuf,
    /// Target repository: a path, or s3:http://HOST:PORT/BUCKET/PREFIX
    #[arg(long)]
    pub to_repo: String,
    /// File holding the target's passphrase (else TIDEMARK_TO_PASSWORD)
    #[arg(long, env = "TIDEMARK_TO_PASSWORD_FILE")]
    pub to_password_file: Option<PathBuf>,
    /// Backups to copy: id prefixes (at least 4 hex digits) or `latest`
    #[arg(required = true)]
    pub backups: Vec<String>,
    /// Parallel pack reads from the source
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long)]
    pub json: bool,
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

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let config = AnyConfig::load(&a.config)?;
    let src = config.open_repository()?;
    let to_password = read_password(a.to_password_file.as_ref(), "TIDEMARK_TO_PASSWORD")
        .context("target passphrase (--to-password-file or TIDEMARK_TO_PASSWORD)")?;
    let dst = Global {
        repo: Some(a.to_repo.clone()),
        ..g.clone()
    }
    .open_with(&to_password)
    .with_context(|| format!("opening target repository {}", a.to_repo))?;
    if dst.config.id == src.config.id {
        bail!(
            "{} is the cluster's own repository: copy into another one",
            a.to_repo
        );
    }
    // Every id is resolved before anything is copied.
    let mut todo: Vec<(Id, ClusterManifest)> = Vec::new();
    for spec in &a.backups {
        let found = manifest::find(&src, Some(config.common().name), spec).with_context(|| {
            format!(
                "backup {spec} of cluster {}: nothing was copied",
                config.common().name
            )
        })?;
        if !todo.iter().any(|(id, _)| *id == found.0) {
            todo.push(found);
        }
    }
    let in_target: HashMap<String, Id> = manifest::list(&dst, Some(config.common().name))?
        .into_iter()
        .map(|(id, m)| (m.tag, id))
        .collect();

    let mut report = CopyReport::default();
    for (id, m) in todo {
        if let Some(t) = in_target.get(&m.tag) {
            report.backups.push(Copied {
                source: id,
                target: *t,
                node_snapshots: Vec::new(),
                already_there: true,
            });
            continue;
        }
        let snaps: Vec<(Id, Snapshot)> = m
            .nodes
            .iter()
            .map(|n| Ok((n.snapshot, src.load_snapshot(&n.snapshot)?)))
            .collect::<Result<_>>()
            .with_context(|| format!("reading the node snapshots of backup {}", id.short()))?;
        // Held until the manifest is saved: until then the copied node
        // snapshots are referenced by nothing in the target, and a `cluster
        // forget` there must not take them for leftovers of a crash.
        let lock = Lock::acquire(&dst, LockKind::Copy)?;
        let progress = g.progress();
        let out = copy(
            &src,
            &dst,
            &snaps,
            &CopyOptions { threads: a.threads },
            progress.as_ref(),
        );
        progress.finish();
        let out = out.with_context(|| {
            format!(
                "copying backup {}: its manifest was not saved in the target",
                id.short()
            )
        })?;
        report.bytes_read += out.bytes_read;
        report.bytes_new_stored += out.bytes_new_stored;
        let copies = copied_originals(&dst.list_snapshots()?);
        let rewritten = rewrite(&dst, &m, &copies)
            .with_context(|| format!("rewriting the manifest of backup {}", id.short()))?;
        let target = manifest::save(&dst, &rewritten)?;
        lock.release();
        report.backups.push(Copied {
            source: id,
            target,
            node_snapshots: m
                .nodes
                .iter()
                .zip(&rewritten.nodes)
                .map(|(a, b)| (a.snapshot, b.snapshot))
                .collect(),
            already_there: false,
        });
    }
    if a.json {
        print_json(&report)?;
        return Ok(0);
    }
    for c in &report.backups {
        if c.already_there {
            println!(
                "backup {} is already in the target as {}",
                c.source.short(),
                c.target.short()
            );
        } else {
            println!(
                "copied backup {} -> {} ({} node snapshots)",
                c.source.short(),
                c.target.short(),
                c.node_snapshots.len()
            );
        }
    }
    println!(
        "read {}, stored {} new in {}",
        human(report.bytes_read),
        human(report.bytes_new_stored),
        dst.describe()
    );
    Ok(0)
}

/// The manifest as the target must hold it: node snapshot ids of the copies,
/// SSTable content ids under the target's key (checked: same files, same
/// sizes, else the copy is refused).
fn rewrite(
    dst: &Repository,
    m: &ClusterManifest,
    copies: &HashMap<Id, Id>,
) -> Result<ClusterManifest> {
    let index = dst.load_index()?;
    let mut out = m.clone();
    for n in &mut out.nodes {
        let copy = *copies.get(&n.snapshot).with_context(|| {
            format!(
                "node {}: snapshot {} has no copy in the target",
                n.node,
                n.snapshot.short()
            )
        })?;
        let snap = dst.load_snapshot(&copy)?;
        let files = files_of(dst, &index, &snap.tree)?;
        let mut detail: NodeDetail = n.detail()?;
        for t in &mut detail.tables {
            let dir = t.dir.trim_end_matches('/').to_string();
            for f in &mut t.files {
                let path = format!("{dir}/{}", f.name);
                let (size, chunks) = files.get(&path).with_context(|| {
                    format!(
                        "node {}: {path} is missing from the copied snapshot",
                        n.node
                    )
                })?;
                if *size != f.size {
                    bail!(
                        "node {}: {path} has {size} bytes in the copy, {} in the manifest",
                        n.node,
                        f.size
                    );
                }
                f.content = file_content(dst.key(), chunks);
            }
        }
        n.snapshot = copy;
        n.detail = serde_json::to_value(&detail).context("node detail")?;
    }
    Ok(out)
}

/// Path -> (size, chunk ids) of every file in a snapshot's tree.
fn files_of(
    repo: &Repository,
    index: &Index,
    root: &Id,
) -> Result<HashMap<String, (u64, Vec<Id>)>> {
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
