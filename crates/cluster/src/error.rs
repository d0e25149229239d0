//! Errors keep their source and say which agent or node they concern.
//! `is_temporary` marks what a retry may cure (an agent not up yet).

use thiserror::Error;

pub type Result<T, E = ClusterError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("agent {agent} is unreachable: {source}")]
    Unreachable {
        agent: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("agent {agent} refused the credentials (wrong or missing token)")]
    Unauthorized { agent: String },
    #[error("agent {agent}: {message}")]
    Remote { agent: String, status: u16, message: String },
    #[error("agent {agent} sent a reply that could not be read: {source}")]
    BadReply {
        agent: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("token file {path}: {reason}")]
    Token { path: String, reason: String },
    #[error("cluster manifest {id}: {reason}")]
    Manifest { id: String, reason: String },
    #[error(transparent)]
    Repo(#[from] tidemark_repo::RepoError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ClusterError {
    pub fn is_temporary(&self) -> bool {
        match self {
            ClusterError::Unreachable { .. } => true,
            ClusterError::Remote { status, .. } => *status == 503,
            ClusterError::Repo(tidemark_repo::RepoError::Store(e)) => e.is_temporary(),
            _ => false,
        }
    }
}
