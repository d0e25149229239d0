//! The cluster protocol, shared by every adapter (Cassandra first):
//!
//! - `manifest`: the cluster backup manifest, stored in the repository's
//!   catalog (`catalog/<id>`), sealed like every metadata file. A cluster
//!   backup exists only once its manifest is committed, after every node
//!   finished; node snapshots without a manifest are never listed.
//! - `auth`: the shared agent token (never logged, compared in constant time).
//! - `server`: runs an agent's HTTP API behind the token check.
//! - `client`: how a coordinator calls an agent; errors say which agent and why.
//! - `error`: the crate's one error type.

pub mod auth;
pub mod client;
pub mod error;
pub mod manifest;
pub mod server;

pub use client::AgentClient;
pub use error::{ClusterError, Result};
pub use manifest::{ClusterManifest, NodeBackup};
