//! What a Cassandra cluster backup records beyond the generic manifest
//! (`ClusterManifest::detail` and `NodeBackup::detail`), what a listing
//! shows of it, and how a node's detail is rewritten for a copy in another
//! repository.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tidemark_cluster::catalog::{Extras, NodeCounts};
use tidemark_cluster::copy::CopiedFiles;
use tidemark_cluster::{ClusterError, ClusterManifest, NodeBackup};
use tidemark_repo::crypto::MasterKey;

use crate::api::{file_content, TableFiles};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct BackupDetail {
    /// Cassandra's `cluster_name`.
    pub cluster_name: String,
    pub partitioner: String,
    pub release_version: String,
    /// `DESCRIBE SCHEMA` as the server printed it.
    pub schema: String,
    /// Replication of every keyspace (class and options).
    pub keyspaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Time between the first and the last node's snapshot returning.
    pub snapshot_spread_ms: i64,
    pub timings: Timings,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Timings {
    pub check_secs: f64,
    pub snapshot_secs: f64,
    pub upload_secs: f64,
    pub total_secs: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct NodeDetail {
    pub datacenter: String,
    pub rack: String,
    /// Murmur3 tokens as decimal strings.
    pub tokens: Vec<String>,
    pub release_version: String,
    pub tables: Vec<TableFiles>,
    /// Path of cassandra.yaml inside the node's repository snapshot.
    pub cassandra_yaml: String,
}

/// A node's detail for its copy in another repository (the
/// `tidemark_cluster::copy::NodeRewrite` of Cassandra): each SSTable's
/// `content` is a keyed hash of its chunk ids under the repository's key, so
/// it is recomputed from the copied tree, after checking that the copy has
/// the same files with the same sizes.
pub fn rewrite_for_copy(
    n: &NodeBackup,
    files: &CopiedFiles,
    key: &MasterKey,
) -> tidemark_cluster::Result<serde_json::Value> {
    let fail = |reason: String| ClusterError::Node {
        node: n.node.clone(),
        reason,
    };
    let mut detail: NodeDetail = n.detail()?;
    for t in &mut detail.tables {
        let dir = t.dir.trim_end_matches('/').to_string();
        for f in &mut t.files {
            let path = format!("{dir}/{}", f.name);
            let (size, chunks) = files
                .get(&path)
                .ok_or_else(|| fail(format!("{path} is missing from the copied snapshot")))?;
            if *size != f.size {
                return Err(fail(format!(
                    "{path} has {size} bytes in the copy, {} in the manifest",
                    f.size
                )));
            }
            f.content = file_content(key, chunks);
        }
    }
    Ok(serde_json::to_value(&detail).expect("node detail serialises"))
}

/// What a listing shows of a Cassandra backup beyond the generic row (the
/// `tidemark_cluster::catalog::Describe` of Cassandra): tables, SSTable
/// files, snapshot spread, the backup's own timing. A detail that does not
/// parse counts zero: a listing shows every backup it can.
pub fn list_extras(m: &ClusterManifest) -> Extras {
    let detail: Option<BackupDetail> = m.detail().ok();
    let mut tables = BTreeSet::new();
    let nodes = m
        .nodes
        .iter()
        .map(|n| {
            let d: Option<NodeDetail> = n.detail().ok();
            d.map_or(NodeCounts::default(), |d| {
                for t in &d.tables {
                    tables.insert((t.keyspace.clone(), t.table.clone()));
                }
                NodeCounts {
                    tables: d.tables.len(),
                    files: d.tables.iter().map(|t| t.files.len()).sum(),
                }
            })
        })
        .collect();
    Extras {
        tables: tables.len(),
        nodes,
        snapshot_spread_ms: detail.as_ref().map(|d| d.snapshot_spread_ms),
        duration_secs: detail.as_ref().map(|d| d.timings.total_secs),
    }
}
