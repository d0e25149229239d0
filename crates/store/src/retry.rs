//! A [`Store`] wrapper that repeats calls failing with a temporary error
//! ([`StoreError::is_temporary`](crate::StoreError::is_temporary)): throttling, 5xx, dropped connections.
//!
//! Back-off doubles per attempt up to a cap, with "equal jitter" (half the
//! delay fixed, half random) so that many agents hitting the same throttled
//! bucket do not retry in lock step, while no retry comes sooner than half
//! the planned delay.

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tracing::warn;

use futures::StreamExt;

use crate::{Capabilities, DynStore, ObjectMeta, RangeStream, Result, Store, Undeleted};

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
    /// Ten attempts from 250 ms doubling to a 20 s cap wait 36-72 s in
    /// total (half of each delay is random): long enough to ride out an S3
    /// `SlowDown` burst, a load balancer failover or a server restart (the
    /// fault bench stops the server for 20 s; with eight attempts, 16-32 s,
    /// that came within one attempt of failing), short enough that a dead
    /// endpoint fails a backup within a coffee break.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
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

/// The state of a range stream that reopens itself after a break.
struct Resume {
    store: RetryStore,
    key: String,
    offset: u64,
    len: u64,
    /// Bytes delivered to the reader.
    done: u64,
    /// Breaks since the last delivered byte.
    stalls: u32,
    /// None once the stream has ended (or failed for good).
    stream: Option<RangeStream>,
}

