//! `tidemark cluster verify`: is every node's part of a backup there and
//! intact? Damage is named per node, table and file; exit 3 when found.

use std::path::PathBuf;

use anyhow::Result;
use tidemark_cassandra::config::ClusterConfig;
use tidemark_cluster::manifest;

use super::backup::open_repository_uncached;
use crate::commands::snapshots::human;
use crate::ctx::{print_json, Global, EXIT_INCOMPLETE};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The cluster's TOML file
    #[arg(long)]
    pub config: PathBuf,
    /// The backup: an id prefix (at least 4 hex digits) or `latest`
    pub backup: String,
    /// Also download and authenticate every chunk of the backup
    #[arg(long)]
    pub read_data: bool,
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    match super::config::AnyConfig::load(&a.config)? {
        super::config::AnyConfig::Hdfs(c) => return run_hdfs(g, a, c),
        super::config::AnyConfig::Mongodb(c) => return super::mongodb::verify(g, &c, &a.backup, a.read_data, a.json),
        super::config::AnyConfig::Cassandra(_) => {}
    }
    let config = ClusterConfig::load(&a.config)?;
    let repo = open_repository_uncached(g, &config)?;
    let (id, m) = manifest::find(&repo, Some(&config.name), &a.backup)?;
    let report = tidemark_cassandra::verify::verify(&repo, &m, a.read_data)?;
    let code = if report.is_clean() {
        0
    } else {
        EXIT_INCOMPLETE
    };
    if a.json {
        print_json(&report)?;
        return Ok(code);
    }
    for d in &report.damage {
        println!("damaged: {d}");
    }
    let read = if a.read_data {
        format!(
            ", {} chunks read ({})",
            report.chunks_read,
            human(report.bytes_read)
        )
    } else {
        String::new()
    };
    println!(
        "backup {} of cluster {}: {} nodes, {} tables, {} SSTable files, {} chunks in {} packs{read}: {}",
        id.short(),
        m.cluster,
        report.nodes,
        report.tables,
        report.sstables,
        report.chunks,
        report.packs,
        if report.is_clean() { "no damage".to_string() } else { format!("{} damaged places", report.damage.len()) }
    );
    Ok(code)
}

fn run_hdfs(g: &Global, a: Args, config: tidemark_hdfs::config::ClusterConfig) -> Result<i32> {
    let repo = super::config::AnyConfig::Hdfs(config.clone()).open_repository_uncached(g)?;
    let (id, m) = manifest::find(&repo, Some(&config.name), &a.backup)?;
    let report = tidemark_hdfs::verify::verify(&repo, &id, &m, a.read_data).map_err(super::backup::unwrap_hdfs)?;
    let code = if report.is_clean() { 0 } else { EXIT_INCOMPLETE };
    if a.json {
        print_json(&report)?;
        return Ok(code);
    }
    for (p, what) in &report.damage {
        println!("damaged: {p}: {what}");
    }
    println!(
        "backup {} of cluster {}: {} files ({}), {} directories, {} chunks{}: {}",
        id.short(),
        m.cluster,
        report.files,
        human(report.bytes),
        report.dirs,
        report.chunks_checked,
        if a.read_data { format!(", {} read", report.chunks_read) } else { String::new() },
        if report.is_clean() { "no damage".to_string() } else { format!("{} damaged places", report.damage.len()) }
    );
    Ok(code)
}
