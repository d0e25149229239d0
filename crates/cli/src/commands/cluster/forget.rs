//! `tidemark cluster forget`: retention for whole cluster backups. The rules
//! (what goes, in which order, which unreferenced node snapshots count as
//! leftovers) are `tidemark_cluster::forget`'s; this parses the flags, runs
//! prune afterwards if asked, and prints.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use tidemark_cluster::forget::{self, Report, Request};

use super::config::AnyConfig;
use crate::commands::forget::{local, KeepArgs};
use crate::commands::prune::{print_summary, run_prune, PruneArgs};
use crate::commands::snapshots::human;
use crate::ctx::{print_json, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The cluster's TOML file
    #[arg(long)]
    pub config: PathBuf,
    /// Backups to forget: id prefixes (at least 4 hex digits) or `latest`.
    /// Without them, the keep rules decide.
    pub backups: Vec<String>,
    #[command(flatten)]
    pub keep: KeepArgs,
    /// Only show what would be removed
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Run prune afterwards, freeing the data of the forgotten backups
    #[arg(long)]
    pub prune: bool,
    /// Allow a policy that keeps nothing (forgets every backup of the cluster)
    #[arg(long)]
    pub allow_empty: bool,
    /// Print what is kept and removed as JSON
    #[arg(long)]
    pub json: bool,
    /// A node snapshot of this cluster that no backup references is removed
    /// only once it is older than this (see the leftovers rule in the docs)
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub leftover_grace: Duration,
    #[command(flatten)]
    pub prune_args: PruneArgs,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let config = AnyConfig::load(&a.config)?;
    let common = config.common();
    let flags = a.keep.policy();
    // A zero is clap's default, so "given" means above zero (or any
    // --keep-within, which a zero duration makes a policy keeping nothing).
    let flags = (!flags.is_empty() || a.keep.keep_within.is_some()).then_some(flags);
    let choice = forget::choose(a.backups.clone(), flags, a.allow_empty, &a.config, common)?;
    let repo = config.open_repository(g)?;
    let request = Request {
        cluster: common.name,
        store: config.file().store(),
        choice,
        dry_run: a.dry_run,
        leftover_grace: a.leftover_grace,
    };
    let mut report = forget::plan(&repo, &request, chrono::Utc::now())?;
    let failure = if a.dry_run {
        None
    } else {
        forget::apply(&repo, &mut report).err()
    };
    if failure.is_none() && a.prune {
        report.prune = Some(run_prune(g, &repo, &a.prune_args, a.dry_run)?);
    }
    if a.json {
        print_json(&report)?;
    } else {
        print_text(&report);
    }
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(0),
    }
}

fn print_text(r: &Report) {
    let (forgets, removes) = if r.dry_run {
        ("would forget", "would remove")
    } else {
        ("forgot", "removed")
    };
    println!(
        "cluster {}: {} backups kept, {} to forget",
        r.cluster,
        r.keep.len(),
        r.remove.len()
    );
    for b in &r.keep {
        println!(
            "  keep   {}  {}  {} nodes  {:>10}  {}",
            b.short_id,
            local(b.started),
            b.nodes,
            human(b.total_bytes),
            b.reasons.join(", ")
        );
    }
    for b in &r.remove {
        println!(
            "  remove {}  {}  {} nodes  {:>10}",
            b.short_id,
            local(b.started),
            b.nodes,
            human(b.total_bytes)
        );
    }
    for l in &r.leftovers {
        println!(
            "  leftover node snapshot {} of {} (tag {}, no backup references it): {removes}",
            l.snapshot.short(),
            l.host,
            l.tag
        );
    }
    if let Some(why) = &r.leftovers_skipped {
        println!("note: {why}");
    }
    println!(
        "{forgets} {} backups, {removes} {} node snapshots and {} leftovers",
        r.remove.len(),
        r.snapshots_removed.len(),
        r.leftovers.len()
    );
    if let Some(st) = &r.prune {
        print_summary(st);
    }
}
