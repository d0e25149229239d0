//! The open repository: store, master key, config, and typed access to the
//! objects in it (sealed metadata files, snapshots, index, blobs, keys).
//!
//! The engine is synchronous; storage is async. A `Repository` owns a handle to
//! a tokio runtime and blocks on it from engine threads (never from inside
//! the runtime), so CPU work stays on plain threads and I/O on the runtime.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tidemark_store::{DynStore, ObjectMeta, StoreError};
use tokio::runtime::Handle;

use crate::blob::{self, BlobType};
use crate::cache::Cache;
use crate::config::RepoConfig;
use crate::crypto::{Cipher, MasterKey};
use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::index::{Index, IndexFile};
use crate::keyfile::{KdfParams, KeyFile};
use crate::snapshot::Snapshot;
use crate::tree::Tree;

/// The kinds of stored files and where they live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    Pack,
    Index,
    Snapshot,
    Key,
    Lock,
    /// Cluster backup manifests (the catalog that lives with the data).
    Catalog,
}

impl FileKind {
    pub fn dir(self) -> &'static str {
        match self {
            FileKind::Pack => "data/",
            FileKind::Index => "index/",
            FileKind::Snapshot => "snapshots/",
            FileKind::Key => "keys/",
            FileKind::Lock => "locks/",
            FileKind::Catalog => "catalog/",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FileKind::Pack => "pack",
            FileKind::Index => "index",
            FileKind::Snapshot => "snapshot",
            FileKind::Key => "key",
            FileKind::Lock => "lock",
            FileKind::Catalog => "cluster manifest",
        }
    }

    /// Storage key of a file; packs are spread over 256 directories.
    pub fn key(self, id: &Id) -> String {
        let h = id.to_hex();
        match self {
            FileKind::Pack => format!("data/{}/{}", &h[..2], h),
            _ => format!("{}{}", self.dir(), h),
        }
    }
}

pub const CONFIG_KEY: &str = "config";

/// Options of `init`.
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    pub kdf: KdfParams,
    pub config: RepoConfig,
}

pub struct Repository {
    store: DynStore,
    rt: Handle,
    key: MasterKey,
    cipher: Cipher,
    pub config: RepoConfig,
    key_id: Id,
    prefetch: Mutex<Prefetch>,
    tree_packs: Mutex<TreePacks>,
    /// The local copy of metadata (see [`Cache`]); None: read everything
    /// from the store (verify, which checks what is stored).
    cache: Option<Cache>,
    /// Requests in flight for pack uploads and restore reads, when the user
    /// set it (`--connections`); None: what suits the store (see
    /// [`Repository::connections`]).
    connections: Option<usize>,
}

/// Tree packs read whole (their tree range), by pack id. Walks of a
/// snapshot load hundreds of trees; on remote storage one request per tree
/// would dominate, while the trees of a backup sit in a few packs. A pack is
/// fetched once even when several threads ask for its trees at the same
/// time (the first fetches, the others wait on its cell). Packs are named by
/// the hash of their bytes, so a held copy never goes stale. Bounded by
/// [`TREE_PACKS_HELD`] bytes, oldest out first.
#[derive(Default)]
struct TreePacks {
    cells: HashMap<Id, Arc<TreePackCell>>,
    order: std::collections::VecDeque<(Id, usize)>,
    held: usize,
}

/// A pack's tree range once read: (its start in the pack, its bytes), or
/// None when the read failed.
type TreePackCell = std::sync::OnceLock<Option<(u32, Bytes)>>;

/// A pack's tree range is read whole up to this size; larger ones blob by blob.
const TREE_PACK_MAX: u32 = 16 << 20;
/// Bytes of tree packs held at most.
const TREE_PACKS_HELD: usize = 32 << 20;

/// Stored files fetched while the key is derived (see
/// [`Repository::open_prefetching`]), by storage key. Files are named by the
/// hash of their bytes, so a fetched copy is the file itself for as long as
/// that name is listed: what is used is always decided by a listing made
/// after the fetch, and files written later are fetched as usual.
enum Prefetch {
    Off,
    Pending(tokio::task::JoinHandle<HashMap<String, Bytes>>),
    Ready(HashMap<String, Bytes>),
}

/// Requests in flight at once while fetching ahead.
const PREFETCH_CONCURRENCY: usize = 8;

