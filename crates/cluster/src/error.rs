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
    /// One step of a cluster operation failed on some nodes. The first
    /// failure is shown in full, the others after it; `first` is not a
    /// `#[source]` because the message already carries it.
    #[error("node {node}: {step} failed: {first}{}", also(others))]
    Nodes { step: String, node: String, first: Box<ClusterError>, others: Vec<(String, ClusterError)> },
    /// A request refused before anything was changed (options that
    /// contradict each other, a policy that would keep nothing).
    #[error("{0}")]
    Refused(String),
    /// An operation stopped; `what` says what was and was not done.
    #[error("{what}")]
    Stopped {
        what: String,
        #[source]
        source: Option<Box<ClusterError>>,
    },
    #[error("node {node}: {reason}")]
    Node { node: String, reason: String },
    #[error("config {path}: {reason}")]
    Config { path: String, reason: String },
    #[error("token file {path}: {reason}")]
    Token { path: String, reason: String },
    #[error("cluster manifest {id}: {reason}")]
    Manifest { id: String, reason: String },
    #[error("password file {path} is empty")]
    EmptySecret { path: String },
    #[error("{path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Repo(#[from] tidemark_repo::RepoError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn also(others: &[(String, ClusterError)]) -> String {
    if others.is_empty() {
        return String::new();
    }
    let each: Vec<String> = others.iter().map(|(n, e)| format!("{n}: {e}")).collect();
    format!(" (also failed: {})", each.join("; "))
}

impl ClusterError {
    pub fn file(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        ClusterError::File { path: path.as_ref().display().to_string(), source }
    }

    pub fn is_temporary(&self) -> bool {
        match self {
            ClusterError::Unreachable { .. } => true,
            ClusterError::Remote { status, .. } => *status == 503,
            ClusterError::Repo(tidemark_repo::RepoError::Store(e)) => e.is_temporary(),
            _ => false,
        }
    }
}
