//! The repository's `config` object: format version and parameters.
//!
//! Stored in the clear (it holds no secret), so that a tidemark too old for a
//! repository can say so before asking for a passphrase. Everything secret
//! (the chunker seed, the id key) derives from the master key.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{RepoError, Result};
use crate::id::Id;

/// The format version this build reads and writes (docs/format.md).
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ChunkerParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

impl Default for ChunkerParams {
    /// 1 MiB average: chosen by measurement (docs/format.md, "Chunk sizes"):
    /// it keeps the index at about one entry per MiB while small edits still
    /// re-store only about one chunk.
    fn default() -> Self {
        ChunkerParams {
            min_size: 256 * 1024,
            avg_size: 1024 * 1024,
            max_size: 4 * 1024 * 1024,
        }
    }
}

impl ChunkerParams {
    pub fn validate(&self) -> Result<()> {
        if !(64..=self.avg_size).contains(&self.min_size)
            || self.avg_size > self.max_size
            || self.max_size > 64 * 1024 * 1024
        {
            return Err(RepoError::Invalid(format!(
                "chunker sizes must satisfy 64 <= min <= avg <= max <= 64 MiB, got {self:?}"
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RepoConfig {
    pub version: u32,
    pub id: Id,
    pub created: DateTime<Utc>,
    pub chunker: ChunkerParams,
    /// zstd level for data blobs; 0 stores them uncompressed.
    pub compression: i32,
    /// Target size of a pack file in bytes.
    pub pack_size: u32,
    /// When set, every object is written under S3 Object Lock (COMPLIANCE) for
    /// this many days, and retention of live objects is extended by backups.
    #[serde(default)]
    pub object_lock_days: Option<u32>,
}

impl RepoConfig {
    /// zstd level of new repositories. Level 2 compresses chunks of about a
    /// MiB within 0.1% of level 3 (both "double fast"; level 2 with smaller
    /// tables and matches of 6 bytes or more) and about a fifth faster:
    /// measured with `zstd -b1e3 -B1048576` on 800 MB of the benchmark's mixed
    /// set, 245.5 MB at level 2 and 245.3 MB at level 3, 383 and 307 MB/s.
    pub const DEFAULT_COMPRESSION: i32 = 2;

    pub fn new() -> RepoConfig {
        RepoConfig {
            version: FORMAT_VERSION,
            id: Id::random(),
            created: Utc::now(),
            chunker: ChunkerParams::default(),
            compression: Self::DEFAULT_COMPRESSION,
            // 16 MiB (restic's size): a backup to S3 holds two packs in
            // memory (one filling, one being stored), so this bounds its peak
            // memory (a local disk takes packs blob by blob and holds none);
            // still few objects per TB (65,536) for listing and S3 requests.
            pack_size: 16 * 1024 * 1024,
            object_lock_days: None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.chunker.validate()?;
        if !(0..=22).contains(&self.compression) {
            return Err(RepoError::Invalid(format!(
                "compression level must be 0..=22, got {}",
                self.compression
            )));
        }
        if !(1024 * 1024..=1024 * 1024 * 1024).contains(&self.pack_size) {
            return Err(RepoError::Invalid("pack size must be between 1 MiB and 1 GiB".into()));
        }
        Ok(())
    }

    /// Parse, refusing a newer format before anything else.
    pub fn from_bytes(b: &[u8]) -> Result<RepoConfig> {
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        let v: VersionOnly =
            serde_json::from_slice(b).map_err(|e| RepoError::corrupt("config", e.to_string()))?;
        if v.version > FORMAT_VERSION {
            return Err(RepoError::UnsupportedVersion {
                found: v.version,
                supported: FORMAT_VERSION,
            });
        }
        let c: RepoConfig =
            serde_json::from_slice(b).map_err(|e| RepoError::corrupt("config", e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("config serialises")
    }
}

impl Default for RepoConfig {
    fn default() -> Self {
        Self::new()
    }
}