/// Every file of `kinds`, fetched with a few requests in flight. Failures
/// are left out: the normal load reports them.
async fn fetch_ahead(store: DynStore, kinds: Vec<FileKind>, cache: Option<Cache>) -> HashMap<String, Bytes> {
    let mut keys = Vec::new();
    for kind in kinds {
        if let Ok(metas) = store.list(kind.dir()).await {
            keys.extend(
                metas
                    .into_iter()
                    .filter(|m| id_from_key(&m.key).is_some())
                    .filter(|m| !cache.as_ref().is_some_and(|c| c.has(&m.key)))
                    .map(|m| m.key),
            );
        }
    }
    let slots = Arc::new(tokio::sync::Semaphore::new(PREFETCH_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for key in keys {
        let (store, slots) = (store.clone(), slots.clone());
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await.ok()?;
            store.get(&key).await.ok().map(|b| (key, b))
        });
    }
    let mut out = HashMap::new();
    while let Some(r) = tasks.join_next().await {
        if let Ok(Some((k, b))) = r {
            out.insert(k, b);
        }
    }
    out
}

impl Drop for Repository {
    fn drop(&mut self) {
        if let Ok(mut p) = self.prefetch.lock() {
            if let Prefetch::Pending(h) = &*p {
                h.abort();
            }
            *p = Prefetch::Off;
        }
    }
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Repository({})", self.store.describe())
    }
}

impl Repository {
    /// Create a new repository; refuses when one already exists there.
    pub fn init(
        store: DynStore,
        rt: Handle,
        password: &[u8],
        opts: InitOptions,
    ) -> Result<Repository> {
        opts.config.validate()?;
        rt.block_on(store.create(opts.config.object_lock_days.is_some()))?;
        if rt.block_on(store.head(CONFIG_KEY))?.is_some() {
            return Err(RepoError::AlreadyExists {
                location: store.describe(),
            });
        }
        let key = MasterKey::generate();
        let cipher = key.cipher();
        let mut repo = Repository {
            store,
            rt,
            key,
            cipher,
            config: opts.config,
            key_id: Id::default(),
            prefetch: Mutex::new(Prefetch::Off),
            tree_packs: Mutex::default(),
            cache: None,
            connections: None,
        };
        repo.key_id = repo.add_key(password, opts.kdf)?;
        // The config is written last: its presence is what makes a repository.
        repo.put(CONFIG_KEY, repo.config.to_bytes())?;
        Ok(repo)
    }

    /// Open an existing repository with a passphrase.
    pub fn open(store: DynStore, rt: Handle, password: &[u8]) -> Result<Repository> {
        Self::open_prefetching(store, rt, password, &[])
    }

    /// Open, and fetch every file of `prefetch` (index files, snapshots)
    /// while the key is derived: the derivation is deliberately slow (about
    /// 0.1 s of CPU), and the command would fetch those files right after it
    /// anyway, one round trip after another on a remote store.
    pub fn open_prefetching(
        store: DynStore,
        rt: Handle,
        password: &[u8],
        prefetch: &[FileKind],
    ) -> Result<Repository> {
        Self::open_cached(store, rt, password, prefetch, None, false)
    }

