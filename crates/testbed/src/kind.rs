//! The fixed set of kinds and the one place that dispatches on them.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::root::Root;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Cassandra,
    Hdfs,
    Mongodb,
    Redis,
    Etcd,
    S3,
}

impl Kind {
    pub const ALL: &'static [Kind] = &[
        Kind::Cassandra,
        Kind::Hdfs,
        Kind::Mongodb,
        Kind::Redis,
        Kind::Etcd,
        Kind::S3,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Cassandra => "cassandra",
            Kind::Hdfs => "hdfs",
            Kind::Mongodb => "mongodb",
            Kind::Redis => "redis",
            Kind::Etcd => "etcd",
            Kind::S3 => "s3",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Kind> {
        match Kind::ALL.iter().find(|k| k.as_str() == s) {
            Some(k) => Ok(*k),
            None => {
                let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                bail!("unknown kind {s:?}; known kinds: {}", known.join(", "))
            }
        }
    }
}

/// What `testbed up` asks of every kind; a kind ignores what it has no use for.
#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    /// Cluster name inside the root; defaults to the kind's name. A second,
    /// independent cluster of the same kind needs another name.
    pub name: Option<String>,
    /// Number of nodes (servers); `None` = the kind's default.
    pub nodes: Option<usize>,
    /// Cassandra: one `tidemark agent` beside each node, a repository shared
    /// by the root and the coordinator's `tidemark.toml` (see docs/testbed.md).
    pub with_agents: bool,
    /// The `tidemark` binary for the agents; `None`: `$TIDEMARK_BIN`, else a
    /// `tidemark` next to the running executable.
    pub tidemark_bin: Option<PathBuf>,
    /// The agents' repository instead of `<root>/tidemark/repo`: a path or
    /// an `s3:` URL (credentials from the AWS variables of the environment).
    pub repository: Option<String>,
    /// HDFS: check permissions (`dfs.permissions.enabled`); off by default so
    /// tests can act as any user.
    pub permissions: bool,
    /// HDFS with agents: the user tidemark acts as; `None`: the one running
    /// the NameNode, which HDFS makes its superuser.
    pub tidemark_user: Option<String>,
}

impl UpOptions {
    pub fn name_or(&self, kind: Kind) -> String {
        self.name.clone().unwrap_or_else(|| kind.to_string())
    }
}

/// Starts a cluster of `kind`, waits until it is ready, records its info in
/// the root's state and returns that info as JSON.
pub fn up(kind: Kind, root: &Root, opts: &UpOptions) -> Result<serde_json::Value> {
    let name = opts.name_or(kind);
    let started = match kind {
        Kind::Cassandra => crate::cassandra::start(root, opts).and_then(to_json),
        Kind::Hdfs => crate::hdfs::start(root, opts).and_then(to_json),
        Kind::Mongodb => crate::mongodb::start(root, opts).and_then(to_json),
        Kind::Redis => crate::redis::start(root, opts).and_then(to_json),
        Kind::Etcd => crate::etcd::start(root, opts).and_then(to_json),
        // One SeaweedFS process (master, volume, filer and S3 gateway); --nodes
        // does not apply.
        Kind::S3 => root
            .create_cluster(Kind::S3, &name)
            .and_then(|()| crate::s3::start_registered(root, &name))
            .and_then(to_json),
    };
    match started {
        Ok(info) => {
            root.set_info(&name, info.clone())?;
            Ok(info)
        }
        Err(e) => {
            // Leave nothing running behind a failed start.
            if let Err(stop) = root.stop_cluster(&name) {
                eprintln!("stopping {name} after a failed start: {stop:#}");
            }
            Err(e)
        }
    }
}

fn to_json(info: impl Serialize) -> Result<serde_json::Value> {
    Ok(serde_json::to_value(info)?)
}
