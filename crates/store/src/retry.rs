//! A [`Store`] wrapper that repeats calls failing with a temporary error
//! ([`StoreError::is_temporary`](crate::StoreError::is_temporary)): throttling, 5xx, dropped connections.
//!
//! Back-off doubles per attempt up to a cap, with "equal jitter" (half the
//! delay fixed, half random) so that many agents hitting the same throttled
//! bucket do not retry in lock step, while no retry comes sooner than half
//! the planned delay.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tracing::warn;

use crate::{Capabilities, DynStore, ObjectMeta, Result, Store};

/// How often and how patiently to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total calls per operation, the first one included; 1 disables retry.
    pub max_attempts: u32,
    /// Delay before the first retry; doubled for each further one.
    pub initial_delay: Duration,
    /// Upper bound of one delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Eight attempts from 250 ms doubling to a 20 s cap wait about a minute
    /// in total: long enough to ride out an S3 `SlowDown` burst or a load
    /// balancer failover, short enough that a dead endpoint fails a backup
    /// within a coffee break.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            initial_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1 for the first call);
    /// `jitter` in `[0, 1)` picks a point in the upper half of the delay.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        let full = self
            .initial_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay);
        let half = full / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// Retries temporary failures of the wrapped store.
#[derive(Debug, Clone)]
pub struct RetryStore {
    inner: DynStore,
    policy: RetryPolicy,
}

impl RetryStore {
    pub fn new(inner: DynStore, policy: RetryPolicy) -> Self {
        RetryStore { inner, policy }
    }

    async fn run<T, F, Fut>(&self, op: &'static str, key: &str, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 1;
        loop {
            match call().await {
                Err(e) if e.is_temporary() && attempt < self.policy.max_attempts => {
                    let delay = self.policy.delay(attempt, rand::random::<f64>());
                    warn!(
                        store = %self.inner.describe(),
                        op,
                        key,
                        attempt,
                        max_attempts = self.policy.max_attempts,
                        delay_ms = delay.as_millis() as u64,
                        error = %e,
                        "temporary storage error, retrying"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

#[async_trait]
impl Store for RetryStore {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn create(&self, object_lock: bool) -> Result<()> {
        self.run("create", "", || self.inner.create(object_lock))
            .await
    }

    /// Not retried: a staged object is written once, from memory the
    /// caller no longer holds; errors reach the caller, who stores anew.
    async fn sweep_temporaries(&self, before: DateTime<Utc>) -> Result<u64> {
        self.inner.sweep_temporaries(before).await
    }

    fn stage(&self, dir: &str) -> Result<Option<Box<dyn crate::Staged>>> {
        self.inner.stage(dir)
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        // `Bytes` clones share the buffer: a retry costs no copy.
        self.run("put", key, || self.inner.put(key, data.clone()))
            .await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.run("get", key, || self.inner.get(key)).await
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes> {
        self.run("get_range", key, || self.inner.get_range(key, offset, len))
            .await
    }

    async fn get_range_into(
        &self,
        key: &str,
        offset: u64,
        len: u64,
        buf: Vec<u8>,
    ) -> Result<Vec<u8>> {
        // A failed attempt keeps the buffer; a retry starts with a new one.
        let mut buf = Some(buf);
        self.run("get_range", key, || {
            let b = buf.take().unwrap_or_default();
            self.inner.get_range_into(key, offset, len, b)
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        self.run("head", key, || self.inner.head(key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.run("list", prefix, || self.inner.list(prefix)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.run("delete", key, || self.inner.delete(key)).await
    }

    async fn retain(&self, key: &str, until: DateTime<Utc>) -> Result<()> {
        self.run("retain", key, || self.inner.retain(key, until))
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::StoreError;

    /// Fails the first `failures` calls with `error()`, then answers.
    #[derive(Debug)]
    struct Flaky {
        failures: u32,
        calls: AtomicU32,
        temporary: bool,
    }

    impl Flaky {
        fn attempt(&self, key: &str) -> Result<()> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.failures {
                return Err(StoreError::Service {
                    key: key.to_owned(),
                    message: format!("planned failure {n}"),
                    temporary: self.temporary,
                    source: None,
                });
            }
            Ok(())
        }
    }

    #[async_trait]
    impl Store for Flaky {
        fn capabilities(&self) -> Capabilities {
            Capabilities::default()
        }
        fn describe(&self) -> String {
            "flaky".into()
        }
        async fn create(&self, _: bool) -> Result<()> {
            self.attempt("")
        }
        async fn put(&self, key: &str, _: Bytes) -> Result<()> {
            self.attempt(key)
        }
        async fn get(&self, key: &str) -> Result<Bytes> {
            self.attempt(key).map(|()| Bytes::from_static(b"data"))
        }
        async fn get_range(&self, key: &str, _: u64, _: u64) -> Result<Bytes> {
            self.get(key).await
        }
        async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
            self.attempt(key).map(|()| None)
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
            self.attempt(prefix).map(|()| Vec::new())
        }
        async fn delete(&self, key: &str) -> Result<()> {
            self.attempt(key)
        }
        async fn retain(&self, key: &str, _: DateTime<Utc>) -> Result<()> {
            self.attempt(key)
        }
    }

    fn wrap(failures: u32, temporary: bool, max_attempts: u32) -> (Arc<Flaky>, RetryStore) {
        let flaky = Arc::new(Flaky {
            failures,
            calls: AtomicU32::new(0),
            temporary,
        });
        let policy = RetryPolicy {
            max_attempts,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        (flaky.clone(), RetryStore::new(flaky, policy))
    }

    // Paused time: the sleeps advance a virtual clock, so the test is instant
    // and cannot flake on a loaded machine.
    #[tokio::test(start_paused = true)]
    async fn temporary_errors_are_retried_until_success() {
        let (flaky, store) = wrap(3, true, 5);
        assert_eq!(store.get("k").await.unwrap(), Bytes::from_static(b"data"));
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 4);
        // Ranges into a caller's buffer are retried the same way.
        let (flaky, store) = wrap(2, true, 5);
        let buf = store.get_range_into("k", 0, 4, vec![0; 8]).await.unwrap();
        assert_eq!(buf, b"data");
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_bounded_and_the_last_error_is_returned() {
        let (flaky, store) = wrap(10, true, 4);
        let err = store.put("k", Bytes::new()).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Service { message, .. } if message == "planned failure 3")
        );
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let (flaky, store) = wrap(1, false, 5);
        assert!(store.delete("k").await.is_err());
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn delay_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        };
        assert_eq!(p.delay(1, 0.0), Duration::from_millis(50));
        assert_eq!(p.delay(1, 1.0), Duration::from_millis(100));
        assert_eq!(p.delay(2, 0.0), Duration::from_millis(100));
        assert_eq!(p.delay(3, 0.5), Duration::from_millis(300));
        assert_eq!(p.delay(5, 1.0), Duration::from_millis(1000));
        assert_eq!(p.delay(60, 0.0), Duration::from_millis(500));
    }
}
