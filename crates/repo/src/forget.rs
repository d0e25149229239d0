//! `forget`: which snapshots a retention policy keeps, and removing the rest.
//!
//! The semantics follow restic's: snapshots are grouped (by default by host
//! and paths), and within a group, walked newest first, a snapshot is kept if
//! any rule keeps it. `--keep-last N` keeps the N newest; each calendar bucket
//! (`hourly` .. `yearly`) keeps the newest snapshot of each of the N most
//! recent periods that have a snapshot; `--keep-within` keeps everything
//! younger than the duration *relative to the group's newest snapshot* (so an
//! idle host does not lose its last backups just because time passed);
//! `--keep-tag` keeps tagged snapshots. Periods are computed in the caller's
//! time zone (the CLI passes the local zone: "daily" means local days).
//!
//! Forget only removes snapshot files; the data they referenced is freed by
//! `prune` (prune.rs), which is what makes it safe beside running backups.
//!
//! A snapshot that a cluster backup manifest in the catalog names is never
//! removed here, whatever the policy: the node snapshots of one cluster
//! backup only restore together, so they go with their manifest
//! (`tidemark cluster forget`).

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Months, TimeZone, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::lock::{Lock, LockKind};
use crate::repo::{FileKind, Repository};
use crate::snapshot::Snapshot;

/// A calendar duration for `--keep-within`: `1y2m`, `7d`, `2w`, `36h`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Within {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub hours: u32,
}

impl Within {
    /// The earliest time still "within" this duration before `t`.
    pub fn before(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        let months = self.years.saturating_mul(12).saturating_add(self.months);
        let t = t
            .checked_sub_months(Months::new(months))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        t.checked_sub_signed(
            chrono::Duration::days(self.days as i64) + chrono::Duration::hours(self.hours as i64),
        )
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    pub fn is_zero(&self) -> bool {
        *self == Within::default()
    }
}

impl std::fmt::Display for Within {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, u) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n > 0 {
                write!(f, "{n}{u}")?;
            }
        }
        if self.is_zero() {
            f.write_str("0h")?;
        }
        Ok(())
    }
}

impl FromStr for Within {
    type Err = RepoError;
    fn from_str(s: &str) -> Result<Within> {
        let bad = || {
            RepoError::Invalid(format!(
                "{s:?} is not a duration like 7d, 2w, 1y2m or 36h (units y, m, w, d, h)"
            ))
        };
        let mut w = Within::default();
        let mut num = String::new();
        let mut any = false;
        for c in s.trim().chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let n: u32 = num.parse().map_err(|_| bad())?;
            num.clear();
            match c {
                'y' => w.years += n,
                'm' => w.months += n,
                'w' => w.days += n * 7,
                'd' => w.days += n,
                'h' => w.hours += n,
                _ => return Err(bad()),
            }
            any = true;
        }
        if !num.is_empty() || !any {
            return Err(bad());
        }
        Ok(w)
    }
}

/// What to keep; zero means "this rule keeps nothing".
#[derive(Debug, Clone, Default)]
pub struct KeepPolicy {
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
    pub within: Option<Within>,
    pub tags: Vec<String>,
}

impl KeepPolicy {
    /// A policy that keeps nothing at all: forgetting with it removes every
    /// snapshot, so callers refuse it unless explicitly allowed.
    pub fn is_empty(&self) -> bool {
        self.last == 0
            && self.hourly == 0
            && self.daily == 0
            && self.weekly == 0
            && self.monthly == 0
            && self.yearly == 0
            && self.within.is_none_or(|w| w.is_zero())
            && self.tags.is_empty()
    }
}

/// One snapshot as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub time: DateTime<Utc>,
    pub tags: &'a [String],
}

