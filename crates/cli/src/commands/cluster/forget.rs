//! `tidemark cluster forget`: retention for whole cluster backups.
//!
//! A cluster backup is its manifest in the catalog plus one repository
//! snapshot per node; the node snapshots only restore together, so they are
//! forgotten together. What goes: the backups named on the command line, or
//! those a keep policy (the `--keep-*` flags, else the cluster file's
//! `[retention]` table) does not keep, with the backup's `started` as its
//! time. The policy is the single-repository `forget`'s (`apply_policy`).
//!
//! Order, so that a listed backup is never incomplete: under a `Forget` lock,
//! first delete the backup's catalog entry (from then on it is not listed),
//! then each of its node snapshots that no remaining manifest references.
//! A crash (or a store refusing a delete) between the two leaves only
//! unreferenced node snapshots ("leftovers"), which a later run removes:
//! see [`find_leftovers`] for when one counts as a leftover. `--prune` then
//! frees the data, as after `tidemark forget`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;
use tidemark_cassandra::backup::TAG_PREFIX;
use tidemark_cluster::config::Common;
use tidemark_cluster::manifest::{self, ClusterManifest};
use tidemark_repo::forget::{apply_policy, Candidate, KeepPolicy};
use tidemark_repo::lock::{live_locks, Lock, LockKind};
use tidemark_repo::snapshot::Snapshot;
use tidemark_repo::{FileKind, Id, RepoError, Repository};

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

/// One cluster backup in the output.
#[derive(Debug, Serialize)]
pub struct BackupLine {
    pub id: Id,
    pub short_id: String,
    pub started: DateTime<Utc>,
    pub nodes: usize,
    pub total_bytes: u64,
    /// Why it is kept (empty for a removed one).
    pub reasons: Vec<String>,
    pub node_snapshots: Vec<Id>,
}

impl BackupLine {
    fn new(id: &Id, m: &ClusterManifest, reasons: Vec<String>) -> BackupLine {
        BackupLine {
            id: *id,
            short_id: id.short(),
            started: m.started,
            nodes: m.nodes.len(),
            total_bytes: m.total_bytes(),
            reasons,
            node_snapshots: m.nodes.iter().map(|n| n.snapshot).collect(),
        }
    }
}

/// A node snapshot of this cluster that no backup references.
#[derive(Debug, Serialize)]
pub struct Leftover {
    pub snapshot: Id,
    pub host: String,
    pub tag: String,
    pub time: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub cluster: String,
    pub dry_run: bool,
    pub keep: Vec<BackupLine>,
    pub remove: Vec<BackupLine>,
    /// Node snapshots of the removed backups that are (or would be) deleted.
    pub snapshots_removed: Vec<Id>,
    /// Unreferenced node snapshots of earlier failures, (to be) deleted.
    pub leftovers: Vec<Leftover>,
    /// Why leftovers were not looked for this time, if they were not.
    pub leftovers_skipped: Option<String>,
    pub prune: Option<tidemark_repo::prune::PruneStats>,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let config = AnyConfig::load(&a.config)?;
    let policy = choose_policy(&a, config.common())?;
    let repo = config.open_repository()?;
    let mut report = plan(&repo, &a, policy.as_ref(), config.common().name)?;
    let failure = if a.dry_run {
        None
    } else {
        apply(&repo, &mut report)
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
        Some(e) => Err(e),
        None => Ok(0),
    }
}

