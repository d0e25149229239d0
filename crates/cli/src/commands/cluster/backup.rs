//! `tidemark cluster backup`: one consistent backup of the whole cluster.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use tidemark_cassandra::config::ClusterConfig;
use tidemark_repo::Repository;

use super::list::BackupRow;
use super::config::AnyConfig;
use crate::ctx::{print_json, runtime, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The cluster's TOML file
    #[arg(long)]
    pub config: PathBuf,
    /// Print the manifest's summary as JSON instead of the id
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let any = AnyConfig::load(&a.config)?;
    let repo = Arc::new(any.open_repository(g)?);
    let config = match any {
        AnyConfig::Cassandra(c) => c,
        AnyConfig::Hdfs(c) => return run_hdfs(g, a, &c, repo),
        AnyConfig::Mongodb(c) => return super::mongodb::backup(g, &c, repo, a.json),
    };
    let progress = g.progress();
    let result = runtime().block_on(tidemark_cassandra::backup::backup(
        &config,
        repo,
        Some(progress.as_ref()),
    ));
    progress.finish();
    let (id, m) = result?;
    if a.json {
        print_json(&BackupRow::new(&id, &m))?;
    } else {
        println!("{id}");
    }
    Ok(0)
}

fn run_hdfs(g: &Global, a: Args, config: &tidemark_hdfs::config::ClusterConfig, repo: Arc<Repository>) -> Result<i32> {
    let progress = g.progress();
    let result = runtime().block_on(tidemark_hdfs::backup::backup(config, repo, Some(progress.as_ref())));
    progress.finish();
    let out = result.map_err(unwrap_hdfs)?;
    if a.json {
        print_json(&BackupRow::new(&out.id, &out.manifest))?;
    } else {
        println!("{}", out.id);
    }
    for (path, why) in &out.unreadable {
        eprintln!("not backed up: {path}: {why}");
    }
    if out.unreadable.is_empty() {
        Ok(0)
    } else {
        eprintln!("backup {} is incomplete: {} file(s) could not be read", out.id.short(), out.unreadable.len());
        Ok(crate::ctx::EXIT_INCOMPLETE)
    }
}

/// Repository errors keep their type (exit codes for a wrong passphrase or
/// a missing repository).
pub fn unwrap_hdfs(e: tidemark_hdfs::HdfsError) -> anyhow::Error {
    match e {
        tidemark_hdfs::HdfsError::Repo(r) => anyhow::Error::from(r),
        other => anyhow::Error::from(other),
    }
}

/// Whether an agent file has the top-level table `name` (`[hdfs]`): it
/// picks the adapter of `tidemark agent`.
pub fn has_section(path: &Path, name: &str) -> Result<bool> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("config {}", path.display()))?;
    Ok(table.get(name).is_some_and(|v| v.is_table()))
}

/// The repository a Cassandra cluster file names, for verify (see
/// `AnyConfig::open_repository_uncached`).
pub fn open_repository_uncached(g: &Global, config: &ClusterConfig) -> Result<Repository> {
    AnyConfig::Cassandra(config.clone()).open_repository_uncached(g)
}
