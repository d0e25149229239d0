//! What an [`S3Store`](super::S3Store) is opened with.

use std::fmt;

/// A secret string: Debug hides it and there is no Display, so it cannot
/// slip into a log line by formatting.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Everything needed to reach one bucket (and prefix inside it).
#[derive(Debug, Clone)]
pub struct S3Config {
    /// `http(s)://host:port`, no trailing slash.
    pub endpoint: String,
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/`; may be empty.
    pub prefix: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: Secret,
    /// Retention in days given to every object written (Object Lock).
    pub lock_days: Option<u32>,
}
