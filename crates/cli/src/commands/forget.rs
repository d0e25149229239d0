use anyhow::Result;
use tidemark_repo::forget::{forget, ForgetOptions, GroupBy, KeepPolicy, Within};

use crate::commands::prune::{print_summary, run_prune, PruneArgs};
use crate::ctx::{print_json, Global};

/// The calendar keep rules, shared by `forget` and `cluster forget`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct KeepArgs {
    /// Keep the N newest snapshots
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the last N hours that have one
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_hourly: u32,
    /// Keep the newest snapshot of each of the last N days that have one
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_daily: u32,
    /// Keep the newest snapshot of each of the last N (ISO) weeks that have one
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_weekly: u32,
    /// Keep the newest snapshot of each of the last N months that have one
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_monthly: u32,
    /// Keep the newest snapshot of each of the last N years that have one
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_yearly: u32,
    /// Keep snapshots younger than this, counted back from the group's newest
    /// snapshot (e.g. 7d, 2w, 1y2m, 36h)
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<Within>,
}

impl KeepArgs {
    /// The policy these flags give (without tag rules).
    pub fn policy(&self) -> KeepPolicy {
        KeepPolicy {
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
            within: self.keep_within,
            tags: Vec::new(),
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub keep: KeepArgs,
    /// Keep snapshots with this tag (repeatable)
    #[arg(long, value_name = "TAG")]
    pub keep_tag: Vec<String>,
    /// Only consider snapshots of this host (repeatable)
    #[arg(long)]
    pub host: Vec<String>,
    /// Only consider snapshots with this tag (repeatable)
    #[arg(long)]
    pub tag: Vec<String>,
    /// Apply the policy per group of these fields: host, paths, tags (comma
    /// separated; empty for one group)
    #[arg(long, default_value = "host,paths")]
    pub group_by: GroupBy,
    /// Only show what would be removed
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Print kept and removed snapshots per group, with reasons, as JSON
    #[arg(long)]
    pub json: bool,
    /// Run prune afterwards, freeing the data of removed snapshots
    #[arg(long)]
    pub prune: bool,
    /// Allow a policy that keeps nothing (removes every snapshot)
    #[arg(long)]
    pub unsafe_allow_remove_all: bool,
    #[command(flatten)]
    pub prune_args: PruneArgs,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let repo = g.open_for(&[tidemark_repo::repo::FileKind::Snapshot])?;
    let opts = ForgetOptions {
        policy: KeepPolicy {
            tags: a.keep_tag.clone(),
            ..a.keep.policy()
        },
        group_by: a.group_by,
        hosts: a.host.clone(),
        tags: a.tag.clone(),
        dry_run: a.dry_run,
        allow_remove_all: a.unsafe_allow_remove_all,
    };
    // Snapshot periods are the user's local days, weeks and months.
    let groups = forget(&repo, &opts, &chrono::Local)?;
    let removed: usize = groups.iter().map(|g| g.remove.len()).sum();
    if !a.json {
        for grp in &groups {
            let mut head = Vec::new();
            if let Some(h) = &grp.group.hostname {
                head.push(format!("host {h}"));
            }
            if let Some(p) = &grp.group.paths {
                head.push(format!("paths {}", p.join(" ")));
            }
            if let Some(t) = &grp.group.tags {
                head.push(format!("tags {}", t.join(",")));
            }
            println!(
                "group: {}",
                if head.is_empty() {
                    "all snapshots".into()
                } else {
                    head.join(", ")
                }
            );
            for d in &grp.keep {
                println!(
                    "  keep   {}  {}  {}",
                    d.id.short(),
                    local(d.time),
                    d.reasons.join(", ")
                );
            }
            for d in &grp.remove {
                println!("  remove {}  {}", d.id.short(), local(d.time));
            }
        }
        println!(
            "{} {removed} snapshots",
            if a.dry_run { "would remove" } else { "removed" }
        );
    }
    let pruned = if a.prune {
        Some(run_prune(g, &repo, &a.prune_args, a.dry_run)?)
    } else {
        None
    };
    if a.json {
        print_json(
            &serde_json::json!({ "groups": groups, "removed": removed, "dry_run": a.dry_run, "prune": pruned }),
        )?;
    } else if let Some(st) = &pruned {
        print_summary(st);
    }
    Ok(0)
}

pub fn local(t: chrono::DateTime<chrono::Utc>) -> String {
    t.with_timezone(&chrono::Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}
