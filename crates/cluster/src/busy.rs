//! An agent's "one long operation at a time" mark.
//!
//! Snapshots, uploads, clears and restores of one node compete for the same
//! disks and the same staging space, so an agent runs one of them at a time;
//! another asked for meanwhile gets 409 naming what runs. The mark is held by
//! a [`BusyGuard`] that the task doing the work owns: a caller that hangs up
//! does not free the agent while its work is still going on.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::Json;

use crate::server::{ApiError, ApiResult};

/// What long operation an agent runs now, if any.
pub struct Busy {
    what: Mutex<Option<String>>,
    /// Who is busy, for the 409's message (e.g. "agent for 127.0.1.1").
    label: String,
}

impl fmt::Debug for Busy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Busy").field("label", &self.label).field("what", &self.current()).finish()
    }
}

/// Holds the mark; dropping it frees the agent.
#[derive(Debug)]
pub struct BusyGuard(Arc<Busy>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        *self.0.lock() = None;
    }
}

impl Busy {
    pub fn new(label: impl Into<String>) -> Arc<Busy> {
        Arc::new(Busy { what: Mutex::new(None), label: label.into() })
    }

    /// Marks `what` as running, or 409 naming what runs already.
    pub fn try_begin(self: &Arc<Self>, what: String) -> Result<BusyGuard, ApiError> {
        let mut busy = self.lock();
        if let Some(running) = busy.as_ref() {
            return Err(ApiError::conflict(format!("{} is busy: {running} is running", self.label)));
        }
        *busy = Some(what);
        Ok(BusyGuard(self.clone()))
    }

    /// The operation running now.
    pub fn current(&self) -> Option<String> {
        self.lock().clone()
    }

    // A panic while the lock is held leaves a valid Option: keep using it.
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.what.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs `work` as a long operation: 409 if another runs; the mark is held by
/// the spawned task until `work` ends, even if the caller hangs up. A failure
/// is logged here (the caller may be gone) and answered as `E` converts.
pub async fn exclusive<T, E, F>(busy: &Arc<Busy>, what: String, work: F) -> ApiResult<T>
where
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
    F: Future<Output = Result<T, E>> + Send + 'static,
{
    let guard = busy.try_begin(what.clone())?;
    let task = tokio::spawn(async move {
        let _guard = guard;
        work.await
    });
    match task.await {
        Ok(Ok(v)) => Ok(Json(v)),
        Ok(Err(e)) => {
            let e: ApiError = e.into();
            tracing::warn!(operation = %what, error = %e.message, "operation failed");
            Err(e)
        }
        Err(e) => Err(ApiError::internal(format!("{what} ended abnormally: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn a_second_operation_is_refused_by_name_until_the_first_ends() {
        let busy = Busy::new("agent for n1");
        let g = busy.try_begin("upload t1".into()).unwrap();
        assert_eq!(busy.current().as_deref(), Some("upload t1"));
        let e = busy.try_begin("clear t1".into()).unwrap_err();
        assert_eq!(e.status, StatusCode::CONFLICT);
        assert_eq!(e.message, "agent for n1 is busy: upload t1 is running");
        drop(g);
        assert_eq!(busy.current(), None);
        assert!(busy.try_begin("clear t1".into()).is_ok());
    }

    #[tokio::test]
    async fn the_mark_outlives_a_caller_that_hangs_up() {
        let busy = Busy::new("agent");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let b = busy.clone();
        let call = tokio::spawn(async move {
            exclusive(&b, "slow".into(), async move {
                let _ = rx.await;
                Ok::<_, ApiError>(1)
            })
            .await
            .map(|j| j.0)
        });
        while busy.current().is_none() {
            tokio::task::yield_now().await;
        }
        call.abort();
        let _ = call.await;
        assert_eq!(busy.current().as_deref(), Some("slow"), "work still runs");
        tx.send(()).unwrap();
        while busy.current().is_some() {
            tokio::task::yield_now().await;
        }
        let r = exclusive(&busy, "fails".into(), async { Err::<(), _>(ApiError::bad_request("no")) }).await;
        assert_eq!(r.unwrap_err().status, StatusCode::BAD_REQUEST);
    }
}