    /// [`Repository::open_prefetching`], with the local copy of metadata
    /// kept under `cache_root` (see [`Cache`]): files cached there are not
    /// fetched. `write_only`: every file is read from the store, and the
    /// copies of those that check out are kept (verify).
    pub fn open_cached(
        store: DynStore,
        rt: Handle,
        password: &[u8],
        prefetch: &[FileKind],
        cache_root: Option<&Path>,
        write_only: bool,
    ) -> Result<Repository> {
        let config = match rt.block_on(store.get(CONFIG_KEY)) {
            Ok(b) => RepoConfig::from_bytes(&b)?,
            Err(StoreError::NotFound { .. }) => {
                return Err(RepoError::NotARepository {
                    location: store.describe(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        let cache = cache_root.and_then(|root| Cache::open(root, &config.id));
        let cache = if write_only { cache.map(Cache::write_only) } else { cache };
        let keys = rt.block_on(store.list(FileKind::Key.dir()))?;
        let mut ahead = match prefetch {
            [] => Prefetch::Off,
            kinds => Prefetch::Pending(rt.spawn(fetch_ahead(store.clone(), kinds.to_vec(), cache.clone()))),
        };
        for meta in keys {
            let Some(id) = id_from_key(&meta.key) else {
                continue;
            };
            let bytes = rt.block_on(store.get(&meta.key))?;
            let kf = match KeyFile::from_bytes(&bytes, &format!("key {id}")) {
                Ok(kf) => kf,
                Err(e) => {
                    tracing::warn!("skipping unreadable key file {id}: {e}");
                    continue;
                }
            };
            if let Some(key) = kf.unwrap_key(password)? {
                let cipher = key.cipher();
                return Ok(Repository {
                    store,
                    rt,
                    key,
                    cipher,
                    config,
                    key_id: id,
                    prefetch: Mutex::new(std::mem::replace(&mut ahead, Prefetch::Off)),
                    tree_packs: Mutex::default(),
                    cache,
                    connections: None,
                });
            }
        }
        if let Prefetch::Pending(h) = ahead {
            h.abort();
        }
        Err(RepoError::WrongPassword)
    }

    pub fn store(&self) -> &DynStore {
        &self.store
    }

    /// Requests in flight for pack uploads and for restore reads: what the
    /// user set, else `local` for a local disk and `remote` for object
    /// storage (where each request waits a round trip, so more in flight
    /// pay off). At least one.
    pub fn connections(&self, local: usize, remote: usize) -> usize {
        let default = if self.store.capabilities().remote { remote } else { local };
        self.connections.unwrap_or(default).max(1)
    }

    /// Sets what [`Repository::connections`] returns (None: the defaults).
    pub fn set_connections(&mut self, connections: Option<usize>) {
        self.connections = connections;
    }

    pub fn runtime(&self) -> &Handle {
        &self.rt
    }

    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    pub fn cipher(&self) -> &Cipher {
        &self.cipher
    }

    pub fn key_id(&self) -> Id {
        self.key_id
    }

    pub fn describe(&self) -> String {
        self.store.describe()
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn put(&self, key: &str, data: Vec<u8>) -> Result<()> {
        Ok(self.rt.block_on(self.store.put(key, Bytes::from(data)))?)
    }

    pub fn get(&self, key: &str) -> Result<Bytes> {
        Ok(self.rt.block_on(self.store.get(key))?)
    }

    /// Ids and metadata of every stored file of a kind.
    pub fn list(&self, kind: FileKind) -> Result<Vec<(Id, ObjectMeta)>> {
        let metas = self.rt.block_on(self.store.list(kind.dir()))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| id_from_key(&m.key).map(|id| (id, m)))
            .collect())
    }

    /// Seal (zstd + AES-GCM) and store a metadata file; its id is the hash of
    /// the stored bytes.
    pub fn save_file(&self, kind: FileKind, plain: &[u8]) -> Result<Id> {
        let bytes = self.seal_file(plain);
        let id = Id::of_stored(&bytes);
        self.put(&kind.key(&id), bytes)?;
        Ok(id)
    }

    pub fn seal_file(&self, plain: &[u8]) -> Vec<u8> {
        seal_metadata(&self.cipher, plain)
    }

    /// Load, check against its id, decrypt and decompress a metadata file.
    /// Snapshot and index files come from the local cache when it has them
    /// (a damaged copy is dropped and the file read from the store).
    pub fn load_file(&self, kind: FileKind, id: &Id) -> Result<Vec<u8>> {
        let key = kind.key(id);
        let cache = self.cache.as_ref().filter(|_| matches!(kind, FileKind::Snapshot | FileKind::Index));
        if let Some(bytes) = cache.and_then(|c| c.get(&key)) {
            match self.open_file(kind, id, &bytes) {
                Ok(plain) => return Ok(plain),
                Err(e) => {
                    tracing::warn!("cached copy of {key} is damaged, reading it again: {e}");
                    cache.expect("read from it").remove(&key);
                }
            }
        }
        let bytes = match self.take_prefetched(&key) {
            Some(b) => b,
            None => self.get(&key)?,
        };
        let plain = self.open_file(kind, id, &bytes)?;
        if let Some(c) = cache {
            c.put(&key, &bytes);
        }
        Ok(plain)
    }

    /// The local cache, if this repository keeps one.
    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref()
    }

    /// A file fetched ahead at open (each is handed out once); waits for the
    /// fetch when it is still running.
    fn take_prefetched(&self, key: &str) -> Option<Bytes> {
        let mut p = self.prefetch.lock().expect("poisoned");
        if let Prefetch::Pending(_) = &*p {
            let Prefetch::Pending(h) = std::mem::replace(&mut *p, Prefetch::Off) else {
                unreachable!()
            };
            *p = Prefetch::Ready(self.rt.block_on(h).unwrap_or_default());
        }
        match &mut *p {
            Prefetch::Ready(m) => m.remove(key),
            _ => None,
        }
    }

    pub fn open_file(&self, kind: FileKind, id: &Id, bytes: &[u8]) -> Result<Vec<u8>> {
        let what = || format!("{} {id}", kind.name());
        if Id::of_stored(bytes) != *id {
            return Err(RepoError::corrupt(
                what(),
                "content does not match its id (altered or truncated)",
            ));
        }
        let z = self.cipher.open(bytes, &what)?;
        zstd::stream::decode_all(&z[..])
            .map_err(|e| RepoError::corrupt(what(), format!("zstd: {e}")))
    }

    // ---- snapshots ----

    pub fn save_snapshot(&self, s: &Snapshot) -> Result<Id> {
        self.save_file(FileKind::Snapshot, &s.encode())
    }

    pub fn load_snapshot(&self, id: &Id) -> Result<Snapshot> {
        Snapshot::decode(&self.load_file(FileKind::Snapshot, id)?, id)
    }

    /// Every snapshot, oldest first. Loads in parallel.
    pub fn list_snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        let ids: Vec<Id> = self
            .list(FileKind::Snapshot)?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        self.uncache_unlisted(FileKind::Snapshot, &ids);
        // A snapshot removed by a concurrent `forget` between listing and
        // loading is simply gone, not an error.
        let loaded = self.load_many(&ids, |id| match self.load_snapshot(id) {
            Ok(s) => Ok(Some(s)),
            Err(RepoError::Store(e)) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        })?;
        let mut out: Vec<(Id, Snapshot)> = loaded
            .into_iter()
            .filter_map(|(id, s)| s.map(|s| (id, s)))
            .collect();
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// A snapshot by full id, unique hex prefix, or `latest`.
    pub fn find_snapshot(&self, spec: &str) -> Result<(Id, Snapshot)> {
        if spec == "latest" {
            return self.list_snapshots()?.pop().ok_or_else(|| {
                RepoError::SnapshotNotFound("latest (the repository has no snapshots)".into())
            });
        }
        let ids: Vec<Id> = self
            .list(FileKind::Snapshot)?
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| id.to_hex().starts_with(&spec.to_ascii_lowercase()))
            .collect();
        match ids.len() {
            0 => Err(RepoError::SnapshotNotFound(spec.to_string())),
            1 => Ok((ids[0], self.load_snapshot(&ids[0])?)),
            n => Err(RepoError::AmbiguousSnapshot {
                prefix: spec.to_string(),
                count: n,
            }),
        }
    }

    pub fn delete_file(&self, kind: FileKind, id: &Id) -> Result<()> {
        Ok(self.rt.block_on(self.store.delete(&kind.key(id)))?)
    }

    // ---- index ----

    pub fn save_index(&self, f: &IndexFile) -> Result<Id> {
        self.save_file(FileKind::Index, &f.encode())
    }

    pub fn load_index_file(&self, id: &Id) -> Result<IndexFile> {
        IndexFile::decode(
            &self.load_file(FileKind::Index, id)?,
            &format!("index {id}"),
        )
    }

    /// Merge every index file into one searchable index.
    pub fn load_index(&self) -> Result<Index> {
        let files = self.load_index_files()?;
        let mut index = Index::default();
        for (id, f) in files {
            index.add_file(Some(id), f);
        }
        index.finish();
        if let Some(c) = &self.cache {
            c.retain_trees(&|pack| index.tree_extent(pack));
        }
        Ok(index)
    }

    /// Every index file, from one listing whose files all loaded. Prune
    /// writes replacement index files before it removes the ones it read, so
    /// when a listed file has vanished, listing again finds its replacement.
    pub fn load_index_files(&self) -> Result<Vec<(Id, IndexFile)>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let ids: Vec<Id> = self
                .list(FileKind::Index)?
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            self.uncache_unlisted(FileKind::Index, &ids);
            match self.load_many(&ids, |id| self.load_index_file(id)) {
                Err(RepoError::Store(e)) if e.is_not_found() && attempt < 5 => continue,
                other => return other,
            }
        }
    }

