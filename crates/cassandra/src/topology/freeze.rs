//! The rebalancing freeze: what must hold before the snapshot and still hold
//! after it for the node snapshots to form one consistent cluster backup.
//!
//! Cassandra has no switch that stops bootstraps, decommissions or moves; the
//! coordinator checks instead, polling until the cluster is ready or the wait
//! is over, and checks again after the snapshot. The checks combine two
//! views: CQL (system.local/peers_v2: who owns which tokens, schema versions)
//! and every agent's view of the ring over JMX, what `nodetool status` shows
//! (who is Up and Normal right now; a joining node shows there before it owns
//! tokens in the CQL tables).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use tidemark_cluster::fanout::{get_all, Target};
use tidemark_cluster::{AgentClient, ClusterError};

use super::{Cql, Topology};
use crate::api::{self, AgentStatus};
use crate::config::ClusterConfig;
use crate::error::{CassandraError, Result};

/// Time between two checks while waiting for the cluster to become ready.
pub const POLL: Duration = Duration::from_secs(2);
/// GET status asks the node for its ring: a round trip through the agent's
/// JMX bridge, or a nodetool start (a few seconds under load) without one.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(60);

/// One configured agent.
#[derive(Debug, Clone)]
pub struct Agent {
    /// The node it serves (broadcast address).
    pub address: IpAddr,
    pub client: AgentClient,
}

/// The configured agents, with the shared token.
#[derive(Debug, Clone)]
pub struct Agents {
    pub list: Vec<Agent>,
}

impl Agents {
    pub fn from_config(config: &ClusterConfig) -> Result<Agents> {
        let token = config.token()?;
        let list = config
            .agents
            .node
            .iter()
            .map(|a| Agent {
                address: a.address,
                client: AgentClient::new(&a.url, token.clone()),
            })
            .collect();
        Ok(Agents { list })
    }

    pub fn get(&self, address: IpAddr) -> Option<&Agent> {
        self.list.iter().find(|a| a.address == address)
    }

    /// The agents of the topology's nodes, in the topology's order; nodes
    /// without an agent are left out (the checks name them).
    pub fn for_topology(&self, t: &Topology) -> Vec<Agent> {
        t.nodes
            .iter()
            .filter_map(|n| self.get(n.address).cloned())
            .collect()
    }
}

impl Target for Agent {
    fn name(&self) -> String {
        self.address.to_string()
    }
    fn client(&self) -> &AgentClient {
        &self.client
    }
}

/// GET status of every agent at once.
pub async fn statuses(agents: &[Agent]) -> Vec<Result<AgentStatus, ClusterError>> {
    get_all(agents, api::STATUS, STATUS_TIMEOUT).await
}

/// One reason the cluster is not ready. `lasting` problems do not go away by
/// waiting (wrong token, another repository, a node without agent): the
/// backup is refused at once instead of after the whole wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub text: String,
    pub lasting: bool,
}

impl Problem {
    fn wait(text: String) -> Problem {
        Problem {
            text,
            lasting: false,
        }
    }
    fn lasting(text: String) -> Problem {
        Problem {
            text,
            lasting: true,
        }
    }
}

fn state_name(c: char) -> &'static str {
    match c {
        'J' => "Joining",
        'L' => "Leaving",
        'M' => "Moving",
        'N' => "Normal",
        _ => "in an unknown state",
    }
}

