//! One behaviour suite, run against every backend: a local directory and S3
//! on a real SeaweedFS server (testbed's fixture, one per test binary).
//!
//! Stores are opened the way tidemark opens them, through [`Location::open`],
//! so the retry wrapper and location parsing are part of what is tested.
//! S3-only behaviour (bucket creation, Object Lock) follows at the end.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{Duration, Utc};
use futures::{stream, StreamExt, TryStreamExt};
use tidemark_store::location::{Env, OpenOptions};
use tidemark_store::s3::{S3Config, S3Store, Secret};
use tidemark_store::{DynStore, Location, Store, StoreError};

/// A store under test plus whatever keeps its backing alive.
struct Fixture {
    store: DynStore,
    _dir: Option<tempfile::TempDir>,
}

fn random_name(prefix: &str) -> String {
    format!("{prefix}{:016x}", rand::random::<u64>())
}

fn local() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let loc: Location = format!("local:{}/repo", dir.path().display())
        .parse()
        .unwrap();
    Fixture {
        store: loc.open(&OpenOptions::default()).unwrap(),
        _dir: Some(dir),
    }
}

/// A directory behind every wrapper (retry and throttle): they must pass
/// each behaviour through unchanged. The limits are high enough not to slow
/// the suite but every transfer goes through the token buckets.
fn local_throttled() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let loc: Location = dir.path().join("repo").to_str().unwrap().parse().unwrap();
    let opts = OpenOptions {
        limit_upload: Some(1 << 30),
        limit_download: Some(1 << 30),
        ..OpenOptions::default()
    };
    Fixture {
        store: loc.open(&opts).unwrap(),
        _dir: Some(dir),
    }
}

