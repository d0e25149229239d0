//! Errors of the storage layer.
//!
//! Rules: every variant names the key (or location) it is about; the source
//! error is kept, never flattened into a string where a typed one exists;
//! [`StoreError::is_temporary`] is what the retry wrapper decides on.

use thiserror::Error;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("object {key} not found")]
    NotFound { key: String },

    #[error("object {key} is shorter than the requested range {offset}+{len}")]
    Truncated { key: String, offset: u64, len: u64 },

    #[error("I/O error on {key}: {source}")]
    Io {
        key: String,
        #[source]
        source: std::io::Error,
    },

    /// The store refused the operation because the object is under retention
    /// (Object Lock) or the credentials lack the right.
    #[error("access to {key} denied: {message}")]
    Denied { key: String, message: String },

    /// An error from the remote service; `temporary` says whether retrying
    /// may help (throttling, 5xx, connection reset, timeout).
    #[error("storage service error on {key}: {message}")]
    Service {
        key: String,
        message: String,
        temporary: bool,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// A key the store cannot hold (empty, absolute, `..`, or the name of a
    /// backend's own temporary file).
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },

    #[error("{what} is not supported by {store}")]
    Unsupported { what: String, store: String },

    #[error("invalid repository location {location:?}: {reason}")]
    InvalidLocation { location: String, reason: String },
}

impl StoreError {
    /// Whether the same call may succeed if repeated.
    pub fn is_temporary(&self) -> bool {
        match self {
            StoreError::Service { temporary, .. } => *temporary,
            StoreError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
            ),
            _ => false,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}
