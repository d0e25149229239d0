use std::path::PathBuf;

use anyhow::Result;
use tidemark_repo::backup::{backup, BackupOptions, ParentChoice};

use crate::ctx::{print_json, Global, EXIT_INCOMPLETE};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Files and directories to back up
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Tag the snapshot (repeatable)
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Host name to record instead of this machine's
    #[arg(long)]
    pub host: Option<String>,
    /// Parent snapshot for change detection (default: latest of same host and paths)
    #[arg(long)]
    pub parent: Option<String>,
    /// Read every file, ignoring the parent snapshot
    #[arg(long)]
    pub force: bool,
    /// Worker threads (default: six per core, to overlap reads and CPU work)
    #[arg(long)]
    pub threads: Option<usize>,
    /// Treat a file whose size, mtime and inode match the parent's as
    /// unchanged even if its ctime moved (new hard links to immutable files)
    #[arg(long)]
    pub ignore_ctime: bool,
    /// Print the summary as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let repo = g.open_for(Global::INDEX_AND_SNAPSHOTS)?;
    let parent = if a.force {
        ParentChoice::None
    } else if let Some(p) = &a.parent {
        ParentChoice::Snapshot(repo.find_snapshot(p)?.0)
    } else {
        ParentChoice::Auto
    };
    let progress = g.progress();
    let opts = BackupOptions { paths: a.paths, tags: a.tags, hostname: a.host, parent, threads: a.threads, ignore_ctime: a.ignore_ctime };
    let out = backup(&repo, &opts, progress.as_ref());
    progress.finish();
    let out = out?;
    let s = &out.snapshot.summary;
    if a.json {
        print_json(&serde_json::json!({ "id": out.id, "snapshot": out.snapshot, "errors": out.errors.iter().map(|(p, e)| serde_json::json!({"path": p, "error": e})).collect::<Vec<_>>() }))?;
    } else {
        if !g.quiet {
            eprintln!(
                "files: {} new, {} changed, {} unmodified; {} dirs; {:.1} MiB read, {:.1} MiB added ({:.1} MiB stored) in {:.1}s",
                s.files_new,
                s.files_changed,
                s.files_unmodified,
                s.dirs,
                s.bytes_read as f64 / 1048576.0,
                s.data_added as f64 / 1048576.0,
                s.data_added_stored as f64 / 1048576.0,
                s.duration_secs
            );
        }
        println!("{}", out.id);
    }
    if !out.errors.is_empty() {
        eprintln!("incomplete: {} entries could not be read; snapshot {} marked incomplete", out.errors.len(), out.id.short());
        return Ok(EXIT_INCOMPLETE);
    }
    Ok(0)
}