/// What goes and what stays; nothing is changed.
fn plan(repo: &Repository, a: &Args, policy: Option<&KeepPolicy>, name: &str) -> Result<Report> {
    // Locks are read before the catalog and the snapshots: a node upload
    // writes its snapshot before it removes its lock, so one not among the
    // live locks read here has finished and its snapshot is in the listing.
    let uploads_running: Vec<String> = live_locks(repo)?
        .into_iter()
        .filter(|l| matches!(l.kind, LockKind::Backup | LockKind::Copy) && !l.holder_is_dead())
        .map(|l| l.describe())
        .collect();
    let all = manifest::list(repo, None)?;
    let mine: Vec<&(Id, ClusterManifest)> = all.iter().filter(|(_, m)| m.cluster == name).collect();
    // Why each of this cluster's backups is kept (empty: forgotten).
    let reasons: Vec<Vec<String>> = match policy {
        Some(p) => {
            let items: Vec<Candidate> = mine
                .iter()
                .map(|(_, m)| Candidate {
                    time: m.started,
                    tags: &[],
                })
                .collect();
            // Backup periods are the user's local days, weeks and months.
            apply_policy(&items, p, &chrono::Local)
        }
        None => {
            let mut named = BTreeSet::new();
            for spec in &a.backups {
                let (id, _) = manifest::find(repo, Some(name), spec).with_context(|| {
                    format!("backup {spec} of cluster {name}: nothing was forgotten")
                })?;
                named.insert(id);
            }
            mine.iter()
                .map(|(id, _)| {
                    if named.contains(id) {
                        Vec::new()
                    } else {
                        vec!["not named".to_string()]
                    }
                })
                .collect()
        }
    };
    let forget_ids: BTreeSet<Id> = mine
        .iter()
        .zip(&reasons)
        .filter(|(_, r)| r.is_empty())
        .map(|((id, _), _)| *id)
        .collect();
    let mut report = Report {
        cluster: name.to_string(),
        dry_run: a.dry_run,
        keep: Vec::new(),
        remove: Vec::new(),
        snapshots_removed: Vec::new(),
        leftovers: Vec::new(),
        leftovers_skipped: None,
        prune: None,
    };
    // Newest first, as `forget` prints them.
    for ((id, m), why) in mine.iter().zip(reasons).rev() {
        if why.is_empty() {
            report.remove.push(BackupLine::new(id, m, why));
        } else {
            // The policy's words are about snapshots; here they are backups.
            let why = why
                .into_iter()
                .map(|r| r.replace(" snapshot", " backup"))
                .collect();
            report.keep.push(BackupLine::new(id, m, why));
        }
    }

    // Snapshot -> the backups (of any cluster) that reference it, and which
    // of the forgotten backups' snapshots nothing else references.
    let mut refs: BTreeMap<Id, BTreeSet<Id>> = BTreeMap::new();
    for (id, m) in &all {
        for n in &m.nodes {
            refs.entry(n.snapshot).or_default().insert(*id);
        }
    }
    let still_needed = |snap: &Id| {
        refs.get(snap)
            .is_some_and(|users| users.iter().any(|u| !forget_ids.contains(u)))
    };
    for line in &report.remove {
        for s in &line.node_snapshots {
            if !still_needed(s) && !report.snapshots_removed.contains(s) {
                report.snapshots_removed.push(*s);
            }
        }
    }

    if uploads_running.is_empty() {
        let snaps = repo.list_snapshots()?;
        let newest = mine.last().map(|(_, m)| m.started);
        report.leftovers =
            find_leftovers(name, &snaps, &refs, newest, a.leftover_grace, Utc::now());
    } else {
        report.leftovers_skipped = Some(format!(
            "a backup or copy is running ({}): unreferenced node snapshots may be its parts, so none is removed this time",
            uploads_running.join("; ")
        ));
    }

    Ok(report)
}

/// The keep policy, or None when backups are named. Refuses a policy that
/// keeps nothing unless `--allow-empty`.
fn choose_policy(a: &Args, config: Common<'_>) -> Result<Option<KeepPolicy>> {
    let flags = a.keep.policy();
    // A zero is clap's default, so "given" means above zero (or any
    // --keep-within, which a zero duration makes a policy keeping nothing).
    let flags_given = !flags.is_empty() || a.keep.keep_within.is_some();
    if !a.backups.is_empty() {
        if flags_given {
            bail!("give either backup ids or --keep-* rules, not both");
        }
        return Ok(None);
    }
    let policy = if flags_given {
        flags
    } else if let Some(r) = config.retention {
        // Validated when the file was loaded.
        r.policy()
            .map_err(|e| anyhow::anyhow!("{}: {e}", a.config.display()))?
    } else {
        KeepPolicy::default()
    };
    if policy.is_empty() && !a.allow_empty {
        bail!(
            "no backup id and no keep rule (no --keep-* flag above zero, and {} has no [retention] table): \
             this would forget every backup of cluster {}; pass --allow-empty if that is meant",
            a.config.display(),
            config.name
        );
    }
    Ok(Some(policy))
}

