//! A node snapshot on disk, and its staging as a view with stable paths.
//!
//! `nodetool snapshot -t TAG` leaves hard links under
//! `<data dir>/<ks>/<table>-<id>/snapshots/<TAG>/`. Backing those paths up
//! directly would put the tag into every path, so each backup would look new
//! to the engine. Instead the agent hard-links them into
//! `<work dir>/view/data/<ks>/<table>-<id>/`, the same paths every time: the
//! engine then finds an SSTable stored by an earlier backup under the same
//! path, size, mtime and inode and does not read it again.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::error::{CassandraError, Result};

/// One table's snapshot directory on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSnapshot {
    pub keyspace: String,
    pub table: String,
    pub table_id: String,
    /// `<data dir>/<ks>/<table>-<id>/snapshots/<tag>`
    pub path: PathBuf,
}

impl TableSnapshot {
    /// `<table>-<id>`, the table's directory name.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.table, self.table_id)
    }
}

/// Tags become directory names and nodetool arguments: letters, digits,
/// `.`, `_` and `-` only, not starting with `.` or `-`.
pub fn valid_tag(tag: &str) -> Result<()> {
    let ok_chars = tag
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if tag.is_empty() || tag.len() > 200 || !ok_chars || tag.starts_with(['.', '-']) {
        return Err(CassandraError::Invalid(format!(
            "bad snapshot tag {tag:?}: use 1 to 200 letters, digits, '.', '_' or '-', not starting with '.' or '-'"
        )));
    }
    Ok(())
}

