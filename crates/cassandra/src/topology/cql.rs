//! Discovery over CQL with the scylla driver.
//!
//! system.local and system.peers_v2 are node-local tables: read from two
//! different coordinators they would miss one node and show another twice.
//! So both are read from one pinned node (the first that answers, in the
//! order the driver knows them), and the schema from the same one.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::cluster::Node;
use scylla::policies::load_balancing::{NodeIdentifier, SingleTargetLoadBalancingPolicy};
use scylla::response::PagingState;
use scylla::statement::unprepared::Statement;
use scylla::value::{CqlValue, Row};

use super::{NodeInfo, Topology};
use crate::config::CqlConfig;
use crate::error::{CassandraError, Result};

const LOCAL: &str =
    "SELECT host_id, broadcast_address, listen_address, rpc_address, data_center, rack, tokens, \
                     release_version, schema_version, partitioner, cluster_name FROM system.local";
const PEERS: &str =
    "SELECT host_id, peer, native_address, data_center, rack, tokens, release_version, \
                     schema_version FROM system.peers_v2";
const KEYSPACES: &str = "SELECT keyspace_name, replication FROM system_schema.keyspaces";

/// A CQL session to the cluster.
pub struct Cql {
    session: Session,
    timeout: Duration,
}

impl Cql {
    /// Connects to the contact points; the password is read from its file.
    pub async fn connect(c: &CqlConfig) -> Result<Cql> {
        let mut b = SessionBuilder::new()
            .known_nodes(&c.contact_points)
            .connection_timeout(c.request_timeout.min(Duration::from_secs(10)))
            // The driver's own schema metadata is not needed: the schema is
            // taken from DESCRIBE, which is what a restore replays.
            .fetch_schema_metadata(false)
            .fetch_full_schema_metadata(false);
        if let (Some(user), Some(file)) = (&c.username, &c.password_file) {
            let text = std::fs::read_to_string(file).map_err(|e| CassandraError::io(file, e))?;
            b = b.user(user, text.lines().next().unwrap_or("").to_string());
        }
        let session = b.build().await.map_err(|e| {
            CassandraError::Cql(format!(
                "connecting to {}: {e}",
                c.contact_points.join(", ")
            ))
        })?;
        Ok(Cql {
            session,
            timeout: c.request_timeout,
        })
    }

    /// Reads the topology and schema from the first node that answers.
    pub async fn discover(&self) -> Result<Topology> {
        let state = self.session.get_cluster_state();
        let mut nodes: Vec<Arc<Node>> = state.get_nodes_info().to_vec();
        // Connected nodes first: a down node would only cost a timeout.
        nodes.sort_by_key(|n| !n.is_connected());
        let mut errors = Vec::new();
        for node in nodes {
            match self.discover_on(&node).await {
                Ok(t) => return Ok(t),
                Err(e) => errors.push(format!("{}: {e}", node.address.ip())),
            }
        }
        Err(CassandraError::Cql(format!(
            "no node answered the topology queries ({})",
            errors.join("; ")
        )))
    }

    async fn discover_on(&self, node: &Arc<Node>) -> Result<Topology> {
        let at = NodeIdentifier::Node(node.clone());
        let local = self.rows(LOCAL, &at).await?;
        let local = local
            .first()
            .ok_or_else(|| CassandraError::Cql("system.local is empty".into()))?;
        let cols = |r: &Row, i: usize| r.columns.get(i).cloned().flatten();
        let mut nodes = vec![NodeInfo {
            address: inet(cols(local, 1))
                .or_else(|| inet(cols(local, 2)))
                .ok_or_else(|| {
                    CassandraError::Cql("system.local has no broadcast or listen address".into())
                })?,
            rpc_address: inet(cols(local, 3)),
            host_id: text(cols(local, 0))
                .ok_or_else(|| CassandraError::Cql("system.local has no host_id".into()))?,
            datacenter: text(cols(local, 4)).unwrap_or_default(),
            rack: text(cols(local, 5)).unwrap_or_default(),
            tokens: strings(cols(local, 6)),
            release_version: text(cols(local, 7)).unwrap_or_default(),
            schema_version: text(cols(local, 8)),
        }];
        let partitioner = text(cols(local, 9)).unwrap_or_default();
        let cluster_name = text(cols(local, 10)).unwrap_or_default();
        for r in self.rows(PEERS, &at).await? {
            // A row without host id or address is a half-written gossip
            // record; the agents' ring views show such a node anyway.
            let (Some(host_id), Some(address)) = (text(cols(&r, 0)), inet(cols(&r, 1))) else {
                continue;
            };
            nodes.push(NodeInfo {
                address,
                rpc_address: inet(cols(&r, 2)),
                host_id,
                datacenter: text(cols(&r, 3)).unwrap_or_default(),
                rack: text(cols(&r, 4)).unwrap_or_default(),
                tokens: strings(cols(&r, 5)),
                release_version: text(cols(&r, 6)).unwrap_or_default(),
                schema_version: text(cols(&r, 7)),
            });
        }
        let mut keyspaces = BTreeMap::new();
        for r in self.rows(KEYSPACES, &at).await? {
            let Some(name) = text(cols(&r, 0)) else {
                continue;
            };
            keyspaces.insert(name, string_map(cols(&r, 1)));
        }
        let schema = self.describe_schema(&at).await?;
        let mut t = Topology {
            cluster_name,
            partitioner,
            nodes,
            keyspaces,
            schema,
        };
        t.normalise();
        Ok(t)
    }

