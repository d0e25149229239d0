//! Storing content that does not come from a local file tree.
//!
//! A file-tree backup (`backup`) walks the local disk itself. Adapters whose
//! data lives elsewhere (HDFS files read over WebHDFS by an agent) walk their
//! own namespace and build their own trees; what they share with a file
//! backup is the content path: the same seeded FastCDC cut, keyed ids,
//! deduplication against the index and this session, compression, sealing
//! and packs. A [`Session`] offers exactly that: [`Session::store`] turns a
//! `Read` into a chunk list, [`Session::save_tree`] stores a directory
//! listing, [`Session::finish`] writes the packs' index.
//!
//! Many threads may call `store` at once (one file each): chunks of a file
//! are stored one segment at a time on the calling thread, so parallelism
//! comes from the caller's files, which is where an adapter has it (many
//! files in flight across agents and DataNodes).
//!
//! The caller holds a `Backup` lock (see `lock`) while a session is open, as
//! a file backup does: prune must not delete the packs of a session whose
//! snapshot is not saved yet.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::blob::{BlobType, CompressProbe};
use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::index::Index;
use crate::packer::Packer;
use crate::repo::Repository;
use crate::tree::Tree;

/// Bytes cut at a time: room for two maximal chunks at the default chunker
/// (the same segment a file backup reads).
const SEGMENT: usize = 8 * 1024 * 1024;

/// Why a stream could not be stored: its source failed (the caller names
/// the file and goes on), or the repository did (the whole session fails).
#[derive(Debug)]
pub enum StoreError {
    Source(io::Error),
    Repo(RepoError),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Source(e) => write!(f, "reading the source: {e}"),
            StoreError::Repo(e) => write!(f, "{e}"),
        }
    }
}

/// One stored stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub content: Vec<Id>,
    pub size: u64,
}

/// What a session added to the repository.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStats {
    /// Bytes read from sources.
    pub bytes_read: u64,
    pub blobs_new: u64,
    /// New data before and after compression and encryption.
    pub data_added: u64,
    pub data_added_stored: u64,
}

pub struct Session<'r> {
    repo: &'r Repository,
    packer: Packer<'r>,
    seed: u64,
    segment: usize,
    bytes_read: AtomicU64,
}

impl<'r> Session<'r> {
    pub fn new(repo: &'r Repository, index: &'r Index) -> Session<'r> {
        let segment = SEGMENT.max(2 * repo.config.chunker.max_size as usize);
        Session {
            repo,
            packer: Packer::new(repo, index),
            seed: repo.key().chunker_seed(),
            segment,
            bytes_read: AtomicU64::new(0),
        }
    }

    pub fn repo(&self) -> &'r Repository {
        self.repo
    }

    /// Whether every chunk of a content list is stored (in the repository
    /// or this session): the test before reusing a list without reading.
    pub fn has_all(&self, content: &[Id]) -> bool {
        content.iter().all(|id| self.packer.known(BlobType::Data, id))
    }

    /// Reads `source` to its end and stores its chunks; returns the chunk
    /// list. `limit` stops after that many bytes (a file that grows while it
    /// is read is stored with the length it had when it was listed).
    pub fn store(&self, source: &mut dyn Read, limit: Option<u64>) -> Result<Stored, StoreError> {
        let mut src = source.take(limit.unwrap_or(u64::MAX));
        let mut buf = vec![0u8; self.segment];
        let mut filled = 0usize;
        let mut content = Vec::new();
        let mut size = 0u64;
        let probe = CompressProbe::default();
        loop {
            let eof = fill(&mut src, &mut buf, &mut filled).map_err(StoreError::Source)?;
            let data = &buf[..filled];
            let done = self.store_segment(data, eof, &probe, &mut content).map_err(StoreError::Repo)?;
            size += done as u64;
            self.bytes_read.fetch_add(done as u64, Ordering::Relaxed);
            if eof {
                return Ok(Stored { content, size });
            }
            // The chunk cut short by the segment's end starts the next one.
            buf.copy_within(done..filled, 0);
            filled -= done;
        }
    }

    /// Stores the chunks of `data`; the last one only at the end of the
    /// stream. Returns the bytes consumed.
    fn store_segment(&self, data: &[u8], eof: bool, probe: &CompressProbe, out: &mut Vec<Id>) -> Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let cuts = crate::backup::cut(&self.repo.config.chunker, self.seed, data, eof);
        for &(o, l) in cuts.stored() {
            let chunk = &data[o..o + l];
            let id = self.repo.key().blob_id(chunk);
            if self.packer.claim(BlobType::Data, &id) {
                self.packer.save_chunk(id, chunk, probe)?;
            }
            out.push(id);
        }
        Ok(cuts.done)
    }

    /// Stores a directory listing (sorted here); returns its id.
    pub fn save_tree(&self, mut tree: Tree) -> Result<Id> {
        tree.sort();
        Ok(self.packer.save(BlobType::Tree, &tree.encode())?.0)
    }

    /// Writes the index of everything stored; the session's chunks and trees
    /// are reachable by others from then on.
    pub fn finish(self) -> Result<SessionStats> {
        self.packer.flush()?;
        let s = &self.packer.stats;
        Ok(SessionStats {
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            blobs_new: s.blobs_new.load(Ordering::Relaxed),
            data_added: s.bytes_new_raw.load(Ordering::Relaxed),
            data_added_stored: s.bytes_new_stored.load(Ordering::Relaxed),
        })
    }
}

