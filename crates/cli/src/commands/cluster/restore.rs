//! `tidemark cluster restore`: reads the backup's manifest from the cluster's
//! repository and hands the restore to the Cassandra adapter
//! (`tidemark_cassandra::restore`), which does the rest over CQL and the
//! target cluster's agents.

use std::path::PathBuf;

use anyhow::{Context, Result};
use tidemark_cassandra::config::ClusterConfig;
use tidemark_cassandra::restore::{self, Backup, Mode, RestoreOptions, RestoreReport};

use crate::ctx::{self, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The cluster's TOML file (the cluster the backup was taken of)
    #[arg(long)]
    pub config: PathBuf,
    /// Backup id (at least 4 hex digits) or `latest`
    pub backup: String,
    /// Restore this keyspace (all its tables, or those named by --table)
    #[arg(long)]
    pub keyspace: Option<String>,
    /// Restore this table (TABLE with --keyspace, or KEYSPACE.TABLE); repeatable
    #[arg(long = "table")]
    pub tables: Vec<String>,
    /// Restore the one table as a new table of this name next to the live one
    #[arg(long)]
    pub rename_to: Option<String>,
    /// Restore into the cluster this file describes (same repository)
    #[arg(long)]
    pub target_config: Option<PathBuf>,
    /// TRUNCATE each existing target table first (rows written or deleted
    /// since the backup are gone afterwards)
    #[arg(long)]
    pub truncate: bool,
    /// HDFS: restore this backed-up path (a file or a directory); repeatable.
    /// Without it, every root of the backup.
    #[arg(long = "path")]
    pub paths: Vec<String>,
    /// HDFS: put each restored path under this directory instead of at its
    /// own path
    #[arg(long)]
    pub target_path: Option<String>,
    /// HDFS: replace files that exist (never done without it)
    #[arg(long)]
    pub overwrite: bool,
    /// MongoDB: restore this database (repeatable)
    #[arg(long = "database")]
    pub databases: Vec<String>,
    /// MongoDB: restore this collection, DATABASE.COLLECTION (repeatable)
    #[arg(long = "collection")]
    pub collections: Vec<String>,
    /// MongoDB: only the documents matching this query (extended JSON),
    /// upserted by _id into the live collections
    #[arg(long)]
    pub filter: Option<String>,
    /// MongoDB: drop target collections that exist first (never done
    /// without it)
    #[arg(long)]
    pub drop: bool,
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    match super::config::AnyConfig::load(&a.config)? {
        super::config::AnyConfig::Hdfs(c) => return run_hdfs(g, a, c),
        super::config::AnyConfig::Mongodb(c) => return super::mongodb::restore(g, a, c),
        super::config::AnyConfig::Cassandra(_) => {}
    }
    if !a.databases.is_empty() || !a.collections.is_empty() || a.filter.is_some() || a.drop {
        anyhow::bail!("--database, --collection, --filter and --drop are for MongoDB backups; {} is not a MongoDB cluster file", a.config.display());
    }
    if !a.paths.is_empty() || a.target_path.is_some() || a.overwrite {
        anyhow::bail!("--path, --target-path and --overwrite are for HDFS backups; {} is not an HDFS cluster file", a.config.display());
    }
    let source = ClusterConfig::load(&a.config)?;
    let target = match &a.target_config {
        Some(p) => ClusterConfig::load(p)?,
        None => source.clone(),
    };
    let password = ctx::read_password(Some(&source.password_file), "TIDEMARK_PASSWORD")?;
    let rt = ctx::runtime();
    let repo = tidemark_repo::repo::open_location(
        &source.location(),
        &Default::default(),
        rt.handle().clone(),
        password.as_bytes(),
    )?;
    let (id, manifest) = tidemark_cluster::manifest::find(&repo, Some(&source.name), &a.backup)
        .with_context(|| format!("finding backup {} of cluster {}", a.backup, source.name))?;
    let backup = Backup::new(id, manifest)?;
    let repo_id = repo.config.id.to_hex();
    let opts = RestoreOptions {
        keyspace: a.keyspace,
        tables: a.tables,
        rename_to: a.rename_to,
        truncate: a.truncate,
    };
    let report = rt.block_on(restore::restore(&backup, &repo_id, &target, &opts))?;
    if a.json {
        ctx::print_json(&report)?;
    } else {
        print_text(&report);
    }
    Ok(0)
}

