//! How a cluster backup names what it leaves in the repository, the same
//! for every adapter.
//!
//! - The backup's tag, `tidemark-<UTC yyyymmddThhmmssZ>-<6 hex>`: every node
//!   cuts its copy under it (Cassandra's snapshot name) and every node
//!   snapshot in the repository carries it. It holds the backup's start, so
//!   `cluster forget` can date node snapshots no manifest references.
//! - Each node snapshot's host name, `<store>/<cluster>/<node or part>`,
//!   tagged also with `<store>`: the host name picks the parent snapshot, so
//!   it stays the same across backups of one node.

use chrono::{DateTime, NaiveDateTime, Utc};
use tidemark_repo::Id;

/// Every backup's tag starts so.
pub const TAG_PREFIX: &str = "tidemark-";

/// The timestamp's format inside a tag (16 characters).
const STAMP: &str = "%Y%m%dT%H%M%SZ";

/// A new backup tag: `tidemark-<UTC yyyymmddThhmmssZ>-<6 hex>`; the random
/// part keeps two backups started in the same second apart.
pub fn new_tag(now: DateTime<Utc>) -> String {
    format!("{TAG_PREFIX}{}-{}", now.format(STAMP), &Id::random().to_hex()[..6])
}

/// The start time a backup tag carries; None for any other tag.
pub fn tag_time(tag: &str) -> Option<DateTime<Utc>> {
    let rest = tag.strip_prefix(TAG_PREFIX)?;
    let stamp = rest.get(..16)?;
    NaiveDateTime::parse_from_str(stamp, STAMP).ok().map(|t| t.and_utc())
}

/// Host name of a node's repository snapshots: `<store>/<cluster>/<node>`.
pub fn hostname(store: &str, cluster: &str, node: &str) -> String {
    format!("{store}/{cluster}/{node}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn tag_has_the_documented_shape() {
        let now = t("2026-11-25T16:05:09Z");
        let tag = new_tag(now);
        assert!(tag.starts_with("tidemark-20261125T160509Z-"), "{tag}");
        let hex = tag.rsplit('-').next().unwrap();
        assert_eq!(hex.len(), 6);
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(new_tag(now), tag, "two tags of the same second differ");
        assert_eq!(tag_time(&tag), Some(now));
    }

    #[test]
    fn tag_time_reads_the_backup_start() {
        assert_eq!(tag_time("tidemark-20261125T160509Z-abcdef"), Some(t("2026-11-25T16:05:09Z")));
        assert_eq!(tag_time("other-20261125T160509Z-abcdef"), None);
        assert_eq!(tag_time("tidemark-2026"), None);
    }

    #[test]
    fn hostname_is_store_cluster_node() {
        assert_eq!(hostname("cassandra", "prod", "127.0.1.1"), "cassandra/prod/127.0.1.1");
        assert_eq!(hostname("hdfs", "lake", ""), "hdfs/lake/");
    }
}