/// Which node snapshots of this cluster are leftovers: those of a backup
/// whose catalog entry a crashed `cluster forget` already deleted, or of a
/// backup that failed before its manifest was committed.
///
/// A running backup's node snapshots are unreferenced too until its manifest
/// is committed, and removing one would make that backup incomplete. Three
/// guards, because no single one covers every moment of a backup:
/// - the caller skips the search while any backup or copy lock is live:
///   every node upload holds one until its snapshot is written, so this
///   covers uploads of any length (a slow node can upload for hours after a
///   fast one);
/// - the snapshot's backup tag (`tidemark-<start time>-...`) must be older
///   than the newest committed backup of this cluster: a backup started
///   after that one has not committed yet as far as we know;
/// - every snapshot of its backup tag must be older than `grace` (default
///   1 h): after the last node's upload the coordinator commits the manifest
///   within seconds, with no lock held, and that window is covered by the
///   age, not by the lock state.
///
/// `cluster copy` into this repository holds a `copy` lock from before the
/// first node snapshot until the manifest is saved; its node snapshots keep
/// their source's tag and time, so the lock is what protects them.
pub fn find_leftovers(
    cluster: &str,
    snaps: &[(Id, Snapshot)],
    refs: &BTreeMap<Id, BTreeSet<Id>>,
    newest_backup: Option<DateTime<Utc>>,
    grace: Duration,
    now: DateTime<Utc>,
) -> Vec<Leftover> {
    let Some(newest) = newest_backup else {
        return Vec::new();
    };
    let host_prefix = tidemark_cassandra::agent::hostname(cluster, "");
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    let backup_tag = |s: &Snapshot| -> Option<(String, DateTime<Utc>)> {
        if !s.hostname.starts_with(&host_prefix) || !s.has_tag(tidemark_cassandra::agent::STORE_TAG)
        {
            return None;
        }
        s.tags
            .iter()
            .find_map(|t| tag_time(t).map(|at| (t.clone(), at)))
    };
    // The last node upload of each backup tag ended at the newest of its
    // snapshots: the grace counts from there, not from each node's own.
    let mut last_upload: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    for (_, s) in snaps {
        if let Some((tag, _)) = backup_tag(s) {
            let t = last_upload.entry(tag).or_insert(s.time);
            *t = (*t).max(s.time);
        }
    }
    let mut out = Vec::new();
    for (id, s) in snaps {
        let Some((tag, started)) = backup_tag(s) else {
            continue;
        };
        let quiet_since = last_upload.get(&tag).copied().unwrap_or(s.time);
        if !refs.contains_key(id)
            && started < newest
            && now.signed_duration_since(quiet_since) >= grace
        {
            out.push(Leftover {
                snapshot: *id,
                host: s.hostname.clone(),
                tag,
                time: s.time,
            });
        }
    }
    out
}

