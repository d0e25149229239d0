//! The HDFS adapter.
//!
//! - `config`: the coordinator's cluster file and each agent's file (TOML).
//! - `webhdfs`: the WebHDFS client (snapshots, diffs, ACLs, checksums, HA).
//! - `api`: requests and replies of the agent API (JSON over HTTP, token).
//! - `agent`: `tidemark agent` beside a DataNode: reads snapshot files into
//!   the repository and writes restored files, no byte through the
//!   coordinator.
//! - `topology`: the active NameNode, its DataNodes and configuration, and
//!   the checks before a cut.
//! - `backup`: snapshot per root, walk by snapshot diff, reads split among
//!   the agents, trees and one manifest committed last.
//! - `restore`: any path of a backup onto this cluster or another.
//! - `verify`: a backup against what it recorded.
//! - `manifest`: what an HDFS backup records beyond the generic manifest.
//! - `error`: the crate's error type.

pub mod agent;
pub mod api;
pub mod backup;
pub mod config;
pub mod error;
pub mod manifest;
pub mod restore;
pub mod topology;
pub mod verify;
pub mod webhdfs;

pub use error::{HdfsError, Result};

/// The `store` name in cluster manifests.
pub const STORE: &str = "hdfs";
