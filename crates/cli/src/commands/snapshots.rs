use anyhow::Result;
use serde::Serialize;
use tidemark_repo::snapshot::Snapshot;
use tidemark_repo::Id;

use crate::ctx::{print_json, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only snapshots with this tag
    #[arg(long)]
    pub tag: Option<String>,
    /// Only snapshots of this host
    #[arg(long)]
    pub host: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Row<'a> {
    id: Id,
    short_id: String,
    #[serde(flatten)]
    snapshot: &'a Snapshot,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let repo = g.open_for(&[tidemark_repo::repo::FileKind::Snapshot])?;
    let snaps: Vec<(Id, Snapshot)> = repo
        .list_snapshots()?
        .into_iter()
        .filter(|(_, s)| a.tag.as_ref().is_none_or(|t| s.has_tag(t)))
        .filter(|(_, s)| a.host.as_ref().is_none_or(|h| &s.hostname == h))
        .collect();
    if a.json {
        let rows: Vec<Row> = snaps.iter().map(|(id, s)| Row { id: *id, short_id: id.short(), snapshot: s }).collect();
        return print_json(&rows).map(|_| 0);
    }
    println!("{:<10} {:<20} {:<12} {:<16} {:>10} paths", "id", "time", "host", "tags", "size");
    for (id, s) in &snaps {
        println!(
            "{:<10} {:<20} {:<12} {:<16} {:>10} {}{}",
            id.short(),
            s.time.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S"),
            s.hostname,
            s.tags.join(","),
            human(s.summary.total_bytes),
            s.paths.join(" "),
            if s.incomplete { " (incomplete)" } else { "" }
        );
    }
    println!("{} snapshots", snaps.len());
    Ok(0)
}

pub fn human(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", units[u])
}