/// Everything that stops a consistent backup now. `agents` and `statuses`
/// are parallel: the agents of the topology's nodes and their answers.
pub fn assess(
    t: &Topology,
    all_agents: &Agents,
    agents: &[Agent],
    statuses: &[Result<AgentStatus, ClusterError>],
    repository_id: &str,
) -> Vec<Problem> {
    let mut out = Vec::new();
    for n in &t.nodes {
        if all_agents.get(n.address).is_none() {
            out.push(Problem::lasting(format!(
                "node {} (host id {}) has no agent in the cluster config",
                n.address, n.host_id
            )));
        }
        if n.tokens.is_empty() {
            out.push(Problem::wait(format!(
                "node {} owns no tokens yet (joining?)",
                n.address
            )));
        }
    }
    let versions: BTreeSet<Option<&str>> = t
        .nodes
        .iter()
        .map(|n| n.schema_version.as_deref())
        .collect();
    if versions.len() > 1 {
        let each: Vec<String> = t
            .nodes
            .iter()
            .map(|n| {
                format!(
                    "{} has {}",
                    n.address,
                    n.schema_version.as_deref().unwrap_or("none")
                )
            })
            .collect();
        out.push(Problem::wait(format!(
            "schema versions disagree ({})",
            each.join(", ")
        )));
    }
    for (a, s) in agents.iter().zip(statuses) {
        let who = format!("agent {} (node {})", a.client.url, a.address);
        let s = match s {
            Ok(s) => s,
            Err(e @ ClusterError::Unauthorized { .. }) => {
                out.push(Problem::lasting(format!("{e}")));
                continue;
            }
            Err(ClusterError::Remote {
                status: 409,
                message,
                ..
            }) => {
                out.push(Problem::wait(format!("{who} is busy: {message}")));
                continue;
            }
            Err(e @ ClusterError::BadReply { .. }) => {
                out.push(Problem::lasting(format!("{e} (another tidemark version?)")));
                continue;
            }
            Err(e) => {
                out.push(Problem::wait(format!("node {}: {e}", a.address)));
                continue;
            }
        };
        if s.node_address != a.address {
            out.push(Problem::lasting(format!(
                "{who} serves node {}: the cluster config pairs it with the wrong node",
                s.node_address
            )));
        }
        if s.repository_id != repository_id {
            out.push(Problem::lasting(format!(
                "{who} writes to another repository (id {}, the coordinator's is {repository_id})",
                s.repository_id
            )));
        }
        if let Some(op) = &s.busy {
            out.push(Problem::wait(format!("{who} is busy: {op}")));
        }
        for m in &s.ring {
            let known = t.node_by_host_id(&m.host_id).is_some() || t.node(m.address).is_some();
            if !known {
                out.push(Problem::wait(format!(
                    "node {} (host id {}, {}) is in the ring of {} but not in the CQL topology (joining?)",
                    m.address,
                    m.host_id,
                    state_name(m.state),
                    a.address
                )));
                continue;
            }
            if !m.up {
                out.push(Problem::wait(format!(
                    "node {} is Down in the view of {}",
                    m.address, a.address
                )));
            }
            if m.state != 'N' {
                out.push(Problem::wait(format!(
                    "node {} is {} in the view of {}",
                    m.address,
                    state_name(m.state),
                    a.address
                )));
            }
        }
        for n in &t.nodes {
            if !s
                .ring
                .iter()
                .any(|m| m.host_id == n.host_id || m.address == n.address)
            {
                out.push(Problem::wait(format!(
                    "node {} is missing from the ring view of {}",
                    n.address, a.address
                )));
            }
        }
    }
    out
}

/// A cluster found ready: its topology, and the snapshot tags every node
/// had on disk then (per node address, as its agent reported them).
#[derive(Debug)]
pub struct Ready {
    pub topology: Topology,
    pub snapshot_tags: Vec<(IpAddr, Vec<String>)>,
}

/// Waits until nothing stops a consistent backup (polling every [`POLL`])
/// and returns the topology then; refuses with
/// [`CassandraError::NotReady`] naming every problem when the wait is over
/// or a problem will not go away by waiting.
pub async fn wait_ready(
    cql: &Cql,
    agents: &Agents,
    repository_id: &str,
    wait: Duration,
) -> Result<Ready> {
    let deadline = Instant::now() + wait;
    loop {
        let problems = match check(cql, agents, repository_id).await {
            Ok(r) if r.problems.is_empty() => {
                return Ok(Ready {
                    topology: r.topology,
                    snapshot_tags: r.snapshot_tags,
                })
            }
            Ok(r) => r.problems,
            // A node may be restarting: the next poll can reach another.
            Err(e) => vec![Problem::wait(e.to_string())],
        };
        if problems.iter().any(|p| p.lasting) || Instant::now() + POLL > deadline {
            let texts: Vec<String> = problems.into_iter().map(|p| p.text).collect();
            return Err(CassandraError::NotReady(texts.join("; ")));
        }
        tracing::info!(problems = ?problems.iter().map(|p| &p.text).collect::<Vec<_>>(), "waiting for the cluster");
        tokio::time::sleep(POLL).await;
    }
}

/// One reading of the cluster.
#[derive(Debug)]
pub struct Reading {
    pub topology: Topology,
    /// What stops a consistent backup now (empty: ready).
    pub problems: Vec<Problem>,
    /// Snapshot tags on disk, per node whose agent answered.
    pub snapshot_tags: Vec<(IpAddr, Vec<String>)>,
}