/// Fills `buf` from `filled` on; true when the source ended.
fn fill(src: &mut impl Read, buf: &mut [u8], filled: &mut usize) -> io::Result<bool> {
    while *filled < buf.len() {
        match src.read(&mut buf[*filled..]) {
            Ok(0) => return Ok(true),
            Ok(n) => *filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::walk::tests::{random_bytes, TestRepo};

    /// A reader that hands out at most `step` bytes per read, as a network
    /// body does.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_stream_is_chunked_like_the_same_file_and_reads_back() {
        let t = TestRepo::new();
        let data = random_bytes(3 * 1024 * 1024 + 17);
        let index = t.repo.load_index().unwrap();
        let s = Session::new(&t.repo, &index);
        let a = s.store(&mut Trickle { data: &data, step: 1000 }, None).unwrap();
        let b = s.store(&mut &data[..], None).unwrap();
        assert_eq!(a, b, "the cut does not depend on how the bytes arrive");
        assert_eq!(a.size, data.len() as u64);
        let stats = s.finish().unwrap();
        assert_eq!(stats.bytes_read, 2 * data.len() as u64);
        assert!(stats.data_added >= data.len() as u64 && stats.data_added < 2 * data.len() as u64, "second copy deduplicated: {stats:?}");

        let index = t.repo.load_index().unwrap();
        let mut back = Vec::new();
        for id in &a.content {
            back.extend(t.repo.read_blob(&index, BlobType::Data, id).unwrap());
        }
        assert!(back == data, "bytes read back differ");
    }

    #[test]
    fn limit_cuts_a_growing_stream_and_source_errors_are_told_apart() {
        let t = TestRepo::new();
        let data = random_bytes(100_000);
        let index = t.repo.load_index().unwrap();
        let s = Session::new(&t.repo, &index);
        let part = s.store(&mut &data[..], Some(40_000)).unwrap();
        assert_eq!(part.size, 40_000);
        let empty = s.store(&mut io::empty(), None).unwrap();
        assert_eq!(empty, Stored { content: vec![], size: 0 });

        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("connection reset"))
            }
        }
        match s.store(&mut Broken, None) {
            Err(StoreError::Source(e)) => assert!(e.to_string().contains("reset")),
            other => panic!("expected a source error, got {other:?}"),
        }
    }
}
