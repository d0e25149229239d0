//! `tidemark cluster backup`: one consistent backup of the whole cluster.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use tidemark_cassandra::config::ClusterConfig;
use tidemark_repo::Repository;

use super::list::BackupRow;
use crate::ctx::{print_json, read_password, runtime, Global};

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
    let config = ClusterConfig::load(&a.config)?;
    let repo = Arc::new(open_repository(&config)?);
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

/// The repository a cluster file names, opened with its passphrase file.
/// A wrong passphrase stays a `RepoError::WrongPassword` (exit 12).
pub fn open_repository(config: &ClusterConfig) -> Result<Repository> {
    let password = read_password(Some(&config.password_file), "TIDEMARK_PASSWORD")?;
    let loc = config.location();
    let opts = tidemark_store::OpenOptions::default();
    tidemark_repo::repo::open_location(&loc, &opts, runtime().handle().clone(), password.as_bytes())
        .with_context(|| format!("opening the repository {}", config.repository))
}