fn print_text(r: &RestoreReport) {
    println!(
        "restored backup {} of {} into {} ({}) in {:.1}s",
        &r.backup[..12],
        r.source_cluster,
        r.target_cluster,
        mode(r.mode),
        r.duration_secs
    );
    for st in &r.schema_statements {
        println!(
            "schema: {}",
            st.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }
    if !r.initial_tokens.is_empty() {
        println!("for an import restore, give the target nodes these initial_token values:");
        for t in &r.initial_tokens {
            println!(
                "  node {} ({}/{}): initial_token: {}",
                t.node, t.datacenter, t.rack, t.initial_token
            );
        }
    }
    for n in &r.notes {
        println!("note: {n}");
    }
    for t in &r.tables {
        let name = if t.table == t.target_table {
            format!("{}.{}", t.keyspace, t.table)
        } else {
            format!("{}.{} -> {}", t.keyspace, t.table, t.target_table)
        };
        let amp = t
            .amplification
            .map_or("-".to_string(), |a| format!("{a:.2}"));
        let bound = t.amplification_all_replicas.map_or(String::new(), |b| {
            format!(" (all replicas to all owners: {b:.0})")
        });
        println!(
            "{name}: {}{}{} {} files, {} bytes{}, from {}, amplification {amp}{bound}, {:.1}s",
            mode(t.mode),
            if t.created { ", created" } else { "" },
            if t.truncated { ", truncated" } else { "" },
            t.files,
            t.bytes,
            if t.mode == Mode::Stream {
                format!(", {} bytes streamed", t.bytes_streamed)
            } else {
                String::new()
            },
            if t.source_nodes.is_empty() {
                "no node (no data)".to_string()
            } else {
                t.source_nodes.join(", ")
            },
            t.duration_secs
        );
    }
}

fn mode(m: Mode) -> &'static str {
    match m {
        Mode::Import => "import",
        Mode::Stream => "stream",
    }
}

fn run_hdfs(g: &Global, a: Args, source: tidemark_hdfs::config::ClusterConfig) -> Result<i32> {
    use super::config::AnyConfig;
    use tidemark_hdfs::config::ClusterConfig as HdfsConfig;
    if a.keyspace.is_some() || !a.tables.is_empty() || a.rename_to.is_some() || a.truncate {
        anyhow::bail!("--keyspace, --table, --rename-to and --truncate are for Cassandra; this is an HDFS cluster (use --path)");
    }
    let target = match &a.target_config {
        Some(p) => HdfsConfig::load(p)?,
        None => source.clone(),
    };
    let repo = std::sync::Arc::new(AnyConfig::Hdfs(source.clone()).open_repository(g)?);
    let (id, manifest) = tidemark_cluster::manifest::find(&repo, Some(&source.name), &a.backup)
        .with_context(|| format!("finding backup {} of cluster {}", a.backup, source.name))?;
    let opts = tidemark_hdfs::restore::RestoreOptions { paths: a.paths, target_path: a.target_path, overwrite: a.overwrite };
    let report = ctx::runtime()
        .block_on(tidemark_hdfs::restore::restore(repo, &id, &manifest, &target, &opts))
        .map_err(super::backup::unwrap_hdfs)?;
    if a.json {
        ctx::print_json(&report)?;
    } else {
        for (from, to) in &report.restored {
            println!("{from} -> {to}");
        }
        for n in &report.notes {
            println!("note: {n}");
        }
        for (p, why) in &report.failed {
            println!("failed: {p}: {why}");
        }
        println!(
            "restored {} files ({} bytes) and {} directories of backup {} into {} in {:.1}s; {} checksums matched, {} not comparable",
            report.files,
            report.bytes,
            report.dirs,
            &report.backup[..12],
            report.target_cluster,
            report.duration_secs,
            report.checksums_matched,
            report.checksums_not_compared
        );
    }
    Ok(if report.failed.is_empty() { 0 } else { ctx::EXIT_INCOMPLETE })
}