impl Resume {
    async fn next(mut self) -> Option<(Result<Bytes>, Resume)> {
        loop {
            let stream = self.stream.as_mut()?;
            match stream.next().await {
                Some(Ok(piece)) => {
                    self.done += piece.len() as u64;
                    self.stalls = 0;
                    return Some((Ok(piece), self));
                }
                None => return None,
                Some(Err(e)) => {
                    self.stalls += 1;
                    let policy = &self.store.policy;
                    if !e.is_temporary() || self.stalls >= policy.max_attempts || self.done >= self.len {
                        self.stream = None;
                        return Some((Err(e), self));
                    }
                    let delay = policy.delay(self.stalls, rand::random::<f64>());
                    warn!(
                        store = %self.store.inner.describe(),
                        op = "get_range",
                        key = %self.key,
                        delivered = self.done,
                        attempt = self.stalls,
                        delay_ms = delay.as_millis() as u64,
                        error = %e,
                        "range read broke off, reading the rest again"
                    );
                    tokio::time::sleep(delay).await;
                    let (key, at, rest) = (self.key.clone(), self.offset + self.done, self.len - self.done);
                    let inner = &self.store.inner;
                    match self.store.run("get_range", &key, || inner.get_range_stream(&key, at, rest)).await {
                        Ok(s) => self.stream = Some(s),
                        Err(e) => {
                            self.stream = None;
                            return Some((Err(e), self));
                        }
                    }
                }
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

    /// Opening is retried like any call; a stream that breaks off later is
    /// opened again for the bytes not yet delivered, so the reader sees one
    /// unbroken range. Each break that delivered nothing since the previous
    /// one counts as an attempt: a flaky link that makes progress goes on,
    /// a dead one fails as any call does.
    async fn get_range_stream(&self, key: &str, offset: u64, len: u64) -> Result<RangeStream> {
        let first = self
            .run("get_range", key, || self.inner.get_range_stream(key, offset, len))
            .await?;
        let resume = Resume {
            store: self.clone(),
            key: key.to_owned(),
            offset,
            len,
            done: 0,
            stalls: 0,
            stream: Some(first),
        };
        Ok(futures::stream::unfold(resume, Resume::next).boxed())
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

    /// A partial failure is retried for the keys that failed with a
    /// temporary error only: the others are gone, or will not go by asking
    /// again. The attempts count calls, as for any operation.
    async fn delete_many(&self, keys: &[String]) -> Result<(), Undeleted> {
        let mut pending = Cow::Borrowed(keys);
        let mut lasting = Undeleted::default();
        let mut attempt = 1;
        loop {
            let Err(failed) = self.inner.delete_many(&pending).await else {
                return lasting.into_result();
            };
            let (temporary, permanent): (Vec<_>, Vec<_>) = failed
                .failures
                .into_iter()
                .partition(|f| f.error.is_temporary());
            lasting.failures.extend(permanent);
            if temporary.is_empty() || attempt >= self.policy.max_attempts {
                lasting.failures.extend(temporary);
                return lasting.into_result();
            }
            let delay = self.policy.delay(attempt, rand::random::<f64>());
            let error = temporary[0].error.to_string();
            let retry: Vec<String> = temporary.into_iter().flat_map(|f| f.keys).collect();
            warn!(
                store = %self.inner.describe(),
                op = "delete_many",
                keys = retry.len(),
                error = %error,
                attempt,
                max_attempts = self.policy.max_attempts,
                delay_ms = delay.as_millis() as u64,
                "temporary storage error, retrying the keys not deleted"
            );
            tokio::time::sleep(delay).await;
            pending = Cow::Owned(retry);
            attempt += 1;
        }
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

    use futures::TryStreamExt;

    use super::*;
    use crate::StoreError;

    /// Fails the first `failures` calls with `error()`, then answers.
    #[derive(Debug)]
    struct Flaky {
        failures: u32,
        calls: AtomicU32,
        temporary: bool,
        /// The keys of every `delete_many` call.
        deletes: std::sync::Mutex<Vec<Vec<String>>>,
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
        /// By key name: `perm*` keys fail for good; `temp*` keys fail as one
        /// batch (a request cut off) in the calls planned to fail; the
        /// others go.
        async fn delete_many(&self, keys: &[String]) -> Result<(), Undeleted> {
            self.deletes.lock().unwrap().push(keys.to_vec());
            let with = |prefix: &str| -> Vec<String> {
                keys.iter()
                    .filter(|k| k.starts_with(prefix))
                    .cloned()
                    .collect()
            };
            let mut undeleted = Undeleted::default();
            if let Err(e) = self.attempt("temp") {
                undeleted.push(with("temp"), e);
            }
            for key in with("perm") {
                let error = StoreError::Denied {
                    key: key.clone(),
                    message: "locked".into(),
                };
                undeleted.push(vec![key], error);
            }
            undeleted.into_result()
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
            deletes: Default::default(),
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

    fn strings(keys: &[&str]) -> Vec<String> {
        keys.iter().map(|k| k.to_string()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_delete_is_retried_for_the_temporary_failures_only() {
        let keys = strings(&["a", "temp1", "perm1", "b", "temp2"]);
        let (inner, store) = wrap(2, true, 5);
        let undeleted = store.delete_many(&keys).await.unwrap_err();
        // The retries asked only for the keys that failed temporarily.
        let calls = inner.deletes.lock().unwrap().clone();
        assert_eq!(
            calls,
            vec![
                keys.clone(),
                strings(&["temp1", "temp2"]),
                strings(&["temp1", "temp2"])
            ]
        );
        assert_eq!(undeleted.keys().collect::<Vec<_>>(), ["perm1"]);
        assert!(matches!(
            undeleted.failures[0].error,
            StoreError::Denied { .. }
        ));
        assert!(!StoreError::from(undeleted).is_temporary());

        // Out of attempts: what failed for good and what failed last.
        let (inner, store) = wrap(10, true, 3);
        let undeleted = store.delete_many(&keys).await.unwrap_err();
        assert_eq!(inner.deletes.lock().unwrap().len(), 3);
        assert_eq!(
            undeleted.keys().collect::<Vec<_>>(),
            ["perm1", "temp1", "temp2"]
        );
        assert!(
            matches!(&undeleted.failures[1].error, StoreError::Service { message, .. } if message == "planned failure 2")
        );
        let shown = undeleted.to_string();
        assert!(
            shown.starts_with("3 objects not deleted (perm1, temp1, temp2): "),
            "{shown}"
        );

        // Nothing fails: one call.
        let (inner, store) = wrap(0, true, 5);
        store.delete_many(&strings(&["a", "temp1"])).await.unwrap();
        assert_eq!(inner.deletes.lock().unwrap().len(), 1);
    }

    /// Serves `data` as streams that break off after `piece` bytes each,
    /// `breaks` times in all (then whole); `dead` streams break before
    /// delivering anything.
    #[derive(Debug)]
    struct Breaking {
        data: Bytes,
        piece: usize,
        breaks: AtomicU32,
        dead: bool,
        opens: AtomicU32,
    }

    #[async_trait]
    impl Store for Breaking {
        fn capabilities(&self) -> Capabilities {
            Capabilities::default()
        }
        fn describe(&self) -> String {
            "breaking".into()
        }
        async fn create(&self, _: bool) -> Result<()> {
            Ok(())
        }
        async fn put(&self, _: &str, _: Bytes) -> Result<()> {
            Ok(())
        }
        async fn get(&self, _: &str) -> Result<Bytes> {
            Ok(self.data.clone())
        }
        async fn get_range(&self, _: &str, off: u64, len: u64) -> Result<Bytes> {
            Ok(self.data.slice(off as usize..(off + len) as usize))
        }
        async fn get_range_stream(&self, key: &str, off: u64, len: u64) -> Result<RangeStream> {
            self.opens.fetch_add(1, Ordering::SeqCst);
            let range = self.data.slice(off as usize..(off + len) as usize);
            let broken = || StoreError::Service {
                key: key.to_owned(),
                message: "connection reset".into(),
                temporary: true,
                source: None,
            };
            if self.dead {
                return Ok(futures::stream::iter(vec![Err(broken())]).boxed());
            }
            let breaks = self.breaks.load(Ordering::SeqCst);
            if breaks == 0 || range.len() <= self.piece {
                return Ok(futures::stream::iter(vec![Ok(range)]).boxed());
            }
            self.breaks.store(breaks - 1, Ordering::SeqCst);
            let first = range.slice(..self.piece);
            Ok(futures::stream::iter(vec![Ok(first), Err(broken())]).boxed())
        }
        async fn head(&self, _: &str) -> Result<Option<ObjectMeta>> {
            Ok(None)
        }
        async fn list(&self, _: &str) -> Result<Vec<ObjectMeta>> {
            Ok(Vec::new())
        }
        async fn delete(&self, _: &str) -> Result<()> {
            Ok(())
        }
        async fn retain(&self, _: &str, _: DateTime<Utc>) -> Result<()> {
            Ok(())
        }
    }

    fn breaking(breaks: u32, dead: bool) -> (Arc<Breaking>, RetryStore) {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let inner = Arc::new(Breaking {
            data: Bytes::from(data),
            piece: 1_000,
            breaks: AtomicU32::new(breaks),
            dead,
            opens: AtomicU32::new(0),
        });
        let policy = RetryPolicy {
            max_attempts: 4,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        (inner.clone(), RetryStore::new(inner, policy))
    }

    #[tokio::test(start_paused = true)]
    async fn a_range_stream_that_breaks_off_resumes_where_it_stopped() {
        // More breaks than attempts: each one delivered bytes, so it goes on.
        let (inner, store) = breaking(6, false);
        let pieces: Vec<Bytes> = store.get_range_stream("k", 500, 9_000).await.unwrap().try_collect().await.unwrap();
        assert_eq!(pieces.concat(), &inner.data[500..9_500]);
        assert_eq!(inner.opens.load(Ordering::SeqCst), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn a_range_stream_that_never_delivers_fails_after_the_attempts() {
        let (inner, store) = breaking(0, true);
        let got: Result<Vec<Bytes>> = store.get_range_stream("k", 0, 100).await.unwrap().try_collect().await;
        match got {
            Err(StoreError::Service { message, .. }) => assert_eq!(message, "connection reset"),
            other => panic!("{other:?}"),
        }
        assert_eq!(inner.opens.load(Ordering::SeqCst), 4);
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
