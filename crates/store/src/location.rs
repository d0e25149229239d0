//! Where a repository lives, parsed once from the user's string.
//!
//! Forms (restic's, so users need not learn new ones):
//! - `/path`, `relative/path` or `local:/path`: a directory;
//! - `s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]`: a bucket of an S3-compatible
//!   store, path-style. Credentials come from `AWS_ACCESS_KEY_ID` and
//!   `AWS_SECRET_ACCESS_KEY`, the region from `AWS_DEFAULT_REGION`
//!   (default `us-east-1`), at [`Location::open`] time, never from the string,
//!   so a location can be shown and logged as it is.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use crate::retry::{RetryPolicy, RetryStore};
use crate::s3::{S3Config, S3Store, Secret};
use crate::throttle::ThrottleStore;
use crate::{DynStore, LocalStore, Result, StoreError};

/// A parsed repository location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    S3(S3Location),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// `http(s)://host[:port]`, no trailing slash.
    pub endpoint: String,
    pub bucket: String,
    /// Without leading or trailing `/`; empty for the bucket root.
    pub prefix: String,
}

/// How to open a location; `Default` is plain, unlimited, unlocked.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Object Lock retention in days for every object written (S3 only).
    pub lock_days: Option<u32>,
    /// Upload limit in bytes per second.
    pub limit_upload: Option<u64>,
    /// Download limit in bytes per second.
    pub limit_download: Option<u64>,
    pub retry: RetryPolicy,
}

/// Where credentials and region come from; a seam so tests need not mutate
/// the process environment (racy across test threads).
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

fn invalid(location: &str, reason: impl Into<String>) -> StoreError {
    StoreError::InvalidLocation {
        location: location.to_owned(),
        reason: reason.into(),
    }
}

impl FromStr for Location {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self> {
        if s.trim().is_empty() {
            return Err(invalid(s, "empty location"));
        }
        if let Some(rest) = s.strip_prefix("s3:") {
            return parse_s3(s, rest).map(Location::S3);
        }
        if let Some(path) = s.strip_prefix("local:") {
            if path.is_empty() {
                return Err(invalid(s, "local: needs a path"));
            }
            return Ok(Location::Local(PathBuf::from(path)));
        }
        // `sftp:host:/x`, `rest:http://...`: a scheme we do not speak is an
        // error, not a relative directory named "sftp:host:".
        if let Some((scheme, _)) = s.split_once(':') {
            if !scheme.is_empty()
                && !scheme.contains('/')
                && scheme.chars().all(|c| c.is_ascii_alphanumeric())
            {
                return Err(invalid(
                    s,
                    format!("unknown scheme {scheme:?} (use a path, local:PATH or s3:URL)"),
                ));
            }
        }
        Ok(Location::Local(PathBuf::from(s)))
    }
}

fn parse_s3(whole: &str, rest: &str) -> Result<S3Location> {
    let (scheme, after) = rest.split_once("://").ok_or_else(|| {
        invalid(
            whole,
            "expected s3:http://HOST:PORT/BUCKET[/PREFIX] or s3:https://...",
        )
    })?;
    if scheme != "http" && scheme != "https" {
        return Err(invalid(
            whole,
            format!("scheme {scheme:?}: only http and https"),
        ));
    }
    let (host, path) = after
        .split_once('/')
        .ok_or_else(|| invalid(whole, "no bucket after the host"))?;
    if host.is_empty() {
        return Err(invalid(whole, "empty host"));
    }
    if host.contains('@') {
        return Err(invalid(
            whole,
            "credentials in the URL are not accepted; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        ));
    }
    if let Some((_, port)) = host.rsplit_once(':') {
        if !host.ends_with(']') && port.parse::<u16>().is_err() {
            return Err(invalid(whole, format!("bad port {port:?}")));
        }
    }
    let path = path.trim_end_matches('/');
    let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
    validate_bucket(whole, bucket)?;
    if !prefix.is_empty()
        && prefix
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err(invalid(
            whole,
            format!("bad prefix {prefix:?}: empty, '.' or '..' component"),
        ));
    }
    Ok(S3Location {
        endpoint: format!("{scheme}://{host}"),
        bucket: bucket.to_owned(),
        prefix: prefix.to_owned(),
    })
}

/// S3's bucket naming rules, checked here so a typo fails before any request.
fn validate_bucket(whole: &str, bucket: &str) -> Result<()> {
    let ok_chars = bucket
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    let ok_ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !(3..=63).contains(&bucket.len())
        || !ok_chars
        || !ok_ends(bucket.chars().next())
        || !ok_ends(bucket.chars().last())
    {
        return Err(invalid(
            whole,
            format!(
                "bad bucket name {bucket:?}: 3 to 63 characters of a-z, 0-9, '-' and '.', \
                 starting and ending with a letter or digit"
            ),
        ));
    }
    Ok(())
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(path) => write!(f, "local:{}", path.display()),
            Location::S3(s3) if s3.prefix.is_empty() => {
                write!(f, "s3:{}/{}", s3.endpoint, s3.bucket)
            }
            Location::S3(s3) => write!(f, "s3:{}/{}/{}", s3.endpoint, s3.bucket, s3.prefix),
        }
    }
}

impl Location {
    /// The backend for this location with credentials from the process
    /// environment, wrapped in retry (and throttle when a limit is set).
    pub fn open(&self, opts: &OpenOptions) -> Result<DynStore> {
        self.open_with_env(opts, &ProcessEnv)
    }

