//! The cluster's topology and the rebalancing freeze.
//!
//! - this file: [`Topology`] (nodes, host ids, tokens, DCs, racks, schema as
//!   Cassandra reports them) and [`Topology::differences`], which says in
//!   words what changed between two readings.
//! - `cql`: discovery over CQL (system.local, system.peers_v2,
//!   system_schema.keyspaces, server-side `DESCRIBE SCHEMA`).
//! - `freeze`: the pre- and post-checks a consistent backup needs: every node
//!   has an answering agent writing to the same repository, every agent sees
//!   every node Up and Normal, one schema version, no agent busy.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub mod cql;
pub mod freeze;

pub use cql::Cql;
pub use freeze::{Agents, Problem};

/// One node as the cluster reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct NodeInfo {
    /// Broadcast address (system.local broadcast_address, system.peers_v2 peer).
    pub address: IpAddr,
    /// Where clients reach it (rpc_address, native_address).
    pub rpc_address: Option<IpAddr>,
    pub host_id: String,
    pub datacenter: String,
    pub rack: String,
    /// Tokens as decimal strings, sorted (numerically for Murmur3).
    pub tokens: Vec<String>,
    pub release_version: String,
    /// None when the node has not told its peers yet.
    pub schema_version: Option<String>,
}

/// What a backup records of the cluster, and what must not change while it
/// runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Topology {
    pub cluster_name: String,
    pub partitioner: String,
    /// Sorted by address.
    pub nodes: Vec<NodeInfo>,
    /// Replication of every keyspace (class and options).
    pub keyspaces: BTreeMap<String, BTreeMap<String, String>>,
    /// `DESCRIBE SCHEMA` as the server printed it.
    pub schema: String,
}

/// Equality of the layout only: the same cluster, the same nodes (by host id)
/// at the same addresses, DCs and racks owning the same tokens, whatever the
/// order they were read in. Schema and versions are not the layout: schema
/// agreement is checked on its own (see `freeze`).
impl PartialEq for Topology {
    fn eq(&self, other: &Topology) -> bool {
        self.differences(other).is_empty()
    }
}

impl Topology {
    /// Sorts nodes and tokens so that two readings compare and print alike.
    pub fn normalise(&mut self) {
        for n in &mut self.nodes {
            sort_tokens(&mut n.tokens);
        }
        self.nodes.sort_by(|a, b| {
            a.address
                .cmp(&b.address)
                .then_with(|| a.host_id.cmp(&b.host_id))
        });
    }

    pub fn node(&self, address: IpAddr) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.address == address)
    }

    pub fn node_by_host_id(&self, host_id: &str) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.host_id == host_id)
    }

    /// Distinct release versions, comma-separated (one, unless an upgrade
    /// is under way).
    pub fn release_version(&self) -> String {
        let v: BTreeSet<&str> = self
            .nodes
            .iter()
            .map(|n| n.release_version.as_str())
            .collect();
        v.into_iter().collect::<Vec<_>>().join(",")
    }

    /// What changed from `self` (before) to `after`, one sentence each;
    /// empty when the layout is the same.
    pub fn differences(&self, after: &Topology) -> Vec<String> {
        let mut out = Vec::new();
        if self.cluster_name != after.cluster_name {
            out.push(format!(
                "cluster name changed from {:?} to {:?}",
                self.cluster_name, after.cluster_name
            ));
        }
        if self.partitioner != after.partitioner {
            out.push(format!(
                "partitioner changed from {} to {}",
                self.partitioner, after.partitioner
            ));
        }
        let before: BTreeMap<&str, &NodeInfo> =
            self.nodes.iter().map(|n| (n.host_id.as_str(), n)).collect();
        let now: BTreeMap<&str, &NodeInfo> = after
            .nodes
            .iter()
            .map(|n| (n.host_id.as_str(), n))
            .collect();
        for (id, b) in &before {
            let Some(a) = now.get(id) else {
                out.push(format!("node {} (host id {id}) removed", b.address));
                continue;
            };
            if a.address != b.address {
                out.push(format!(
                    "node host id {id} moved from address {} to {}",
                    b.address, a.address
                ));
            }
            if (a.datacenter.as_str(), a.rack.as_str()) != (b.datacenter.as_str(), b.rack.as_str())
            {
                out.push(format!(
                    "node {} moved from {}/{} to {}/{}",
                    b.address, b.datacenter, b.rack, a.datacenter, a.rack
                ));
            }
            let old: BTreeSet<&String> = b.tokens.iter().collect();
            let new: BTreeSet<&String> = a.tokens.iter().collect();
            if old != new {
                let gone = old.difference(&new).count();
                let came = new.difference(&old).count();
                out.push(format!(
                    "node {}: tokens moved ({gone} of {} no longer owned, {came} new)",
                    b.address,
                    old.len()
                ));
            }
        }
        for (id, a) in &now {
            if !before.contains_key(id) {
                out.push(format!(
                    "node {} (host id {id}, {}/{}) added with {} tokens",
                    a.address,
                    a.datacenter,
                    a.rack,
                    a.tokens.len()
                ));
            }
        }
        out
    }
}

