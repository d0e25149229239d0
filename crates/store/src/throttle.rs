//! A [`Store`] wrapper limiting upload and download bandwidth.
//!
//! One token bucket per direction, shared by every task using the store, so
//! the limit holds for the whole process however many uploads run at once.
//! The bucket may go into debt: an object larger than the burst is sent at
//! once and the *following* transfers wait until the debt is paid. That keeps
//! the average rate exact without splitting objects.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::{Capabilities, DynStore, ObjectMeta, RangeStream, Result, Store, Undeleted};

/// Token bucket arithmetic, kept free of clocks and sleeping so it can be
/// tested exactly.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// `rate` bytes per second, at most `burst` bytes saved up while idle.
    /// The bucket starts full.
    pub fn new(rate: u64, burst: u64, now: Instant) -> Self {
        let rate = rate.max(1) as f64;
        let burst = burst as f64;
        TokenBucket {
            rate,
            burst,
            state: Mutex::new((burst, now)),
        }
    }

    /// Takes `bytes` tokens at `now`; returns how long the caller must wait
    /// before its transfer fits within the rate.
    pub fn reserve(&self, bytes: u64, now: Instant) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = *state;
        let elapsed = now.saturating_duration_since(last).as_secs_f64();
        let available = (tokens + elapsed * self.rate).min(self.burst) - bytes as f64;
        *state = (available, now.max(last));
        if available >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-available / self.rate)
        }
    }

    async fn take(&self, bytes: u64) {
        let wait = self.reserve(bytes, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Limits the bytes per second of `put` (upload) and `get`/`get_range`
/// (download) of the wrapped store.
#[derive(Debug, Clone)]
pub struct ThrottleStore {
    inner: DynStore,
    upload: Option<Arc<TokenBucket>>,
    download: Option<Arc<TokenBucket>>,
}

impl ThrottleStore {
    /// Limits in bytes per second; `None` leaves a direction unlimited.
    pub fn new(inner: DynStore, upload: Option<u64>, download: Option<u64>) -> Self {
        // One second of traffic as burst: smooth enough for a link, and small
        // enough that an idle minute does not turn into a flood.
        let bucket = |rate: u64| Arc::new(TokenBucket::new(rate, rate, Instant::now()));
        ThrottleStore {
            inner,
            upload: upload.map(bucket),
            download: download.map(bucket),
        }
    }
}

#[async_trait]
impl Store for ThrottleStore {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn create(&self, object_lock: bool) -> Result<()> {
        self.inner.create(object_lock).await
    }

    /// Only without an upload limit: staged writes would bypass it.
    async fn sweep_temporaries(&self, before: DateTime<Utc>) -> Result<u64> {
        self.inner.sweep_temporaries(before).await
    }

    fn stage(&self, dir: &str) -> Result<Option<Box<dyn crate::Staged>>> {
        match self.upload {
            Some(_) => Ok(None),
            None => self.inner.stage(dir),
        }
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        if let Some(bucket) = &self.upload {
            bucket.take(data.len() as u64).await;
        }
        self.inner.put(key, data).await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let data = self.inner.get(key).await?;
        // The size is known only once read: pay afterwards, which delays the
        // next transfer and keeps the average at the limit.
        if let Some(bucket) = &self.download {
            bucket.take(data.len() as u64).await;
        }
        Ok(data)
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes> {
        if let Some(bucket) = &self.download {
            bucket.take(len).await;
        }
        self.inner.get_range(key, offset, len).await
    }

    async fn get_range_stream(&self, key: &str, offset: u64, len: u64) -> Result<RangeStream> {
        if let Some(bucket) = &self.download {
            bucket.take(len).await;
        }
        self.inner.get_range_stream(key, offset, len).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        self.inner.head(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), Undeleted> {
        self.inner.delete_many(keys).await
    }

    async fn retain(&self, key: &str, until: DateTime<Utc>) -> Result<()> {
        self.inner.retain(key, until).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_full_bucket_passes_a_burst_then_charges_the_excess() {
        let t0 = Instant::now();
        let b = TokenBucket::new(1000, 1000, t0);
        assert_eq!(b.reserve(1000, t0), Duration::ZERO);
        assert_eq!(b.reserve(500, t0), ms(500));
        // Half a second later the 500 of debt is paid, the next 500 waits again.
        assert_eq!(b.reserve(500, t0 + ms(500)), ms(500));
    }

    #[test]
    fn an_object_larger_than_the_burst_goes_into_debt() {
        let t0 = Instant::now();
        let b = TokenBucket::new(100, 100, t0);
        assert_eq!(b.reserve(1100, t0), Duration::from_secs(10));
        assert_eq!(b.reserve(0, t0 + Duration::from_secs(10)), Duration::ZERO);
    }

    #[test]
    fn idle_time_refills_only_up_to_the_burst() {
        let t0 = Instant::now();
        let b = TokenBucket::new(1000, 2000, t0);
        assert_eq!(b.reserve(2000, t0), Duration::ZERO);
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(b.reserve(2000, later), Duration::ZERO);
        assert_eq!(b.reserve(1000, later), Duration::from_secs(1));
    }

    #[test]
    fn steady_transfers_average_to_the_rate() {
        let t0 = Instant::now();
        let b = TokenBucket::new(1 << 20, 1 << 20, t0);
        // 64 puts of 256 KiB = 16 MiB at 1 MiB/s: each caller starts when its
        // reservation says; the last one starts at 15 s (the first MiB is burst).
        let mut now = t0;
        for _ in 0..64 {
            now += b.reserve(256 << 10, now);
        }
        assert_eq!(now - t0, Duration::from_secs(15));
    }
}