    pub fn open_with_env(&self, opts: &OpenOptions, env: &dyn Env) -> Result<DynStore> {
        let backend: DynStore = match self {
            Location::Local(path) => {
                if opts.lock_days.is_some() {
                    return Err(StoreError::Unsupported {
                        what: "object lock (lock days)".into(),
                        store: self.to_string(),
                    });
                }
                Arc::new(LocalStore::new(path))
            }
            Location::S3(s3) => {
                let need = |name: &str| {
                    env.var(name)
                        .ok_or_else(|| invalid(&self.to_string(), format!("{name} is not set")))
                };
                if opts.lock_days == Some(0) {
                    return Err(invalid(&self.to_string(), "lock days must be at least 1"));
                }
                Arc::new(S3Store::new(S3Config {
                    endpoint: s3.endpoint.clone(),
                    bucket: s3.bucket.clone(),
                    prefix: s3.prefix.clone(),
                    region: env
                        .var("AWS_DEFAULT_REGION")
                        .unwrap_or_else(|| "us-east-1".into()),
                    access_key: need("AWS_ACCESS_KEY_ID")?,
                    secret_key: Secret::new(need("AWS_SECRET_ACCESS_KEY")?),
                    lock_days: opts.lock_days,
                }))
            }
        };
        // Throttle inside retry: a retried upload pays for its bytes again,
        // as it sends them again.
        let shaped: DynStore = if opts.limit_upload.is_some() || opts.limit_download.is_some() {
            Arc::new(ThrottleStore::new(
                backend,
                opts.limit_upload,
                opts.limit_download,
            ))
        } else {
            backend
        };
        Ok(Arc::new(RetryStore::new(shaped, opts.retry.clone())))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn s3(endpoint: &str, bucket: &str, prefix: &str) -> Location {
        Location::S3(S3Location {
            endpoint: endpoint.into(),
            bucket: bucket.into(),
            prefix: prefix.into(),
        })
    }

    #[test]
    fn accepted_forms() {
        let cases = [
            ("/srv/repo", Location::Local("/srv/repo".into())),
            ("repo", Location::Local("repo".into())),
            ("./a:b", Location::Local("./a:b".into())),
            ("local:/srv/repo", Location::Local("/srv/repo".into())),
            (
                "s3:http://127.0.0.1:8333/bkt",
                s3("http://127.0.0.1:8333", "bkt", ""),
            ),
            (
                "s3:http://127.0.0.1:8333/bkt/",
                s3("http://127.0.0.1:8333", "bkt", ""),
            ),
            (
                "s3:https://s3.example.com/my-bucket/a/b/",
                s3("https://s3.example.com", "my-bucket", "a/b"),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<Location>().unwrap(), want, "{input}");
        }
        assert_eq!(
            "s3:http://h:1/bkt/p"
                .parse::<Location>()
                .unwrap()
                .to_string(),
            "s3:http://h:1/bkt/p"
        );
    }

    #[test]
    fn malformed_forms_name_the_problem() {
        let cases = [
            ("", "empty"),
            ("local:", "needs a path"),
            ("sftp:host:/x", "unknown scheme"),
            ("s3:127.0.0.1:8333/bkt", "expected s3:"),
            ("s3:ftp://h/bkt", "only http"),
            ("s3:http://h:1", "no bucket"),
            ("s3:http:///bkt", "empty host"),
            ("s3:http://h:port/bkt", "bad port"),
            ("s3:http://h:1/Bucket", "bad bucket"),
            ("s3:http://h:1/ab", "bad bucket"),
            ("s3:http://h:1/bkt//x", "bad prefix"),
            ("s3:http://key:secret@h:1/bkt", "credentials in the URL"),
        ];
        for (input, needle) in cases {
            match input.parse::<Location>() {
                Err(StoreError::InvalidLocation { location, reason }) => {
                    assert_eq!(location, input);
                    assert!(reason.contains(needle), "{input}: {reason}");
                }
                other => panic!("{input}: {other:?}"),
            }
        }
    }

    struct MapEnv(HashMap<&'static str, &'static str>);
    impl Env for MapEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| v.to_string())
        }
    }

    #[test]
    fn s3_needs_credentials_and_hides_them() {
        let loc: Location = "s3:http://127.0.0.1:1/bkt/pre".parse().unwrap();
        let err = loc
            .open_with_env(&OpenOptions::default(), &MapEnv(HashMap::new()))
            .unwrap_err();
        assert!(
            err.to_string().contains("AWS_ACCESS_KEY_ID is not set"),
            "{err}"
        );

        let env = MapEnv(HashMap::from([
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "topsecret"),
        ]));
        let opts = OpenOptions {
            limit_upload: Some(1 << 20),
            ..OpenOptions::default()
        };
        let store = loc.open_with_env(&opts, &env).unwrap();
        assert!(store.capabilities().retention);
        assert_eq!(store.describe(), "s3:http://127.0.0.1:1/bkt/pre");
        assert!(!format!("{store:?}").contains("topsecret"));
    }

    #[test]
    fn lock_days_on_a_directory_is_refused() {
        let loc: Location = "/tmp/x".parse().unwrap();
        let opts = OpenOptions {
            lock_days: Some(7),
            ..OpenOptions::default()
        };
        assert!(matches!(
            loc.open(&opts),
            Err(StoreError::Unsupported { .. })
        ));
    }
}
