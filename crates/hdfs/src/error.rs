//! Errors of the HDFS adapter. Each says which NameNode, path, agent or root
//! it concerns and keeps its source; the CLI shows them as they are.

use thiserror::Error;

pub type Result<T, E = HdfsError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum HdfsError {
    #[error("config {path}: {reason}")]
    Config { path: String, reason: String },
    /// No configured NameNode answered, or none is active.
    #[error("no active NameNode: {0}")]
    NoNameNode(String),
    /// The NameNode answered the operation with an error (its exception
    /// class and message as it sent them).
    #[error("WebHDFS {op} {path}: {exception}: {message}")]
    Remote { op: String, path: String, status: u16, exception: String, message: String },
    #[error("WebHDFS {op} {path}: {source}")]
    Http {
        op: String,
        path: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("WebHDFS {op} {path}: unexpected reply: {reason}")]
    BadReply { op: String, path: String, reason: String },
    /// The cluster cannot be backed up now (safe mode, a root that cannot
    /// be snapshotted); the text says what the admin must do.
    #[error("cluster not ready for a consistent backup: {0}")]
    NotReady(String),
    #[error("{0}")]
    Invalid(String),
    #[error("agent {agent}: {reason}")]
    Agent { agent: String, reason: String },
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

impl HdfsError {
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        HdfsError::Io { path: path.as_ref().display().to_string(), source }
    }

    /// What a retry may cure: a NameNode or DataNode not answering, a
    /// standby that became active, a busy server.
    pub fn is_temporary(&self) -> bool {
        match self {
            HdfsError::Http { source, .. } => source.is_connect() || source.is_timeout() || source.is_request(),
            HdfsError::Remote { status, exception, .. } => {
                *status == 503 || exception == "StandbyException" || exception == "RetriableException"
            }
            HdfsError::NoNameNode(_) => true,
            HdfsError::Cluster(e) => e.is_temporary(),
            _ => false,
        }
    }

    /// The file or directory is not there (any more).
    pub fn is_not_found(&self) -> bool {
        matches!(self, HdfsError::Remote { status: 404, .. })
            || matches!(self, HdfsError::Remote { exception, .. } if exception == "FileNotFoundException")
    }

    /// The user may not read or change it.
    pub fn is_permission(&self) -> bool {
        matches!(self, HdfsError::Remote { exception, .. } if exception == "AccessControlException")
            || matches!(self, HdfsError::Remote { status: 403, exception, .. } if exception != "StandbyException")
    }
}
