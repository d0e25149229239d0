//! Mapping of SDK errors onto [`StoreError`]: decided by HTTP status and S3
//! error code, because S3-compatible stores differ in which of the two they
//! fill in (a HEAD answer has no body, so no code at all).

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use crate::StoreError;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What an SDK error means to the store; callers pick the cases they expect
/// and turn the rest into a [`StoreError`].
#[derive(Debug)]
pub(super) enum Kind {
    NotFound,
    Denied(String),
    InvalidRange,
    BucketExists,
    /// The object or bucket has no Object Lock configuration.
    NoRetention,
    Service {
        message: String,
        temporary: bool,
        source: BoxError,
    },
}

impl Kind {
    pub(super) fn into_error(self, key: &str) -> StoreError {
        let key = key.to_owned();
        match self {
            Kind::NotFound => StoreError::NotFound { key },
            Kind::Denied(message) => StoreError::Denied { key, message },
            Kind::InvalidRange => StoreError::Service {
                key,
                message: "requested range not satisfiable".into(),
                temporary: false,
                source: None,
            },
            Kind::BucketExists => StoreError::Service {
                key,
                message: "bucket already exists".into(),
                temporary: false,
                source: None,
            },
            Kind::NoRetention => StoreError::Service {
                key,
                message: "no object lock configuration".into(),
                temporary: false,
                source: None,
            },
            Kind::Service {
                message,
                temporary,
                source,
            } => StoreError::Service {
                key,
                message,
                temporary,
                source: Some(source),
            },
        }
    }
}

pub(super) fn classify<E>(err: SdkError<E, HttpResponse>) -> Kind
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().unwrap_or_default();
    let message = DisplayErrorContext(&err).to_string();
    let is_service = matches!(err, SdkError::ServiceError(_));
    let message = match by_code(code, message) {
        Ok(kind) => return kind,
        Err(message) => message,
    };
    let temporary = is_temporary_code(code)
        || match (is_service, status) {
            (true, Some(404)) => return Kind::NotFound,
            (true, Some(403)) => return Kind::Denied(message),
            (true, Some(416)) => return Kind::InvalidRange,
            (true, Some(s)) => s == 429 || s >= 500,
            // The request may not have reached the server, or its answer was
            // cut: worth another try.
            _ => matches!(
                err,
                SdkError::TimeoutError(_)
                    | SdkError::DispatchFailure(_)
                    | SdkError::ResponseError(_)
            ),
        };
    Kind::Service {
        message,
        temporary,
        source: Box::new(err),
    }
}

/// The kind an S3 error code alone decides; the message back when the code
/// does not (a service error of some other code).
fn by_code(code: &str, message: String) -> Result<Kind, String> {
    Ok(match code {
        c if c.contains("ObjectLockConfiguration") => Kind::NoRetention,
        "NoSuchKey" | "NoSuchBucket" | "NotFound" | "NoSuchVersion" => Kind::NotFound,
        "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" => Kind::Denied(message),
        "InvalidRange" => Kind::InvalidRange,
        "BucketAlreadyOwnedByYou" | "BucketAlreadyExists" => Kind::BucketExists,
        _ => return Err(message),
    })
}

/// Codes of errors that a repeated request may not meet.
fn is_temporary_code(code: &str) -> bool {
    matches!(
        code,
        "SlowDown"
            | "Throttling"
            | "ThrottlingException"
            | "RequestTimeout"
            | "InternalError"
            | "ServiceUnavailable"
            | "OperationAborted"
    )
}

/// One key's entry in the `Errors` list of a `DeleteObjects` answer; `None`
/// when the object is simply missing (deleted, as `delete` has it).
pub(super) fn delete_error(key: &str, code: &str, message: &str) -> Option<StoreError> {
    let message = format!("{code}: {message}");
    match by_code(code, message) {
        Ok(Kind::NotFound) => None,
        Ok(other) => Some(other.into_error(key)),
        Err(message) => Some(StoreError::Service {
            key: key.to_owned(),
            temporary: is_temporary_code(code),
            message,
            source: None,
        }),
    }
}

/// Reads a whole response body; a body cut off mid-way is temporary.
pub(super) async fn collect(key: &str, body: ByteStream) -> Result<Bytes, StoreError> {
    body.collect()
        .await
        .map(|b| b.into_bytes())
        .map_err(|e| StoreError::Service {
            key: key.to_owned(),
            message: format!("reading the response body: {e}"),
            temporary: true,
            source: Some(Box::new(e)),
        })
}
