//! `tidemark cluster list`: this cluster's backups, from the catalog. Only
//! complete backups have a manifest, so everything listed is restorable.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tidemark_cassandra::manifest::{BackupDetail, NodeDetail};
use tidemark_cluster::manifest::{self, ClusterManifest};
use tidemark_repo::Id;

use super::config::AnyConfig;
use crate::commands::snapshots::human;
use crate::ctx::{print_json, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The cluster's TOML file
    #[arg(long)]
    pub config: PathBuf,
    #[arg(long)]
    pub json: bool,
}

/// What a listing shows of one backup (also `cluster backup --json`).
#[derive(Debug, Serialize)]
pub struct BackupRow {
    pub id: Id,
    pub short_id: String,
    pub cluster: String,
    pub tag: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub nodes: usize,
    /// Distinct keyspace.table names across the nodes.
    pub tables: usize,
    /// SSTable files across the nodes.
    pub files: usize,
    pub total_bytes: u64,
    pub data_added_stored: u64,
    /// Bytes the agents read from disk (0 for unchanged SSTables).
    pub bytes_read: u64,
    pub snapshot_spread_ms: Option<i64>,
    pub duration_secs: f64,
    pub node_details: Vec<NodeRow>,
}

#[derive(Debug, Serialize)]
pub struct NodeRow {
    pub node: String,
    pub host_id: String,
    pub snapshot: Id,
    pub cut_at: DateTime<Utc>,
    pub tables: usize,
    pub files: usize,
    pub total_bytes: u64,
    pub bytes_read: u64,
    pub data_added_stored: u64,
}

impl BackupRow {
    pub fn new(id: &Id, m: &ClusterManifest) -> BackupRow {
        let detail: Option<BackupDetail> = m.detail().ok();
        let mut tables = BTreeSet::new();
        let mut node_details = Vec::new();
        for n in &m.nodes {
            let d: Option<NodeDetail> = n.detail().ok();
            let (t, f) = d.as_ref().map_or((0, 0), |d| {
                for t in &d.tables {
                    tables.insert((t.keyspace.clone(), t.table.clone()));
                }
                (d.tables.len(), d.tables.iter().map(|t| t.files.len()).sum())
            });
            node_details.push(NodeRow {
                node: n.node.clone(),
                host_id: n.host_id.clone(),
                snapshot: n.snapshot,
                cut_at: n.cut_at,
                tables: t,
                files: f,
                total_bytes: n.summary.total_bytes,
                bytes_read: n.summary.bytes_read,
                data_added_stored: n.summary.data_added_stored,
            });
        }
        BackupRow {
            id: *id,
            short_id: id.short(),
            cluster: m.cluster.clone(),
            tag: m.tag.clone(),
            started: m.started,
            finished: m.finished,
            nodes: m.nodes.len(),
            tables: tables.len(),
            files: node_details.iter().map(|n| n.files).sum(),
            total_bytes: m.total_bytes(),
            data_added_stored: m.data_added_stored(),
            bytes_read: m.nodes.iter().map(|n| n.summary.bytes_read).sum(),
            snapshot_spread_ms: detail.as_ref().map(|d| d.snapshot_spread_ms),
            duration_secs: detail
                .as_ref()
                .map(|d| d.timings.total_secs)
                .unwrap_or_else(|| (m.finished - m.started).num_milliseconds() as f64 / 1000.0),
            node_details,
        }
    }
}

pub fn run(_g: &Global, a: Args) -> Result<i32> {
    let config = AnyConfig::load(&a.config)?;
    let repo = config.open_repository()?;
    let rows: Vec<BackupRow> = manifest::list(&repo, Some(config.common().name))?
        .iter()
        .map(|(id, m)| BackupRow::new(id, m))
        .collect();
    if a.json {
        return print_json(&rows).map(|_| 0);
    }
    println!(
        "{:<10} {:<20} {:>5} {:>6} {:>10} {:>10} {:>9} {:>9}",
        "id", "time", "nodes", "tables", "size", "added", "spread", "duration"
    );
    for r in &rows {
        println!(
            "{:<10} {:<20} {:>5} {:>6} {:>10} {:>10} {:>9} {:>9}",
            r.short_id,
            r.started
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S"),
            r.nodes,
            r.tables,
            human(r.total_bytes),
            human(r.data_added_stored),
            r.snapshot_spread_ms
                .map_or("-".into(), |s| format!("{s} ms")),
            format!("{:.1} s", r.duration_secs),
        );
    }
    println!("{} backups of cluster {}", rows.len(), config.common().name);
    Ok(0)
}
