//! Snapshots: `snapshots/<id>`, `seal(zstd(JSON))`, one per backup.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{RepoError, Result};
use crate::id::Id;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct BackupSummary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub dirs: u64,
    /// Files (and directories) that could not be read; the snapshot is then
    /// marked incomplete.
    pub errors: u64,
    pub total_files: u64,
    /// Logical bytes of all files in the snapshot.
    pub total_bytes: u64,
    /// Bytes of file content read this time (0 for an unchanged tree).
    pub bytes_read: u64,
    pub blobs_new: u64,
    /// Plaintext bytes of new blobs.
    pub data_added: u64,
    /// Bytes of new blobs as stored (compressed and encrypted).
    pub data_added_stored: u64,
    pub duration_secs: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Snapshot {
    pub time: DateTime<Utc>,
    pub hostname: String,
    pub username: String,
    /// The source paths as given to `backup`, made absolute.
    pub paths: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Root tree: the absolute paths are reproduced from `/` downwards.
    pub tree: Id,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Id>,
    /// Set when some source files could not be read.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub incomplete: bool,
    #[serde(default)]
    pub program_version: String,
    #[serde(default)]
    pub summary: BackupSummary,
    /// Snapshot this one was copied from (`copy`), in the source repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<Id>,
}

impl Snapshot {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("snapshot serialises")
    }

    pub fn decode(b: &[u8], id: &Id) -> Result<Snapshot> {
        serde_json::from_slice(b).map_err(|e| RepoError::corrupt(format!("snapshot {id}"), e.to_string()))
    }

    pub fn has_tag(&self, t: &str) -> bool {
        self.tags.iter().any(|x| x == t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn snapshot_round_trip(paths in proptest::collection::vec(".*", 0..4), tags in proptest::collection::vec("[a-z]{1,8}", 0..3),
                               secs in 0i64..4_000_000_000, tree in any::<[u8; 32]>(), files in any::<u64>(), incomplete in any::<bool>()) {
            let s = Snapshot {
                time: DateTime::from_timestamp(secs, 0).unwrap(),
                hostname: "h".into(),
                username: "u".into(),
                paths,
                tags,
                tree: Id(tree),
                parent: None,
                incomplete,
                program_version: "t".into(),
                summary: BackupSummary { total_files: files, ..Default::default() },
                original: None,
            };
            let back = Snapshot::decode(&s.encode(), &Id::default()).unwrap();
            prop_assert_eq!(back, s);
        }
    }
}
