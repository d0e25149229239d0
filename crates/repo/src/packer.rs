//! The concurrent, deduplicating blob writer.
//!
//! Many threads call [`Packer::save`] at once. Each blob is hashed, checked
//! against the repository index and against what this session already stored
//! (the first thread to claim an id stores it), sealed on the calling thread
//! (so compression and encryption run on every core), and appended to the
//! open pack of its type. A full pack is uploaded in the background, with a
//! bounded number of uploads in flight: a full pack stays open (its adders
//! wait) until an upload slot is free, so the packs in memory are at most the
//! open ones plus one per slot. Index files are
//! written only after the packs they name are stored, a few packs at a time,
//! so a backup killed at any moment leaves packs that are either indexed (and
//! reused by the next backup) or unreferenced (and removed by prune).
//!
//! On a store that stages objects (a local disk), a pack is not kept in
//! memory at all: each sealed blob is written to the pack's temporary file at
//! once, and "uploading" a full pack is its fsync and rename. A killed backup
//! leaves that temporary behind; prune sweeps it by the unindexed packs' age
//! rule.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::blob::{self, BlobType, CompressProbe, SealedBlob, FLAG_COMPRESSED};
use crate::crypto::OVERHEAD;
use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::index::{Index, IndexFile, IndexPack};
use crate::pack::PackBuilder;
use crate::repo::{FileKind, Repository};

/// Uploads in flight at once; each holds one pack in memory. One keeps a
/// local disk busy while the next pack fills; each more costs a pack's worth
/// of peak memory (measured on the mixed bench set: 4 in flight, before the
/// slot was taken ahead of the swap, put the first backup at about twice
/// restic's peak RSS).
const UPLOADS_IN_FLIGHT: usize = 1;
/// Uploads in flight to object storage: one upload waits a network round
/// trip and sends at one connection's rate, so a single slot bound the
/// first backup over a 30 ms network at about 100 MiB/s (bench/s3).
const UPLOADS_IN_FLIGHT_REMOTE: usize = 4;
/// Write an index file after this many stored packs or this much time,
/// whichever comes first: the work a crash can lose is bounded by it.
const INDEX_EVERY_PACKS: usize = 8;
const INDEX_EVERY: Duration = Duration::from_secs(30);

thread_local! {
    /// Compressed form of the blob being stored, reused from blob to blob.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[derive(Debug, Default)]
pub struct PackerStats {
    pub blobs_new: AtomicU64,
    pub bytes_new_raw: AtomicU64,
    pub bytes_new_stored: AtomicU64,
    pub packs: AtomicU64,
}

struct Pending {
    /// Packs stored but not yet named by an index file.
    packs: Vec<IndexPack>,
    last_write: Instant,
    written: Vec<Id>,
}

pub struct Packer<'r> {
    repo: &'r Repository,
    index: &'r Index,
    level: i32,
    pack_size: usize,
    claimed: Mutex<HashSet<(BlobType, Id)>>,
    open: [Mutex<PackBuilder>; 2],
    capacity: usize,
    /// Pack buffers back from finished uploads, reused for the next packs:
    /// freed and allocated again, buffers of a few tens of MiB end up in
    /// malloc's per-thread arenas, which keep them (measured: 16 MiB packs
    /// without reuse put the first backup's peak RSS at 238 MiB, 143 MiB
    /// with 32 MiB packs, whose buffers are big enough to be mmapped).
    spare: Arc<Mutex<Vec<Vec<u8>>>>,
    slot_count: usize,
    uploads: Mutex<Vec<JoinHandle<Result<()>>>>,
    pending: Arc<Mutex<Pending>>,
    slots: Arc<Semaphore>,
    pub stats: PackerStats,
}

