//! The cluster backup manifest: one sealed JSON object in the repository's
//! catalog per complete cluster backup.
//!
//! The generic part (which nodes, which repository snapshot holds each node's
//! files, timings) is typed here; what only one data store has (Cassandra's
//! tokens, schema and per-table file lists) goes in `detail` and is typed by
//! the adapter. The manifest is written last, after every node's snapshot is
//! stored, so a listed backup is always complete.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tidemark_repo::snapshot::BackupSummary;
use tidemark_repo::{FileKind, Id, Repository};

use crate::error::{ClusterError, Result};

/// Bumped when a reader of an older version could misread a newer manifest.
pub const MANIFEST_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct ClusterManifest {
    pub version: u32,
    /// The data store kind: "cassandra", "hdfs", "mongodb", ...
    pub store: String,
    /// The cluster's name as configured (and, for Cassandra, `cluster_name`).
    pub cluster: String,
    /// The tag every node's snapshot was taken under.
    pub tag: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub nodes: Vec<NodeBackup>,
    /// Adapter-specific: schema, replication, consistency-cut timings.
    #[serde(default)]
    pub detail: serde_json::Value,
    #[serde(default)]
    pub program_version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct NodeBackup {
    /// How the cluster names the node (Cassandra: its broadcast address).
    pub node: String,
    /// Stable identity (Cassandra: host id).
    pub host_id: String,
    /// The agent that uploaded it (URL as configured).
    pub agent: String,
    /// Repository snapshot holding this node's files.
    pub snapshot: Id,
    /// When the node's point-in-time copy was cut.
    pub cut_at: DateTime<Utc>,
    pub uploaded_at: DateTime<Utc>,
    pub summary: BackupSummary,
    /// Adapter-specific: tokens, data center, rack, files per table.
    #[serde(default)]
    pub detail: serde_json::Value,
}

impl ClusterManifest {
    pub fn detail<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.detail.clone()).map_err(|e| ClusterError::Manifest {
            id: self.tag.clone(),
            reason: format!("detail does not parse: {e}"),
        })
    }

    /// Bytes newly stored by this backup across all nodes.
    pub fn data_added_stored(&self) -> u64 {
        self.nodes.iter().map(|n| n.summary.data_added_stored).sum()
    }

    pub fn total_bytes(&self) -> u64 {
        self.nodes.iter().map(|n| n.summary.total_bytes).sum()
    }
}

impl NodeBackup {
    pub fn detail<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.detail.clone()).map_err(|e| ClusterError::Manifest {
            id: self.node.clone(),
            reason: format!("node detail does not parse: {e}"),
        })
    }
}

/// Commits a manifest to the catalog; returns its id (the backup's id).
pub fn save(repo: &Repository, m: &ClusterManifest) -> Result<Id> {
    let plain = serde_json::to_vec(m).expect("manifest serialises");
    Ok(repo.save_file(FileKind::Catalog, &plain)?)
}

pub fn load(repo: &Repository, id: &Id) -> Result<ClusterManifest> {
    let plain = repo.load_file(FileKind::Catalog, id)?;
    decode(&plain, id)
}

fn decode(plain: &[u8], id: &Id) -> Result<ClusterManifest> {
    let m: ClusterManifest = serde_json::from_slice(plain).map_err(|e| ClusterError::Manifest {
        id: id.to_string(),
        reason: format!("does not parse: {e}"),
    })?;
    if m.version > MANIFEST_VERSION {
        return Err(ClusterError::Manifest {
            id: id.to_string(),
            reason: format!(
                "version {} is newer than this tidemark reads ({MANIFEST_VERSION}); upgrade tidemark",
                m.version
            ),
        });
    }
    Ok(m)
}

/// Every cluster backup in the catalog, oldest first; optionally only those of
/// one cluster. A manifest that cannot be read is an error (it names the id):
/// a catalog with a damaged entry must not look like one with fewer backups.
pub fn list(repo: &Repository, cluster: Option<&str>) -> Result<Vec<(Id, ClusterManifest)>> {
    let mut out = Vec::new();
    for (id, _) in repo.list(FileKind::Catalog)? {
        let m = load(repo, &id)?;
        if cluster.is_none_or(|c| c == m.cluster) {
            out.push((id, m));
        }
    }
    out.sort_by(|a, b| a.1.started.cmp(&b.1.started).then(a.0.cmp(&b.0)));
    Ok(out)
}

/// Finds a backup by id prefix (at least 4 hex digits) or `latest`.
pub fn find(repo: &Repository, cluster: Option<&str>, spec: &str) -> Result<(Id, ClusterManifest)> {
    let all = list(repo, cluster)?;
    if spec == "latest" {
        return all.into_iter().last().ok_or_else(|| ClusterError::Manifest {
            id: spec.into(),
            reason: "no cluster backup in the repository".into(),
        });
    }
    let spec_l = spec.to_ascii_lowercase();
    let mut hits: Vec<_> = all.into_iter().filter(|(id, _)| id.to_hex().starts_with(&spec_l)).collect();
    match hits.len() {
        1 if spec.len() >= 4 => Ok(hits.remove(0)),
        0 => Err(ClusterError::Manifest { id: spec.into(), reason: "no such cluster backup".into() }),
        n if spec.len() < 4 => Err(ClusterError::Manifest {
            id: spec.into(),
            reason: format!("give at least 4 hex digits ({n} backups match)"),
        }),
        n => Err(ClusterError::Manifest { id: spec.into(), reason: format!("ambiguous: {n} backups match") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_version_is_refused_by_name() {
        let m = ClusterManifest {
            version: MANIFEST_VERSION + 1,
            store: "cassandra".into(),
            cluster: "c".into(),
            tag: "t".into(),
            started: Utc::now(),
            finished: Utc::now(),
            nodes: vec![],
            detail: serde_json::Value::Null,
            program_version: String::new(),
        };
        let id = Id::random();
        let err = decode(&serde_json::to_vec(&m).unwrap(), &id).unwrap_err().to_string();
        assert!(err.contains("newer"), "{err}");
        let mut ok = m.clone();
        ok.version = MANIFEST_VERSION;
        assert_eq!(decode(&serde_json::to_vec(&ok).unwrap(), &id).unwrap(), ok);
    }
}
