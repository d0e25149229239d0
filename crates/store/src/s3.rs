//! Any S3-compatible object store as a [`Store`] (aws-sdk-s3, path-style
//! addressing so plain `http://127.0.0.1:PORT` endpoints work).
//!
//! Object Lock: with `lock_days` set, every `put` carries COMPLIANCE
//! retention until now + `lock_days`, and `retain` extends (never shortens)
//! the date of the current version. The SDK's own retries are disabled: the
//! `retry` wrapper owns that policy, and two nested layers would multiply.
//!
//! `delete_many` sends `DeleteObjects` (up to 1,000 keys a request) without
//! version ids: on a versioned (Object Lock) bucket each key gets a delete
//! marker, exactly as a single `delete` does, and locked versions stay.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CreateBucketConfiguration, Delete, ObjectIdentifier,
    ObjectLockEnabled, ObjectLockMode, ObjectLockRetention, ObjectLockRetentionMode,
};
use aws_sdk_s3::Client;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use md5::{Digest, Md5};

use futures::StreamExt;

use crate::{Capabilities, ObjectMeta, RangeStream, Result, Store, StoreError, Undeleted};

mod config;
mod errors;
mod versions;

/// Keys per `DeleteObjects` request: the S3 limit.
const KEYS_PER_DELETE: usize = 1000;
/// `DeleteObjects` requests in flight: each removes up to 1,000 keys, so a
/// few cover any repository's snapshot or index files at once.
const DELETE_REQUESTS_IN_FLIGHT: usize = 4;

pub use config::{S3Config, Secret};
use errors::{classify, Kind};
pub use versions::ObjectVersion;

pub struct S3Store {
    client: Client,
    config: S3Config,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The SDK client is left out: its config holds the credentials.
        f.debug_struct("S3Store")
            .field("endpoint", &self.config.endpoint)
            .field("bucket", &self.config.bucket)
            .field("prefix", &self.config.prefix)
            .field("lock_days", &self.config.lock_days)
            .finish_non_exhaustive()
    }
}

/// How long one attempt may wait for its answer: a request on a stalled
/// connection (one that takes bytes and never answers) fails after this and
/// is retried, instead of waiting for the kernel to give up. The answer to a
/// GET is its headers (the SDK's stalled-stream guard watches the body);
/// an upload gets this plus [`UPLOAD_MIN_RATE`] for its bytes.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// The slowest upload an attempt allows for: a 16 MiB pack gets 60 s more.
const UPLOAD_MIN_RATE: u64 = 256 * 1024;

fn attempt_timeouts(answer_within: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(10))
        .operation_attempt_timeout(answer_within)
        .build()
}

/// The attempt timeout of an upload of `bytes`.
fn upload_within(bytes: u64) -> Duration {
    ANSWER_WITHIN + Duration::from_secs(bytes / UPLOAD_MIN_RATE)
}

/// A response body that broke off: temporary (the connection, not the
/// object, failed).
fn body_error(key: &str, e: aws_smithy_types::byte_stream::error::Error) -> StoreError {
    StoreError::Service {
        key: key.to_owned(),
        message: format!("reading the response body: {e}"),
        temporary: true,
        source: Some(Box::new(e)),
    }
}

/// A range that ends past the object's end.
fn truncated(key: &str, offset: u64, len: u64) -> StoreError {
    StoreError::Truncated { key: key.to_owned(), offset, len }
}

impl S3Store {
    /// The body of `len` bytes at `offset`; None for an empty range that
    /// exists (HTTP cannot express an empty range: the size decides).
    async fn range_body(&self, key: &str, offset: u64, len: u64) -> Result<Option<ByteStream>> {
        let end = offset.checked_add(len).ok_or_else(|| truncated(key, offset, len))?;
        if len == 0 {
            return match self.head(key).await? {
                Some(meta) if meta.size >= end => Ok(None),
                Some(_) => Err(truncated(key, offset, len)),
                None => Err(StoreError::NotFound { key: key.to_owned() }),
            };
        }
        let answer = self
            .client
            .get_object()
            .bucket(&self.config.bucket)
            .key(self.full_key(key))
            .range(format!("bytes={offset}-{}", end - 1))
            .send()
            .await;
        match answer {
            Ok(out) => Ok(Some(out.body)),
            Err(e) => Err(match classify(e) {
                Kind::InvalidRange => truncated(key, offset, len),
                other => other.into_error(key),
            }),
        }
    }

