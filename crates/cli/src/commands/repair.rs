//! `tidemark repair index`: rebuild the index from the packs alone.

use anyhow::Result;
use tidemark_repo::repair::repair_index;

use crate::ctx::{print_json, Global, EXIT_INCOMPLETE};

#[derive(clap::Subcommand, Debug)]
pub enum RepairCommand {
    /// Rebuild the index from the pack headers and replace the old index files
    Index {
        #[arg(long)]
        json: bool,
    },
}

pub fn run(g: &Global, c: RepairCommand) -> Result<i32> {
    let repo = g.open()?;
    match c {
        RepairCommand::Index { json } => {
            let progress = g.progress();
            let r = repair_index(&repo, progress.as_ref());
            progress.finish();
            let r = r?;
            // Skipped packs are damage: their blobs are no longer reachable.
            let code = if r.skipped.is_empty() {
                0
            } else {
                EXIT_INCOMPLETE
            };
            if json {
                print_json(&r)?;
                return Ok(code);
            }
            for (p, why) in &r.skipped {
                println!("skipped damaged pack {p}: {why}");
            }
            println!(
                "rebuilt index: {} packs, {} blobs in {} new index files; removed {} old index files{}",
                r.packs,
                r.blobs,
                r.index_files_written.len(),
                r.index_files_removed.len(),
                if r.skipped.is_empty() { String::new() } else { format!("; {} damaged packs skipped", r.skipped.len()) }
            );
            Ok(code)
        }
    }
}
