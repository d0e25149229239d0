//! The tidemark repository engine.
//!
//! Parts (docs/format.md describes the stored format they implement):
//! - [`crypto`]: master key, AES-256-GCM sealing, keyed BLAKE3 blob ids;
//!   [`keyfile`]: the master key wrapped under Argon2id passphrases.
//! - [`config`]: the repository's clear-text `config` (format version, chunker).
//! - [`blob`], [`pack`], [`index`]: chunks compressed and sealed one by one,
//!   gathered in self-describing packs, found through index files.
//! - [`tree`], [`snapshot`]: directory listings and snapshot records.
//! - [`repo`]: the open repository and typed access to its files.
//! - [`packer`]: concurrent, deduplicating blob writer used by backup and copy.
//! - [`lock`]: session locks that make concurrent backups and prune safe.
//! - operations: [`backup`], [`restore`], [`verify`], [`forget`], [`prune`],
//!   [`copy`], [`stats`], [`walk`] (ls, diff).
//!
//! All of it is synchronous CPU work on plain threads; storage I/O goes
//! through the async `tidemark_store::Store` on a tokio runtime.

pub mod backup;
pub mod blob;
pub mod cache;
pub mod ceiling;
pub mod config;
pub mod copy;
pub mod crypto;
pub mod error;
pub mod forget;
pub mod fsmeta;
pub mod id;
pub mod index;
pub mod ingest;
pub mod keyfile;
pub mod lock;
pub mod pack;
pub mod packer;
pub mod progress;
pub mod prune;
pub mod repair;
pub mod repo;
pub mod restore;
pub mod snapshot;
pub mod stats;
pub mod tree;
pub mod verify;
pub mod walk;

pub use error::{RepoError, Result};
pub use id::Id;
pub use repo::{FileKind, InitOptions, Repository};

/// This machine's host name, for snapshots, locks and key files.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

/// The user running this process.
pub fn username() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| nix::unistd::getuid().to_string())
}
