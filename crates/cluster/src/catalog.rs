//! What a listing shows of one cluster backup (`cluster list`, and
//! `cluster backup --json` for the backup just taken).
//!
//! The row is read from the manifest alone. Its generic part (nodes, sizes,
//! times) comes from the typed manifest; what only one store's details hold
//! (Cassandra's tables and SSTable files, its snapshot spread) the adapter
//! reads into [`Extras`], zero or None where the store has no such thing.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tidemark_repo::Id;

use crate::manifest::ClusterManifest;

/// What an adapter reads from its own details for a listing.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// Distinct tables across the nodes (Cassandra: keyspace.table).
    pub tables: usize,
    /// Per node, in the manifest's order; missing ones count zero.
    pub nodes: Vec<NodeCounts>,
    /// Time between the first and the last node's cut returning.
    pub snapshot_spread_ms: Option<i64>,
    /// The backup's length as the adapter timed it (else finished - started).
    pub duration_secs: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct NodeCounts {
    pub tables: usize,
    pub files: usize,
}

/// An adapter's reading of its details for a listing.
pub type Describe = fn(&ClusterManifest) -> Extras;

/// The reading of a store whose details add nothing to a listing.
pub fn no_extras(_: &ClusterManifest) -> Extras {
    Extras::default()
}

/// What a listing shows of one backup.
#[derive(Debug, Serialize)]
pub struct BackupRow {
    pub id: Id,
    pub short_id: String,
    pub cluster: String,
    pub tag: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub nodes: usize,
    /// Distinct tables across the nodes (0 for a store without tables).
    pub tables: usize,
    /// Files across the nodes, as the adapter counts them.
    pub files: usize,
    pub total_bytes: u64,
    pub data_added_stored: u64,
    /// Bytes the agents read from disk (0 for unchanged files).
    pub bytes_read: u64,
    pub snapshot_spread_ms: Option<i64>,
    pub duration_secs: f64,
    pub node_details: Vec<NodeRow>,
}

#[derive(Debug, Serialize)]
pub struct NodeRow {
    pub node: String,
    pub host_id: String,
    pub snapshot: Id,
    pub cut_at: DateTime<Utc>,
    pub tables: usize,
    pub files: usize,
    pub total_bytes: u64,
    pub bytes_read: u64,
    pub data_added_stored: u64,
}

impl BackupRow {
    pub fn with_extras(id: &Id, m: &ClusterManifest, extras: Extras) -> BackupRow {
        let node_details: Vec<NodeRow> = m
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let c = extras.nodes.get(i).copied().unwrap_or_default();
                NodeRow {
                    node: n.node.clone(),
                    host_id: n.host_id.clone(),
                    snapshot: n.snapshot,
                    cut_at: n.cut_at,
                    tables: c.tables,
                    files: c.files,
                    total_bytes: n.summary.total_bytes,
                    bytes_read: n.summary.bytes_read,
                    data_added_stored: n.summary.data_added_stored,
                }
            })
            .collect();
        BackupRow {
            id: *id,
            short_id: id.short(),
            cluster: m.cluster.clone(),
            tag: m.tag.clone(),
            started: m.started,
            finished: m.finished,
            nodes: m.nodes.len(),
            tables: extras.tables,
            files: node_details.iter().map(|n| n.files).sum(),
            total_bytes: m.total_bytes(),
            data_added_stored: m.data_added_stored(),
            bytes_read: m.nodes.iter().map(|n| n.summary.bytes_read).sum(),
            snapshot_spread_ms: extras.snapshot_spread_ms,
            duration_secs: extras
                .duration_secs
                .unwrap_or_else(|| (m.finished - m.started).num_milliseconds() as f64 / 1000.0),
            node_details,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{NodeBackup, MANIFEST_VERSION};

    fn manifest() -> ClusterManifest {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let node = |name: &str, bytes: u64| {
            let mut n = NodeBackup {
                node: name.into(),
                host_id: format!("h-{name}"),
                agent: "http://a".into(),
                snapshot: Id::random(),
                cut_at: t("2026-11-26T10:00:01Z"),
                uploaded_at: t("2026-11-26T10:00:30Z"),
                summary: Default::default(),
                detail: serde_json::Value::Null,
            };
            n.summary.total_bytes = bytes;
            n
        };
        ClusterManifest {
            version: MANIFEST_VERSION,
            store: "hdfs".into(),
            cluster: "lake".into(),
            tag: "tidemark-20261126T100000Z-abcdef".into(),
            started: t("2026-11-26T10:00:00Z"),
            finished: t("2026-11-26T10:01:30Z"),
            nodes: vec![node("a", 10), node("b", 5)],
            detail: serde_json::Value::Null,
            program_version: String::new(),
        }
    }

    #[test]
    fn generic_row_and_adapter_extras() {
        let m = manifest();
        let id = Id::random();
        let r = BackupRow::with_extras(&id, &m, no_extras(&m));
        assert_eq!((r.nodes, r.tables, r.files, r.total_bytes), (2, 0, 0, 15));
        assert_eq!((r.duration_secs, r.snapshot_spread_ms), (90.0, None));
        let extras = Extras {
            tables: 3,
            nodes: vec![NodeCounts { tables: 3, files: 7 }],
            snapshot_spread_ms: Some(12),
            duration_secs: Some(88.5),
        };
        let r = BackupRow::with_extras(&id, &m, extras);
        assert_eq!((r.tables, r.files, r.node_details[0].files, r.node_details[1].files), (3, 7, 7, 0));
        assert_eq!((r.duration_secs, r.snapshot_spread_ms), (88.5, Some(12)));
    }
}