    pub fn new(config: S3Config) -> Self {
        let credentials = Credentials::new(
            &config.access_key,
            config.secret_key.expose(),
            None,
            None,
            "tidemark",
        );
        let timeouts = attempt_timeouts(ANSWER_WITHIN);
        let sdk = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&config.endpoint)
            .region(Region::new(config.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(true)
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts)
            .build();
        S3Store {
            client: Client::from_conf(sdk),
            config,
        }
    }

    pub fn config(&self) -> &S3Config {
        &self.config
    }

    fn full_key(&self, key: &str) -> String {
        if self.config.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.config.prefix)
        }
    }

    fn relative<'a>(&self, full: &'a str) -> &'a str {
        if self.config.prefix.is_empty() {
            full
        } else {
            full.strip_prefix(&self.config.prefix)
                .and_then(|k| k.strip_prefix('/'))
                .unwrap_or(full)
        }
    }

    /// One `DeleteObjects` request (Quiet: the answer lists only failures);
    /// a request that fails as a whole fails for all its keys.
    async fn delete_batch(&self, keys: &[String]) -> Result<(), Undeleted> {
        let mut undeleted = Undeleted::default();
        let whole = |e: StoreError| Undeleted {
            failures: vec![crate::DeleteFailure {
                keys: keys.to_vec(),
                error: e,
            }],
        };
        let build_error = |e: aws_smithy_types::error::operation::BuildError| StoreError::Service {
            key: keys[0].clone(),
            message: format!("building the DeleteObjects request: {e}"),
            temporary: false,
            source: Some(Box::new(e)),
        };
        let objects = keys
            .iter()
            .map(|k| ObjectIdentifier::builder().key(self.full_key(k)).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| whole(build_error(e)))?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| whole(build_error(e)))?;
        let answer = self
            .client
            .delete_objects()
            .bucket(&self.config.bucket)
            .delete(delete)
            .customize()
            .mutate_request(add_content_md5)
            .send()
            .await;
        let out = match answer {
            Ok(out) => out,
            Err(e) => {
                return match classify(e) {
                    // No bucket: nothing of it is there (as `delete` has it).
                    Kind::NotFound => Ok(()),
                    // Named by the batch's first key; the failure lists all.
                    other => Err(whole(other.into_error(&keys[0]))),
                };
            }
        };
        for e in out.errors() {
            let code = e.code().unwrap_or_default();
            let message = e.message().unwrap_or_default();
            let Some(full) = e.key() else {
                // A failure we cannot place: none of the batch is sure gone.
                match errors::delete_error(&keys[0], code, message) {
                    None => continue,
                    Some(error) => return Err(whole(error)),
                }
            };
            let key = self.relative(full);
            if let Some(error) = errors::delete_error(key, code, message) {
                undeleted.push(vec![key.to_owned()], error);
            }
        }
        undeleted.into_result()
    }

    async fn bucket_exists(&self) -> Result<bool> {
        let bucket = &self.config.bucket;
        match self.client.head_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(true),
            Err(e) => match classify(e) {
                Kind::NotFound => Ok(false),
                other => Err(other.into_error(bucket)),
            },
        }
    }
}

/// S3 refuses a `DeleteObjects` without an integrity header. The SDK adds a
/// CRC32 checksum, which AWS and SeaweedFS accept; stores such as MinIO and
/// Ceph insist on `Content-MD5`, which the SDK no longer sends, so it is
/// added here too (of a body of at most 1,000 keys: ~100 KB, well under a
/// millisecond of hashing).
fn add_content_md5(req: &mut aws_sdk_s3::config::http::HttpRequest) {
    if let Some(body) = req.body().bytes() {
        let md5 = aws_smithy_types::base64::encode(Md5::digest(body).as_slice());
        req.headers_mut().insert("content-md5", md5);
    }
}

