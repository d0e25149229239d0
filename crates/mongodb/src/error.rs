//! Errors of the MongoDB adapter. Each names the replica set, database or
//! collection it concerns and keeps its source; the CLI shows them as they
//! are.

use thiserror::Error;

pub type Result<T, E = MongoError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum MongoError {
    #[error("config {path}: {reason}")]
    Config { path: String, reason: String },
    /// The server answered with an error, or could not be reached: what we
    /// asked of which replica set, and the driver's error.
    /// (`err` is not a `#[source]`: its text is in the message once, not
    /// again as a cause with the raw reply.)
    #[error("replica set {rs}: {what}: {}", describe(err))]
    Server { rs: String, what: String, err: Box<mongodb::error::Error> },
    /// A step did not finish in its time (a hung member).
    #[error("replica set {rs}: {what} did not finish within {secs} s")]
    Timeout { rs: String, what: String, secs: u64 },
    /// The cluster cannot be cut now; the text says why and what to do.
    #[error("cluster not ready for a consistent backup: {0}")]
    NotReady(String),
    /// The oplog that would be needed is not all in the repository (it
    /// rolled over before it was archived, or archiving stopped).
    #[error("oplog gap: {0}")]
    Gap(String),
    /// What was asked cannot be done as asked (a bad filter, a target that
    /// has the collection already); nothing was changed.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Invalid(String),
    /// A copy stopped because another part of the backup failed (that
    /// failure is the one reported).
    #[error("{0}")]
    Stopped(String),
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

impl MongoError {
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        MongoError::Io { path: path.as_ref().display().to_string(), source }
    }

    pub fn server(rs: &str, what: impl Into<String>, source: mongodb::error::Error) -> Self {
        MongoError::Server { rs: rs.to_string(), what: what.into(), err: Box::new(source) }
    }

    /// The server refused the credentials.
    pub fn is_auth(&self) -> bool {
        matches!(self, MongoError::Server { err, .. }
            if matches!(*err.kind, mongodb::error::ErrorKind::Authentication { .. }))
    }
}

/// A driver error in one line: the server's code name and message for a
/// refused command, the kind's text otherwise (never the raw reply).
pub fn describe(e: &mongodb::error::Error) -> String {
    use mongodb::error::{ErrorKind, WriteFailure};
    match &*e.kind {
        ErrorKind::Command(c) => format!("{} ({}): {}", c.code_name, c.code, c.message),
        ErrorKind::Write(WriteFailure::WriteError(w)) => format!("write error {}: {}", w.code, w.message),
        ErrorKind::InsertMany(m) => match m.write_errors.as_ref().and_then(|w| w.first()) {
            Some(w) => format!("insert failed ({} errors; first: code {}: {})", m.write_errors.as_ref().map_or(0, Vec::len), w.code, w.message),
            None => e.kind.to_string(),
        },
        other => other.to_string(),
    }
}

/// Adds "replica set X: what" to a driver result.
pub trait Context<T> {
    fn ctx(self, rs: &str, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, mongodb::error::Error> {
    fn ctx(self, rs: &str, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| MongoError::server(rs, what(), e))
    }
}