impl<'r> Packer<'r> {
    pub fn new(repo: &'r Repository, index: &'r Index) -> Packer<'r> {
        let slots = repo.connections(UPLOADS_IN_FLIGHT, UPLOADS_IN_FLIGHT_REMOTE);
        Packer {
            repo,
            index,
            level: repo.config.compression,
            pack_size: repo.config.pack_size as usize,
            claimed: Mutex::new(HashSet::new()),
            open: [
                Mutex::new(PackBuilder::default()),
                Mutex::new(PackBuilder::default()),
            ],
            // Room for a full pack and its last blob, so a pack never grows by
            // doubling (untouched capacity costs no memory).
            capacity: repo.config.pack_size as usize
                + repo.config.chunker.max_size as usize
                + (1 << 16),
            spare: Arc::new(Mutex::new(Vec::new())),
            uploads: Mutex::new(Vec::new()),
            pending: Arc::new(Mutex::new(Pending {
                packs: Vec::new(),
                last_write: Instant::now(),
                written: Vec::new(),
            })),
            slots: Arc::new(Semaphore::new(slots)),
            slot_count: slots,
            stats: PackerStats::default(),
        }
    }

    pub fn repo(&self) -> &'r Repository {
        self.repo
    }

    /// Whether the repository (or this session) already has the blob.
    pub fn known(&self, kind: BlobType, id: &Id) -> bool {
        self.index.has_live(kind, id)
            || self
                .claimed
                .lock()
                .expect("poisoned")
                .contains(&(kind, *id))
    }

    /// Claim `id`: true when the caller is the one that must store it.
    pub fn claim(&self, kind: BlobType, id: &Id) -> bool {
        !self.index.has_live(kind, id) && self.claimed.lock().expect("poisoned").insert((kind, *id))
    }

    /// Store a blob unless it is already there; returns its id and whether it
    /// was new.
    pub fn save(&self, kind: BlobType, plain: &[u8]) -> Result<(Id, bool)> {
        let id = self.repo.key().blob_id(plain);
        if !self.claim(kind, &id) {
            return Ok((id, false));
        }
        self.store(kind, id, plain, None)?;
        Ok((id, true))
    }

    /// Store an already-claimed blob whose id the caller computed.
    pub fn save_claimed(&self, kind: BlobType, id: Id, plain: &[u8]) -> Result<()> {
        self.store(kind, id, plain, None)
    }

    /// Like [`Packer::save_claimed`] for one chunk of a file: `probe` says
    /// whether compressing it is worth a try (see [`CompressProbe`]).
    pub fn save_chunk(&self, id: Id, plain: &[u8], probe: &CompressProbe) -> Result<()> {
        self.store(BlobType::Data, id, plain, Some(probe))
    }

    /// Compress (into this thread's scratch buffer) and seal straight into
    /// the open pack: the only per-blob memory is the compressed copy.
    fn store(
        &self,
        kind: BlobType,
        id: Id,
        plain: &[u8],
        probe: Option<&CompressProbe>,
    ) -> Result<()> {
        let level = self.level_for(kind);
        let attempt = level != 0 && probe.is_none_or(|p| p.should_try());
        SCRATCH.with(|cell| {
            let mut scratch = cell.borrow_mut();
            let shrank = attempt && blob::compress_into(level, plain, &mut scratch);
            if let (true, Some(p)) = (attempt, probe) {
                p.record(shrank);
            }
            let (flags, src): (u8, &[u8]) = if shrank {
                (FLAG_COMPRESSED, &scratch)
            } else {
                (0, plain)
            };
            self.count(plain.len(), src.len() + OVERHEAD);
            self.append(kind, |pack| {
                pack.add_sealing(self.repo.cipher(), id, kind, flags, plain.len() as u32, src)
            })
        })
    }

    fn level_for(&self, kind: BlobType) -> i32 {
        match kind {
            BlobType::Data => self.level,
            // Trees are JSON: always worth compressing.
            BlobType::Tree => self.level.max(3),
        }
    }

    /// Append a blob sealed elsewhere (prune copies stored blobs as they are).
    pub fn add_sealed(&self, b: SealedBlob) -> Result<()> {
        self.count(b.raw_len as usize, b.bytes.len());
        self.append(b.kind, |pack| pack.add(b))
    }

    fn count(&self, raw: usize, stored: usize) {
        self.stats.blobs_new.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_new_raw
            .fetch_add(raw as u64, Ordering::Relaxed);
        self.stats
            .bytes_new_stored
            .fetch_add(stored as u64, Ordering::Relaxed);
    }

    /// Add to the open pack of `kind` (under its lock: sealing a blob into
    /// the pack costs an AES-GCM pass, far below its compression) and start
    /// its upload when it is full.
    fn append(&self, kind: BlobType, add: impl FnOnce(&mut PackBuilder)) -> Result<()> {
        let full = {
            let mut open = self.open[kind as usize].lock().expect("poisoned");
            if open.is_empty() {
                // Trees fill a pack rarely: a fresh buffer costs them only
                // the pages they touch, a reused one is resident in full.
                let buf = match kind {
                    BlobType::Data => self.spare.lock().expect("poisoned").pop(),
                    BlobType::Tree => None,
                };
                *open = match self.repo.store().stage(FileKind::Pack.dir())? {
                    // Room for one blob: each goes to the store once sealed.
                    Some(staged) => PackBuilder::staged(
                        buf.unwrap_or_else(|| Vec::with_capacity(self.capacity - self.pack_size)),
                        staged,
                    ),
                    None => match buf {
                        Some(buf) => PackBuilder::with_buffer(buf),
                        None => PackBuilder::with_capacity(self.capacity),
                    },
                };
            }
            add(&mut open);
            if open.len() >= self.pack_size {
                // Wait for a slot before the swap, holding the lock: this
                // pack's adders wait too (back-pressure), instead of filling
                // more packs that would wait in memory.
                let permit = self.slot();
                Some((std::mem::take(&mut *open), permit))
            } else {
                None
            }
        };
        if let Some((p, permit)) = full {
            self.upload(p, permit)?;
        }
        Ok(())
    }

    /// An upload slot; blocks this (engine) thread while all are busy.
    fn slot(&self) -> OwnedSemaphorePermit {
        self.repo
            .runtime()
            .block_on(self.slots.clone().acquire_owned())
            .expect("semaphore never closed")
    }

    fn upload(&self, builder: PackBuilder, permit: OwnedSemaphorePermit) -> Result<()> {
        if builder.is_empty() {
            return Ok(());
        }
        self.check_failed_uploads()?;
        let pack = builder.finish(self.repo.cipher());
        self.stats.packs.fetch_add(1, Ordering::Relaxed);
        let rt = self.repo.runtime();
        let store = self.repo.store().clone();
        let pending = self.pending.clone();
        let key = FileKind::Pack.key(&pack.id);
        let sealed_index = IndexSealer::new(self.repo);
        let spare = self.spare.clone();
        let slots = self.slot_count;
        let staged = match pack.staged {
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(staged)) => Some(staged),
            None => None,
        };
        let handle = rt.spawn(async move {
            let buf = match staged {
                Some(staged) => {
                    // The bytes are written; make them durable and visible.
                    let commit = move || staged.commit(&key);
                    tokio::task::spawn_blocking(commit)
                        .await
                        .map_err(|e| RepoError::Invalid(format!("pack commit task: {e}")))??;
                    Some(pack.bytes)
                }
                None => {
                    let bytes = Bytes::from(pack.bytes);
                    store.put(&key, bytes.clone()).await?;
                    // The store has let go of its copies: take the buffer
                    // back (it is shared only when a store kept a clone).
                    bytes.try_into_mut().ok().map(Vec::from)
                }
            };
            // Reused for the next pack.
            if let Some(b) = buf {
                let mut spare = spare.lock().expect("poisoned");
                if spare.len() < slots {
                    spare.push(b);
                }
            }
            drop(permit);
            let due = {
                let mut p = pending.lock().expect("poisoned");
                p.packs.push(IndexPack {
                    id: pack.id,
                    blobs: pack.entries,
                });
                if p.packs.len() >= INDEX_EVERY_PACKS || p.last_write.elapsed() >= INDEX_EVERY {
                    p.last_write = Instant::now();
                    Some(std::mem::take(&mut p.packs))
                } else {
                    None
                }
            };
            if let Some(packs) = due {
                let id = sealed_index.store(&store, packs).await?;
                pending.lock().expect("poisoned").written.push(id);
            }
            Ok(())
        });
        self.uploads.lock().expect("poisoned").push(handle);
        Ok(())
    }

    /// Surface an upload error early instead of at the end of a long backup.
    fn check_failed_uploads(&self) -> Result<()> {
        let mut ups = self.uploads.lock().expect("poisoned");
        let (done, running): (Vec<_>, Vec<_>) = ups.drain(..).partition(|h| h.is_finished());
        *ups = running;
        drop(ups);
        for h in done {
            self.join(h)?;
        }
        Ok(())
    }

    fn join(&self, h: JoinHandle<Result<()>>) -> Result<()> {
        self.repo
            .runtime()
            .block_on(h)
            .map_err(|e| RepoError::Invalid(format!("upload task failed: {e}")))?
    }

    /// Store the open packs, wait for every upload, and write the index files
    /// naming them. Returns the ids of the index files written by this packer.
    pub fn flush(&self) -> Result<Vec<Id>> {
        for kind in [BlobType::Data, BlobType::Tree] {
            let b = std::mem::take(&mut *self.open[kind as usize].lock().expect("poisoned"));
            if !b.is_empty() {
                let permit = self.slot();
                self.upload(b, permit)?;
            }
        }
        let handles: Vec<_> = std::mem::take(&mut *self.uploads.lock().expect("poisoned"));
        let mut first_err = None;
        for h in handles {
            if let Err(e) = self.join(h) {
                first_err.get_or_insert(e);
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        let packs = std::mem::take(&mut self.pending.lock().expect("poisoned").packs);
        if !packs.is_empty() {
            let sealer = IndexSealer::new(self.repo);
            let id = self.repo.block_on(sealer.store(self.repo.store(), packs))?;
            self.pending.lock().expect("poisoned").written.push(id);
        }
        Ok(std::mem::take(
            &mut self.pending.lock().expect("poisoned").written,
        ))
    }
}

/// Seals index files inside async upload tasks (the key is cloned in).
struct IndexSealer {
    cipher: crate::crypto::Cipher,
}

impl IndexSealer {
    fn new(repo: &Repository) -> IndexSealer {
        // A fresh Cipher over the same key; cheap, and keeps the task 'static.
        IndexSealer {
            cipher: repo.key().cipher(),
        }
    }

    async fn store(&self, store: &tidemark_store::DynStore, packs: Vec<IndexPack>) -> Result<Id> {
        let f = IndexFile {
            packs,
            obsolete: Vec::new(),
        };
        let bytes = crate::repo::seal_metadata(&self.cipher, &f.encode());
        let id = Id::of_stored(&bytes);
        store
            .put(&FileKind::Index.key(&id), Bytes::from(bytes))
            .await?;
        Ok(id)
    }
}
