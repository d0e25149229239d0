//! Errors of the Cassandra adapter. Each says which node, agent, keyspace or
//! table it concerns and keeps its source; the CLI shows them as they are.

use thiserror::Error;

pub type Result<T, E = CassandraError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum CassandraError {
    #[error("config {path}: {reason}")]
    Config { path: String, reason: String },
    #[error("CQL: {0}")]
    Cql(String),
    /// The rebalancing freeze could not be held: a node is down, joining,
    /// leaving or moving, or the schema is not in agreement.
    #[error("cluster not ready for a consistent backup: {0}")]
    NotReady(String),
    #[error("topology changed during the backup: {0}")]
    TopologyChanged(String),
    #[error("nodetool {args} on {node} failed: {output}")]
    Nodetool { node: String, args: String, output: String },
    #[error("{0}")]
    Invalid(String),
    #[error("node {node}: {reason}")]
    Node { node: String, reason: String },
    #[error(transparent)]
    Cluster(#[from] tidemark_cluster::ClusterError),
    #[error(transparent)]
    Repo(#[from] tidemark_repo::RepoError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl CassandraError {
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        CassandraError::Io { path: path.as_ref().display().to_string(), source }
    }
    pub fn cql(e: impl std::fmt::Display) -> Self {
        CassandraError::Cql(e.to_string())
    }
}
