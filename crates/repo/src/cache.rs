//! A local copy of a repository's metadata: snapshot and index files, and
//! the tree ranges of packs, so that a command on a remote repository reads
//! them from the store once, not on every run (a `snapshots` on 500
//! snapshots behind 30 ms of latency sent 506 requests; with the cache, 3).
//!
//! What is cached is the stored bytes, still encrypted: nothing in the cache
//! is readable without the key. Every cached file is named by the hash of
//! its bytes (snapshot and index files) or by a pack, which is named by the
//! hash of its bytes, and a range: a copy never goes stale, and a damaged one
//! is found when it is used (the id or the authentication fails) and read
//! again from the store. What exists is always decided by listing the store:
//! a cached file that is no longer listed is not used, and is removed.
//!
//! All of it is best effort: a cache that cannot be written only costs
//! requests, and is never an error.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::id::Id;

/// The cache of one repository: `<root>/<repository id>/`.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    /// False: copies are written but never read (verify checks what is
    /// stored, and leaves the copies of what it checked for later commands).
    read: bool,
}

/// Subdirectory of tree ranges, named `<pack>.<start>-<end>`.
const TREES: &str = "trees/";

impl Cache {
    /// Where caches live unless told: `$XDG_CACHE_HOME/tidemark`, else
    /// `~/.cache/tidemark`.
    /// For processes without a command line of their own (agents):
    /// `TIDEMARK_CACHE_DIR`, else [`Cache::default_root`].
    pub fn configured_root() -> Option<PathBuf> {
        std::env::var_os("TIDEMARK_CACHE_DIR").filter(|v| !v.is_empty()).map(PathBuf::from).or_else(Self::default_root)
    }

    pub fn default_root() -> Option<PathBuf> {
        let xdg = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()).map(PathBuf::from);
        let home = || std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache"));
        xdg.or_else(home).map(|d| d.join("tidemark"))
    }

    /// The cache of repository `id` under `root`, created (owner-only) if
    /// missing; None (and a warning) when it cannot be.
    pub fn open(root: &Path, id: &Id) -> Option<Cache> {
        let dir = root.join(id.to_hex());
        let made = ["snapshots", "index", "trees"]
            .iter()
            .try_for_each(|sub| fs::DirBuilder::new().recursive(true).mode(0o700).create(dir.join(sub)));
        match made {
            Ok(()) => Some(Cache { dir, read: true }),
            Err(e) => {
                tracing::warn!("no local cache (it only saves requests): {}: {e}", dir.display());
                None
            }
        }
    }

    /// The same cache, written but never read.
    pub fn write_only(self) -> Cache {
        Cache { read: false, ..self }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cached copy of a stored file (`index/<id>`, `snapshots/<id>`).
    pub fn get(&self, key: &str) -> Option<Bytes> {
        if !self.read {
            return None;
        }
        fs::read(self.dir.join(key)).ok().map(Bytes::from)
    }

    /// Keep a copy of a stored file; written aside and renamed, so a reader
    /// sees all of it or nothing.
    pub fn put(&self, key: &str, bytes: &[u8]) {
        let path = self.dir.join(key);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(bytes))
            .and_then(|()| fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::debug!("caching {key}: {e}");
            let _ = fs::remove_file(&tmp);
        }
    }

    /// Drop a copy (found damaged).
    pub fn remove(&self, key: &str) {
        let _ = fs::remove_file(self.dir.join(key));
    }

    /// Whether a copy would be read (a write-only cache has none).
    pub fn has(&self, key: &str) -> bool {
        self.read && self.dir.join(key).is_file()
    }

    /// Remove the cached files of `dir` (`index/`, `snapshots/`) whose name
    /// `keep` refuses: what a fresh listing no longer shows.
    pub fn retain(&self, dir: &str, keep: &dyn Fn(&str) -> bool) {
        let Ok(entries) = fs::read_dir(self.dir.join(dir)) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if !keep(&name) {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    fn tree_key(pack: &Id, start: u32, end: u32) -> String {
        format!("{TREES}{}.{start}-{end}", pack.to_hex())
    }

    /// The cached tree range `start..end` of `pack`.
    pub fn get_trees(&self, pack: &Id, start: u32, end: u32) -> Option<Bytes> {
        self.get(&Self::tree_key(pack, start, end)).filter(|b| b.len() as u64 == u64::from(end - start))
    }

    pub fn put_trees(&self, pack: &Id, start: u32, end: u32, bytes: &[u8]) {
        self.put(&Self::tree_key(pack, start, end), bytes);
    }

    pub fn remove_trees(&self, pack: &Id, start: u32, end: u32) {
        self.remove(&Self::tree_key(pack, start, end));
    }

    /// Remove tree ranges of packs the index no longer has, or whose tree
    /// range it now places elsewhere.
    pub fn retain_trees(&self, extent: &dyn Fn(&Id) -> Option<(u32, u32)>) {
        self.retain(TREES, &|name| {
            let Some((pack, range)) = name.split_once('.') else {
                return false;
            };
            let Some((start, end)) = range.split_once('-') else {
                return false;
            };
            match (pack.parse::<Id>(), start.parse::<u32>(), end.parse::<u32>()) {
                (Ok(p), Ok(s), Ok(e)) => extent(&p) == Some((s, e)),
                _ => false,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_kept_owner_only_and_dropped_when_no_longer_listed() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::open(root.path(), &Id::random()).unwrap();
        assert_eq!(fs::metadata(cache.dir()).unwrap().permissions().mode() & 0o777, 0o700);
        let (a, b) = (Id::random(), Id::random());
        cache.put(&format!("index/{}", a.to_hex()), b"sealed a");
        cache.put(&format!("index/{}", b.to_hex()), b"sealed b");
        assert_eq!(cache.get(&format!("index/{}", a.to_hex())).unwrap(), &b"sealed a"[..]);
        let file = cache.dir().join(format!("index/{}", a.to_hex()));
        assert_eq!(fs::metadata(file).unwrap().permissions().mode() & 0o777, 0o600);
        let listed = b.to_hex();
        cache.retain("index/", &|name| name == listed);
        assert!(!cache.has(&format!("index/{}", a.to_hex())));
        assert!(cache.has(&format!("index/{}", b.to_hex())));
    }

    #[test]
    fn tree_ranges_follow_the_index() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::open(root.path(), &Id::random()).unwrap();
        let (p, q) = (Id::random(), Id::random());
        cache.put_trees(&p, 10, 20, &[1; 10]);
        cache.put_trees(&q, 0, 5, &[2; 5]);
        // A copy of the wrong length is not used.
        cache.put_trees(&q, 5, 9, &[3; 2]);
        assert_eq!(cache.get_trees(&p, 10, 20).unwrap(), &[1u8; 10][..]);
        assert!(cache.get_trees(&q, 5, 9).is_none());
        // p is still there with the same range; q is gone from the index.
        cache.retain_trees(&|id| (*id == p).then_some((10, 20)));
        assert!(cache.get_trees(&p, 10, 20).is_some());
        assert!(cache.get_trees(&q, 0, 5).is_none());
        cache.retain_trees(&|id| (*id == p).then_some((10, 30)));
        assert!(cache.get_trees(&p, 10, 20).is_none());
        // Written but never read.
        let w = cache.write_only();
        w.put_trees(&p, 0, 4, &[5; 4]);
        assert!(w.get_trees(&p, 0, 4).is_none());
        assert!(!w.has(&format!("trees/{}.0-4", p.to_hex())));
        assert!(w.dir().join(format!("trees/{}.0-4", p.to_hex())).is_file());
    }
}
