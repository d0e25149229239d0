//! `tidemark copy`: snapshots into another repository with its own keys.

use std::path::PathBuf;

use anyhow::{Context, Result};
use tidemark_repo::copy::{copy, CopyOptions};
use tidemark_repo::snapshot::Snapshot;
use tidemark_repo::Id;

use crate::commands::snapshots::human;
use crate::ctx::{print_json, read_password, Global};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "The target has its own master key: every blob is read from the source, \
re-identified and stored under the target's key. Snapshots already copied (the target's \
snapshots record the source id as `original`) are skipped, so running copy again copies only \
new snapshots, and of those only data the target does not have."
)]
pub struct Args {
    /// Target repository: a path, or s3:http://HOST:PORT/BUCKET/PREFIX
    #[arg(long)]
    pub to: String,
    /// File holding the target's passphrase (else TIDEMARK_TO_PASSWORD)
    #[arg(long, env = "TIDEMARK_TO_PASSWORD_FILE")]
    pub to_password_file: Option<PathBuf>,
    /// Snapshots to copy: id, unique prefix or `latest` (default: all)
    pub snapshots: Vec<String>,
    /// Parallel pack reads from the source
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print the outcome as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let src = g.open_for(Global::INDEX_AND_SNAPSHOTS)?;
    let to_password = read_password(a.to_password_file.as_ref(), "TIDEMARK_TO_PASSWORD")
        .context("target passphrase (--to-password-file or TIDEMARK_TO_PASSWORD)")?;
    let target = Global {
        repo: Some(a.to.clone()),
        ..g.clone()
    };
    let dst = target
        .open_with(&to_password)
        .with_context(|| format!("opening target repository {}", a.to))?;
    let snaps: Vec<(Id, Snapshot)> = if a.snapshots.is_empty() {
        src.list_snapshots()?
    } else {
        a.snapshots
            .iter()
            .map(|s| src.find_snapshot(s))
            .collect::<Result<_, _>>()?
    };
    let progress = g.progress();
    let out = copy(
        &src,
        &dst,
        &snaps,
        &CopyOptions { threads: a.threads },
        progress.as_ref(),
    );
    progress.finish();
    let out = out?;
    if a.json {
        print_json(&serde_json::json!({
            "copied": out.copied.iter().map(|(s, t)| serde_json::json!({"source": s, "target": t})).collect::<Vec<_>>(),
            "skipped": out.skipped,
            "blobs_read": out.blobs_read,
            "bytes_read": out.bytes_read,
            "blobs_new": out.blobs_new,
            "bytes_new": out.bytes_new,
            "bytes_new_stored": out.bytes_new_stored,
        }))?;
        return Ok(0);
    }
    for (s, t) in &out.copied {
        println!("copied snapshot {} -> {}", s.short(), t.short());
    }
    if out.copied.is_empty() && out.skipped.is_empty() {
        println!("nothing to copy: no snapshots in the source");
    } else if out.copied.is_empty() {
        println!(
            "nothing to copy: the {} snapshots given are already in {}",
            out.skipped.len(),
            dst.describe()
        );
    } else if !g.quiet {
        eprintln!(
            "{} snapshots copied, {} already there; read {} in {} blobs, stored {} new ({} after compression)",
            out.copied.len(),
            out.skipped.len(),
            human(out.bytes_read),
            out.blobs_read,
            human(out.bytes_new),
            human(out.bytes_new_stored)
        );
    }
    Ok(0)
}
