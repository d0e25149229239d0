//! What an HDFS cluster backup records beyond the generic manifest
//! (`ClusterManifest::detail` and `NodeBackup::detail`).
//!
//! An HDFS backup is one repository snapshot of the whole namespace part it
//! protects (one `NodeBackup`, node "namespace"): the tree mirrors the HDFS
//! paths, every entry carries its HDFS attributes in `Node::extra` (see
//! [`attr`]). The agents only store file contents; the coordinator writes
//! the trees.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::webhdfs::DataNode;

/// The `node` of the one `NodeBackup` of an HDFS backup.
pub const NAMESPACE: &str = "namespace";

/// Names of the HDFS attributes in a tree node's `extra` map.
pub mod attr {
    pub const FILE_ID: &str = "hdfs.file_id";
    pub const REPLICATION: &str = "hdfs.replication";
    pub const BLOCK_SIZE: &str = "hdfs.block_size";
    /// Storage policy id (see `BackupDetail::storage_policies`), when set.
    pub const STORAGE_POLICY: &str = "hdfs.storage_policy";
    pub const EC_POLICY: &str = "hdfs.ec_policy";
    /// Extended ACL entries, comma-joined (`user:alice:rw-,default:...`).
    pub const ACL: &str = "hdfs.acl";
    /// Prefix of one xattr each: `hdfs.xattr.user.origin` = `0x...` (hex).
    pub const XATTR: &str = "hdfs.xattr.";
    /// `<algorithm>:<hex bytes>` as GETFILECHECKSUM gave it.
    pub const CHECKSUM: &str = "hdfs.checksum";
    /// Directories: files and bytes in the whole subtree, so that a
    /// subtree reused as it is counts without being read.
    pub const TREE_FILES: &str = "hdfs.tree_files";
    pub const TREE_BYTES: &str = "hdfs.tree_bytes";
    /// Directory quotas (-1: none).
    pub const NS_QUOTA: &str = "hdfs.quota";
    pub const SPACE_QUOTA: &str = "hdfs.space_quota";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct BackupDetail {
    /// The NameNode that was active (WebHDFS URL).
    pub namenode: String,
    /// Hadoop version the NameNode reported.
    pub version: String,
    pub cluster_id: String,
    pub user: String,
    pub roots: Vec<RootCut>,
    pub exclude: Vec<String>,
    /// Every DataNode the NameNode knew at the cut, with its capacity.
    pub datanodes: Vec<DataNode>,
    /// Storage policy ids to names, as this cluster numbers them.
    pub storage_policies: BTreeMap<u8, String>,
    /// The configuration the NameNode served (`/conf`, XML; Hadoop redacts
    /// the keys it counts as sensitive).
    pub conf: String,
    pub agents: Vec<AgentWork>,
    /// Files that could not be read (path, reason): left out of the backup.
    pub unreadable: Vec<(String, String)>,
    pub timings: Timings,
}

/// How one root was cut and walked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct RootCut {
    pub path: String,
    /// The snapshot taken (`tidemark-<tag>`), kept on the cluster until the
    /// next backup has diffed against it.
    pub snapshot: String,
    pub snapshot_at: DateTime<Utc>,
    /// The earlier snapshot this one was diffed against; None: a full walk.
    pub diff_from: Option<String>,
    /// Why the walk was full (first backup, earlier snapshot deleted, ...).
    pub full_reason: Option<String>,
    pub diff_entries: u64,
    pub dirs_listed: u64,
    pub dirs_reused: u64,
}

/// What one agent did in this backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct AgentWork {
    pub name: String,
    pub files: u64,
    /// Of those, files whose blocks its DataNode held.
    pub local_files: u64,
    pub bytes_read: u64,
    pub data_added_stored: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Timings {
    pub check_secs: f64,
    pub snapshot_secs: f64,
    pub walk_secs: f64,
    pub read_secs: f64,
    pub total_secs: f64,
}

/// What a listing shows of an HDFS backup beyond the generic row (the
/// `tidemark_cluster::catalog::Describe` of HDFS): the files in the
/// namespace snapshot and the backup's own timing. No tables, no spread
/// (one NameNode, one cut per root).
pub fn list_extras(m: &tidemark_cluster::manifest::ClusterManifest) -> tidemark_cluster::catalog::Extras {
    let detail: Option<BackupDetail> = m.detail().ok();
    tidemark_cluster::catalog::Extras {
        tables: 0,
        nodes: m
            .nodes
            .iter()
            .map(|n| tidemark_cluster::catalog::NodeCounts { tables: 0, files: n.summary.total_files as usize })
            .collect(),
        snapshot_spread_ms: None,
        duration_secs: detail.map(|d| d.timings.total_secs),
    }
}
