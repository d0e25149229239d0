//! The cluster protocol, shared by every adapter (Cassandra first):
//!
//! - `manifest`: the cluster backup manifest, stored in the repository's
//!   catalog (`catalog/<id>`), sealed like every metadata file. A cluster
//!   backup exists only once its manifest is committed, after every node
//!   finished; node snapshots without a manifest are never listed.
//! - `config`: what every adapter's coordinator file has (name, repository,
//!   secrets, `[retention]`), and which adapter a file is for.
//! - `catalog`: what a listing shows of one backup.
//! - `tag`: the backup tag (`tidemark-<start>-<hex>`) and the node
//!   snapshots' host names (`<store>/<cluster>/<node>`).
//! - `auth`: the shared agent token (never logged, compared in constant
//!   time) and secret files.
//! - `server`: runs an agent's HTTP API behind the token check.
//! - `busy`: an agent's one-long-operation-at-a-time mark.
//! - `client`: how a coordinator calls an agent; errors say which agent and why.
//! - `fanout`: a call to every agent at once, and "all nodes or an error
//!   naming the node".
//! - `forget`: retention for whole cluster backups (`cluster forget`).
//! - `copy`: whole cluster backups into another repository (`cluster copy`).
//! - `verify`: the tree and chunk checks every adapter's verify makes.
//! - `error`: the crate's one error type.

pub mod auth;
pub mod busy;
pub mod catalog;
pub mod client;
pub mod config;
pub mod copy;
pub mod error;
pub mod fanout;
pub mod forget;
pub mod manifest;
pub mod server;
pub mod tag;
pub mod verify;

pub use client::AgentClient;
pub use error::{ClusterError, Result};
pub use manifest::{ClusterManifest, NodeBackup};