/// Murmur3 and Random partitioner tokens are integers: sort them as numbers
/// (as `nodetool ring` does); anything else (ByteOrdered) as text.
fn sort_tokens(tokens: &mut [String]) {
    if tokens.iter().all(|t| t.parse::<i128>().is_ok()) {
        tokens.sort_by_key(|t| t.parse::<i128>().expect("checked"));
    } else {
        tokens.sort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn node(last: u8, tokens: &[&str]) -> NodeInfo {
        NodeInfo {
            address: format!("127.0.1.{last}").parse().unwrap(),
            rpc_address: None,
            host_id: format!("00000000-0000-0000-0000-00000000000{last}"),
            datacenter: "dc1".into(),
            rack: "rack1".into(),
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
            release_version: "5.0.6".into(),
            schema_version: Some("s1".into()),
        }
    }

    pub(crate) fn topo(nodes: Vec<NodeInfo>) -> Topology {
        let mut t = Topology {
            cluster_name: "c".into(),
            partitioner: "org.apache.cassandra.dht.Murmur3Partitioner".into(),
            nodes,
            keyspaces: BTreeMap::new(),
            schema: String::new(),
        };
        t.normalise();
        t
    }

    #[test]
    fn order_of_nodes_and_tokens_does_not_matter() {
        let a = topo(vec![node(1, &["-9", "10"]), node(2, &["5"])]);
        let mut b = a.clone();
        b.nodes.reverse();
        b.nodes[1].tokens.reverse();
        b.schema = "other schema".into();
        assert_eq!(a, b);
        assert!(a.differences(&b).is_empty());
    }

    #[test]
    fn tokens_sort_numerically() {
        let t = topo(vec![node(1, &["10", "-9", "9", "-10"])]);
        assert_eq!(t.nodes[0].tokens, vec!["-10", "-9", "9", "10"]);
    }

    #[test]
    fn differences_are_described() {
        let a = topo(vec![node(1, &["1", "2"]), node(2, &["3"])]);
        let mut b = topo(vec![node(1, &["1", "7"]), node(3, &["4"])]);
        b.nodes[0].rack = "rack2".into();
        let d = a.differences(&b);
        assert_eq!(d.len(), 4, "{d:?}");
        assert!(
            d.iter()
                .any(|s| s.contains("127.0.1.2") && s.contains("removed")),
            "{d:?}"
        );
        assert!(
            d.iter()
                .any(|s| s.contains("127.0.1.3") && s.contains("added with 1 tokens")),
            "{d:?}"
        );
        assert!(
            d.iter()
                .any(|s| s == "node 127.0.1.1: tokens moved (1 of 2 no longer owned, 1 new)"),
            "{d:?}"
        );
        assert!(
            d.iter().any(|s| s.contains("dc1/rack1 to dc1/rack2")),
            "{d:?}"
        );
        assert_ne!(a, b);
    }
}
