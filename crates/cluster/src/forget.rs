//! Retention for whole cluster backups (`tidemark cluster forget`), the same
//! for every adapter.
//!
//! A cluster backup is its manifest in the catalog plus one repository
//! snapshot per node (or part); those only restore together, so they are
//! forgotten together. What goes: the backups named, or those a keep policy
//! (the command's `--keep-*` flags, else the cluster file's `[retention]`
//! table) does not keep, with the backup's `started` as its time: see
//! [`choose`]. The policy is the single-repository `forget`'s
//! (`apply_policy`).
//!
//! Order, so that a listed backup is never incomplete: under a `Forget` lock,
//! first delete the backup's catalog entry (from then on it is not listed),
//! then each of its node snapshots that no remaining manifest references.
//! A crash (or a store refusing a delete) between the two leaves only
//! unreferenced node snapshots ("leftovers"), which a later run removes:
//! see [`find_leftovers`] for when one counts as a leftover.
//!
//! - [`choose`]: named backups or a keep policy, from the command's input;
//! - [`plan`]: what goes and what stays, nothing changed ([`Report`]);
//! - [`apply`]: deletes what the report lists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tidemark_repo::forget::{apply_policy, Candidate, KeepPolicy};
use tidemark_repo::lock::{live_locks, Lock, LockKind};
use tidemark_repo::snapshot::Snapshot;
use tidemark_repo::{FileKind, Id, RepoError, Repository};

use crate::config::Common;
use crate::error::{ClusterError, Result};
use crate::manifest::{self, ClusterManifest};
use crate::tag::{hostname, tag_time};

/// What a run forgets.
#[derive(Debug, Clone)]
pub enum Choice {
    /// These backups (id prefixes of at least 4 hex digits, or `latest`).
    Named(Vec<String>),
    /// Those this policy does not keep.
    Keep(KeepPolicy),
}

/// The command's input: `named` backups, or keep rules from `flags` (None:
/// no flag given), else from the cluster file at `file`. Refuses both at
/// once, and a policy that keeps nothing unless `allow_empty`.
pub fn choose(
    named: Vec<String>,
    flags: Option<KeepPolicy>,
    allow_empty: bool,
    file: &Path,
    config: Common<'_>,
) -> Result<Choice> {
    if !named.is_empty() {
        if flags.is_some() {
            return Err(ClusterError::Refused("give either backup ids or --keep-* rules, not both".into()));
        }
        return Ok(Choice::Named(named));
    }
    let policy = match (flags, config.retention) {
        (Some(flags), _) => flags,
        // Validated when the file was loaded.
        (None, Some(r)) => r.policy().map_err(|e| ClusterError::Refused(format!("{}: {e}", file.display())))?,
        (None, None) => KeepPolicy::default(),
    };
    if policy.is_empty() && !allow_empty {
        return Err(ClusterError::Refused(format!(
            "no backup id and no keep rule (no --keep-* flag above zero, and {} has no [retention] table): \
             this would forget every backup of cluster {}; pass --allow-empty if that is meant",
            file.display(),
            config.name
        )));
    }
    Ok(Choice::Keep(policy))
}

/// One run's request.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub cluster: &'a str,
    /// The adapter's store name. With the stores of the cluster's manifests
    /// it says which node snapshots are this cluster's: host name
    /// `<store>/<cluster>/...` and the tag `<store>`.
    pub store: &'a str,
    pub choice: Choice,
    pub dry_run: bool,
    /// A node snapshot of this cluster that no backup references is removed
    /// only once its backup's last upload is older than this.
    pub leftover_grace: Duration,
}

/// One cluster backup in the report.
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
    /// Filled by the caller when it prunes afterwards.
    pub prune: Option<tidemark_repo::prune::PruneStats>,
}

