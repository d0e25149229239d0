use std::time::Duration;

use anyhow::{bail, Result};
use tidemark_repo::prune::{prune, PruneOptions, PruneStats};

use crate::commands::snapshots::human;
use crate::ctx::{print_json, Global};

/// Options shared by `prune` and `forget --prune`.
#[derive(clap::Args, Debug, Clone)]
pub struct PruneArgs {
    /// Repack partly used packs while unused data exceeds this share of the
    /// repository (percent, e.g. 5 or 5%)
    #[arg(long, default_value = "5%", value_parser = parse_percent)]
    pub max_unused: f64,
    /// Delete packs that no index names only when older than this (a running
    /// backup uploads packs before it indexes them)
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub keep_unindexed_for: Duration,
    /// Allowance for clocks of hosts and storage disagreeing
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub clock_skew: Duration,
}

impl PruneArgs {
    pub fn options(&self, dry_run: bool) -> PruneOptions {
        PruneOptions {
            max_unused_percent: self.max_unused,
            keep_unindexed_for: self.keep_unindexed_for,
            clock_skew: self.clock_skew,
            dry_run,
        }
    }
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("{s:?} is not between 0 and 100"));
    }
    Ok(v)
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub prune: PruneArgs,
    /// Only show what would be done
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Print the summary as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let repo = g.open_for(Global::INDEX_AND_SNAPSHOTS)?;
    let st = run_prune(g, &repo, &a.prune, a.dry_run)?;
    if a.json {
        print_json(&st)?;
    } else {
        print_summary(&st);
    }
    Ok(0)
}

pub fn run_prune(
    g: &Global,
    repo: &tidemark_repo::Repository,
    a: &PruneArgs,
    dry_run: bool,
) -> Result<PruneStats> {
    if a.clock_skew > Duration::from_secs(24 * 3600) {
        bail!("--clock-skew above a day would keep every obsolete pack forever in practice");
    }
    let progress = g.progress();
    let st = prune(repo, &a.options(dry_run), progress.as_ref());
    progress.finish();
    Ok(st?)
}

pub fn print_summary(st: &PruneStats) {
    let would = if st.dry_run { "would be " } else { "" };
    println!(
        "{} snapshots, {} blobs in use, {} packs in the index ({} live locks of other processes)",
        st.snapshots, st.blobs_used, st.packs_total, st.live_locks
    );
    println!(
        "packs: {} kept, {} {would}repacked into {} new ({} blobs, {}), {} {would}marked obsolete ({}), {} recovered",
        st.packs_kept,
        st.packs_repacked,
        st.packs_new,
        st.blobs_repacked,
        human(st.bytes_repacked),
        st.packs_marked_obsolete,
        human(st.bytes_marked),
        st.packs_recovered
    );
    println!(
        "deleted: {} obsolete packs and {} unindexed packs {would}deleted, {} freed; {} obsolete and {} unindexed packs kept until they are old enough",
        st.packs_deleted,
        st.unindexed_deleted,
        human(st.bytes_freed),
        st.packs_still_obsolete,
        st.unindexed_kept
    );
    println!(
        "{} unused blobs {would}removed from the index",
        st.blobs_removed
    );
    if st.temporaries_deleted > 0 {
        println!(
            "{} temporaries of killed writers deleted",
            st.temporaries_deleted
        );
    }
    if st.retention_extended > 0 {
        println!(
            "retention {would}extended on {} objects",
            st.retention_extended
        );
    }
}
