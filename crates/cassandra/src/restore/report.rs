//! What a restore reports, per table and overall (printed, and as JSON).

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Import,
    Stream,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub struct RestoreReport {
    pub backup: String,
    pub source_cluster: String,
    pub target_cluster: String,
    pub mode: Mode,
    /// Schema statements run on the target (what it lacked).
    pub schema_statements: Vec<String>,
    /// Whole-backup restore onto other tokens: per backup node, the
    /// `initial_token` a node needs for an import restore next time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub initial_tokens: Vec<InitialTokens>,
    pub notes: Vec<String>,
    pub tables: Vec<TableReport>,
    pub duration_secs: f64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub struct InitialTokens {
    pub node: String,
    pub datacenter: String,
    pub rack: String,
    pub initial_token: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub struct TableReport {
    pub keyspace: String,
    /// The table in the backup.
    pub table: String,
    /// The table restored into (differs with --rename-to).
    pub target_table: String,
    pub mode: Mode,
    pub created: bool,
    pub truncated: bool,
    /// Backup nodes whose copies were used.
    pub source_nodes: Vec<String>,
    pub files: u64,
    /// Bytes of SSTables fetched from the repository and imported or loaded.
    pub bytes: u64,
    /// Bytes sent to target nodes (stream mode; 0 for import).
    pub bytes_streamed: u64,
    /// One replica's worth: the table's bytes over all backup nodes / RF.
    pub replica_bytes: u64,
    /// (import: bytes, stream: bytes_streamed) / replica_bytes.
    pub amplification: Option<f64>,
    /// What sending every replica to every owner would cost (RF x RF).
    pub amplification_all_replicas: Option<f64>,
    pub duration_secs: f64,
}
