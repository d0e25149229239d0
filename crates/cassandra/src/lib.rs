//! The Cassandra adapter.
//!
//! - `config`: the coordinator's cluster file and each agent's file (TOML).
//! - `api`: requests and replies of the agent API (JSON over HTTP, token).
//! - `control`: the JMX operations Cassandra offers no CQL for (snapshot,
//!   clearsnapshot, import, ring status), through the agent's JMX bridge or
//!   `nodetool` (which runs the node's own nodetool).
//! - `agent`: `tidemark agent`: beside one node, cuts, uploads and restores
//!   that node's SSTables straight to and from the repository.
//! - `topology`: discovery over CQL (nodes, host ids, tokens, DCs, racks,
//!   schema) and the rebalancing freeze (pre- and post-checks).
//! - `backup`: the coordinator's cluster backup: check, snapshot everywhere
//!   under one tag, re-check, upload in parallel, commit one manifest, clear.
//! - `restore`: table, keyspace or whole-cluster restore; same topology by
//!   `nodetool import`, any other by streaming.
//! - `verify`: checks a cluster backup's node snapshots and files.
//! - `error`: the crate's error type.

pub mod agent;
pub mod api;
pub mod backup;
pub mod config;
pub mod control;
pub mod error;
pub mod manifest;
pub mod nodetool;
pub mod restore;
pub mod topology;
pub mod verify;

pub use error::{CassandraError, Result};

/// The `store` name in cluster manifests.
pub const STORE: &str = "cassandra";
