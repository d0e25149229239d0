//! The coordinator's calls to every agent of a cluster at once.
//!
//! A cluster backup's steps (cut, upload, release) happen on all nodes at the
//! same time: the nodes' copies form one cluster state only if they are cut
//! close together, and an upload's length is the slowest node's, not the sum.
//! Results come back in the order of the targets, so the caller pairs them
//! with its nodes by position.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::AgentClient;
use crate::error::{ClusterError, Result};

/// One agent to call, and how errors name its node.
pub trait Target {
    /// The node as errors name it (Cassandra: its broadcast address).
    fn name(&self) -> String;
    fn client(&self) -> &AgentClient;
}

/// A target that is just a name and a client.
#[derive(Debug, Clone)]
pub struct NamedAgent {
    pub name: String,
    pub client: AgentClient,
}

impl Target for NamedAgent {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn client(&self) -> &AgentClient {
        &self.client
    }
}

/// POSTs `body` to `path` of every target at once; results in their order.
pub async fn post_all<A, B, R>(targets: &[A], path: &'static str, body: B, timeout: Duration) -> Vec<Result<R>>
where
    A: Target,
    B: Serialize + Send + Sync + 'static,
    R: DeserializeOwned + Send + 'static,
{
    let body = Arc::new(body);
    let tasks = targets
        .iter()
        .map(|a| {
            let (client, body) = (a.client().clone(), body.clone());
            tokio::spawn(async move { client.post::<B, R>(path, &body, timeout).await })
        })
        .collect();
    join(tasks, targets).await
}

/// GETs `path` of every target at once; results in their order.
pub async fn get_all<A, R>(targets: &[A], path: &'static str, timeout: Duration) -> Vec<Result<R>>
where
    A: Target,
    R: DeserializeOwned + Send + 'static,
{
    let tasks = targets
        .iter()
        .map(|a| {
            let client = a.client().clone();
            tokio::spawn(async move { client.get::<R>(path, timeout).await })
        })
        .collect();
    join(tasks, targets).await
}

async fn join<A: Target, R>(tasks: Vec<tokio::task::JoinHandle<Result<R>>>, targets: &[A]) -> Vec<Result<R>> {
    let mut out = Vec::with_capacity(tasks.len());
    for (t, a) in tasks.into_iter().zip(targets) {
        out.push(t.await.unwrap_or_else(|e| {
            Err(ClusterError::Remote {
                agent: a.client().url.clone(),
                status: 0,
                message: format!("request task failed: {e}"),
            })
        }));
    }
    out
}

/// Every target's reply, or [`ClusterError::Nodes`] naming the first node
/// that failed with its cause (and the others that failed too): one step of
/// a cluster backup succeeds only on all nodes.
pub fn all_ok<A: Target, R>(targets: &[A], results: Vec<Result<R>>, step: &str) -> Result<Vec<R>> {
    let mut ok = Vec::with_capacity(results.len());
    let mut failed: Vec<(String, ClusterError)> = Vec::new();
    for (a, r) in targets.iter().zip(results) {
        match r {
            Ok(r) => ok.push(r),
            Err(e) => failed.push((a.name(), e)),
        }
    }
    let mut failed = failed.into_iter();
    let Some((node, first)) = failed.next() else {
        return Ok(ok);
    };
    Err(ClusterError::Nodes { step: step.to_string(), node, first: Box::new(first), others: failed.collect() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Token;

    fn targets() -> Vec<NamedAgent> {
        let token = Token::generate();
        (1..=3)
            .map(|i| NamedAgent {
                name: format!("127.0.1.{i}"),
                client: AgentClient::new(&format!("http://127.0.0.1:740{i}"), token.clone()),
            })
            .collect()
    }

    #[test]
    fn failures_name_the_node_and_the_cause() {
        let targets = targets();
        let remote =
            |m: &str| ClusterError::Remote { agent: "http://127.0.0.1:7402".into(), status: 500, message: m.into() };
        let e = all_ok::<_, u32>(&targets, vec![Ok(1), Err(remote("disk full")), Err(remote("gone"))], "upload")
            .unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("node 127.0.1.2: upload failed: agent http://127.0.0.1:7402: disk full"), "{s}");
        assert!(s.contains("also failed: 127.0.1.3"), "{s}");
        assert_eq!(all_ok::<_, u32>(&targets, vec![Ok(1), Ok(2), Ok(3)], "x").unwrap(), vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn unreachable_agents_answer_in_order() {
        // A port just freed: every call is refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}");
        let token = Token::generate();
        let targets: Vec<NamedAgent> = (0..2)
            .map(|i| NamedAgent { name: format!("n{i}"), client: AgentClient::new(&url, token.clone()) })
            .collect();
        let r: Vec<Result<serde_json::Value>> = post_all(&targets, "/v1/x", (), Duration::from_secs(5)).await;
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|r| matches!(r, Err(ClusterError::Unreachable { .. }))), "{r:?}");
        let e = all_ok(&targets, r, "cut").unwrap_err().to_string();
        assert!(e.starts_with(&format!("node n0: cut failed: agent {url} is unreachable")), "{e}");
        assert!(e.contains("(also failed: n1: agent"), "{e}");
    }
}