    /// Drop cached files of `kind` that a fresh listing (`listed`) no
    /// longer shows.
    fn uncache_unlisted(&self, kind: FileKind, listed: &[Id]) {
        if let Some(c) = &self.cache {
            let listed: std::collections::HashSet<String> = listed.iter().map(Id::to_hex).collect();
            c.retain(kind.dir(), &|name| listed.contains(name));
        }
    }

    /// Load many files concurrently (I/O bound: several requests in flight).
    fn load_many<T: Send>(
        &self,
        ids: &[Id],
        load: impl Fn(&Id) -> Result<T> + Sync,
    ) -> Result<Vec<(Id, T)>> {
        use rayon::prelude::*;
        let pool = io_pool();
        pool.install(|| {
            ids.par_iter()
                .map(|id| load(id).map(|t| (*id, t)))
                .collect()
        })
    }

    // ---- blobs ----

    /// Read, decrypt and check one blob.
    pub fn read_blob(&self, index: &Index, kind: BlobType, id: &Id) -> Result<Vec<u8>> {
        let loc = index
            .get(kind, id)
            .ok_or_else(|| RepoError::BlobNotFound { id: id.to_hex() })?;
        let held = match (kind, index.tree_extent(&loc.pack)) {
            (BlobType::Tree, Some((start, end)))
                if end - start <= TREE_PACK_MAX && start <= loc.offset && loc.offset + loc.length <= end =>
            {
                self.tree_pack(&loc.pack, start, end)
            }
            _ => None,
        };
        let open = |bytes: &[u8]| {
            let what = || format!("blob {id} in pack {}", loc.pack);
            let plain = blob::unseal(&self.cipher, bytes, loc.flags, loc.raw_len, &what)?;
            if self.key.blob_id(&plain) != *id {
                return Err(RepoError::corrupt(what(), "content does not match its id"));
            }
            Ok(plain)
        };
        // Held from an earlier read or the cache: a copy whose range does
        // not cover this blob (another index's extent) is not used, and a
        // damaged one is dropped and the blob read from the store.
        if let Some((start, b)) = held {
            if start <= loc.offset && ((loc.offset - start + loc.length) as usize) <= b.len() {
                let at = (loc.offset - start) as usize;
                match open(&b[at..at + loc.length as usize]) {
                    Ok(plain) => return Ok(plain),
                    Err(e) => {
                        tracing::warn!("held trees of pack {} are damaged, reading the blob again: {e}", loc.pack);
                        self.forget_tree_pack(&loc.pack, start, start + b.len() as u32);
                    }
                }
            }
        }
        let bytes = self.rt.block_on(self.store.get_range(
            &FileKind::Pack.key(&loc.pack),
            loc.offset as u64,
            loc.length as u64,
        ))?;
        open(&bytes)
    }