/// The reasons each candidate is kept (empty: removed), in input order.
/// Candidates may come in any order; ties in time keep input order (the
/// earlier one counts as older).
pub fn apply_policy<Tz: TimeZone>(
    items: &[Candidate<'_>],
    p: &KeepPolicy,
    tz: &Tz,
) -> Vec<Vec<String>> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    // Newest first; of equal times, the later input counts as newer.
    order.sort_by(|a, b| items[*b].time.cmp(&items[*a].time).then(b.cmp(a)));
    let mut reasons = vec![Vec::new(); items.len()];
    let Some(&newest) = order.first() else {
        return reasons;
    };
    let within_bound = p
        .within
        .filter(|w| !w.is_zero())
        .map(|w| (w, w.before(items[newest].time)));

    // (name, remaining count, period of a time, last period kept)
    type Bucket<Tz> = (&'static str, u32, fn(&DateTime<Tz>) -> i64, Option<i64>);
    let mut buckets: [Bucket<Tz>; 5] = [
        (
            "hourly",
            p.hourly,
            |t| (t.year() as i64 * 10000 + t.ordinal() as i64) * 100 + t.hour() as i64,
            None,
        ),
        (
            "daily",
            p.daily,
            |t| t.year() as i64 * 10000 + t.ordinal() as i64,
            None,
        ),
        (
            "weekly",
            p.weekly,
            |t| t.iso_week().year() as i64 * 100 + t.iso_week().week() as i64,
            None,
        ),
        (
            "monthly",
            p.monthly,
            |t| t.year() as i64 * 100 + t.month() as i64,
            None,
        ),
        ("yearly", p.yearly, |t| t.year() as i64, None),
    ];
    for (rank, &i) in order.iter().enumerate() {
        let c = &items[i];
        let r = &mut reasons[i];
        if (rank as u64) < p.last as u64 {
            r.push("last snapshot".to_string());
        }
        let local = c.time.with_timezone(tz);
        for (name, left, period, last) in buckets.iter_mut() {
            if *left == 0 {
                continue;
            }
            let v = period(&local);
            if *last != Some(v) {
                *last = Some(v);
                *left -= 1;
                r.push(format!("{name} snapshot"));
            }
        }
        if let Some((w, bound)) = within_bound {
            if c.time > bound {
                r.push(format!("within {w}"));
            }
        }
        for t in &p.tags {
            if c.tags.contains(t) {
                r.push(format!("has tag {t}"));
            }
        }
    }
    reasons
}

/// Which snapshot fields form a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    pub host: bool,
    pub paths: bool,
    pub tags: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy {
            host: true,
            paths: true,
            tags: false,
        }
    }
}

