//! `tidemark cluster backup|restore|verify` for a MongoDB coordinator file
//! (`[mongodb]`): the adapter does the work; this prints.

use std::sync::Arc;

use anyhow::{Context, Result};
use tidemark_cluster::manifest;
use tidemark_mongodb::config::ClusterConfig;
use tidemark_mongodb::restore::{parse_filter, parse_ns, RestoreOptions};
use tidemark_mongodb::MongoError;
use tidemark_repo::Repository;

use super::config::AnyConfig;
use super::list::BackupRow;
use crate::ctx::{print_json, runtime, Global, EXIT_INCOMPLETE};

/// Repository errors keep their type (exit codes for a wrong passphrase or
/// a missing repository).
pub fn unwrap(e: MongoError) -> anyhow::Error {
    match e {
        MongoError::Repo(r) => anyhow::Error::from(r),
        other => anyhow::Error::from(other),
    }
}

pub fn backup(g: &Global, config: &ClusterConfig, repo: Arc<Repository>, json: bool) -> Result<i32> {
    let progress = g.progress();
    let result = tidemark_mongodb::backup::backup(config, repo, runtime().handle(), Some(progress.as_ref()));
    progress.finish();
    let out = result.map_err(unwrap)?;
    if json {
        print_json(&BackupRow::new(&out.id, &out.manifest))?;
    } else {
        println!("{}", out.id);
    }
    Ok(0)
}

pub fn restore(g: &Global, a: super::restore::Args, source: ClusterConfig) -> Result<i32> {
    if a.keyspace.is_some() || !a.tables.is_empty() || a.truncate || !a.paths.is_empty() || a.target_path.is_some() || a.overwrite {
        anyhow::bail!("--keyspace, --table, --truncate, --path, --target-path and --overwrite are not for MongoDB; use --database, --collection, --rename-to, --filter, --drop");
    }
    let target = match &a.target_config {
        Some(p) => ClusterConfig::load(p).map_err(unwrap)?,
        None => source.clone(),
    };
    let opts = RestoreOptions {
        databases: a.databases.clone(),
        collections: a.collections.iter().map(|c| parse_ns(c)).collect::<Result<_, _>>().map_err(unwrap)?,
        rename_to: a.rename_to.as_deref().map(parse_ns).transpose().map_err(unwrap)?,
        filter: a.filter.as_deref().map(parse_filter).transpose().map_err(unwrap)?,
        drop: a.drop,
    };
    let repo = AnyConfig::Mongodb(source.clone()).open_repository(g)?;
    let (id, m) = manifest::find(&repo, Some(&source.name), &a.backup)
        .with_context(|| format!("finding backup {} of {}", a.backup, source.name))?;
    let report = tidemark_mongodb::restore::restore(&repo, runtime().handle(), &id, &m, &target, &opts).map_err(unwrap)?;
    if a.json {
        print_json(&report)?;
        return Ok(0);
    }
    for s in &report.sets {
        for c in &s.collections {
            println!("{} -> {} on {}: {} documents, {} indexes", c.source, c.target, s.target, c.documents, c.indexes);
        }
        let o = &s.oplog;
        println!(
            "replica set {}: oplog replayed to the cut: {} inserts, {} updates, {} deletes, {} commands",
            s.set, o.inserts, o.updates, o.deletes, o.commands
        );
    }
    println!("restored backup {} as of {}", &report.backup[..12], report.cut);
    Ok(0)
}

pub fn verify(g: &Global, config: &ClusterConfig, backup: &str, read_data: bool, json: bool) -> Result<i32> {
    let repo = AnyConfig::Mongodb(config.clone()).open_repository_uncached(g)?;
    let (id, m) = manifest::find(&repo, Some(&config.name), backup)?;
    let report = tidemark_mongodb::verify::verify(&repo, &id, &m, read_data).map_err(unwrap)?;
    let code = if report.is_clean() { 0 } else { EXIT_INCOMPLETE };
    if json {
        print_json(&report)?;
        return Ok(code);
    }
    for (p, what) in &report.damage {
        println!("damaged: {p}: {what}");
    }
    println!(
        "backup {} of {}: {} replica sets, {} collections, {} chunks{}: {}",
        id.short(),
        m.cluster,
        report.sets,
        report.collections,
        report.chunks_checked,
        if read_data { format!(", {} documents counted and hashed", report.documents) } else { String::new() },
        if report.is_clean() { "no damage".to_string() } else { format!("{} damaged places", report.damage.len()) }
    );
    Ok(code)
}
