//! Object versions and retention of one key, outside the [`Store`] trait:
//! the repository only sees current versions, but tests and repair tools must
//! see (and try to delete) every version to prove Object Lock holds.

use chrono::{DateTime, Utc};

use super::errors::{classify, Kind};
use super::{to_chrono, S3Store};
use crate::Result;

/// One version of an object, as `ListObjectVersions` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    /// Key relative to the store prefix.
    pub key: String,
    pub version_id: String,
    pub is_latest: bool,
    pub delete_marker: bool,
}

impl S3Store {
    /// Every version and delete marker under `prefix` (for tests and repair
    /// tools; the repository itself only sees current versions).
    pub async fn list_versions(&self, prefix: &str) -> Result<Vec<ObjectVersion>> {
        let full_prefix = self.full_key(prefix);
        let mut out = Vec::new();
        let (mut key_marker, mut version_marker) = (None, None);
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.config.bucket)
                .prefix(&full_prefix)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| classify(e).into_error(prefix))?;
            for v in page.versions() {
                out.push(ObjectVersion {
                    key: self.relative(v.key().unwrap_or_default()).to_owned(),
                    version_id: v.version_id().unwrap_or_default().to_owned(),
                    is_latest: v.is_latest().unwrap_or(false),
                    delete_marker: false,
                });
            }
            for m in page.delete_markers() {
                out.push(ObjectVersion {
                    key: self.relative(m.key().unwrap_or_default()).to_owned(),
                    version_id: m.version_id().unwrap_or_default().to_owned(),
                    is_latest: m.is_latest().unwrap_or(false),
                    delete_marker: true,
                });
            }
            if !page.is_truncated().unwrap_or(false) {
                return Ok(out);
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            version_marker = page.next_version_id_marker().map(str::to_owned);
            if key_marker.is_none() {
                return Ok(out);
            }
        }
    }

    /// Delete one version for good (what an attacker with stolen keys would
    /// try); Object Lock makes the store answer [`StoreError::Denied`](crate::StoreError::Denied).
    pub async fn delete_version(&self, key: &str, version_id: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.config.bucket)
            .key(self.full_key(key))
            .version_id(version_id)
            .send()
            .await
            .map_err(|e| classify(e).into_error(key))?;
        Ok(())
    }

    /// The retain-until date of the current version, `None` without one.
    pub async fn retention(&self, key: &str) -> Result<Option<DateTime<Utc>>> {
        let answer = self
            .client
            .get_object_retention()
            .bucket(&self.config.bucket)
            .key(self.full_key(key))
            .send()
            .await;
        match answer {
            Ok(out) => Ok(out
                .retention()
                .and_then(|r| r.retain_until_date())
                .and_then(to_chrono)),
            Err(e) => match classify(e) {
                // No lock configuration on this object: no retention.
                Kind::NoRetention => Ok(None),
                other => Err(other.into_error(key)),
            },
        }
    }
}