    /// Drop a held (and cached) tree range found damaged.
    fn forget_tree_pack(&self, pack: &Id, start: u32, end: u32) {
        self.tree_packs.lock().expect("poisoned").cells.remove(pack);
        if let Some(c) = &self.cache {
            c.remove_trees(pack, start, end);
        }
    }

    /// The tree range `start..end` of `pack`, read once and held (see
    /// [`TreePacks`]); None when it could not be read (the caller then reads
    /// the blob alone, with that read's own retries and error).
    fn tree_pack(&self, pack: &Id, start: u32, end: u32) -> Option<(u32, Bytes)> {
        let cell = {
            let mut t = self.tree_packs.lock().expect("poisoned");
            t.cells.entry(*pack).or_default().clone()
        };
        let mut fetched = false;
        let got = cell
            .get_or_init(|| {
                fetched = true;
                if let Some(b) = self.cache.as_ref().and_then(|c| c.get_trees(pack, start, end)) {
                    return Some((start, b));
                }
                let key = FileKind::Pack.key(pack);
                match self.rt.block_on(self.store.get_range(&key, start as u64, (end - start) as u64)) {
                    Ok(b) => {
                        if let Some(c) = &self.cache {
                            c.put_trees(pack, start, end, &b);
                        }
                        Some((start, b))
                    }
                    Err(e) => {
                        tracing::debug!("reading the trees of pack {pack} at once: {e}");
                        None
                    }
                }
            })
            .clone();
        if fetched {
            let mut t = self.tree_packs.lock().expect("poisoned");
            let size = got.as_ref().map_or(0, |(_, b)| b.len());
            if got.is_none() {
                // Not held: the next reader tries again.
                t.cells.remove(pack);
            } else {
                t.order.push_back((*pack, size));
                t.held += size;
                while t.held > TREE_PACKS_HELD {
                    let Some((old, n)) = t.order.pop_front() else { break };
                    t.cells.remove(&old);
                    t.held -= n;
                }
            }
        }
        got
    }