/// `<table>-<32 hex id>`: table names cannot hold `-`, so the last one splits.
pub fn split_table_dir(name: &str) -> Option<(&str, &str)> {
    let (table, id) = name.rsplit_once('-')?;
    (!table.is_empty() && id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some((table, id))
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(|e| CassandraError::io(dir, e))?
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| CassandraError::io(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    Ok(entries)
}

/// The distinct snapshot tags present on disk in any table of any data dir,
/// sorted. Read from the file system, not `nodetool listsnapshots`: the
/// status call stays one JVM start cheaper, and what is on disk is what a
/// clear must remove.
pub fn snapshot_tags(data_dirs: &[PathBuf]) -> Result<Vec<String>> {
    let mut tags = std::collections::BTreeSet::new();
    for data in data_dirs.iter().filter(|d| d.exists()) {
        for ks in read_dir_sorted(data)? {
            if !ks.path().is_dir() {
                continue;
            }
            for t in read_dir_sorted(&ks.path())? {
                let name = t.file_name();
                if split_table_dir(&name.to_string_lossy()).is_none() {
                    continue;
                }
                let snaps = t.path().join("snapshots");
                if !snaps.is_dir() {
                    continue;
                }
                for tag in read_dir_sorted(&snaps)? {
                    tags.insert(tag.file_name().to_string_lossy().into_owned());
                }
            }
        }
    }
    Ok(tags.into_iter().collect())
}

/// Every table snapshot dir of `tag` in all data dirs.
pub fn find_snapshot(data_dirs: &[PathBuf], tag: &str) -> Result<Vec<TableSnapshot>> {
    let mut found = Vec::new();
    for data in data_dirs {
        if !data.exists() {
            continue;
        }
        for ks in read_dir_sorted(data)? {
            if !ks
                .file_type()
                .map_err(|e| CassandraError::io(ks.path(), e))?
                .is_dir()
            {
                continue;
            }
            for t in read_dir_sorted(&ks.path())? {
                let name = t.file_name().to_string_lossy().into_owned();
                let Some((table, id)) = split_table_dir(&name) else {
                    continue;
                };
                let snap = t.path().join("snapshots").join(tag);
                if snap.is_dir() {
                    found.push(TableSnapshot {
                        keyspace: ks.file_name().to_string_lossy().into_owned(),
                        table: table.to_string(),
                        table_id: id.to_string(),
                        path: snap,
                    });
                }
            }
        }
    }
    Ok(found)
}

/// Whether a file name is an SSTable component (`<version>-<id>-<format>-<Component>`,
/// e.g. `nb-1-big-Data.db`, `da-3gxs_0s1c_2q9gw2f0p3v0lmxg7b-bti-Partitions.db`).
/// Snapshot extras (`manifest.json`, `schema.cql`) are not.
pub fn is_sstable_component(name: &str) -> bool {
    let parts: Vec<&str> = name.splitn(4, '-').collect();
    parts.len() == 4
        && parts[0].len() == 2
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && !parts[1].is_empty()
        && matches!(parts[2], "big" | "bti")
        && !parts[3].is_empty()
}

/// `<work>/view`
pub fn view_dir(work: &Path) -> PathBuf {
    work.join("view")
}

/// Removes the view (left by a finished or a crashed run). Only hard links
/// and a link to the kept cassandra.yaml copy live there: the node's files are untouched.
/// Returns whether there was one.
pub fn remove_view(work: &Path) -> Result<bool> {
    let v = view_dir(work);
    match std::fs::remove_dir_all(&v) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(CassandraError::io(&v, e)),
    }
}

/// Stages the view: every table's SSTable components hard-linked into
/// `view/data/<ks>/<table>-<id>/` (sub-directories such as secondary index
/// dirs included). The snapshot's `manifest.json` and `schema.cql` stay out:
/// they are new files with every snapshot (manifest.json even differs), so
/// they would be read on every backup, and the coordinator records both the
/// schema (`DESCRIBE SCHEMA`) and the file lists in the cluster manifest, cassandra.yaml linked to `view/conf/cassandra.yaml` from a
/// kept copy (see `keep_copy`).
pub fn stage(work: &Path, tables: &[TableSnapshot], cassandra_yaml: &Path) -> Result<PathBuf> {
    remove_view(work)?;
    let view = view_dir(work);
    for t in tables {
        let dest = view.join("data").join(&t.keyspace).join(t.dir_name());
        link_tree(&t.path, &dest)?;
    }
    let conf = view.join("conf");
    std::fs::create_dir_all(&conf).map_err(|e| CassandraError::io(&conf, e))?;
    let kept = keep_copy(work, cassandra_yaml)?;
    let yaml = conf.join("cassandra.yaml");
    std::fs::hard_link(&kept, &yaml).map_err(|e| CassandraError::io(&yaml, e))?;
    Ok(view)
}

/// A copy of cassandra.yaml in `<work>/conf/` that is rewritten only when the
/// node's file changed: linked into each view, it keeps its inode and mtime,
/// so an unchanged file is not read again by the next backup. (The node's own
/// file may live on another filesystem; it cannot be linked directly.)
fn keep_copy(work: &Path, yaml: &Path) -> Result<PathBuf> {
    let dir = work.join("conf");
    let kept = dir.join("cassandra.yaml");
    let now = std::fs::read(yaml).map_err(|e| CassandraError::io(yaml, e))?;
    if std::fs::read(&kept).ok().as_deref() == Some(now.as_slice()) {
        return Ok(kept);
    }
    std::fs::create_dir_all(&dir).map_err(|e| CassandraError::io(&dir, e))?;
    let tmp = dir.join("cassandra.yaml.tmp");
    std::fs::write(&tmp, &now).map_err(|e| CassandraError::io(&tmp, e))?;
    std::fs::rename(&tmp, &kept).map_err(|e| CassandraError::io(&kept, e))?;
    Ok(kept)
}

fn link_tree(src: &Path, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest).map_err(|e| CassandraError::io(dest, e))?;
    for entry in read_dir_sorted(src)? {
        let from = entry.path();
        let to = dest.join(entry.file_name());
        let ft = entry
            .file_type()
            .map_err(|e| CassandraError::io(&from, e))?;
        if ft.is_dir() {
            link_tree(&from, &to)?;
        } else if ft.is_file() && is_sstable_component(&entry.file_name().to_string_lossy()) {
            // The same table in two data dirs merges into one view dir; SSTable
            // names are unique per table, so a clash means something odd.
            std::fs::hard_link(&from, &to).map_err(|e| match e.kind() {
                ErrorKind::CrossesDevices => CassandraError::Invalid(format!(
                    "cannot hard-link {} into {}: the agent's work-dir must be on the same filesystem as the data dirs",
                    from.display(),
                    to.display()
                )),
                ErrorKind::AlreadyExists => CassandraError::Invalid(format!(
                    "{} exists in two data dirs of the same table",
                    to.display()
                )),
                _ => CassandraError::io(&to, e),
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sstable_components_are_told_from_snapshot_extras() {
        for yes in [
            "nb-1-big-Data.db",
            "nb-12-big-TOC.txt",
            "da-3gxs_0s1c_2q9gw2f0p3v0lmxg7b-bti-Partitions.db",
        ] {
            assert!(is_sstable_component(yes), "{yes}");
        }
        for no in [
            "manifest.json",
            "schema.cql",
            "nb-1-big",
            "backups",
            ".t_idx",
        ] {
            assert!(!is_sstable_component(no), "{no}");
        }
    }

    #[test]
    fn a_work_dir_on_another_filesystem_is_named() {
        // /dev/shm is a tmpfs on Linux; the temporary dir is not.
        let shm = Path::new("/dev/shm");
        let tmp = tempfile::tempdir().unwrap();
        if !shm.is_dir() {
            return;
        }
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata(shm).unwrap().dev() == std::fs::metadata(tmp.path()).unwrap().dev() {
            return;
        }
        let snap = tmp
            .path()
            .join("data/ks/t-5a1c395e4f2b11ef9b4b6d2c86545d91/snapshots/x");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("nb-1-big-Data.db"), b"d").unwrap();
        let yaml = tmp.path().join("cassandra.yaml");
        std::fs::write(&yaml, b"").unwrap();
        let work = tempfile::tempdir_in(shm).unwrap();
        let tables = find_snapshot(&[tmp.path().join("data")], "x").unwrap();
        let e = stage(work.path(), &tables, &yaml).unwrap_err().to_string();
        assert!(e.contains("same filesystem as the data dirs"), "{e}");
    }

    #[test]
    fn tags_are_checked() {
        for good in ["tm-20260101T000000Z", "a", "x.y_z-1"] {
            valid_tag(good).unwrap();
        }
        for bad in ["", "-x", ".x", "a b", "a/b", "..", "a;rm", "ä"] {
            let e = valid_tag(bad).unwrap_err().to_string();
            assert!(e.contains("bad snapshot tag"), "{e}");
        }
    }

    #[test]
    fn table_dirs_split_at_the_id() {
        assert_eq!(
            split_table_dir("my_table-5a1c395e4f2b11ef9b4b6d2c86545d91"),
            Some(("my_table", "5a1c395e4f2b11ef9b4b6d2c86545d91"))
        );
        assert_eq!(split_table_dir("snapshots"), None);
        assert_eq!(split_table_dir("t-123"), None);
    }

    #[test]
    fn stage_links_files_and_index_dirs_and_replaces_a_stale_view() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let tdir = data.join("ks").join("t-5a1c395e4f2b11ef9b4b6d2c86545d91");
        let snap = tdir.join("snapshots").join("tag1");
        std::fs::create_dir_all(snap.join(".t_idx")).unwrap();
        std::fs::write(snap.join("nb-1-big-Data.db"), b"data").unwrap();
        std::fs::write(snap.join(".t_idx").join("nb-1-big-Data.db"), b"idx").unwrap();
        std::fs::create_dir_all(tdir.join("snapshots").join("other")).unwrap();
        let yaml = tmp.path().join("cassandra.yaml");
        std::fs::write(&yaml, b"cluster_name: x").unwrap();
        let work = tmp.path().join("work");
        std::fs::create_dir_all(view_dir(&work).join("stale")).unwrap();

        let tables = find_snapshot(std::slice::from_ref(&data), "tag1").unwrap();
        assert_eq!(tables.len(), 1);
        assert_eq!(
            (tables[0].keyspace.as_str(), tables[0].table.as_str()),
            ("ks", "t")
        );
        let view = stage(&work, &tables, &yaml).unwrap();
        let staged = view.join("data/ks/t-5a1c395e4f2b11ef9b4b6d2c86545d91");
        use std::os::unix::fs::MetadataExt;
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(
            ino(&staged.join("nb-1-big-Data.db")),
            ino(&snap.join("nb-1-big-Data.db"))
        );
        assert_eq!(
            std::fs::read(staged.join(".t_idx/nb-1-big-Data.db")).unwrap(),
            b"idx"
        );
        assert_eq!(
            std::fs::read(view.join("conf/cassandra.yaml")).unwrap(),
            b"cluster_name: x"
        );
        assert!(!view.join("stale").exists());
        // The yaml keeps its inode while unchanged, and follows a change.
        let yaml_ino = ino(&view.join("conf/cassandra.yaml"));
        let view = stage(&work, &tables, &yaml).unwrap();
        assert_eq!(ino(&view.join("conf/cassandra.yaml")), yaml_ino);
        std::fs::write(&yaml, b"cluster_name: y").unwrap();
        let view = stage(&work, &tables, &yaml).unwrap();
        assert_eq!(
            std::fs::read(view.join("conf/cassandra.yaml")).unwrap(),
            b"cluster_name: y"
        );
        assert!(find_snapshot(&[data], "nope").unwrap().is_empty());
        assert!(remove_view(&work).unwrap());
        assert!(!remove_view(&work).unwrap());
    }
}
