//! `tidemark verify`: name every damaged object and what it spoils.

use anyhow::Result;
use tidemark_repo::verify::{verify, ObjectKind, Problem, ReadData, VerifyOptions, VerifyReport};

/// Notes printed before the rest are left to `--json`.
const MAX_NOTES: usize = 10;

use crate::ctx::{print_json, Global, EXIT_INCOMPLETE};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Also download every pack and check every blob in it
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Download only part of the packs: `N%` (a random share, different on
    /// every run) or `n/m` (part n of m: runs 1/m .. m/m read each pack once)
    #[arg(long, value_name = "N%|n/m")]
    pub read_data_subset: Option<ReadData>,
    /// Packs downloaded at once
    #[arg(long)]
    pub threads: Option<usize>,
    /// Take snapshot and index files and trees from the local cache where it
    /// has them (each copy checked against its id): checks that every
    /// snapshot is whole and every pack it needs is listed, in a few
    /// requests, but not the stored copies of that metadata
    #[arg(long)]
    pub with_cache: bool,
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    // Checks what is stored: nothing from the local cache unless asked.
    let repo = if a.with_cache {
        g.open_for(Global::INDEX_AND_SNAPSHOTS)?
    } else {
        g.open_uncached_for(Global::INDEX_AND_SNAPSHOTS)?
    };
    let read_data = match (a.read_data, a.read_data_subset) {
        (true, _) => ReadData::All,
        (false, Some(s)) => s,
        (false, None) => ReadData::None,
    };
    let progress = g.progress();
    let report = verify(
        &repo,
        &VerifyOptions {
            read_data,
            threads: a.threads,
        },
        progress.as_ref(),
    );
    progress.finish();
    let report = report?;
    let code = if report.is_clean() {
        0
    } else {
        EXIT_INCOMPLETE
    };
    if a.json {
        print_json(&report)?;
        return Ok(code);
    }
    // Notes can be one per pack (a lost index file): show a few.
    for n in report.notes.iter().take(MAX_NOTES) {
        println!("note: {n}");
    }
    if report.notes.len() > MAX_NOTES {
        println!(
            "note: ... and {} more (see --json)",
            report.notes.len() - MAX_NOTES
        );
    }
    for p in &report.problems {
        print_problem(p);
    }
    println!("{}", summary(&report, read_data != ReadData::None));
    let index_trouble = report
        .problems
        .iter()
        .any(|p| p.kind == ObjectKind::Index || p.reason.contains("not in the index"));
    if index_trouble || report.notes.iter().any(|n| n.contains("is not indexed")) {
        println!("hint: `tidemark repair index` rebuilds the index from the packs");
    }
    Ok(code)
}

fn print_problem(p: &Problem) {
    println!("damaged {} {}: {}", p.kind.name(), p.id, p.reason);
    for a in &p.affected {
        if a.whole {
            println!(
                "    snapshot {}: the whole snapshot is unreadable",
                a.snapshot.short()
            );
        }
        for path in &a.paths {
            println!("    snapshot {}: {path}", a.snapshot.short());
        }
    }
}

fn summary(r: &VerifyReport, read: bool) -> String {
    let s = &r.stats;
    let mut line = format!(
        "checked {} index files, {} snapshots, {} trees, {} packs",
        s.index_files, s.snapshots, s.trees, s.packs_indexed
    );
    if read {
        line.push_str(&format!(
            " (read {} packs, {} blobs, {:.1} MiB)",
            s.packs_read,
            s.blobs_read,
            s.bytes_read as f64 / 1048576.0
        ));
    }
    if r.is_clean() {
        line.push_str(": no damage found");
    } else {
        let files: std::collections::BTreeSet<&String> = r
            .problems
            .iter()
            .flat_map(|p| p.affected.iter().flat_map(|a| &a.paths))
            .collect();
        line.push_str(&format!(
            ": {} damaged objects, {} paths affected",
            r.problems.len(),
            files.len()
        ));
    }
    line
}
