//! `tidemark cluster copy`: whole cluster backups into another repository
//! (an offsite copy), manifest included. The flow (node snapshots first,
//! then the manifest with each node's detail rewritten by its adapter) is
//! `tidemark_cluster::copy`'s; this parses the arguments, picks the
//! adapters' rewrites and prints.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use tidemark_cluster::copy::{self, CopyReport, NodeRewrite};
use tidemark_repo::copy::CopyOptions;
use tidemark_repo::progress::{NoProgress, Progress};

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

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let config = AnyConfig::load(&a.config)?;
    let name = config.common().name;
    let src = config.open_repository(g)?;
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
    let opts = CopyOptions { threads: a.threads };
    let mut report = CopyReport::default();
    for todo in copy::resolve(&src, &dst, name, &a.backups)? {
        // A progress bar only for a backup that is copied.
        let bar = todo.in_target.is_none().then(|| g.progress());
        let progress: &dyn Progress = match &bar {
            Some(p) => p.as_ref(),
            None => &NoProgress,
        };
        let done = copy::copy_backup(&src, &dst, todo, &opts, rewrite_for, progress, &mut report);
        if let Some(p) = bar {
            p.finish();
        }
        done?;
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

/// The rewrite of each store's node details for a copy.
fn rewrite_for(store: &str) -> Option<NodeRewrite> {
    match store {
        tidemark_cassandra::STORE => Some(tidemark_cassandra::manifest::rewrite_for_copy),
        // An HDFS detail holds paths and HDFS attributes, nothing keyed.
        tidemark_hdfs::STORE => Some(copy::keep_detail),
        _ => None,
    }
}