struct ServerEnv(HashMap<&'static str, String>);

impl Env for ServerEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

fn server_env() -> ServerEnv {
    let server = testbed::s3::shared();
    ServerEnv(HashMap::from([
        ("AWS_ACCESS_KEY_ID", server.access_key.clone()),
        ("AWS_SECRET_ACCESS_KEY", server.secret_key.clone()),
        ("AWS_DEFAULT_REGION", server.region.clone()),
    ]))
}

/// Every test gets its own prefix in one shared bucket: buckets are
/// collections with their own volumes in SeaweedFS, prefixes cost nothing.
const BUCKET: &str = "conformance";

async fn s3() -> Fixture {
    let server = testbed::s3::shared();
    let loc: Location = format!("s3:{}/{BUCKET}/{}", server.endpoint, random_name("t"))
        .parse()
        .unwrap();
    let store = loc
        .open_with_env(&OpenOptions::default(), &server_env())
        .unwrap();
    store.create(false).await.unwrap();
    Fixture { store, _dir: None }
}

/// An S3Store directly (for its inherent version and retention methods).
fn s3_direct(bucket: &str, lock_days: Option<u32>) -> S3Store {
    let server = testbed::s3::shared();
    S3Store::new(S3Config {
        endpoint: server.endpoint.clone(),
        bucket: bucket.to_owned(),
        prefix: "repo".into(),
        region: server.region.clone(),
        access_key: server.access_key.clone(),
        secret_key: Secret::new(server.secret_key.clone()),
        lock_days,
    })
}

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

async fn keys(store: &dyn Store, prefix: &str) -> BTreeSet<String> {
    store
        .list(prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect()
}

/// The behaviours every backend shares.
mod behaviour {
    use super::*;

    pub async fn put_get_overwrite(s: &dyn Store) {
        s.put("config", b("one")).await.unwrap();
        assert_eq!(s.get("config").await.unwrap(), b("one"));
        s.put("config", b("second value")).await.unwrap();
        assert_eq!(s.get("config").await.unwrap(), b("second value"));
        s.put("empty", Bytes::new()).await.unwrap();
        assert_eq!(s.get("empty").await.unwrap(), Bytes::new());
        let big = pattern(5 << 20, 7);
        s.put("data/ab/big", big.clone()).await.unwrap();
        assert_eq!(s.get("data/ab/big").await.unwrap(), big);
    }

    pub async fn get_range(s: &dyn Store) {
        let data = pattern(100, 1);
        s.put("packs/p", data.clone()).await.unwrap();
        assert_eq!(
            s.get_range("packs/p", 10, 20).await.unwrap(),
            data.slice(10..30)
        );
        assert_eq!(s.get_range("packs/p", 0, 100).await.unwrap(), data);
        assert_eq!(
            s.get_range("packs/p", 99, 1).await.unwrap(),
            data.slice(99..)
        );
        assert_eq!(s.get_range("packs/p", 100, 0).await.unwrap(), Bytes::new());
        for (offset, len) in [(90, 20), (100, 1), (101, 0), (500, 10), (0, 101)] {
            match s.get_range("packs/p", offset, len).await {
                Err(StoreError::Truncated { key, .. }) => assert_eq!(key, "packs/p"),
                other => panic!("range {offset}+{len} of 100 bytes: {other:?}"),
            }
        }
        assert!(s
            .get_range("packs/none", 0, 1)
            .await
            .unwrap_err()
            .is_not_found());
    }

    /// A range as pieces: they add up to the range; a range past the end
    /// ends the stream with Truncated (at once or after the pieces there are).
    pub async fn get_range_stream(s: &dyn Store) {
        let data = pattern(3_000_000, 5);
        s.put("packs/r", data.clone()).await.unwrap();
        let read = |off: u64, len: u64| async move {
            let pieces: Vec<Bytes> = s.get_range_stream("packs/r", off, len).await?.try_collect().await?;
            Ok::<_, StoreError>(pieces.concat())
        };
        assert_eq!(read(7, 2_999_000).await.unwrap(), &data[7..2_999_007]);
        assert_eq!(read(2_999_990, 10).await.unwrap(), &data[2_999_990..]);
        assert!(read(3_000_000, 0).await.unwrap().is_empty());
        match read(2_999_990, 20).await {
            Err(StoreError::Truncated { key, .. }) => assert_eq!(key, "packs/r"),
            other => panic!("range past the end: {:?}", other.map(|v| v.len())),
        }
        assert!(read(0, 0).await.is_ok());
        match s.get_range_stream("packs/none", 0, 1).await {
            Err(e) => assert!(e.is_not_found(), "{e}"),
            Ok(st) => assert!(st.try_collect::<Vec<_>>().await.unwrap_err().is_not_found()),
        }
    }

    pub async fn head(s: &dyn Store) {
        assert_eq!(s.head("index/missing").await.unwrap(), None);
        let before = Utc::now() - Duration::minutes(10);
        s.put("index/i1", pattern(1234, 2)).await.unwrap();
        let meta = s.head("index/i1").await.unwrap().expect("present");
        assert_eq!(meta.key, "index/i1");
        assert_eq!(meta.size, 1234);
        let modified = meta.modified.expect("mtime reported");
        assert!(modified > before && modified < Utc::now() + Duration::minutes(10));
    }

    pub async fn list_prefixes(s: &dyn Store) {
        let all = [
            "config",
            "data/00/a",
            "data/01/b",
            "data/011",
            "index/x",
            "snapshots/y",
        ];
        for (i, key) in all.iter().enumerate() {
            s.put(key, pattern(i + 1, 0)).await.unwrap();
        }
        let set = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(keys(s, "").await, set(&all));
        assert_eq!(
            keys(s, "data/").await,
            set(&["data/00/a", "data/01/b", "data/011"])
        );
        assert_eq!(keys(s, "data/01").await, set(&["data/01/b", "data/011"]));
        assert_eq!(keys(s, "data/01/").await, set(&["data/01/b"]));
        assert_eq!(keys(s, "conf").await, set(&["config"]));
        assert!(keys(s, "nothing/").await.is_empty());
        // A prefix that is a "directory" (local, SeaweedFS's filer) is no object.
        assert_eq!(s.head("data/01").await.unwrap(), None);
        assert!(s.get("data/01").await.unwrap_err().is_not_found());
        s.delete("data/01").await.unwrap();
        assert_eq!(keys(s, "data/01/").await, set(&["data/01/b"]));
        let listed = s.list("data/").await.unwrap();
        let b = listed.iter().find(|m| m.key == "data/01/b").unwrap();
        assert_eq!(b.size, 3);
        assert!(b.modified.is_some());
    }

    pub async fn list_many(s: &dyn Store) {
        // More than one S3 listing page (1000 keys).
        let want: BTreeSet<String> = (0..1100)
            .map(|i| format!("many/{:02x}/{i:05}", i % 256))
            .collect();
        stream::iter(want.iter())
            .map(|k| s.put(k, Bytes::from(k.clone())))
            .buffer_unordered(32)
            .try_collect::<Vec<()>>()
            .await
            .unwrap();
        s.put("other", b("x")).await.unwrap();
        let listed = s.list("many/").await.unwrap();
        assert_eq!(listed.len(), 1100, "duplicates or gaps in paging");
        assert_eq!(
            listed
                .iter()
                .map(|m| m.key.clone())
                .collect::<BTreeSet<_>>(),
            want
        );
        assert!(listed.iter().all(|m| m.size == m.key.len() as u64));
    }

    pub async fn delete(s: &dyn Store) {
        s.put("locks/l1", b("lock")).await.unwrap();
        s.put("locks/l2", b("lock")).await.unwrap();
        s.delete("locks/l1").await.unwrap();
        assert!(s.get("locks/l1").await.unwrap_err().is_not_found());
        assert_eq!(s.head("locks/l1").await.unwrap(), None);
        assert_eq!(
            keys(s, "locks/").await,
            BTreeSet::from(["locks/l2".to_string()])
        );
        s.delete("locks/l1").await.unwrap();
        s.delete("locks/never-existed").await.unwrap();
    }

    pub async fn delete_many(s: &dyn Store) {
        // Three S3 DeleteObjects batches (1,000 keys each), with 300 keys
        // that never existed among them.
        let present: Vec<String> = (0..2200)
            .map(|i| format!("gone/{:02x}/{i:05}", i % 256))
            .collect();
        stream::iter(present.iter())
            .map(|k| s.put(k, b("x")))
            .buffer_unordered(32)
            .try_collect::<Vec<()>>()
            .await
            .unwrap();
        for k in ["gone-not/a", "gonea", "kept/b"] {
            s.put(k, b("y")).await.unwrap();
        }
        let mut doomed = present.clone();
        doomed.extend((0..300).map(|i| format!("gone/missing/{i}")));
        assert_eq!(doomed.len(), 2500);
        s.delete_many(&doomed).await.unwrap();
        assert!(s.list("gone/").await.unwrap().is_empty());
        assert_eq!(
            keys(s, "").await,
            BTreeSet::from(["gone-not/a", "gonea", "kept/b"].map(String::from))
        );
        // Again (all missing now), and nothing at all: no error.
        s.delete_many(&doomed[..10]).await.unwrap();
        s.delete_many(&[]).await.unwrap();
    }

    pub async fn not_found(s: &dyn Store) {
        match s.get("keys/missing").await {
            Err(StoreError::NotFound { key }) => assert_eq!(key, "keys/missing"),
            other => panic!("{other:?}"),
        }
    }

    pub async fn concurrent_puts(s: &dyn Store) {
        // Distinct keys from many tasks at once.
        stream::iter(0..64u8)
            .map(|i| async move { s.put(&format!("par/{i}"), pattern(4096, i)).await })
            .buffer_unordered(64)
            .try_collect::<Vec<()>>()
            .await
            .unwrap();
        for i in 0..64u8 {
            assert_eq!(s.get(&format!("par/{i}")).await.unwrap(), pattern(4096, i));
        }
        // Racing writers of one key: the survivor is one whole value.
        let values: Vec<Bytes> = (0..16u8).map(|i| pattern(256 << 10, i)).collect();
        stream::iter(values.iter().cloned())
            .map(|v| s.put("race", v))
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await
            .unwrap();
        let got = s.get("race").await.unwrap();
        assert!(values.contains(&got), "a mix of concurrent writes");
    }
}

macro_rules! conformance {
    ($backend:ident, $fixture:expr) => {
        mod $backend {
            use super::*;
            conformance!(@tests $fixture; put_get_overwrite, get_range, get_range_stream, head, list_prefixes,
                list_many, delete, delete_many, not_found, concurrent_puts);
        }
    };
    (@tests $fixture:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let fixture = $fixture;
                behaviour::$name(&*fixture.store).await;
            }
        )*
    };
}

