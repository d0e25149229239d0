//! The agent API: paths, requests and replies (JSON). Every call carries the
//! shared token (see `tidemark_cluster::auth`).
//!
//! A backup is one session per agent: `begin` opens it (a repository lock
//! and the index, loaded once), `read` hands it batches of files, several
//! at a time, `finish` writes the index of what it stored and ends it,
//! `abort` ends it without. A restore sends `write` batches; each file's
//! bytes go from the repository straight to a DataNode.

use serde::{Deserialize, Serialize};
use tidemark_repo::ingest::SessionStats;
use tidemark_repo::Id;

use crate::webhdfs::FileChecksum;

pub const STATUS: &str = "/v1/status";
pub const BEGIN: &str = "/v1/hdfs/backup/begin";
pub const READ: &str = "/v1/hdfs/backup/read";
pub const FINISH: &str = "/v1/hdfs/backup/finish";
pub const ABORT: &str = "/v1/hdfs/backup/abort";
pub const WRITE: &str = "/v1/hdfs/restore/write";

/// GET /v1/status
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct AgentStatus {
    pub name: String,
    /// "hdfs": which adapter's agent this is.
    pub store: String,
    /// Id of the repository the agent writes to (its config id, hex).
    pub repository_id: String,
    pub version: String,
    /// The NameNode the agent reaches as active, or why none.
    pub namenode: Result<String, String>,
    /// Backup sessions open now (their tags).
    pub sessions: Vec<String>,
}

/// POST begin, finish and abort.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct SessionRequest {
    pub tag: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct FinishReply {
    pub stats: SessionStats,
}

/// POST read: store these files of a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct ReadRequest {
    pub tag: String,
    pub files: Vec<ReadFile>,
    /// Also ask HDFS for each file's checksum.
    pub checksums: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct ReadFile {
    /// Absolute path, inside the root's `.snapshot/<name>/`.
    pub path: String,
    /// The length the snapshot listing gave: exactly this many bytes are
    /// stored (a file still being written has more readable bytes later).
    pub length: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct ReadReply {
    /// One per requested file, in order.
    pub files: Vec<ReadResult>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct ReadResult {
    pub content: Vec<Id>,
    pub size: u64,
    #[serde(default)]
    pub checksum: Option<FileChecksum>,
    /// Why the file could not be stored (it is then left out, and the
    /// backup is incomplete).
    #[serde(default)]
    pub error: Option<String>,
}

/// POST write: create these files from the repository.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct WriteRequest {
    /// Identifies one restore: the agent loads the repository index once
    /// per restore, not per batch.
    pub restore: String,
    pub files: Vec<WriteFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct WriteFile {
    pub path: String,
    pub content: Vec<Id>,
    pub size: u64,
    pub permission: u32,
    pub replication: Option<u16>,
    pub block_size: Option<u64>,
    pub overwrite: bool,
    /// The checksum HDFS gave at backup: the written file is checked
    /// against it when the target computes the same kind.
    pub checksum: Option<FileChecksum>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct WriteReply {
    pub files: Vec<WriteResult>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct WriteResult {
    pub bytes: u64,
    /// Some(true): the target's checksum equals the recorded one; None: not
    /// comparable (no checksum recorded, or another algorithm).
    pub checksum_ok: Option<bool>,
    pub error: Option<String>,
}
