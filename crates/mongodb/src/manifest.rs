//! What a MongoDB backup records beyond the generic manifest, and where its
//! files sit in each replica set's repository snapshot.
//!
//! One repository snapshot per replica set (host `mongodb/<name>/<set>`):
//!
//! ```text
//! /db/<database>/<collection>/documents.bson   raw BSON documents in _id order, back to back
//! /db/<database>/<collection>/spec.bson        the listCollections entry (options, uuid, type)
//! /db/<database>/<collection>/indexes.bson     the listIndexes entries
//! /oplog.bson                                  oplog entries after `oplog_start`, in order
//! /admin/users.bson, /admin/roles.bson         when captured
//! ```
//!
//! Names of databases and collections are kept as they are but for `%` and
//! `/`, written `%25` and `%2F` ([`encode_name`]).

use std::cmp::Ordering;

use mongodb::bson::Timestamp;
use serde::{Deserialize, Serialize};

use crate::topology::SetInfo;

pub const DOCUMENTS: &str = "documents.bson";
pub const SPEC: &str = "spec.bson";
pub const INDEXES: &str = "indexes.bson";
pub const OPLOG: &str = "oplog.bson";
pub const DB_DIR: &str = "db";
pub const ADMIN_DIR: &str = "admin";
pub const USERS: &str = "users.bson";
pub const ROLES: &str = "roles.bson";

/// An oplog time: seconds and the counter within the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Ts {
    pub t: u32,
    pub i: u32,
}

impl Ts {
    pub const ZERO: Ts = Ts { t: 0, i: 0 };

    /// The last instant of second `t`: every entry of that second is at or
    /// before it, whatever its counter.
    pub fn end_of_second(t: u32) -> Ts {
        Ts { t, i: u32::MAX }
    }

    pub fn to_bson(self) -> Timestamp {
        Timestamp { time: self.t, increment: self.i }
    }

    pub fn from_bson(ts: Timestamp) -> Ts {
        Ts { t: ts.time, i: ts.increment }
    }

    pub fn to_datetime(self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp(i64::from(self.t), 0).unwrap_or_default()
    }
}

impl Ord for Ts {
    fn cmp(&self, o: &Ts) -> Ordering {
        (self.t, self.i).cmp(&(o.t, o.i))
    }
}

impl PartialOrd for Ts {
    fn partial_cmp(&self, o: &Ts) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl std::fmt::Display for Ts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.i == u32::MAX {
            write!(f, "{} (end of second {})", self.to_datetime().format("%Y-%m-%dT%H:%M:%SZ"), self.t)
        } else {
            write!(f, "Timestamp({}, {})", self.t, self.i)
        }
    }
}

/// `ClusterManifest::detail` of a MongoDB backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct BackupDetail {
    /// The instant the backup restores to: every replica set's oplog is
    /// replayed up to it. Between replica sets without a shared cluster
    /// clock it is the end of a second ([`Ts::end_of_second`]).
    pub cut: Ts,
    pub sharded: bool,
    /// The balancer's mode before the backup stopped it (sharded only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balancer_was_on: Option<bool>,
    pub read_preference: String,
    pub timings: Timings,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Timings {
    pub discover_secs: f64,
    pub copy_secs: f64,
    /// From the last copy's end to every oplog reaching the cut.
    pub cut_secs: f64,
    pub commit_secs: f64,
}

/// `NodeBackup::detail` of one replica set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct SetDetail {
    pub info: SetInfo,
    /// The last oplog entry before the copy began; replay starts after it.
    pub oplog_start: Ts,
    /// The set's last oplog entry when its copy had finished.
    pub copy_end: Ts,
    /// The last entry archived (at or after the cut).
    pub oplog_end: Ts,
    pub oplog_entries: u64,
    pub collections: Vec<CollectionMeta>,
    /// Users and roles of the admin database, when captured.
    #[serde(default)]
    pub users: u64,
    #[serde(default)]
    pub roles: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct CollectionMeta {
    pub db: String,
    pub name: String,
    /// "collection", "view" or "timeseries" (listCollections' type).
    pub kind: String,
    /// Documents in the copy and their bytes (the copy is fuzzy: the
    /// oplog brings it to the cut on restore).
    pub documents: u64,
    pub bytes: u64,
    pub indexes: u64,
    /// BLAKE3 of documents.bson as stored, for `verify --read-data`.
    pub checksum: String,
}

impl CollectionMeta {
    pub fn ns(&self) -> String {
        format!("{}.{}", self.db, self.name)
    }
}

/// What `cluster list` shows beyond the generic columns: collections per
/// replica set ("tables"), the backup's duration.
pub fn list_extras(m: &tidemark_cluster::manifest::ClusterManifest) -> tidemark_cluster::catalog::Extras {
    let counts: Vec<usize> = m
        .nodes
        .iter()
        .map(|n| n.detail::<SetDetail>().map(|d| d.collections.len()).unwrap_or(0))
        .collect();
    tidemark_cluster::catalog::Extras {
        tables: counts.iter().sum(),
        nodes: counts.iter().map(|&c| tidemark_cluster::catalog::NodeCounts { tables: c, files: c }).collect(),
        snapshot_spread_ms: None,
        duration_secs: Some((m.finished - m.started).num_milliseconds() as f64 / 1000.0),
    }
}

/// A database or collection name as a tree entry name.
pub fn encode_name(name: &str) -> String {
    name.replace('%', "%25").replace('/', "%2F")
}

pub fn decode_name(name: &str) -> String {
    name.replace("%2F", "/").replace("%2f", "/").replace("%25", "%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_never_hold_a_slash() {
        for n in ["plain", "a/b", "100%", "%2F", "x.y/z%25", "ünï cødé"] {
            let e = encode_name(n);
            assert!(!e.contains('/'), "{e}");
            assert_eq!(decode_name(&e), n);
        }
    }

    #[test]
    fn times_order_by_second_then_counter_and_end_of_second_is_last() {
        let a = Ts { t: 10, i: 5 };
        assert!(a < Ts { t: 10, i: 6 } && a < Ts { t: 11, i: 0 } && a > Ts { t: 9, i: 99 });
        assert!(Ts::end_of_second(10) > Ts { t: 10, i: 4_000_000 } && Ts::end_of_second(10) < Ts { t: 11, i: 0 });
        assert_eq!(Ts::from_bson(a.to_bson()), a);
    }
}