conformance!(local, local());
conformance!(local_throttled, local_throttled());
conformance!(s3, s3().await);

#[tokio::test]
async fn local_capabilities_and_no_retention() {
    let f = local();
    let caps = f.store.capabilities();
    assert!(caps.range_reads && !caps.retention);
    f.store.put("k", b("v")).await.unwrap();
    assert!(matches!(
        f.store.retain("k", Utc::now()).await,
        Err(StoreError::Unsupported { .. })
    ));
    assert!(matches!(
        f.store.create(true).await,
        Err(StoreError::Unsupported { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_bucket_is_created_on_demand() {
    let server = testbed::s3::shared();
    let bucket = random_name("auto-");
    let loc: Location = format!("s3:{}/{bucket}", server.endpoint).parse().unwrap();
    let store = loc
        .open_with_env(&OpenOptions::default(), &server_env())
        .unwrap();
    assert!(store.capabilities().retention);
    // Before create the bucket does not exist: nothing to list, nothing to get.
    assert!(store.list("").await.unwrap().is_empty());
    assert!(store.get("config").await.unwrap_err().is_not_found());
    store.create(false).await.unwrap();
    store.create(false).await.unwrap(); // an existing bucket is fine
    store.put("config", b("c")).await.unwrap();
    assert_eq!(store.get("config").await.unwrap(), b("c"));
    // Asking for Object Lock on a bucket made without it must not pass silently.
    assert!(matches!(
        store.create(true).await,
        Err(StoreError::Unsupported { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_wrong_secret_is_denied() {
    let server = testbed::s3::shared();
    let store = S3Store::new(S3Config {
        secret_key: Secret::new("not-the-secret"),
        ..s3_direct(BUCKET, None).config().clone()
    });
    match store.get("anything").await {
        Err(StoreError::Denied { key, .. }) => assert_eq!(key, "anything"),
        other => panic!("{other:?} from {}", server.endpoint),
    }
    // A refused DeleteObjects request fails for every key it carried.
    let doomed: Vec<String> = (0..3).map(|i| format!("index/{i}")).collect();
    let undeleted = store.delete_many(&doomed).await.unwrap_err();
    assert_eq!(undeleted.keys().collect::<Vec<_>>(), doomed);
    assert!(
        matches!(undeleted.failures[0].error, StoreError::Denied { .. }),
        "{undeleted:?}"
    );
    assert!(!undeleted.is_temporary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_object_lock_refuses_version_deletion_and_extends_retention() {
    let bucket = random_name("locked-");
    let store = Arc::new(s3_direct(&bucket, Some(1)));
    store.create(true).await.unwrap();
    store.create(true).await.unwrap(); // existing locked bucket: fine

    let data = pattern(10_000, 9);
    let start = Utc::now();
    store.put("data/ab/pack", data.clone()).await.unwrap();
    let until = store
        .retention("data/ab/pack")
        .await
        .unwrap()
        .expect("retention set by put");
    assert!(
        until > start + Duration::hours(23) && until < start + Duration::hours(25),
        "{until}"
    );

    let versions = store.list_versions("data/ab/pack").await.unwrap();
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert_eq!(versions[0].key, "data/ab/pack");
    let version = versions[0].version_id.clone();

    // What a thief with the credentials would do: delete the version itself.
    match store.delete_version("data/ab/pack", &version).await {
        Err(StoreError::Denied { key, .. }) => assert_eq!(key, "data/ab/pack"),
        other => panic!("deleting a locked version: {other:?}"),
    }
    assert_eq!(store.get("data/ab/pack").await.unwrap(), data);

    // retain extends, and never shortens.
    let later = Utc::now() + Duration::days(3);
    store.retain("data/ab/pack", later).await.unwrap();
    let got = store.retention("data/ab/pack").await.unwrap().unwrap();
    assert!((got - later).num_seconds().abs() <= 1, "{got} vs {later}");
    store
        .retain("data/ab/pack", Utc::now() + Duration::hours(1))
        .await
        .unwrap();
    let kept = store.retention("data/ab/pack").await.unwrap().unwrap();
    assert_eq!(kept, got, "retention was shortened");

    // An object written without retention gets its first one from retain.
    let unlocked = s3_direct(&bucket, None);
    unlocked.put("index/plain", b("i")).await.unwrap();
    assert_eq!(unlocked.retention("index/plain").await.unwrap(), None);
    unlocked.retain("index/plain", later).await.unwrap();
    let first = unlocked.retention("index/plain").await.unwrap().unwrap();
    assert!(
        (first - later).num_seconds().abs() <= 1,
        "{first} vs {later}"
    );

    // A plain delete only hides the object behind a delete marker; the locked
    // version stays, still undeletable.
    store.delete("data/ab/pack").await.unwrap();
    assert!(store.get("data/ab/pack").await.unwrap_err().is_not_found());
    let versions = store.list_versions("data/ab/pack").await.unwrap();
    assert!(versions.iter().any(|v| v.delete_marker), "{versions:?}");
    assert!(versions
        .iter()
        .any(|v| v.version_id == version && !v.delete_marker));
    assert!(matches!(
        store.delete_version("data/ab/pack", &version).await,
        Err(StoreError::Denied { .. })
    ));
}

/// `delete_many` (DeleteObjects) on an Object Lock bucket does what `delete`
/// does: a delete marker hides each object, the locked versions stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_object_lock_delete_many_leaves_delete_markers() {
    let bucket = random_name("locked-");
    let store = s3_direct(&bucket, Some(1));
    store.create(true).await.unwrap();
    let doomed: Vec<String> = (0..3).map(|i| format!("snapshots/{i}")).collect();
    for k in &doomed {
        store.put(k, b("s")).await.unwrap();
    }
    store.put("snapshots/kept", b("k")).await.unwrap();
    let mut with_missing = doomed.clone();
    with_missing.push("snapshots/never".into());
    store.delete_many(&with_missing).await.unwrap();
    assert_eq!(
        keys(&store, "snapshots/").await,
        BTreeSet::from(["snapshots/kept".to_string()])
    );
    let versions = store.list_versions("snapshots/").await.unwrap();
    for k in &doomed {
        let of_key: Vec<_> = versions.iter().filter(|v| &v.key == k).collect();
        assert!(
            of_key.iter().any(|v| v.delete_marker && v.is_latest),
            "{versions:?}"
        );
        let locked = of_key
            .iter()
            .find(|v| !v.delete_marker)
            .expect("the locked version stays");
        assert!(matches!(
            store.delete_version(k, &locked.version_id).await,
            Err(StoreError::Denied { .. })
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_is_a_temporary_error_after_bounded_retries() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = testbed::s3::S3Server::start(dir.path()).unwrap();
    let env = ServerEnv(HashMap::from([
        ("AWS_ACCESS_KEY_ID", server.access_key.clone()),
        ("AWS_SECRET_ACCESS_KEY", server.secret_key.clone()),
    ]));
    let opts = OpenOptions {
        retry: tidemark_store::RetryPolicy {
            max_attempts: 3,
            initial_delay: std::time::Duration::from_millis(20),
            max_delay: std::time::Duration::from_millis(100),
        },
        ..OpenOptions::default()
    };
    let loc: Location = format!("s3:{}/outage/repo", server.endpoint)
        .parse()
        .unwrap();
    let store = loc.open_with_env(&opts, &env).unwrap();
    store.create(false).await.unwrap();
    store.put("config", b("c")).await.unwrap();

    server.stop().unwrap();
    let err = store.get("config").await.unwrap_err();
    assert!(err.is_temporary(), "{err:?}");
    assert!(
        matches!(&err, StoreError::Service { key, .. } if key == "config"),
        "{err:?}"
    );
}