/// What goes and what stays; nothing is changed. `now` dates leftovers.
pub fn plan(repo: &Repository, req: &Request<'_>, now: DateTime<Utc>) -> Result<Report> {
    let name = req.cluster;
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
    let reasons = keep_reasons(repo, name, &mine, &req.choice)?;
    let forget_ids: BTreeSet<Id> =
        mine.iter().zip(&reasons).filter(|(_, r)| r.is_empty()).map(|((id, _), _)| *id).collect();
    let mut report = Report {
        cluster: name.to_string(),
        dry_run: req.dry_run,
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
            let why = why.into_iter().map(|r| r.replace(" snapshot", " backup")).collect();
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
    let still_needed = |snap: &Id| refs.get(snap).is_some_and(|users| users.iter().any(|u| !forget_ids.contains(u)));
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
        // The adapter's own store counts before its first manifest; the
        // manifests' stores cover every kind of backup listed under this name.
        let mut stores: BTreeSet<&str> = mine.iter().map(|(_, m)| m.store.as_str()).collect();
        stores.insert(req.store);
        let stores: Vec<&str> = stores.into_iter().collect();
        let cluster = ClusterSnapshots { cluster: name, stores: &stores };
        report.leftovers = find_leftovers(&cluster, &snaps, &refs, newest, req.leftover_grace, now);
    } else {
        report.leftovers_skipped = Some(format!(
            "a backup or copy is running ({}): unreferenced node snapshots may be its parts, so none is removed this time",
            uploads_running.join("; ")
        ));
    }

    Ok(report)
}

/// Why each of the cluster's backups (`mine`, oldest first) is kept; empty:
/// forgotten.
fn keep_reasons(
    repo: &Repository,
    name: &str,
    mine: &[&(Id, ClusterManifest)],
    choice: &Choice,
) -> Result<Vec<Vec<String>>> {
    Ok(match choice {
        Choice::Keep(p) => {
            let items: Vec<Candidate> = mine.iter().map(|(_, m)| Candidate { time: m.started, tags: &[] }).collect();
            // Backup periods are the user's local days, weeks and months.
            apply_policy(&items, p, &chrono::Local)
        }
        Choice::Named(specs) => {
            let mut named = BTreeSet::new();
            for spec in specs {
                let (id, _) = manifest::find(repo, Some(name), spec).map_err(|e| ClusterError::Stopped {
                    what: format!("backup {spec} of cluster {name}: nothing was forgotten"),
                    source: Some(Box::new(e)),
                })?;
                named.insert(id);
            }
            mine.iter()
                .map(|(id, _)| if named.contains(id) { Vec::new() } else { vec!["not named".to_string()] })
                .collect()
        }
    })
}

/// Which repository snapshots are node snapshots of one cluster: host name
/// `<store>/<cluster>/...` and tagged `<store>`, for one of `stores`.
#[derive(Debug, Clone, Copy)]
pub struct ClusterSnapshots<'a> {
    pub cluster: &'a str,
    pub stores: &'a [&'a str],
}

impl ClusterSnapshots<'_> {
    /// The backup tag and its start time, if `s` is a node snapshot of this
    /// cluster taken by a backup.
    fn backup_tag(&self, s: &Snapshot) -> Option<(String, DateTime<Utc>)> {
        let ours = self
            .stores
            .iter()
            .any(|store| s.hostname.starts_with(&hostname(store, self.cluster, "")) && s.has_tag(store));
        if !ours {
            return None;
        }
        s.tags.iter().find_map(|t| tag_time(t).map(|at| (t.clone(), at)))
    }
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
    cluster: &ClusterSnapshots<'_>,
    snaps: &[(Id, Snapshot)],
    refs: &BTreeMap<Id, BTreeSet<Id>>,
    newest_backup: Option<DateTime<Utc>>,
    grace: Duration,
    now: DateTime<Utc>,
) -> Vec<Leftover> {
    let Some(newest) = newest_backup else {
        return Vec::new();
    };
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    // The last node upload of each backup tag ended at the newest of its
    // snapshots: the grace counts from there, not from each node's own.
    let mut last_upload: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    for (_, s) in snaps {
        if let Some((tag, _)) = cluster.backup_tag(s) {
            let t = last_upload.entry(tag).or_insert(s.time);
            *t = (*t).max(s.time);
        }
    }
    let mut out = Vec::new();
    for (id, s) in snaps {
        let Some((tag, started)) = cluster.backup_tag(s) else {
            continue;
        };
        let quiet_since = last_upload.get(&tag).copied().unwrap_or(s.time);
        if !refs.contains_key(id) && started < newest && now.signed_duration_since(quiet_since) >= grace {
            out.push(Leftover { snapshot: *id, host: s.hostname.clone(), tag, time: s.time });
        }
    }
    out
}

