//! `tidemark cluster list`: this cluster's backups, from the catalog. Only
//! complete backups have a manifest, so everything listed is restorable.

use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;
use tidemark_cluster::catalog::{self, no_extras, Describe};
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

/// What a listing shows of one backup (also `cluster backup --json`): the
/// generic row with the extras its store's adapter reads.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct BackupRow(pub catalog::BackupRow);

impl BackupRow {
    pub fn new(id: &Id, m: &ClusterManifest) -> BackupRow {
        BackupRow(catalog::BackupRow::with_extras(
            id,
            m,
            describe_for(&m.store)(m),
        ))
    }
}

/// Each store's reading of its details for a listing.
fn describe_for(store: &str) -> Describe {
    match store {
        tidemark_cassandra::STORE => tidemark_cassandra::manifest::list_extras,
        tidemark_hdfs::STORE => tidemark_hdfs::manifest::list_extras,
        tidemark_mongodb::STORE => tidemark_mongodb::manifest::list_extras,
        _ => no_extras,
    }
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let config = AnyConfig::load(&a.config)?;
    let repo = config.open_repository(g)?;
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
    for BackupRow(r) in &rows {
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
