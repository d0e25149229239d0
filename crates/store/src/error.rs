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

    /// Some keys of a [`Store::delete_many`](crate::Store::delete_many).
    #[error(transparent)]
    Undeleted(#[from] Undeleted),
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
            StoreError::Undeleted(u) => u.is_temporary(),
            _ => false,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}

/// The keys a [`Store::delete_many`](crate::Store::delete_many) did not
/// remove, each with the error that kept it; every other key of the call is
/// gone. Keys are grouped by error because one failed request can cover a
/// whole batch of keys, and an error (with its source) is not `Clone`.
#[derive(Debug, Default)]
pub struct Undeleted {
    pub failures: Vec<DeleteFailure>,
}

/// Keys that one error kept from being deleted.
#[derive(Debug)]
pub struct DeleteFailure {
    pub keys: Vec<String>,
    pub error: StoreError,
}

impl Undeleted {
    pub fn push(&mut self, keys: Vec<String>, error: StoreError) {
        if !keys.is_empty() {
            self.failures.push(DeleteFailure { keys, error });
        }
    }

    pub fn extend(&mut self, other: Undeleted) {
        self.failures.extend(other.failures);
    }

    /// The keys still there (or that may be).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.failures
            .iter()
            .flat_map(|f| f.keys.iter().map(String::as_str))
    }

    /// How many keys were not deleted.
    pub fn len(&self) -> usize {
        self.failures.iter().map(|f| f.keys.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.failures.is_empty()
    }

    /// Whether repeating the call for these keys may succeed: every error
    /// is temporary.
    pub fn is_temporary(&self) -> bool {
        self.failures.iter().all(|f| f.error.is_temporary())
    }

    /// `Ok` when nothing failed.
    pub fn into_result(self) -> Result<(), Undeleted> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

/// At most this many keys are named in the message; the rest are counted.
const KEYS_SHOWN: usize = 5;

impl std::fmt::Display for Undeleted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.len();
        write!(
            f,
            "{n} object{} not deleted (",
            if n == 1 { "" } else { "s" }
        )?;
        for (i, key) in self.keys().take(KEYS_SHOWN).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(key)?;
        }
        if n > KEYS_SHOWN {
            write!(f, " and {} more", n - KEYS_SHOWN)?;
        }
        f.write_str(")")?;
        if let Some(first) = self.failures.first() {
            write!(f, ": {}", first.error)?;
        }
        match self.failures.len() {
            0 | 1 => Ok(()),
            2 => f.write_str(" (and 1 other error)"),
            e => write!(f, " (and {} other errors)", e - 1),
        }
    }
}

impl std::error::Error for Undeleted {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.failures.first().map(|f| &f.error as _)
    }
}