fn to_chrono(t: &aws_sdk_s3::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

fn to_smithy(t: DateTime<Utc>) -> aws_sdk_s3::primitives::DateTime {
    aws_sdk_s3::primitives::DateTime::from_secs_and_nanos(t.timestamp(), t.timestamp_subsec_nanos())
}

fn size_of(len: Option<i64>) -> u64 {
    len.and_then(|l| u64::try_from(l).ok()).unwrap_or(0)
}

#[async_trait]
impl Store for S3Store {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            retention: true,
            range_reads: true,
            remote: true,
        }
    }

    fn describe(&self) -> String {
        let mut s = format!("s3:{}/{}", self.config.endpoint, self.config.bucket);
        if !self.config.prefix.is_empty() {
            s.push('/');
            s.push_str(&self.config.prefix);
        }
        s
    }

    async fn create(&self, object_lock: bool) -> Result<()> {
        let bucket = &self.config.bucket;
        if !self.bucket_exists().await? {
            let mut req = self
                .client
                .create_bucket()
                .bucket(bucket)
                .object_lock_enabled_for_bucket(object_lock);
            // us-east-1 is the one region that must not be named here.
            if self.config.region != "us-east-1" {
                req = req.create_bucket_configuration(
                    CreateBucketConfiguration::builder()
                        .location_constraint(BucketLocationConstraint::from(
                            self.config.region.as_str(),
                        ))
                        .build(),
                );
            }
            match req.send().await {
                Ok(_) => return Ok(()),
                Err(e) => match classify(e) {
                    // Someone else created it in the meantime; check it below.
                    Kind::BucketExists => {}
                    other => return Err(other.into_error(bucket)),
                },
            }
        }
        if object_lock {
            let conf = self
                .client
                .get_object_lock_configuration()
                .bucket(bucket)
                .send()
                .await;
            let enabled = match conf {
                Ok(out) => {
                    out.object_lock_configuration()
                        .and_then(|c| c.object_lock_enabled())
                        == Some(&ObjectLockEnabled::Enabled)
                }
                Err(e) => match classify(e) {
                    Kind::NoRetention => false,
                    other => return Err(other.into_error(bucket)),
                },
            };
            if !enabled {
                return Err(StoreError::Unsupported {
                    what: format!("object lock on existing bucket {bucket} (created without it)"),
                    store: self.describe(),
                });
            }
        }
        Ok(())
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.config.bucket)
            .key(self.full_key(key))
            .content_length(data.len() as i64);
        if let Some(days) = self.config.lock_days {
            // S3 refuses a locked put without an integrity header. Hashing is
            // CPU work: off the async threads.
            let body = data.clone();
            let md5 = tokio::task::spawn_blocking(move || Md5::digest(&body))
                .await
                .map_err(|e| StoreError::Io {
                    key: key.to_owned(),
                    source: std::io::Error::other(e),
                })?;
            let until = Utc::now() + chrono::Duration::days(i64::from(days));
            req = req
                .content_md5(aws_smithy_types::base64::encode(md5.as_slice()))
                .object_lock_mode(ObjectLockMode::Compliance)
                .object_lock_retain_until_date(to_smithy(until));
        }
        let within = upload_within(data.len() as u64);
        req.body(ByteStream::from(data))
            .customize()
            .config_override(aws_sdk_s3::Config::builder().timeout_config(attempt_timeouts(within)))
            .send()
            .await
            .map_err(|e| classify(e).into_error(key))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let out = self
            .client
            .get_object()
            .bucket(&self.config.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| classify(e).into_error(key))?;
        errors::collect(key, out.body).await
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes> {
        let Some(body) = self.range_body(key, offset, len).await? else {
            return Ok(Bytes::new());
        };
        let data = errors::collect(key, body).await?;
        // A range past the end is served short, not refused.
        if (data.len() as u64) < len {
            return Err(truncated(key, offset, len));
        }
        Ok(data)
    }

    async fn get_range_stream(&self, key: &str, offset: u64, len: u64) -> Result<RangeStream> {
        let Some(body) = self.range_body(key, offset, len).await? else {
            return Ok(futures::stream::empty().boxed());
        };
        // (body, bytes so far); a short body ends with Truncated.
        let key = key.to_owned();
        let pieces = futures::stream::unfold(Some((body, 0u64)), move |state| {
            let key = key.clone();
            async move {
                let (mut body, got) = state?;
                match body.next().await {
                    Some(Ok(piece)) => {
                        let got = got + piece.len() as u64;
                        Some((Ok(piece), Some((body, got))))
                    }
                    Some(Err(e)) => Some((Err(body_error(&key, e)), None)),
                    None if got < len => Some((Err(truncated(&key, offset, len)), None)),
                    None => None,
                }
            }
        });
        Ok(pieces.boxed())
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let answer = self
            .client
            .head_object()
            .bucket(&self.config.bucket)
            .key(self.full_key(key))
            .send()
            .await;
        match answer {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.to_owned(),
                size: size_of(out.content_length()),
                modified: out.last_modified().and_then(to_chrono),
            })),
            Err(e) => match classify(e) {
                Kind::NotFound => Ok(None),
                other => Err(other.into_error(key)),
            },
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.config.bucket)
            .prefix(self.full_key(prefix))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = match page {
                Ok(page) => page,
                Err(e) => match classify(e) {
                    // Like a missing directory: nothing under the prefix.
                    Kind::NotFound => return Ok(Vec::new()),
                    other => return Err(other.into_error(prefix)),
                },
            };
            for obj in page.contents() {
                let Some(full) = obj.key() else { continue };
                // Some stores (SeaweedFS) list directory entries as keys
                // ending in '/'; they are not objects.
                if full.ends_with('/') {
                    continue;
                }
                out.push(ObjectMeta {
                    key: self.relative(full).to_owned(),
                    size: size_of(obj.size()),
                    modified: obj.last_modified().and_then(to_chrono),
                });
            }
        }
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let answer = self
            .client
            .delete_object()
            .bucket(&self.config.bucket)
            .key(self.full_key(key))
            .send()
            .await;
        match answer {
            Ok(_) => Ok(()),
            Err(e) => match classify(e) {
                Kind::NotFound => Ok(()),
                other => Err(other.into_error(key)),
            },
        }
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), Undeleted> {
        // Futures made first, as in the trait's default.
        let batches: Vec<_> = keys
            .chunks(KEYS_PER_DELETE)
            .map(|batch| self.delete_batch(batch))
            .collect();
        let mut batches =
            futures::stream::iter(batches).buffer_unordered(DELETE_REQUESTS_IN_FLIGHT);
        let mut undeleted = Undeleted::default();
        while let Some(result) = batches.next().await {
            if let Err(u) = result {
                undeleted.extend(u);
            }
        }
        undeleted.into_result()
    }

    async fn retain(&self, key: &str, until: DateTime<Utc>) -> Result<()> {
        if let Some(current) = self.retention(key).await? {
            if current >= until {
                return Ok(());
            }
        }
        let retention = ObjectLockRetention::builder()
            .mode(ObjectLockRetentionMode::Compliance)
            .retain_until_date(to_smithy(until))
            .build();
        self.client
            .put_object_retention()
            .bucket(&self.config.bucket)
            .key(self.full_key(key))
            .retention(retention)
            .send()
            .await
            .map_err(|e| classify(e).into_error(key))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store on a loopback endpoint of a test's own, bucket `b`.
    fn local_store(endpoint: String, prefix: &str) -> S3Store {
        S3Store::new(S3Config {
            endpoint,
            bucket: "b".into(),
            prefix: prefix.into(),
            region: "us-east-1".into(),
            access_key: "a".into(),
            secret_key: Secret::new("s"),
            lock_days: None,
        })
    }

    #[test]
    fn secrets_stay_out_of_debug_and_describe() {
        let store = S3Store::new(S3Config {
            endpoint: "http://127.0.0.1:9".into(),
            bucket: "b".into(),
            prefix: "p/q".into(),
            region: "us-east-1".into(),
            access_key: "AKIDVISIBLE".into(),
            secret_key: Secret::new("very-secret-value"),
            lock_days: None,
        });
        let shown = format!("{store:?} {} {:?}", store.describe(), store.config());
        assert!(!shown.contains("very-secret-value"), "{shown}");
        assert_eq!(store.describe(), "s3:http://127.0.0.1:9/b/p/q");
        assert_eq!(store.full_key("config"), "p/q/config");
        assert_eq!(store.relative("p/q/data/ab"), "data/ab");
    }

    /// A server that takes requests and never answers (a stalled
    /// connection): each attempt gives up after its deadline, as a
    /// temporary error (so the retry wrapper tries again). Paused time: the
    /// clock jumps while the runtime waits on the silent socket.
    #[tokio::test(start_paused = true)]
    async fn a_request_that_is_never_answered_times_out_as_temporary() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 1 << 16];
                    while tokio::io::AsyncReadExt::read(&mut sock, &mut buf).await.map(|n| n > 0).unwrap_or(false) {}
                });
            }
        });
        let store = local_store(endpoint, "");
        let t0 = tokio::time::Instant::now();
        let err = store.head("config").await.unwrap_err();
        assert!(err.is_temporary(), "{err:?}");
        let waited = t0.elapsed();
        assert!(waited >= ANSWER_WITHIN && waited < ANSWER_WITHIN * 2, "{waited:?}");
        // An upload gets time for its bytes on top.
        let t0 = tokio::time::Instant::now();
        let err = store.put("data/x", Bytes::from(vec![7u8; 4 << 20])).await.unwrap_err();
        assert!(err.is_temporary(), "{err:?}");
        let waited = t0.elapsed();
        assert!(waited >= upload_within(4 << 20) && waited < upload_within(4 << 20) + ANSWER_WITHIN, "{waited:?}");
        assert_eq!(upload_within(16 << 20), Duration::from_secs(124));
    }

    #[test]
    fn delete_objects_errors_map_by_code() {
        assert!(
            errors::delete_error("k", "NoSuchKey", "gone").is_none(),
            "missing counts as deleted"
        );
        let denied = errors::delete_error("k", "AccessDenied", "locked").unwrap();
        assert!(
            matches!(&denied, StoreError::Denied { key, .. } if key == "k"),
            "{denied:?}"
        );
        assert!(errors::delete_error("k", "SlowDown", "")
            .unwrap()
            .is_temporary());
        assert!(errors::delete_error("k", "InternalError", "")
            .unwrap()
            .is_temporary());
        let other = errors::delete_error("k", "InvalidArgument", "bad").unwrap();
        assert!(!other.is_temporary());
        assert!(
            other.to_string().contains("InvalidArgument: bad"),
            "{other}"
        );
    }

    /// Serves one request on `listener` with `answer` (XML, status 200);
    /// returns the request's head (lower-cased) and body.
    async fn serve_one(listener: tokio::net::TcpListener, answer: &str) -> (String, Vec<u8>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let (head, body_start) = loop {
            let mut piece = [0u8; 8192];
            let n = conn.read(&mut piece).await.unwrap();
            assert!(n > 0, "connection closed mid-request");
            buf.extend_from_slice(&piece[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break (String::from_utf8_lossy(&buf[..end]).to_lowercase(), end + 4);
            }
        };
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .expect("a content-length");
        while buf.len() < body_start + len {
            let mut piece = [0u8; 8192];
            let n = conn.read(&mut piece).await.unwrap();
            assert!(n > 0, "connection closed mid-body");
            buf.extend_from_slice(&piece[..n]);
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
            answer.len()
        );
        conn.write_all(reply.as_bytes()).await.unwrap();
        (head, buf[body_start..body_start + len].to_vec())
    }

    /// What a real server does not show: the request carries a correct
    /// Content-MD5 (SeaweedFS ignores it, MinIO requires it), and the
    /// answer's per-key errors become the undeleted keys, a missing key
    /// counting as deleted.
    #[tokio::test]
    async fn delete_objects_sends_content_md5_and_maps_each_key_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let store = local_store(format!("http://{}", listener.local_addr().unwrap()), "p");
        let answer = r#"<?xml version="1.0" encoding="UTF-8"?>
<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
<Error><Key>p/snapshots/a</Key><Code>AccessDenied</Code><Message>locked</Message></Error>
<Error><Key>p/snapshots/b</Key><Code>NoSuchKey</Code><Message>gone</Message></Error>
<Error><Key>p/snapshots/c</Key><Code>SlowDown</Code><Message>later</Message></Error>
</DeleteResult>"#;
        let server = tokio::spawn(serve_one(listener, answer));
        let keys: Vec<String> = ["a", "b", "c", "d"]
            .iter()
            .map(|k| format!("snapshots/{k}"))
            .collect();
        let undeleted = store.delete_many(&keys).await.unwrap_err();
        let (head, body) = server.await.unwrap();

        let md5 = aws_smithy_types::base64::encode(Md5::digest(&body).as_slice()).to_lowercase();
        assert!(head.contains(&format!("content-md5: {md5}")), "{head}");
        let body = String::from_utf8(body).unwrap();
        assert!(body.contains("<Quiet>true</Quiet>"), "{body}");
        assert!(
            keys.iter()
                .all(|k| body.contains(&format!("<Key>p/{k}</Key>"))),
            "{body}"
        );

        assert_eq!(
            undeleted.keys().collect::<Vec<_>>(),
            ["snapshots/a", "snapshots/c"]
        );
        let errors: Vec<&StoreError> = undeleted.failures.iter().map(|f| &f.error).collect();
        assert!(
            matches!(errors[0], StoreError::Denied { key, .. } if key == "snapshots/a"),
            "{errors:?}"
        );
        assert!(errors[1].is_temporary(), "{errors:?}");
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_a_temporary_error() {
        // Port 9 (discard) on loopback: nothing listens, the connect fails.
        let store = local_store("http://127.0.0.1:9".into(), "");
        let err = store.get("k").await.unwrap_err();
        assert!(err.is_temporary(), "{err:?}");
    }
}