    /// Forgets the tree packs held, so that the next reads see what is
    /// stored now (verify calls it: a long-running process must not check
    /// a copy it read before the damage).
    pub fn drop_held_trees(&self) {
        *self.tree_packs.lock().expect("poisoned") = TreePacks::default();
    }

    pub fn load_tree(&self, index: &Index, id: &Id) -> Result<Tree> {
        Tree::decode(&self.read_blob(index, BlobType::Tree, id)?, id)
    }

    // ---- keys ----

    /// Wrap the master key under another passphrase.
    pub fn add_key(&self, password: &[u8], params: KdfParams) -> Result<Id> {
        let kf = KeyFile::wrap(&self.key, password, params)?;
        let bytes = kf.to_bytes();
        let id = Id::of_stored(&bytes);
        self.put(&FileKind::Key.key(&id), bytes)?;
        Ok(id)
    }

    pub fn list_keys(&self) -> Result<Vec<(Id, KeyFile)>> {
        let mut out = Vec::new();
        for (id, _) in self.list(FileKind::Key)? {
            let b = self.get(&FileKind::Key.key(&id))?;
            out.push((id, KeyFile::from_bytes(&b, &format!("key {id}"))?));
        }
        out.sort_by_key(|(_, k)| k.created);
        Ok(out)
    }

    /// Remove a key file by id or unique prefix; never the last one, nor the
    /// one this process opened the repository with.
    pub fn remove_key(&self, spec: &str) -> Result<Id> {
        let keys = self.list(FileKind::Key)?;
        let matches: Vec<Id> = keys
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| id.to_hex().starts_with(spec))
            .collect();
        let id = match matches.len() {
            0 => return Err(RepoError::KeyNotFound(spec.into())),
            1 => matches[0],
            _ => {
                return Err(RepoError::Invalid(format!(
                    "key prefix {spec} is ambiguous"
                )))
            }
        };
        if keys.len() <= 1 {
            return Err(RepoError::LastKey);
        }
        if id == self.key_id {
            return Err(RepoError::KeyInUse);
        }
        self.delete_file(FileKind::Key, &id)?;
        Ok(id)
    }
}

/// The stored form of every metadata file (index, snapshot, lock):
/// `seal(zstd(plain))`. One place, so the format has one definition.
pub fn seal_metadata(cipher: &Cipher, plain: &[u8]) -> Vec<u8> {
    let z = zstd::bulk::compress(plain, 3).expect("zstd compresses in memory");
    cipher.seal(&z)
}

/// The id at the end of a storage key, if it is one of ours.
pub fn id_from_key(key: &str) -> Option<Id> {
    let name = key.rsplit('/').next()?;
    if name.len() != 64 {
        return None;
    }
    name.parse().ok()
}

/// A small pool for concurrent blocking reads of many small files: storage
/// latency, not CPU, bounds it, so it is wider than the core count.
pub fn io_pool() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(8)
            .thread_name(|i| format!("tidemark-io-{i}"))
            .build()
            .expect("thread pool")
    })
}

pub type SharedRepo = Arc<Repository>;

/// Opens the repository at `loc`: reads its config first so that, when it asks
/// for Object Lock, every later write carries the retention.
pub fn open_location(
    loc: &tidemark_store::Location,
    opts: &tidemark_store::OpenOptions,
    rt: Handle,
    password: &[u8],
) -> Result<Repository> {
    open_location_cached(loc, opts, rt, password, &[], None, false)
}