/// Deletes what the report lists, catalog entries first. On a failure the
/// report lists only what was actually removed, and the error says what
/// was not.
pub fn apply(repo: &Repository, report: &mut Report) -> Result<()> {
    let lock = Lock::acquire(repo, LockKind::Forget).map_err(|e| ClusterError::Stopped {
        what: "taking the forget lock: nothing was forgotten".into(),
        source: Some(Box::new(e.into())),
    })?;
    let mut failure = None;
    let entries: Vec<Id> = report.remove.iter().map(|l| l.id).collect();
    let listed = match delete(repo, FileKind::Catalog, &entries) {
        Ok(()) => BTreeSet::new(),
        Err(left) => {
            let names: Vec<&str> = report
                .remove
                .iter()
                .filter(|l| left.ids.contains(&l.id))
                .map(|l| l.short_id.as_str())
                .collect();
            let what = match names.as_slice() {
                [one] => format!(
                    "forgetting backup {one}: its catalog entry could not be deleted, so it is still listed and \
                     complete (nothing of it was removed)"
                ),
                many => format!(
                    "forgetting backups {}: their catalog entries could not be deleted, so they are still listed \
                     and complete (nothing of them was removed)",
                    many.join(", ")
                ),
            };
            failure = Some(ClusterError::Stopped {
                what,
                source: Some(Box::new(left.error.into())),
            });
            left.ids
        }
    };
    // Only the snapshots of backups that are no longer listed may go, and
    // none that a backup still listed (its entry refused) is made of.
    let (unlisted, still): (Vec<&BackupLine>, Vec<&BackupLine>) =
        report.remove.iter().partition(|l| !listed.contains(&l.id));
    let needed: BTreeSet<Id> = still
        .iter()
        .flat_map(|l| l.node_snapshots.iter().copied())
        .collect();
    let gone: BTreeSet<Id> = unlisted
        .iter()
        .flat_map(|l| l.node_snapshots.iter().copied())
        .filter(|s| !needed.contains(s))
        .collect();
    report.remove.retain(|l| !listed.contains(&l.id));
    let mut stuck = Vec::new();
    let doomed: Vec<Id> = report
        .snapshots_removed
        .iter()
        .filter(|s| gone.contains(s))
        .copied()
        .collect();
    report.snapshots_removed = match delete(repo, FileKind::Snapshot, &doomed) {
        Ok(()) => doomed,
        Err(left) => {
            stuck.push(format!("{}: {}", shorts(&left.ids), left.error));
            doomed
                .into_iter()
                .filter(|s| !left.ids.contains(s))
                .collect()
        }
    };
    if failure.is_none() {
        let leftovers: Vec<Id> = report.leftovers.iter().map(|l| l.snapshot).collect();
        if let Err(left) = delete(repo, FileKind::Snapshot, &leftovers) {
            stuck.push(format!("{} (leftovers): {}", shorts(&left.ids), left.error));
            report.leftovers.retain(|l| !left.ids.contains(&l.snapshot));
        }
    }
    lock.release();
    if !stuck.is_empty() {
        failure = Some(ClusterError::Stopped {
            what: format!(
                "node snapshots could not be deleted: {}. Their backups are no longer listed, so nothing listed is \
                 incomplete; these snapshots are unreferenced leftovers that a later `tidemark cluster forget` removes \
                 (they are listed by `tidemark snapshots` with the backup's tidemark-... tag)",
                stuck.join("; ")
            ),
            source: failure.map(Box::new),
        });
    }
    failure.map_or(Ok(()), Err)
}

/// Files a delete left behind, and the store's error naming each.
struct Left {
    ids: BTreeSet<Id>,
    error: RepoError,
}

/// Deletes the files all at once (on object storage one request per
/// thousand); one already gone counts as deleted (a re-run).
fn delete(repo: &Repository, kind: FileKind, ids: &[Id]) -> Result<(), Left> {
    let keys: Vec<String> = ids.iter().map(|id| kind.key(id)).collect();
    repo.block_on(repo.store().delete_many(&keys))
        .map_err(|error| {
            let failed: BTreeSet<&str> = error.keys().collect();
            let ids = ids
                .iter()
                .zip(&keys)
                .filter(|(_, k)| failed.contains(k.as_str()))
                .map(|(id, _)| *id)
                .collect();
            Left {
                ids,
                error: RepoError::Store(error.into()),
            }
        })
}

fn shorts(ids: &BTreeSet<Id>) -> String {
    ids.iter().map(Id::short).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests;
