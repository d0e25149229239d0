//! Storage layer of tidemark: one small [`Store`] trait and its backends.
//!
//! Parts:
//! - [`Store`]: the trait every backend implements (put, get, get range, head,
//!   list, delete, delete many, retain, create), with [`Capabilities`] as
//!   plain data.
//! - [`local`]: a directory on a local filesystem (atomic writes by rename).
//! - [`s3`]: any S3-compatible object store (aws-sdk-s3), including Object
//!   Lock; its inherent methods list and delete single versions.
//! - wrappers over the same trait: [`retry`] (exponential back-off on
//!   [`StoreError::is_temporary`] errors) and [`throttle`] (bandwidth limit).
//! - [`Location`]: a repository address parsed once (`/path`, `local:/path` or
//!   `s3:http://HOST:PORT/BUCKET/PREFIX`); [`Location::open`] builds the
//!   backend wrapped in retry (and throttle when a limit is set).
//!
//! Keys are relative, `/`-separated paths such as `data/ab/ab12...`; a backend
//! maps them onto its own namespace (a directory, a bucket prefix). A key is
//! never also the prefix "directory" of another key (`a` and `a/b`): a
//! filesystem, and a filer-backed S3 such as SeaweedFS, cannot hold both.
//! The behaviour every backend shares is pinned by `tests/conformance.rs`.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;

mod error;
pub mod local;
pub mod location;
pub mod retry;
pub mod s3;
pub mod throttle;

pub use error::{DeleteFailure, Result, StoreError, Undeleted};
pub use local::LocalStore;
pub use location::{Location, OpenOptions};
pub use retry::{RetryPolicy, RetryStore};
pub use s3::S3Store;
pub use throttle::ThrottleStore;

/// What a backend can do, as data: callers branch on these flags, never on the
/// backend's kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `retain` works: objects can be given a retention date before which the
    /// store itself refuses to delete or overwrite them (S3 Object Lock).
    pub retention: bool,
    /// `get_range` is served natively (not by reading the whole object).
    pub range_reads: bool,
    /// Every request crosses a network (object storage): latency, not the
    /// disk, bounds a reader, so more requests in flight pay off.
    pub remote: bool,
}

/// One stored object as seen by `list` and `head`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Key relative to the store root, `/`-separated.
    pub key: String,
    pub size: u64,
    /// Last modification time as the store reports it (used by prune to
    /// judge the age of unreferenced objects).
    pub modified: Option<DateTime<Utc>>,
}

/// A place where a repository keeps its objects.
///
/// Every method is safe to call from many tasks at once. `put` is atomic: a
/// reader sees either nothing or the whole object, never a part of it, also if
/// the writer dies mid-way.
#[async_trait]
pub trait Store: Send + Sync + Debug {
    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// A display form of the location, without any secret.
    fn describe(&self) -> String;

    /// Create the root (directory, bucket) if it does not exist. With
    /// `object_lock` the bucket is created with Object Lock enabled; a backend
    /// that cannot do so returns [`StoreError::Unsupported`].
    async fn create(&self, object_lock: bool) -> Result<()>;

    /// Store `data` under `key`, replacing an existing object.
    async fn put(&self, key: &str, data: Bytes) -> Result<()>;

    /// Read a whole object; [`StoreError::NotFound`] when missing.
    async fn get(&self, key: &str) -> Result<Bytes>;

    /// Read `len` bytes from `offset`; fails with [`StoreError::Truncated`]
    /// when the object is shorter.
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes>;

    /// [`Store::get_range`] as pieces in order, for a reader that uses the
    /// start of a large range while the rest is still on the wire (restore
    /// decodes a pack blob by blob as it arrives, so one request per pack
    /// costs no pack-sized buffer). The pieces add up to `len` bytes, else
    /// the stream ends with an error ([`StoreError::Truncated`] when the
    /// object is shorter). The default reads the whole range as one piece.
    async fn get_range_stream(&self, key: &str, offset: u64, len: u64) -> Result<RangeStream> {
        let data = self.get_range(key, offset, len).await?;
        Ok(futures::stream::once(async { Ok(data) }).boxed())
    }

    /// Metadata of one object, `None` when missing.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>>;

    /// All objects whose key starts with `prefix` (recursively), in no
    /// particular order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// Remove an object. Removing a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Remove many objects, as [`Store::delete`] does each (a missing one is
    /// not an error). A partial failure names exactly the keys that may
    /// still be there, with why; every other key is gone, so a caller can
    /// report what it removed. The default deletes one key per request,
    /// [`DELETES_IN_FLIGHT`] at a time: hundreds of snapshot or index files
    /// deleted one after another cost seconds behind a network.
    async fn delete_many(&self, keys: &[String]) -> Result<(), Undeleted> {
        // The futures are made first: a closure inside the stream would
        // make this `Send` future too general for the compiler to prove.
        let deletes: Vec<_> = keys
            .iter()
            .map(|key| async move { (key, self.delete(key).await) })
            .collect();
        let mut results = futures::stream::iter(deletes).buffer_unordered(DELETES_IN_FLIGHT);
        let mut undeleted = Undeleted::default();
        while let Some((key, result)) = results.next().await {
            if let Err(e) = result {
                undeleted.push(vec![key.clone()], e);
            }
        }
        undeleted.into_result()
    }

    /// Keep the current version of `key` undeletable and unchangeable until
    /// `until` (COMPLIANCE mode); never shortens an existing retention. Only
    /// when `capabilities().retention`; otherwise [`StoreError::Unsupported`].
    async fn retain(&self, key: &str, until: DateTime<Utc>) -> Result<()>;

    /// Start an object written piece by piece (see [`Staged`]). A local disk
    /// does: a writer then hands each piece to the kernel while it is still
    /// in the CPU cache, where copying a whole pack buffer at once was
    /// measured to cost about twice the system time. Others take whole
    /// objects (`None`).
    fn stage(&self, _dir: &str) -> Result<Option<Box<dyn Staged>>> {
        Ok(None)
    }

    /// Remove what writers that died left behind (a local disk's
    /// temporaries: a `put` killed before its rename, a staged object never
    /// committed) last modified before `before`; returns how many. A live
    /// writer touches its temporary with every write, so an old one is dead.
    /// Stores whose uploads leave nothing behind have nothing to do.
    async fn sweep_temporaries(&self, _before: DateTime<Utc>) -> Result<u64> {
        Ok(0)
    }
}

/// Single deletes in flight in the default [`Store::delete_many`]: enough to
/// hide a round trip of tens of milliseconds, few enough not to be throttled
/// by an object store or to flood a local disk's blocking pool.
pub const DELETES_IN_FLIGHT: usize = 16;

/// Shared handle to a store; open sets of backends are `Arc<dyn Store>`.
pub type DynStore = Arc<dyn Store>;

/// The pieces of a range read, in order (see [`Store::get_range_stream`]).
pub type RangeStream = futures::stream::BoxStream<'static, Result<Bytes>>;

/// An object written piece by piece, invisible until [`Staged::commit`]
/// (see [`Store::stage`]); dropped uncommitted, it leaves nothing behind.
/// The calls block: they are for engine threads, not async tasks.
pub trait Staged: Send {
    /// Append bytes.
    fn write(&mut self, data: &[u8]) -> Result<()>;

    /// Make the object durable under `key`, atomically (as `put` does).
    fn commit(self: Box<Self>, key: &str) -> Result<()>;
}
