//! Runs an agent's API: the adapter supplies the routes, this wraps them in
//! the token check and serves them until `shutdown` resolves.
//!
//! Every request without the right bearer token gets 401 and never reaches a
//! handler. Handlers return [`ApiError`], which becomes a JSON body
//! `{"error": "..."}` with a status, so the coordinator can show the agent's
//! own words.

use std::future::Future;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use tokio::net::TcpListener;

use crate::auth::Token;

/// An error a handler returns: the status and a message for the caller.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(m: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, message: m.into() }
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        ApiError { status: StatusCode::CONFLICT, message: m.into() }
    }
    pub fn internal(m: impl Into<String>) -> Self {
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: m.into() }
    }
}

impl<E: std::fmt::Display> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError::internal(format!("{e:#}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}

pub type ApiResult<T> = std::result::Result<Json<T>, ApiError>;

/// Serves `routes` behind the token until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    token: Token,
    routes: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let token = Arc::new(token);
    let app = routes.layer(axum::middleware::from_fn(move |req: Request, next: Next| {
        let token = token.clone();
        async move {
            let header = req.headers().get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            if !token.accepts(header) {
                tracing::warn!(path = %req.uri().path(), "refused a request without a valid token");
                return ApiError { status: StatusCode::UNAUTHORIZED, message: "missing or wrong token".into() }
                    .into_response();
            }
            next.run(req).await
        }
    }));
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
