use std::path::PathBuf;

use anyhow::Result;
use tidemark_repo::restore::{restore, RestoreOptions};

use crate::ctx::{Global, EXIT_INCOMPLETE};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshot id, unique prefix, or `latest`
    pub snapshot: String,
    /// Directory to restore into (created if missing)
    #[arg(long, short)]
    pub target: PathBuf,
    /// Restore only this path of the snapshot (repeatable), as `ls` shows it
    #[arg(long)]
    pub include: Vec<PathBuf>,
    /// Parallel downloads [default: --connections, else 4 from a local disk,
    /// 8 from object storage]
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let repo = g.open_for(Global::INDEX_AND_SNAPSHOTS)?;
    let (id, snap) = repo.find_snapshot(&a.snapshot)?;
    let progress = g.progress();
    let include = a
        .include
        .iter()
        .map(|p| if p.is_absolute() { p.clone() } else { PathBuf::from("/").join(p) })
        .collect();
    let out = restore(&repo, &snap, &RestoreOptions { target: a.target.clone(), include, threads: a.threads }, progress.as_ref());
    progress.finish();
    let out = out?;
    if !g.quiet {
        eprintln!(
            "restored snapshot {} to {}: {} files, {} dirs, {:.1} MiB",
            id.short(),
            a.target.display(),
            out.files,
            out.dirs,
            out.bytes as f64 / 1048576.0
        );
    }
    if !out.errors.is_empty() {
        for (p, e) in &out.errors {
            eprintln!("not restored: {}: {e}", p.display());
        }
        eprintln!("incomplete: {} paths could not be restored", out.errors.len());
        return Ok(EXIT_INCOMPLETE);
    }
    Ok(0)
}
