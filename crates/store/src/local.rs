//! A directory on a local filesystem as a [`Store`].
//!
//! A `put` writes a temporary file next to its target, fsyncs it, renames it
//! over the key and fsyncs the directory: rename is atomic on POSIX
//! filesystems, so a reader (or a restart after SIGKILL) sees the old object,
//! the new one or nothing, never a prefix. Temporaries carry
//! [`TEMP_PREFIX`], `list` skips them and [`LocalStore::remove_stale_temporaries`]
//! sweeps what a dead writer left behind.
//!
//! Every filesystem call runs in `spawn_blocking`: tokio's worker threads must
//! not wait on a disk.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use futures::StreamExt;

use crate::{Capabilities, ObjectMeta, RangeStream, Result, Store, StoreError};

/// File names starting with this are a writer's temporaries, never objects.
pub const TEMP_PREFIX: &str = ".tidemark-tmp.";

/// A store rooted at a directory; keys map to relative paths below it.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: Arc<PathBuf>,
}

impl LocalStore {
    /// `len` bytes from `offset` into `buf` (its first `len` bytes; only
    /// new bytes are zeroed).
    async fn get_range_into(
        &self,
        key: &str,
        offset: u64,
        len: u64,
        mut buf: Vec<u8>,
    ) -> Result<Vec<u8>> {
        let path = self.path_of(key)?;
        let truncated = || StoreError::Truncated {
            key: key.to_owned(),
            offset,
            len,
        };
        let end = offset.checked_add(len).ok_or_else(truncated)?;
        let buf_len = usize::try_from(len).map_err(|_| truncated())?;
        let read = blocking(key, move || {
            let file = File::open(path)?;
            if file.metadata()?.len() < end {
                return Ok(None);
            }
            // Only new bytes are zeroed; a reused buffer is overwritten.
            if buf.len() < buf_len {
                buf.resize(buf_len, 0);
            }
            file.read_exact_at(&mut buf[..buf_len], offset)?;
            Ok(Some(buf))
        })
        .await;
        match read {
            Ok(Some(data)) => Ok(data),
            Ok(None) => Err(truncated()),
            // Shrunk by a concurrent overwrite between stat and read.
            Err(StoreError::Io { source, .. }) if source.kind() == ErrorKind::UnexpectedEof => {
                Err(truncated())
            }
            Err(e) => Err(not_found_or(key, e)),
        }
    }

