//! `tidemark diff`: what changed between two snapshots.

use std::io::Write;

use anyhow::Result;
use tidemark_repo::tree::NodeKind;
use tidemark_repo::walk::{diff, DiffEntry};
use tidemark_repo::RepoError;

use crate::commands::snapshots::human;
use crate::ctx::{print_json, Global};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Lines: `+` added, `-` removed, `M` modified (content, link target or type), `U` metadata only (mode, owner, mtime); directories end with `/`.\nBytes added: sizes of added files plus new sizes of modified files; bytes removed: sizes of removed files plus old sizes of modified files."
)]
pub struct Args {
    /// First (older) snapshot: id, unique prefix, or `latest`
    pub snap1: String,
    /// Second (newer) snapshot
    pub snap2: String,
    /// {"changes": [{path, change, type, size_before, size_after}], "summary": {...}}
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let repo = g.open_for(Global::INDEX_AND_SNAPSHOTS)?;
    let (id1, s1) = repo.find_snapshot(&a.snap1)?;
    let (id2, s2) = repo.find_snapshot(&a.snap2)?;
    let index = repo.load_index()?;
    if a.json {
        let mut changes = Vec::new();
        let summary = diff(&repo, &index, &s1.tree, &s2.tree, &mut |e| {
            changes.push(e);
            Ok(())
        })?;
        print_json(
            &serde_json::json!({ "snap1": id1, "snap2": id2, "changes": changes, "summary": summary }),
        )?;
        return Ok(0);
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let io = |e: std::io::Error| RepoError::io("stdout", e);
    let summary = diff(&repo, &index, &s1.tree, &s2.tree, &mut |e: DiffEntry| {
        let slash = if e.kind == NodeKind::Dir { "/" } else { "" };
        writeln!(out, "{}    {}{slash}", e.change.symbol(), e.path.display()).map_err(io)
    });
    let summary = match summary.and_then(|s| out.flush().map_err(io).map(|_| s)) {
        Err(RepoError::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            return Ok(0)
        }
        other => other?,
    };
    println!(
        "\n{} added, {} removed, {} modified, {} metadata only; {} added, {} removed",
        summary.added,
        summary.removed,
        summary.modified,
        summary.metadata,
        human(summary.bytes_added),
        human(summary.bytes_removed)
    );
    Ok(0)
}
