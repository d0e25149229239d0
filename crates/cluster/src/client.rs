//! The coordinator's side of the agent API.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::auth::Token;
use crate::error::{ClusterError, Result};

#[derive(Debug, Clone)]
pub struct AgentClient {
    /// Base URL, e.g. `http://127.0.0.1:7400`.
    pub url: String,
    token: Token,
    http: reqwest::Client,
}

impl AgentClient {
    /// `timeout` bounds a whole request: uploads of a big node take long, so
    /// the caller picks it per call kind (see [`AgentClient::with_timeout`]).
    pub fn new(url: &str, token: Token) -> AgentClient {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("HTTP client builds");
        AgentClient { url: url.trim_end_matches('/').to_string(), token, http }
    }

    pub async fn get<R: DeserializeOwned>(&self, path: &str, timeout: Duration) -> Result<R> {
        let req = self.http.get(format!("{}{path}", self.url)).timeout(timeout);
        self.send(req).await
    }

    pub async fn post<B: Serialize + ?Sized, R: DeserializeOwned>(&self, path: &str, body: &B, timeout: Duration) -> Result<R> {
        let req = self.http.post(format!("{}{path}", self.url)).json(body).timeout(timeout);
        self.send(req).await
    }

    async fn send<R: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<R> {
        let agent = self.url.clone();
        let resp = req
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|source| ClusterError::Unreachable { agent: agent.clone(), source })?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(ClusterError::Unauthorized { agent });
        }
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or(text);
            return Err(ClusterError::Remote { agent, status: status.as_u16(), message });
        }
        resp.json::<R>().await.map_err(|source| ClusterError::BadReply { agent, source })
    }
}