    /// A store at `root`; nothing is touched until the first call.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStore {
            root: Arc::new(root.into()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Result<PathBuf> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    /// Remove temporaries older than `older_than` (by mtime) anywhere below
    /// the root, left by writers that died between create and rename.
    /// Returns how many were removed. Younger ones may belong to a writer
    /// that is still running, so they stay.
    pub async fn remove_stale_temporaries(&self, older_than: Duration) -> Result<usize> {
        let root = self.root.clone();
        blocking("", move || {
            let cutoff = SystemTime::now()
                .checked_sub(older_than)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let mut removed = 0;
            walk(&root, "", "", &mut |path, _, is_temp, meta| {
                if is_temp && meta.modified()? < cutoff {
                    match fs::remove_file(path) {
                        Ok(()) => removed += 1,
                        // Its writer renamed it in the meantime.
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            })?;
            Ok(removed)
        })
        .await
    }
}

/// Keys are relative `/`-separated paths; anything that could escape the root
/// or collide with a temporary is refused before touching the disk.
fn validate_key(key: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(StoreError::InvalidKey {
            key: key.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if key.is_empty() {
        return bad("empty key");
    }
    if key.contains('\0') {
        return bad("contains a NUL byte");
    }
    for part in key.split('/') {
        match part {
            "" => return bad("empty path component (leading, trailing or double '/')"),
            "." | ".." => return bad("'.' or '..' component"),
            p if p.starts_with(TEMP_PREFIX) => return bad("reserved temporary-file name"),
            _ => {}
        }
    }
    Ok(())
}

/// Runs blocking filesystem work off the async threads; I/O errors carry `key`.
async fn blocking<T, F>(key: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let io_err = |source| StoreError::Io {
        key: key.to_owned(),
        source,
    };
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(io_err),
        Err(join) => Err(io_err(io::Error::other(join))),
    }
}

/// A missing object shows up as NotFound, or as ENOTDIR when a parent
/// component is a file, or EISDIR when the key names a directory (a prefix,
/// not an object).
fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::IsADirectory
    )
}

fn not_found_or(key: &str, e: StoreError) -> StoreError {
    match e {
        StoreError::Io { ref source, .. } if is_missing(source) => StoreError::NotFound {
            key: key.to_owned(),
        },
        other => other,
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().expect("a validated key has a parent");
    let (tmp, mut file) = create_temporary(dir)?;
    let written = file
        .write_all(data)
        .and_then(|()| publish(&file, &tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

/// A new temporary in `dir` (created when missing).
fn create_temporary(dir: &Path) -> io::Result<(PathBuf, File)> {
    let tmp = dir.join(format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>()));
    let open = || OpenOptions::new().write(true).create_new(true).open(&tmp);
    let file = match open() {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            fs::create_dir_all(dir)?;
            open()?
        }
        other => other?,
    };
    Ok((tmp, file))
}

/// Make a written temporary durable and rename it into place.
fn publish(file: &File, tmp: &Path, path: &Path) -> io::Result<()> {
    file.sync_all()?;
    let dir = path.parent().expect("a validated key has a parent");
    if let Err(e) = fs::rename(tmp, path) {
        if e.kind() != ErrorKind::NotFound || dir.exists() {
            return Err(e);
        }
        // A staged temporary lives above its key's directory, which may not
        // exist yet (packs: data/<2 hex digits>/).
        fs::create_dir_all(dir)?;
        fs::rename(tmp, path)?;
    }
    // The rename itself lives in the directory; without this a power loss
    // may forget it even though the data blocks are on disk.
    File::open(dir)?.sync_all()
}

/// An object written piece by piece into a temporary (see `Store::stage`).
struct StagedFile {
    root: Arc<PathBuf>,
    tmp: PathBuf,
    file: File,
    committed: bool,
}

impl crate::Staged for StagedFile {
    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.file.write_all(data).map_err(|source| StoreError::Io {
            key: self.tmp.display().to_string(),
            source,
        })
    }

    fn commit(mut self: Box<Self>, key: &str) -> Result<()> {
        validate_key(key)?;
        let path = self.root.join(key);
        publish(&self.file, &self.tmp, &path).map_err(|source| StoreError::Io {
            key: key.to_owned(),
            source,
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

fn meta_of(key: String, meta: &fs::Metadata) -> ObjectMeta {
    ObjectMeta {
        key,
        size: meta.len(),
        modified: meta.modified().ok().map(DateTime::<Utc>::from),
    }
}

/// Visits every regular file below `dir` (whose key prefix is `rel`) that
/// may start with `prefix`, with its key and whether it is a temporary.
/// Subdirectories that cannot hold a match are not read.
fn walk(
    dir: &Path,
    rel: &str,
    prefix: &str,
    visit: &mut dyn FnMut(&Path, String, bool, &fs::Metadata) -> io::Result<()>,
) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if is_missing(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue; // not a key this store could have written
        };
        let path = entry.path();
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => continue, // deleted meanwhile
            Err(e) => return Err(e),
        };
        let key = format!("{rel}{name}");
        if meta.is_dir() {
            let sub = format!("{key}/");
            if sub.starts_with(prefix) || prefix.starts_with(&sub) {
                walk(&path, &sub, prefix, visit)?;
            }
        } else if meta.is_file() {
            visit(&path, key, name.starts_with(TEMP_PREFIX), &meta)?;
        }
    }
    Ok(())
}

fn list_blocking(root: &Path, prefix: &str) -> io::Result<Vec<ObjectMeta>> {
    // Start at the deepest directory the prefix names in full, so listing
    // `data/ab` reads `data/` and not the whole repository.
    let (start, rel) = match prefix.rsplit_once('/') {
        Some((dir, _)) => (root.join(dir), format!("{dir}/")),
        None => (root.to_path_buf(), String::new()),
    };
    let mut out = Vec::new();
    walk(&start, &rel, prefix, &mut |_, key, is_temp, meta| {
        if !is_temp && key.starts_with(prefix) {
            out.push(meta_of(key, meta));
        }
        Ok(())
    })?;
    Ok(out)
}

#[async_trait]
impl Store for LocalStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            retention: false,
            range_reads: true,
            remote: false,
        }
    }

    fn describe(&self) -> String {
        format!("local:{}", self.root.display())
    }

    async fn create(&self, object_lock: bool) -> Result<()> {
        if object_lock {
            return Err(StoreError::Unsupported {
                what: "object lock".into(),
                store: self.describe(),
            });
        }
        let root = self.root.clone();
        blocking("", move || fs::create_dir_all(&*root)).await
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let path = self.path_of(key)?;
        blocking(key, move || write_atomic(&path, &data)).await
    }

    async fn sweep_temporaries(&self, before: DateTime<Utc>) -> Result<u64> {
        let age = (Utc::now() - before).to_std().unwrap_or(Duration::ZERO);
        Ok(self.remove_stale_temporaries(age).await? as u64)
    }

    fn stage(&self, dir: &str) -> Result<Option<Box<dyn crate::Staged>>> {
        let dir_path = self.path_of(dir.trim_end_matches('/'))?;
        let (tmp, file) = create_temporary(&dir_path).map_err(|source| StoreError::Io {
            key: dir.to_owned(),
            source,
        })?;
        Ok(Some(Box::new(StagedFile {
            root: self.root.clone(),
            tmp,
            file,
            committed: false,
        })))
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let path = self.path_of(key)?;
        blocking(key, move || fs::read(path).map(Bytes::from))
            .await
            .map_err(|e| not_found_or(key, e))
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes> {
        let mut buf = self.get_range_into(key, offset, len, Vec::new()).await?;
        buf.truncate(len as usize);
        Ok(Bytes::from(buf))
    }

    /// Pieces of 1 MiB, each read when the reader asks for it: a reader of
    /// a whole pack holds a piece, not the pack.
    async fn get_range_stream(&self, key: &str, offset: u64, len: u64) -> Result<RangeStream> {
        const PIECE: u64 = 1024 * 1024;
        let path = self.path_of(key)?;
        let end = offset.checked_add(len).ok_or_else(|| StoreError::Truncated {
            key: key.to_owned(),
            offset,
            len,
        })?;
        let file = blocking(key, move || {
            let file = File::open(path)?;
            Ok((file.metadata()?.len() >= end).then_some(file))
        })
        .await
        .map_err(|e| not_found_or(key, e))?;
        let Some(file) = file else {
            return Err(StoreError::Truncated { key: key.to_owned(), offset, len });
        };
        let key = key.to_owned();
        let pieces = futures::stream::unfold(Some((Arc::new(file), offset)), move |state| {
            let key = key.clone();
            async move {
                let (file, at) = state?;
                if at >= end {
                    return None;
                }
                let n = PIECE.min(end - at) as usize;
                let f = file.clone();
                let read = blocking(&key, move || {
                    let mut piece = vec![0; n];
                    f.read_exact_at(&mut piece, at)?;
                    Ok(Bytes::from(piece))
                })
                .await;
                match read {
                    Ok(piece) => Some((Ok(piece), Some((file, at + n as u64)))),
                    // Shrunk by a concurrent overwrite after the size check.
                    Err(StoreError::Io { source, .. }) if source.kind() == ErrorKind::UnexpectedEof => {
                        Some((Err(StoreError::Truncated { key, offset, len }), None))
                    }
                    Err(e) => Some((Err(e), None)),
                }
            }
        });
        Ok(pieces.boxed())
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let path = self.path_of(key)?;
        let owned = key.to_owned();
        blocking(key, move || match fs::metadata(path) {
            Ok(m) if m.is_file() => Ok(Some(meta_of(owned, &m))),
            Ok(_) => Ok(None),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(e),
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        if prefix.split('/').any(|p| p == "..") {
            return Err(StoreError::InvalidKey {
                key: prefix.to_owned(),
                reason: "'..' component in a list prefix".into(),
            });
        }
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        let key = prefix.clone();
        blocking(&key, move || list_blocking(&root, &prefix)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path_of(key)?;
        blocking(key, move || match fs::remove_file(path) {
            Err(e) if is_missing(&e) => Ok(()),
            other => other,
        })
        .await
    }

    async fn retain(&self, _key: &str, _until: DateTime<Utc>) -> Result<()> {
        Err(StoreError::Unsupported {
            what: "retention".into(),
            store: self.describe(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_escape_or_collide_are_refused() {
        for key in [
            "",
            "/abs",
            "a//b",
            "a/",
            "../x",
            "a/./b",
            "a/.tidemark-tmp.1",
        ] {
            assert!(
                matches!(validate_key(key), Err(StoreError::InvalidKey { .. })),
                "{key:?} accepted"
            );
        }
        validate_key("data/ab/ab12").unwrap();
        validate_key("config").unwrap();
    }

    async fn keys_of(store: &LocalStore) -> Vec<String> {
        let mut keys: Vec<String> = store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        keys.sort();
        keys
    }

    #[tokio::test]
    async fn ranges_read_into_a_reused_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let data: Vec<u8> = (0..100u8).collect();
        store
            .put("data/ab/abcd", Bytes::from(data.clone()))
            .await
            .unwrap();
        // A longer buffer left by an earlier range: its head is overwritten.
        let buf = store
            .get_range_into("data/ab/abcd", 10, 20, vec![0xee; 64])
            .await
            .unwrap();
        assert_eq!(&buf[..20], &data[10..30]);
        // A shorter one grows.
        let buf = store
            .get_range_into("data/ab/abcd", 50, 50, vec![1; 3])
            .await
            .unwrap();
        assert_eq!(&buf[..50], &data[50..]);
        assert_eq!(
            store.get_range("data/ab/abcd", 95, 5).await.unwrap(),
            &data[95..]
        );
        // Past the end: truncated, as get_range.
        assert!(matches!(
            store.get_range_into("data/ab/abcd", 90, 20, buf).await,
            Err(StoreError::Truncated { .. })
        ));
    }

    #[tokio::test]
    async fn staged_objects_appear_whole_on_commit_and_vanish_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let mut staged = store.stage("data/").unwrap().expect("local disks stage");
        staged.write(b"first piece, ").unwrap();
        staged.write(b"second piece").unwrap();
        // Written but not committed: no object, only a temporary.
        assert!(store.list("").await.unwrap().is_empty());
        // The key's directory does not exist yet; commit creates it.
        staged.commit("data/cd/cdef").unwrap();
        assert_eq!(
            store.get("data/cd/cdef").await.unwrap(),
            Bytes::from_static(b"first piece, second piece")
        );

        let mut dropped = store.stage("data/").unwrap().unwrap();
        dropped.write(b"never committed").unwrap();
        drop(dropped);
        let keys = keys_of(&store).await;
        assert_eq!(keys, vec!["data/cd/cdef".to_owned()]);
        // Nothing left behind, not even a temporary.
        assert_eq!(
            store
                .remove_stale_temporaries(Duration::ZERO)
                .await
                .unwrap(),
            0
        );
        // Keys are checked as for put.
        let bad = store.stage("data/").unwrap().unwrap();
        assert!(matches!(
            bad.commit("../escape"),
            Err(StoreError::InvalidKey { .. })
        ));
    }

    #[tokio::test]
    async fn temporaries_are_invisible_and_swept() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        store
            .put("data/ab/x", Bytes::from_static(b"x"))
            .await
            .unwrap();
        // What a writer killed between create and rename leaves behind.
        let orphan = dir
            .path()
            .join("data/ab")
            .join(format!("{TEMP_PREFIX}dead"));
        fs::write(&orphan, b"partial").unwrap();

        let keys = keys_of(&store).await;
        assert_eq!(keys, vec!["data/ab/x".to_owned()]);

        assert_eq!(
            store
                .remove_stale_temporaries(Duration::from_secs(3600))
                .await
                .unwrap(),
            0
        );
        assert!(orphan.exists());
        assert_eq!(
            store
                .remove_stale_temporaries(Duration::ZERO)
                .await
                .unwrap(),
            1
        );
        assert!(!orphan.exists());
        assert_eq!(
            store.get("data/ab/x").await.unwrap(),
            Bytes::from_static(b"x")
        );
    }

    #[tokio::test]
    async fn a_file_in_place_of_a_directory_reads_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        store.put("a", Bytes::from_static(b"file")).await.unwrap();
        assert!(store.get("a/b").await.unwrap_err().is_not_found());
        assert_eq!(store.head("a/b").await.unwrap(), None);
        store.delete("a/b").await.unwrap();
        assert!(store.list("a/").await.unwrap().is_empty());
    }
}
