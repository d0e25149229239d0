//! What a Cassandra cluster backup records beyond the generic manifest
//! (`ClusterManifest::detail` and `NodeBackup::detail`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::TableFiles;

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