/// [`open_location`], fetching the files of `prefetch` while the key is
/// derived (see [`Repository::open_prefetching`]) and keeping the local copy
/// of metadata under `cache_root` (see [`Cache`]; `write_only`: read nothing
/// from it).
pub fn open_location_cached(
    loc: &tidemark_store::Location,
    opts: &tidemark_store::OpenOptions,
    rt: Handle,
    password: &[u8],
    prefetch: &[FileKind],
    cache_root: Option<&Path>,
    write_only: bool,
) -> Result<Repository> {
    let store = loc.open(opts)?;
    let config = match rt.block_on(store.get(CONFIG_KEY)) {
        Ok(b) => crate::config::RepoConfig::from_bytes(&b)?,
        Err(tidemark_store::StoreError::NotFound { .. }) => {
            return Err(RepoError::NotARepository {
                location: store.describe(),
            })
        }
        Err(e) => return Err(e.into()),
    };
    let store = match config.object_lock_days {
        Some(d) => loc.open(&tidemark_store::OpenOptions {
            lock_days: Some(d),
            ..opts.clone()
        })?,
        None => store,
    };
    Repository::open_cached(store, rt, password, prefetch, cache_root, write_only)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::walk::tests::TestRepo;

    fn ids(v: Vec<(Id, Snapshot)>) -> Vec<Id> {
        let mut ids: Vec<Id> = v.into_iter().map(|(id, _)| id).collect();
        ids.sort();
        ids
    }

    #[test]
    fn connections_are_the_users_else_the_stores_default_and_never_zero() {
        let mut t = TestRepo::new();
        assert_eq!(t.repo.connections(1, 4), 1, "a local disk takes the local default");
        assert_eq!(t.repo.connections(3, 4), 3);
        t.repo.set_connections(Some(12));
        assert_eq!(t.repo.connections(1, 4), 12, "the user's number wins");
        t.repo.set_connections(Some(0));
        assert_eq!(t.repo.connections(1, 4), 1, "zero would stall every upload");
        t.repo.set_connections(None);
        assert_eq!(t.repo.connections(2, 4), 2);
    }

    #[test]
    fn prefetched_files_are_used_as_the_later_listing_says() {
        let t = TestRepo::new();
        let src = t.dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("f"), crate::walk::tests::random_bytes(100_000)).unwrap();
        let (a, _) = t.backup(&[&src]);
        let (b, _) = t.backup(&[&src]);
        let opened = Repository::open_prefetching(
            t.repo.store().clone(),
            t.repo.runtime().clone(),
            b"pw",
            &[FileKind::Index, FileKind::Snapshot],
        )
        .unwrap();
        // Wait for the fetch, so the changes below come after it.
        assert!(opened.take_prefetched("snapshots/none").is_none());

        // Changed after the fetch: snapshot a removed, c added, b's file
        // damaged on disk (the fetched copy is b as it was listed).
        t.repo.delete_file(FileKind::Snapshot, &a).unwrap();
        std::fs::write(src.join("g"), b"new file").unwrap();
        let (c, _) = t.backup(&[&src]);
        std::fs::write(
            t.dir.path().join("repo").join(FileKind::Snapshot.key(&b)),
            b"damaged",
        )
        .unwrap();

        // The listing decides: a is gone, c is loaded from storage, b from
        // the copy fetched ahead (storage now holds damaged bytes).
        let mut want = vec![b, c];
        want.sort();
        assert_eq!(ids(opened.list_snapshots().unwrap()), want);
        // Handed out once: the next load reads storage and finds the damage.
        let err = opened.load_snapshot(&b).unwrap_err().to_string();
        assert!(err.contains("does not match its id"), "{err}");
        // The index is every listed index file, fetched ahead or not.
        let index = opened.load_index().unwrap();
        assert_eq!(
            index.files.len(),
            t.repo.list(FileKind::Index).unwrap().len()
        );
    }

    #[test]
    fn wrong_password_with_prefetch_is_refused() {
        let t = TestRepo::new();
        let r = Repository::open_prefetching(
            t.repo.store().clone(),
            t.repo.runtime().clone(),
            b"nope",
            &[FileKind::Index],
        );
        assert!(matches!(r, Err(RepoError::WrongPassword)), "{r:?}");
    }
}