    /// `DESCRIBE SCHEMA` (server-side since Cassandra 4.0): the
    /// create_statement of every row, in order, all pages.
    async fn describe_schema(&self, at: &NodeIdentifier) -> Result<String> {
        let st = self.statement("DESCRIBE SCHEMA", at);
        let mut paging = PagingState::start();
        let mut parts = Vec::new();
        loop {
            let (res, next) = self
                .session
                .query_single_page(st.clone(), (), paging)
                .await
                .map_err(|e| CassandraError::Cql(format!("DESCRIBE SCHEMA: {e}")))?;
            let rows = res
                .into_rows_result()
                .map_err(|e| CassandraError::Cql(format!("DESCRIBE SCHEMA: {e}")))?;
            let names: Vec<String> = rows
                .column_specs()
                .iter()
                .map(|c| c.name().to_string())
                .collect();
            let col = names
                .iter()
                .position(|n| n == "create_statement")
                .ok_or_else(|| {
                    CassandraError::Cql("DESCRIBE SCHEMA: no create_statement column".into())
                })?;
            for r in rows.rows::<Row>().map_err(CassandraError::cql)? {
                let r = r.map_err(CassandraError::cql)?;
                if let Some(s) = text(r.columns.get(col).cloned().flatten()) {
                    parts.push(s);
                }
            }
            match next.into_paging_control_flow() {
                ControlFlow::Break(()) => break,
                ControlFlow::Continue(p) => paging = p,
            }
        }
        Ok(parts.join("\n\n"))
    }

    fn statement(&self, cql: &str, at: &NodeIdentifier) -> Statement {
        let mut st = Statement::new(cql);
        st.set_request_timeout(Some(self.timeout));
        st.set_load_balancing_policy(Some(SingleTargetLoadBalancingPolicy::new(at.clone(), None)));
        st
    }

    async fn rows(&self, cql: &str, at: &NodeIdentifier) -> Result<Vec<Row>> {
        let res = self
            .session
            .query_unpaged(self.statement(cql, at), ())
            .await
            .map_err(|e| CassandraError::Cql(format!("{cql}: {e}")))?;
        let rows = res
            .into_rows_result()
            .map_err(|e| CassandraError::Cql(format!("{cql}: {e}")))?;
        let out: std::result::Result<Vec<Row>, _> =
            rows.rows::<Row>().map_err(CassandraError::cql)?.collect();
        out.map_err(CassandraError::cql)
    }
}

fn text(v: Option<CqlValue>) -> Option<String> {
    match v? {
        CqlValue::Text(s) | CqlValue::Ascii(s) => Some(s),
        CqlValue::Uuid(u) => Some(u.to_string()),
        CqlValue::Timeuuid(u) => Some(u.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn inet(v: Option<CqlValue>) -> Option<IpAddr> {
    match v? {
        CqlValue::Inet(a) => Some(a),
        _ => None,
    }
}

fn strings(v: Option<CqlValue>) -> Vec<String> {
    match v {
        Some(CqlValue::Set(xs) | CqlValue::List(xs)) => {
            xs.into_iter().filter_map(|x| text(Some(x))).collect()
        }
        _ => Vec::new(),
    }
}

fn string_map(v: Option<CqlValue>) -> BTreeMap<String, String> {
    match v {
        Some(CqlValue::Map(kv)) => kv
            .into_iter()
            .filter_map(|(k, v)| Some((text(Some(k))?, text(Some(v))?)))
            .collect(),
        _ => BTreeMap::new(),
    }
}