/// The start time a backup tag carries: `tidemark-YYYYmmddTHHMMSSZ-xxxxxx`.
fn tag_time(tag: &str) -> Option<DateTime<Utc>> {
    let rest = tag.strip_prefix(TAG_PREFIX)?;
    let stamp = rest.get(..16)?;
    NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

/// Deletes what the report lists, catalog entries first. Returns the first
/// failure; the report then lists only what was actually removed.
fn apply(repo: &Repository, report: &mut Report) -> Option<anyhow::Error> {
    let lock = match Lock::acquire(repo, LockKind::Forget) {
        Ok(l) => l,
        Err(e) => {
            return Some(
                anyhow::Error::new(e).context("taking the forget lock: nothing was forgotten"),
            )
        }
    };
    let mut failure = None;
    let mut unlisted = Vec::new();
    for line in &report.remove {
        match delete(repo, FileKind::Catalog, &line.id) {
            Ok(()) => unlisted.push(line.id),
            Err(e) => {
                failure = Some(anyhow::Error::new(e).context(format!(
                    "forgetting backup {}: its catalog entry could not be deleted, so it is still listed and \
                     complete (nothing of it was removed)",
                    line.short_id
                )));
                break;
            }
        }
    }
    // Only the snapshots of backups that are no longer listed may go.
    let gone: BTreeSet<Id> = report
        .remove
        .iter()
        .filter(|l| unlisted.contains(&l.id))
        .flat_map(|l| l.node_snapshots.iter().copied())
        .collect();
    report.remove.retain(|l| unlisted.contains(&l.id));
    let mut stuck = Vec::new();
    let mut removed = Vec::new();
    for s in report.snapshots_removed.iter().filter(|s| gone.contains(s)) {
        match delete(repo, FileKind::Snapshot, s) {
            Ok(()) => removed.push(*s),
            Err(e) => stuck.push(format!("{}: {e}", s.short())),
        }
    }
    report.snapshots_removed = removed;
    if failure.is_none() {
        let mut left = Vec::new();
        for l in std::mem::take(&mut report.leftovers) {
            match delete(repo, FileKind::Snapshot, &l.snapshot) {
                Ok(()) => left.push(l),
                Err(e) => stuck.push(format!("{} (leftover): {e}", l.snapshot.short())),
            }
        }
        report.leftovers = left;
    }
    lock.release();
    if !stuck.is_empty() {
        let msg = format!(
            "node snapshots could not be deleted: {}. Their backups are no longer listed, so nothing listed is \
             incomplete; these snapshots are unreferenced leftovers that a later `tidemark cluster forget` removes \
             (they are listed by `tidemark snapshots` with the backup's tidemark-... tag)",
            stuck.join("; ")
        );
        failure = Some(match failure {
            Some(f) => f.context(msg),
            None => anyhow::anyhow!(msg),
        });
    }
    failure
}

/// Deletes one file; one already gone counts as deleted (a re-run).
fn delete(repo: &Repository, kind: FileKind, id: &Id) -> Result<(), RepoError> {
    match repo.delete_file(kind, id) {
        Err(RepoError::Store(e)) if e.is_not_found() => Ok(()),
        r => r,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn snap(host: &str, tags: &[&str], time: &str) -> Snapshot {
        Snapshot {
            time: t(time),
            hostname: host.into(),
            username: "u".into(),
            paths: vec!["/v".into()],
            tags: tags.iter().map(|s| s.to_string()).collect(),
            tree: Id::default(),
            parent: None,
            incomplete: false,
            program_version: String::new(),
            summary: Default::default(),
            original: None,
        }
    }

    #[test]
    fn tag_time_reads_the_backup_start() {
        assert_eq!(
            tag_time("tidemark-20261125T160509Z-abcdef"),
            Some(t("2026-11-25T16:05:09Z"))
        );
        assert_eq!(tag_time("other-20261125T160509Z-abcdef"), None);
        assert_eq!(tag_time("tidemark-2026"), None);
    }

    #[test]
    fn only_old_unreferenced_snapshots_of_this_cluster_are_leftovers() {
        let now = t("2026-11-26T12:00:00Z");
        let newest = Some(t("2026-11-26T10:00:00Z"));
        let old_tag = "tidemark-20261126T090000Z-aaaaaa";
        let new_tag = "tidemark-20261126T103000Z-bbbbbb";
        let young_tag = "tidemark-20261126T080000Z-cccccc";
        let host = "cassandra/prod/127.0.1.1";
        let cases = [
            (
                snap(host, &[old_tag, "cassandra"], "2026-11-26T09:01:00Z"),
                true,
            ),
            // Referenced by a backup.
            (
                snap(host, &[old_tag, "cassandra"], "2026-11-26T09:01:00Z"),
                false,
            ),
            // Started after the newest backup: may still be committing.
            (
                snap(host, &[new_tag, "cassandra"], "2026-11-26T10:31:00Z"),
                false,
            ),
            // Too young (grace), although its tag is old.
            (
                snap(host, &[young_tag, "cassandra"], "2026-11-26T11:30:00Z"),
                false,
            ),
            // Old itself, but another node of its backup uploaded lately.
            (
                snap(host, &[young_tag, "cassandra"], "2026-11-26T08:10:00Z"),
                false,
            ),
            // Another cluster, a plain snapshot, no tidemark tag.
            (
                snap(
                    "cassandra/other/127.0.1.1",
                    &[old_tag, "cassandra"],
                    "2026-11-26T09:01:00Z",
                ),
                false,
            ),
            (snap("laptop", &[old_tag], "2026-11-26T09:01:00Z"), false),
            (
                snap(host, &["cassandra", "manual"], "2026-11-26T09:01:00Z"),
                false,
            ),
        ];
        let snaps: Vec<(Id, Snapshot)> = cases
            .iter()
            .map(|(s, _)| (Id::random(), s.clone()))
            .collect();
        let refs = BTreeMap::from([(snaps[1].0, BTreeSet::from([Id::random()]))]);
        let found = find_leftovers(
            "prod",
            &snaps,
            &refs,
            newest,
            Duration::from_secs(3600),
            now,
        );
        let want: Vec<Id> = snaps
            .iter()
            .zip(&cases)
            .filter(|(_, c)| c.1)
            .map(|(s, _)| s.0)
            .collect();
        assert_eq!(found.iter().map(|l| l.snapshot).collect::<Vec<_>>(), want);
        assert!(
            find_leftovers("prod", &snaps, &refs, None, Duration::ZERO, now).is_empty(),
            "no backup, no bound"
        );
    }
}
