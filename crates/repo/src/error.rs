//! Errors of the repository engine.
//!
//! Rules: one enum for the crate; each variant says which object (by kind and
//! id, or key) it is about; storage errors keep their [`StoreError`] source;
//! nothing is turned into a log line and then ignored. The CLI maps variants to
//! exit codes, so the variants that users act on differently (wrong password,
//! no repository, newer format) are separate.

use thiserror::Error;
use tidemark_store::StoreError;

pub type Result<T, E = RepoError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum RepoError {
    #[error(transparent)]
    Store(#[from] StoreError),

    #[error("no repository at {location} (run `tidemark init` first)")]
    NotARepository { location: String },

    #[error("a repository already exists at {location}")]
    AlreadyExists { location: String },

    #[error("wrong password: no key file of the repository opens with it")]
    WrongPassword,

    #[error("repository format version {found} is newer than this tidemark supports ({supported}); upgrade tidemark")]
    UnsupportedVersion { found: u32, supported: u32 },

    /// Authenticated decryption failed: the object was altered, truncated, or
    /// encrypted with another key.
    #[error("{what} is damaged: authentication failed (altered, truncated or foreign data)")]
    Tampered { what: String },

    /// An object decrypted but its content does not parse or match its id.
    #[error("{what} is corrupt: {reason}")]
    Corrupt { what: String, reason: String },

    #[error("blob {id} is not in the index (its pack is missing or was never indexed)")]
    BlobNotFound { id: String },

    #[error("snapshot {0} not found")]
    SnapshotNotFound(String),

    #[error("snapshot prefix {prefix} is ambiguous ({count} snapshots match)")]
    AmbiguousSnapshot { prefix: String, count: usize },

    #[error("key {0} not found")]
    KeyNotFound(String),

    #[error("cannot remove the last key of the repository")]
    LastKey,

    #[error("cannot remove the key in use; open the repository with another key first")]
    KeyInUse,

    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid argument: {0}")]
    Invalid(String),

    #[error("repository is locked exclusively by {holder}")]
    Locked { holder: String },

    /// A step over many objects stopped part-way: `done` says what it did,
    /// the source which objects were left and why.
    #[error("{done}")]
    Incomplete {
        done: String,
        #[source]
        source: StoreError,
    },
}

impl RepoError {
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        RepoError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    pub fn corrupt(what: impl Into<String>, reason: impl Into<String>) -> Self {
        RepoError::Corrupt {
            what: what.into(),
            reason: reason.into(),
        }
    }
}