/// One reading: the topology, what is wrong with it, and the snapshot tags.
pub async fn check(cql: &Cql, agents: &Agents, repository_id: &str) -> Result<Reading> {
    let t = cql.discover().await?;
    let mine = agents.for_topology(&t);
    let st = statuses(&mine).await;
    let problems = assess(&t, agents, &mine, &st, repository_id);
    let snapshot_tags = mine
        .iter()
        .zip(&st)
        .filter_map(|(a, s)| {
            s.as_ref()
                .ok()
                .map(|s| (a.address, s.snapshot_tags.clone()))
        })
        .collect();
    Ok(Reading {
        topology: t,
        problems,
        snapshot_tags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RingMember;
    use crate::topology::tests::{node, topo};
    use tidemark_cluster::auth::Token;

    fn agents(t: &Topology) -> Agents {
        let token = Token::generate();
        Agents {
            list: t
                .nodes
                .iter()
                .enumerate()
                .map(|(i, n)| Agent {
                    address: n.address,
                    client: AgentClient::new(&format!("http://127.0.0.1:74{i:02}"), token.clone()),
                })
                .collect(),
        }
    }

    fn status(t: &Topology, at: IpAddr) -> AgentStatus {
        AgentStatus {
            node_address: at,
            repository_id: "r1".into(),
            version: "0.1.0".into(),
            busy: None,
            ring: t
                .nodes
                .iter()
                .map(|n| RingMember {
                    address: n.address,
                    up: true,
                    state: 'N',
                    host_id: n.host_id.clone(),
                    datacenter: n.datacenter.clone(),
                    rack: n.rack.clone(),
                })
                .collect(),
            snapshot_tags: vec![],
        }
    }

    fn texts(p: &[Problem]) -> Vec<String> {
        p.iter().map(|p| p.text.clone()).collect()
    }

    #[test]
    fn a_healthy_cluster_has_no_problems() {
        let t = topo(vec![node(1, &["1"]), node(2, &["2"]), node(3, &["3"])]);
        let a = agents(&t);
        let st: Vec<_> = t.nodes.iter().map(|n| Ok(status(&t, n.address))).collect();
        assert_eq!(assess(&t, &a, &a.list, &st, "r1"), vec![]);
    }

    #[test]
    fn down_joining_busy_and_foreign_repository_are_named() {
        let t = topo(vec![node(1, &["1"]), node(2, &["2"]), node(3, &["3"])]);
        let a = agents(&t);
        let mut st: Vec<_> = t.nodes.iter().map(|n| Ok(status(&t, n.address))).collect();
        if let Ok(s) = &mut st[0] {
            s.ring[2].up = false;
            s.ring.push(RingMember {
                address: "127.0.1.4".parse().unwrap(),
                up: true,
                state: 'J',
                host_id: "h4".into(),
                datacenter: "dc1".into(),
                rack: "rack1".into(),
            });
        }
        if let Ok(s) = &mut st[1] {
            s.busy = Some("upload tidemark-x".into());
            s.ring[0].state = 'L';
        }
        if let Ok(s) = &mut st[2] {
            s.repository_id = "other".into();
        }
        let p = assess(&t, &a, &a.list, &st, "r1");
        let x = texts(&p);
        assert!(
            x.contains(&"node 127.0.1.3 is Down in the view of 127.0.1.1".to_string()),
            "{x:?}"
        );
        assert!(
            x.iter().any(|s| s
                .starts_with("node 127.0.1.4 (host id h4, Joining) is in the ring of 127.0.1.1")),
            "{x:?}"
        );
        assert!(
            x.contains(&"node 127.0.1.1 is Leaving in the view of 127.0.1.2".to_string()),
            "{x:?}"
        );
        assert!(
            x.iter()
                .any(|s| s.contains("(node 127.0.1.2) is busy: upload tidemark-x")),
            "{x:?}"
        );
        let foreign: Vec<_> = p
            .iter()
            .filter(|p| p.text.contains("another repository"))
            .collect();
        assert_eq!(foreign.len(), 1);
        assert!(foreign[0].lasting && foreign[0].text.contains("(node 127.0.1.3)"));
        assert_eq!(p.iter().filter(|p| p.lasting).count(), 1, "{p:?}");
    }

    #[test]
    fn schema_disagreement_and_missing_agent_and_wrong_token() {
        let mut t = topo(vec![node(1, &["1"]), node(2, &["2"])]);
        let a = agents(&t);
        t.nodes.push(node(3, &[]));
        t.nodes[1].schema_version = Some("s2".into());
        let mine = a.for_topology(&t);
        assert_eq!(mine.len(), 2);
        let st = vec![
            Ok(status(&t, t.nodes[0].address)),
            Err(ClusterError::Unauthorized {
                agent: mine[1].client.url.clone(),
            }),
        ];
        let p = assess(&t, &a, &mine, &st, "r1");
        let x = texts(&p);
        assert!(
            x.iter().any(|s| s.starts_with("node 127.0.1.3 (host id")
                && s.ends_with("has no agent in the cluster config")),
            "{x:?}"
        );
        assert!(
            x.contains(&"node 127.0.1.3 owns no tokens yet (joining?)".to_string()),
            "{x:?}"
        );
        assert!(
            x.iter()
                .any(|s| s
                    .starts_with("schema versions disagree (127.0.1.1 has s1, 127.0.1.2 has s2")),
            "{x:?}"
        );
        assert!(
            x.iter().any(|s| s.contains("refused the credentials")),
            "{x:?}"
        );
    }
}