impl FromStr for GroupBy {
    type Err = RepoError;
    /// `host,paths` (the default), any subset of `host`, `paths`, `tags`, or
    /// an empty string for one group of everything.
    fn from_str(s: &str) -> Result<GroupBy> {
        let mut g = GroupBy {
            host: false,
            paths: false,
            tags: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "paths" => g.paths = true,
                "tags" => g.tags = true,
                _ => {
                    return Err(RepoError::Invalid(format!(
                        "group-by {part:?}: expected host, paths or tags"
                    )))
                }
            }
        }
        Ok(g)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct GroupKey {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

impl GroupBy {
    pub fn key(&self, s: &Snapshot) -> GroupKey {
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        GroupKey {
            hostname: self.host.then(|| s.hostname.clone()),
            paths: self.paths.then(|| sorted(&s.paths)),
            tags: self.tags.then(|| sorted(&s.tags)),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ForgetOptions {
    pub policy: KeepPolicy,
    pub group_by: GroupBy,
    /// Only snapshots of these hosts (any, when empty).
    pub hosts: Vec<String>,
    /// Only snapshots with one of these tags (any, when empty).
    pub tags: Vec<String>,
    pub dry_run: bool,
    /// Accept a policy that keeps nothing.
    pub allow_remove_all: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub id: Id,
    pub time: DateTime<Utc>,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupOutcome {
    pub group: GroupKey,
    pub keep: Vec<Decision>,
    pub remove: Vec<Decision>,
}

/// Decide, per group, what the policy keeps; nothing is changed. Groups are
/// ordered by key, snapshots newest first.
pub fn plan<Tz: TimeZone>(
    snaps: &[(Id, Snapshot)],
    opts: &ForgetOptions,
    tz: &Tz,
) -> Vec<GroupOutcome> {
    let mut groups: BTreeMap<GroupKey, Vec<&(Id, Snapshot)>> = BTreeMap::new();
    for e in snaps {
        let s = &e.1;
        if !opts.hosts.is_empty() && !opts.hosts.contains(&s.hostname) {
            continue;
        }
        if !opts.tags.is_empty() && !opts.tags.iter().any(|t| s.has_tag(t)) {
            continue;
        }
        groups.entry(opts.group_by.key(s)).or_default().push(e);
    }
    groups
        .into_iter()
        .map(|(group, mut members)| {
            // Oldest first with the id as tie-break, so equal times are ordered
            // the same way on every run.
            members.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
            let cands: Vec<Candidate> = members
                .iter()
                .map(|(_, s)| Candidate {
                    time: s.time,
                    tags: &s.tags,
                })
                .collect();
            let reasons = apply_policy(&cands, &opts.policy, tz);
            let mut out = GroupOutcome {
                group,
                keep: Vec::new(),
                remove: Vec::new(),
            };
            for ((id, s), reasons) in members.iter().zip(reasons).rev() {
                let d = Decision {
                    id: *id,
                    time: s.time,
                    reasons,
                };
                if d.reasons.is_empty() {
                    out.remove.push(d);
                } else {
                    out.keep.push(d);
                }
            }
            out
        })
        .collect()
}

/// Apply the policy: plan, then (unless `dry_run`) remove the snapshot files
/// it does not keep. Refuses a policy that keeps nothing unless
/// `allow_remove_all`.
pub fn forget<Tz: TimeZone>(
    repo: &Repository,
    opts: &ForgetOptions,
    tz: &Tz,
) -> Result<Vec<GroupOutcome>> {
    if opts.policy.is_empty() && !opts.allow_remove_all {
        return Err(RepoError::Invalid(
            "no keep rule given: this would remove every snapshot (pass --unsafe-allow-remove-all if that is meant)".into(),
        ));
    }
    let snaps = repo.list_snapshots()?;
    let mut groups = plan(&snaps, opts, tz);
    protect(&mut groups, &catalog_references(repo)?);
    if !opts.dry_run {
        // The lock only announces the session (prune is conservative while it
        // is live); removing snapshot files needs no exclusion.
        let lock = Lock::acquire(repo, LockKind::Forget)?;
        let keys: Vec<String> = groups
            .iter()
            .flat_map(|g| &g.remove)
            .map(|d| FileKind::Snapshot.key(&d.id))
            .collect();
        // All at once: one request per thousand on object storage.
        let deleted = repo.block_on(repo.store().delete_many(&keys));
        lock.release();
        if let Err(left) = deleted {
            return Err(RepoError::Incomplete {
                done: format!(
                    "forget removed {} of {} snapshots; the others are still there",
                    keys.len().saturating_sub(left.len()),
                    keys.len()
                ),
                source: left.into(),
            });
        }
    }
    Ok(groups)
}

/// The part of a catalog entry (a cluster backup manifest, written by the
/// cluster crate) the repository reads: the node snapshots it is made of.
#[derive(Deserialize)]
struct CatalogRefs {
    #[serde(default)]
    nodes: Vec<NodeRef>,
}

#[derive(Deserialize)]
struct NodeRef {
    snapshot: Id,
}

/// Snapshot id -> the catalog entry (cluster backup) that needs it. An entry
/// that cannot be read is an error: forgetting on a guess could break a
/// cluster backup.
pub fn catalog_references(repo: &Repository) -> Result<BTreeMap<Id, Id>> {
    let mut refs = BTreeMap::new();
    for (entry, _) in repo.list(FileKind::Catalog)? {
        let plain = repo.load_file(FileKind::Catalog, &entry)?;
        let r: CatalogRefs = serde_json::from_slice(&plain).map_err(|e| {
            RepoError::corrupt(
                format!("cluster manifest {}", entry.short()),
                format!("does not parse: {e}"),
            )
        })?;
        for n in r.nodes {
            refs.insert(n.snapshot, entry);
        }
    }
    Ok(refs)
}

/// Moves every snapshot a cluster backup needs from `remove` to `keep`, with
/// that reason; `keep` stays newest first.
pub fn protect(groups: &mut [GroupOutcome], refs: &BTreeMap<Id, Id>) {
    for g in groups {
        let (needed, rest): (Vec<Decision>, Vec<Decision>) =
            g.remove.drain(..).partition(|d| refs.contains_key(&d.id));
        g.remove = rest;
        if needed.is_empty() {
            continue;
        }
        for mut d in needed {
            d.reasons
                .push(format!("part of cluster backup {}", refs[&d.id].short()));
            g.keep.push(d);
        }
        g.keep
            .sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn snapshots_of_cluster_backups_are_kept_with_the_reason() {
        let d = |time: &str| Decision {
            id: Id::random(),
            time: t(time),
            reasons: vec![],
        };
        let (a, b, c) = (
            d("2026-01-01T00:00:00Z"),
            d("2026-01-02T00:00:00Z"),
            d("2026-01-03T00:00:00Z"),
        );
        let mut kept_c = c.clone();
        kept_c.reasons.push("last snapshot".into());
        let entry = Id::random();
        let refs = BTreeMap::from([(a.id, entry)]);
        let mut groups = vec![GroupOutcome {
            group: GroupKey::default(),
            keep: vec![kept_c],
            remove: vec![b.clone(), a.clone()],
        }];
        protect(&mut groups, &refs);
        let g = &groups[0];
        assert_eq!(g.remove.iter().map(|d| d.id).collect::<Vec<_>>(), [b.id]);
        assert_eq!(
            g.keep.iter().map(|d| d.id).collect::<Vec<_>>(),
            [c.id, a.id]
        );
        assert_eq!(
            g.keep[1].reasons,
            [format!("part of cluster backup {}", entry.short())]
        );
    }

    /// Times given in any order; returns the kept ones, sorted.
    fn kept(times: &[&str], p: &KeepPolicy) -> Vec<String> {
        let none: Vec<String> = Vec::new();
        let c: Vec<Candidate> = times
            .iter()
            .map(|s| Candidate {
                time: t(s),
                tags: &none,
            })
            .collect();
        let r = apply_policy(&c, p, &Utc);
        let mut out: Vec<String> = times
            .iter()
            .zip(&r)
            .filter(|(_, r)| !r.is_empty())
            .map(|(s, _)| s.to_string())
            .collect();
        out.sort();
        out
    }

    /// One snapshot every 6 hours for 60 days, starting 2024-01-01T00:00Z.
    fn series() -> Vec<String> {
        let start = t("2024-01-01T00:00:00Z");
        (0..240)
            .map(|i| (start + chrono::Duration::hours(6 * i)).to_rfc3339())
            .collect()
    }

    #[test]
    fn keep_last_keeps_the_newest_n_in_any_input_order() {
        let times = [
            "2024-03-01T10:00:00Z",
            "2024-03-03T10:00:00Z",
            "2024-03-02T10:00:00Z",
            "2024-02-01T00:00:00Z",
        ];
        let p = KeepPolicy {
            last: 2,
            ..Default::default()
        };
        assert_eq!(
            kept(&times, &p),
            vec!["2024-03-02T10:00:00Z", "2024-03-03T10:00:00Z"]
        );
        let p = KeepPolicy {
            last: 10,
            ..Default::default()
        };
        assert_eq!(kept(&times, &p).len(), 4);
    }

    #[test]
    fn daily_keeps_the_newest_of_each_of_the_last_n_days_with_snapshots() {
        // Two snapshots on Mar 3, none on Mar 2, two on Mar 1, one on Feb 28.
        let times = [
            "2024-03-03T08:00:00Z",
            "2024-03-03T20:00:00Z",
            "2024-03-01T01:00:00Z",
            "2024-03-01T23:00:00Z",
            "2024-02-28T12:00:00Z",
        ];
        let p = KeepPolicy {
            daily: 3,
            ..Default::default()
        };
        // Days without snapshots do not use up the count.
        assert_eq!(
            kept(&times, &p),
            vec![
                "2024-02-28T12:00:00Z",
                "2024-03-01T23:00:00Z",
                "2024-03-03T20:00:00Z"
            ]
        );
    }

    #[test]
    fn hourly_weekly_monthly_yearly_count_distinct_periods() {
        let s = series();
        let refs: Vec<&str> = s.iter().map(String::as_str).collect();
        // Last snapshot is 2024-02-29T18:00 (a Thursday, ISO week 9).
        let p = KeepPolicy {
            hourly: 3,
            ..Default::default()
        };
        assert_eq!(
            kept(&refs, &p),
            vec![
                "2024-02-29T06:00:00+00:00",
                "2024-02-29T12:00:00+00:00",
                "2024-02-29T18:00:00+00:00"
            ]
        );
        let p = KeepPolicy {
            weekly: 2,
            ..Default::default()
        };
        // Newest of ISO week 9 and the newest of week 8 (Sunday Feb 25, 18:00).
        assert_eq!(
            kept(&refs, &p),
            vec!["2024-02-25T18:00:00+00:00", "2024-02-29T18:00:00+00:00"]
        );
        let p = KeepPolicy {
            monthly: 5,
            ..Default::default()
        };
        // Only two months have snapshots.
        assert_eq!(
            kept(&refs, &p),
            vec!["2024-01-31T18:00:00+00:00", "2024-02-29T18:00:00+00:00"]
        );
        let p = KeepPolicy {
            yearly: 1,
            ..Default::default()
        };
        assert_eq!(kept(&refs, &p), vec!["2024-02-29T18:00:00+00:00"]);
    }

    #[test]
    fn weekly_uses_iso_weeks_across_the_year_boundary() {
        // 2020-12-31 (Thu) and 2021-01-03 (Sun) are both in ISO week 2020-W53;
        // 2021-01-04 (Mon) starts 2021-W01.
        let times = [
            "2020-12-31T12:00:00Z",
            "2021-01-03T12:00:00Z",
            "2021-01-04T12:00:00Z",
            "2020-12-27T12:00:00Z",
        ];
        let p = KeepPolicy {
            weekly: 2,
            ..Default::default()
        };
        assert_eq!(
            kept(&times, &p),
            vec!["2021-01-03T12:00:00Z", "2021-01-04T12:00:00Z"]
        );
        let p = KeepPolicy {
            weekly: 3,
            ..Default::default()
        };
        assert_eq!(
            kept(&times, &p),
            vec![
                "2020-12-27T12:00:00Z",
                "2021-01-03T12:00:00Z",
                "2021-01-04T12:00:00Z"
            ]
        );
    }

    #[test]
    fn rules_combine_as_a_union_with_all_reasons() {
        let s = series();
        let refs: Vec<&str> = s.iter().map(String::as_str).collect();
        let p = KeepPolicy {
            last: 2,
            daily: 2,
            monthly: 2,
            ..Default::default()
        };
        // last: Feb 29 18:00, 12:00; daily: Feb 29 18:00, Feb 28 18:00;
        // monthly: Feb 29 18:00, Jan 31 18:00.
        assert_eq!(
            kept(&refs, &p),
            vec![
                "2024-01-31T18:00:00+00:00",
                "2024-02-28T18:00:00+00:00",
                "2024-02-29T12:00:00+00:00",
                "2024-02-29T18:00:00+00:00"
            ]
        );
        let none: Vec<String> = Vec::new();
        let c: Vec<Candidate> = refs
            .iter()
            .map(|s| Candidate {
                time: t(s),
                tags: &none,
            })
            .collect();
        let r = apply_policy(&c, &p, &Utc);
        assert_eq!(
            r[239],
            vec!["last snapshot", "daily snapshot", "monthly snapshot"]
        );
        assert_eq!(r[238], vec!["last snapshot"]);
        assert!(r[0].is_empty());
    }

    #[test]
    fn within_is_relative_to_the_newest_snapshot_not_now() {
        let times = [
            "2020-01-10T00:00:00Z",
            "2020-01-04T00:00:00Z",
            "2020-01-02T23:00:00Z",
            "2019-12-01T00:00:00Z",
        ];
        let p = KeepPolicy {
            within: Some("7d".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(
            kept(&times, &p),
            vec!["2020-01-04T00:00:00Z", "2020-01-10T00:00:00Z"]
        );
        let p = KeepPolicy {
            within: Some("1m10d".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(kept(&times, &p).len(), 4);
        let p = KeepPolicy {
            within: Some("1w".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(kept(&times, &p).len(), 2);
    }

    #[test]
    fn within_parses_and_subtracts_calendar_units() {
        let w: Within = "1y2m3d4h".parse().unwrap();
        assert_eq!(
            w,
            Within {
                years: 1,
                months: 2,
                days: 3,
                hours: 4
            }
        );
        assert_eq!(
            w.before(t("2024-05-31T12:00:00Z")),
            t("2023-03-28T08:00:00Z")
        );
        assert_eq!("2w".parse::<Within>().unwrap().days, 14);
        for bad in ["", "7", "d", "7x", "1.5d", "-1d"] {
            assert!(bad.parse::<Within>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(w.to_string(), "1y2m3d4h");
    }

    #[test]
    fn keep_tag_keeps_tagged_snapshots_only() {
        let tagged = vec!["release".to_string()];
        let other = vec!["nightly".to_string()];
        let c = [
            Candidate {
                time: t("2024-01-01T00:00:00Z"),
                tags: &tagged,
            },
            Candidate {
                time: t("2024-01-02T00:00:00Z"),
                tags: &other,
            },
            Candidate {
                time: t("2024-01-03T00:00:00Z"),
                tags: &[],
            },
        ];
        let p = KeepPolicy {
            tags: vec!["release".into()],
            ..Default::default()
        };
        let r = apply_policy(&c, &p, &Utc);
        assert_eq!(r[0], vec!["has tag release"]);
        assert!(r[1].is_empty() && r[2].is_empty());
    }

    #[test]
    fn periods_follow_the_given_time_zone() {
        // 23:30 UTC on Jan 1 is already Jan 2 at UTC+1.
        let times = ["2024-01-01T23:30:00Z", "2024-01-01T22:30:00Z"];
        let none: Vec<String> = Vec::new();
        let c: Vec<Candidate> = times
            .iter()
            .map(|s| Candidate {
                time: t(s),
                tags: &none,
            })
            .collect();
        let p = KeepPolicy {
            daily: 2,
            ..Default::default()
        };
        let utc = apply_policy(&c, &p, &Utc);
        assert!(
            !utc[0].is_empty() && utc[1].is_empty(),
            "same UTC day: one kept"
        );
        let plus1 = apply_policy(&c, &p, &FixedOffset::east_opt(3600).unwrap());
        assert!(
            !plus1[0].is_empty() && !plus1[1].is_empty(),
            "different local days: both kept"
        );
    }

    #[test]
    fn empty_policy_is_detected() {
        assert!(KeepPolicy::default().is_empty());
        assert!(KeepPolicy {
            within: Some(Within::default()),
            ..Default::default()
        }
        .is_empty());
        assert!(!KeepPolicy {
            yearly: 1,
            ..Default::default()
        }
        .is_empty());
        assert!(!KeepPolicy {
            tags: vec!["x".into()],
            ..Default::default()
        }
        .is_empty());
    }

    fn snap(host: &str, path: &str, time: &str, tags: &[&str]) -> Snapshot {
        Snapshot {
            time: t(time),
            hostname: host.into(),
            username: "u".into(),
            paths: vec![path.into()],
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
    fn plan_groups_by_host_and_paths_and_filters() {
        let snaps: Vec<(Id, Snapshot)> = [
            ("a", "/x", "2024-01-01T00:00:00Z", &[][..]),
            ("a", "/x", "2024-01-02T00:00:00Z", &[]),
            ("a", "/y", "2024-01-01T00:00:00Z", &[]),
            ("b", "/x", "2024-01-01T00:00:00Z", &["t"]),
            ("b", "/x", "2024-01-03T00:00:00Z", &[]),
        ]
        .iter()
        .enumerate()
        .map(|(i, (h, p, tm, tg))| (Id([i as u8; 32]), snap(h, p, tm, tg)))
        .collect();
        let opts = ForgetOptions {
            policy: KeepPolicy {
                last: 1,
                ..Default::default()
            },
            ..Default::default()
        };
        let g = plan(&snaps, &opts, &Utc);
        assert_eq!(g.len(), 3);
        let kept: Vec<u8> = g
            .iter()
            .flat_map(|g| g.keep.iter().map(|d| d.id.0[0]))
            .collect();
        let removed: Vec<u8> = g
            .iter()
            .flat_map(|g| g.remove.iter().map(|d| d.id.0[0]))
            .collect();
        assert_eq!(kept, vec![1, 2, 4]);
        assert_eq!(removed, vec![0, 3]);

        let only_b = ForgetOptions {
            hosts: vec!["b".into()],
            ..opts.clone()
        };
        let g = plan(&snaps, &only_b, &Utc);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].group.hostname.as_deref(), Some("b"));

        let one_group = ForgetOptions {
            group_by: "".parse().unwrap(),
            ..opts.clone()
        };
        let g = plan(&snaps, &one_group, &Utc);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].keep.len(), 1);
        assert_eq!(g[0].keep[0].id.0[0], 4);

        let tagged = ForgetOptions {
            tags: vec!["t".into()],
            ..opts
        };
        let g = plan(&snaps, &tagged, &Utc);
        assert_eq!(
            g.iter()
                .map(|g| g.keep.len() + g.remove.len())
                .sum::<usize>(),
            1
        );
        assert!("host,bogus".parse::<GroupBy>().is_err());
    }
}
