//! The agent API: paths, requests and replies (JSON). Every call carries the
//! shared token (see `tidemark_cluster::auth`); an agent does one long
//! operation at a time and answers 409 while busy.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tidemark_repo::snapshot::BackupSummary;
use tidemark_repo::Id;

pub const STATUS: &str = "/v1/status";
pub const SNAPSHOT: &str = "/v1/snapshot";
pub const UPLOAD: &str = "/v1/upload";
pub const CLEAR: &str = "/v1/clear";
pub const IMPORT: &str = "/v1/restore/import";
pub const LOAD: &str = "/v1/restore/load";

/// GET /v1/status
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct AgentStatus {
    pub node_address: IpAddr,
    /// Id of the repository the agent writes to (its config id, hex).
    pub repository_id: String,
    pub version: String,
    /// The long operation running now, if any.
    pub busy: Option<String>,
    /// The ring as this node sees it (`nodetool status`).
    pub ring: Vec<RingMember>,
    /// Snapshot tags present in the node's data dirs (read from disk).
    pub snapshot_tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct RingMember {
    pub address: IpAddr,
    /// true = Up (U), false = Down (D).
    pub up: bool,
    /// N(ormal), J(oining), L(eaving), M(oving), as nodetool prints it.
    pub state: char,
    pub host_id: String,
    pub datacenter: String,
    pub rack: String,
}

/// POST /v1/snapshot: flush and snapshot every keyspace under `tag`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct SnapshotRequest {
    pub tag: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct SnapshotReply {
    /// When `nodetool snapshot` returned (the cut is at most this late).
    pub cut_at: DateTime<Utc>,
    pub tables: usize,
}

/// POST /v1/upload: store the node's snapshot `tag` as a repository snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct UploadRequest {
    pub tag: String,
    /// Cluster name, recorded in the repository snapshot's host name.
    pub cluster: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct UploadReply {
    pub snapshot: Id,
    pub uploaded_at: DateTime<Utc>,
    pub summary: BackupSummary,
    pub tables: Vec<TableFiles>,
    /// Path of the node's cassandra.yaml inside the repository snapshot.
    pub cassandra_yaml: String,
}

/// One table's SSTable files in a node's repository snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct TableFiles {
    pub keyspace: String,
    pub table: String,
    /// Table id, from the data directory name `<table>-<id>`.
    pub table_id: String,
    /// Directory of the files inside the repository snapshot (absolute, as
    /// `tidemark ls` shows it).
    pub dir: String,
    pub files: Vec<SstableFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct SstableFile {
    pub name: String,
    pub size: u64,
    /// Keyed BLAKE3 over the file's chunk ids (hex): identifies the content
    /// without reading the file again.
    pub content: String,
}

/// [`SstableFile::content`] of a file stored as `chunks` (its chunk ids in
/// order): keyed BLAKE3 (the repository's blob-id key) over the concatenated
/// ids, hex. The agent computes it at upload, verify recomputes it from the
/// repository's tree: equal values mean the same bytes, without reading them.
pub fn file_content(key: &tidemark_repo::crypto::MasterKey, chunks: &[Id]) -> String {
    let mut ids = Vec::with_capacity(chunks.len() * 32);
    for c in chunks {
        ids.extend_from_slice(&c.0);
    }
    key.blob_id(&ids).to_hex()
}

/// POST /v1/clear: remove snapshot `tag` from the node and the agent's staging.
/// Idempotent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct ClearRequest {
    pub tag: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct ClearReply {
    /// Whether there was anything to clear.
    pub cleared: bool,
}

/// Which table of a backup goes where.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct TableTarget {
    /// The table's directory inside the node snapshot ([`TableFiles::dir`]).
    pub source_dir: String,
    pub keyspace: String,
    pub table: String,
}

/// POST /v1/restore/import: fetch tables from one node snapshot onto this
/// node and `nodetool import` them (online; the node owns the same tokens).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct ImportRequest {
    pub snapshot: Id,
    pub tables: Vec<TableTarget>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct ImportReply {
    pub files: u64,
    pub bytes: u64,
}

/// POST /v1/restore/load: fetch tables from node snapshots and stream them to
/// their owners in this agent's cluster (sstableloader), for a cluster of
/// another size or token layout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct LoadRequest {
    pub snapshots: Vec<Id>,
    pub tables: Vec<TableTarget>,
    /// Nodes of the target cluster to contact (sstableloader `-d`).
    pub targets: Vec<IpAddr>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct LoadReply {
    pub files: u64,
    /// Bytes of SSTables fetched from the repository.
    pub bytes_read: u64,
    /// Bytes sent to the target nodes (sum over the replicas that got them).
    pub bytes_streamed: u64,
}
