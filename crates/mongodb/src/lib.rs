//! MongoDB adapter: one consistent cut across replica sets (and, through a
//! mongos, across shards and the config server) by oplog time; documents
//! stored as raw BSON in `_id` order through the engine's content-defined
//! chunking (incremental forever); restore of the deployment, a database,
//! collections (renamed) or the documents matching a filter, replaying each
//! set's oplog to the cut. See docs/mongodb.md, and its table of what was
//! and was not run against a real MongoDB server.

pub mod backup;
pub mod config;
pub mod dump;
pub mod error;
pub mod manifest;
pub mod oplog;
pub mod restore;
pub mod topology;
pub mod verify;

pub use error::{MongoError, Result};
/// The driver, for callers that talk to the same servers (tests).
pub use mongodb;

/// The store table of the coordinator file (`[mongodb]`) and the
/// manifests' `store`.
pub const STORE: &str = "mongodb";
