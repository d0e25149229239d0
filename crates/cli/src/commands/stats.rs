//! `tidemark stats`: sizes, deduplication and compression.

use anyhow::Result;
use tidemark_repo::snapshot::Snapshot;
use tidemark_repo::stats::stats;
use tidemark_repo::Id;

use crate::commands::snapshots::human;
use crate::ctx::{print_json, Global};

const FIGURES: &str = "\
Figures (JSON field names in brackets):
  snapshots [snapshots]     the snapshots counted (all, or those given)
  files [files, dirs]       regular files and directories over those snapshots, repeats included
  logical size [logical_bytes]
                            sum of file sizes over those snapshots: what restoring each would write
  unique data [data_blobs, data_raw_bytes, data_stored_bytes]
                            distinct data blobs they reference; their plaintext size (raw) and
                            their size in packs, compressed and encrypted (stored, from the index)
  trees [tree_blobs, tree_raw_bytes, tree_stored_bytes]
                            the same for directory listings
  dedup ratio [dedup_ratio] logical size / unique raw data
  compression ratio [compression_ratio]
                            unique raw data / unique stored data
  repository [repository.*] the whole repository as listed: packs (count and bytes), plus index
                            and snapshot files; includes data no snapshot references any more";

#[derive(clap::Args, Debug)]
#[command(after_help = FIGURES)]
pub struct Args {
    /// Snapshots to count (id, prefix or `latest`; default: all)
    pub snapshots: Vec<String>,
    /// Print the figures as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let repo = g.open_for(Global::INDEX_AND_SNAPSHOTS)?;
    let snaps: Vec<(Id, Snapshot)> = if a.snapshots.is_empty() {
        repo.list_snapshots()?
    } else {
        a.snapshots
            .iter()
            .map(|s| repo.find_snapshot(s))
            .collect::<Result<_, _>>()?
    };
    let index = repo.load_index()?;
    let s = stats(&repo, &index, &snaps)?;
    if a.json {
        print_json(&s)?;
        return Ok(0);
    }
    let ratio = |r: Option<f64>| r.map(|r| format!("{r:.2}")).unwrap_or_else(|| "-".into());
    let r = &s.repository;
    println!("snapshots:          {}", s.snapshots);
    println!("files:              {} ({} directories)", s.files, s.dirs);
    println!(
        "logical size:       {} ({} bytes)",
        human(s.logical_bytes),
        s.logical_bytes
    );
    println!(
        "unique data:        {} blobs, {} raw, {} stored",
        s.data_blobs,
        human(s.data_raw_bytes),
        human(s.data_stored_bytes)
    );
    println!(
        "trees:              {} blobs, {} raw, {} stored",
        s.tree_blobs,
        human(s.tree_raw_bytes),
        human(s.tree_stored_bytes)
    );
    println!("dedup ratio:        {}", ratio(s.dedup_ratio));
    println!("compression ratio:  {}", ratio(s.compression_ratio));
    println!(
        "repository:         {} in {} packs ({}), {} index files ({}), {} snapshot files ({})",
        human(r.total_bytes),
        r.packs,
        human(r.pack_bytes),
        r.index_files,
        human(r.index_bytes),
        r.snapshot_files,
        human(r.snapshot_bytes)
    );
    if s.missing_blobs > 0 {
        eprintln!(
            "warning: {} referenced blobs are not in the index (run verify)",
            s.missing_blobs
        );
    }
    Ok(0)
}
