//! Where a table's data lives and where it must go: the token ring of a
//! cluster, replica placement by the keyspace's replication, matching a
//! backup's nodes to a target's by tokens, and the choice of the source
//! replicas a streaming restore needs.
//!
//! Replica placement follows Cassandra's own strategies: SimpleStrategy takes
//! the next RF distinct nodes clockwise from a range's end token;
//! NetworkTopologyStrategy does the same inside one data center, preferring
//! nodes of racks not yet used. Several data centers, LocalStrategy and
//! EverywhereStrategy are refused with a reason (see [`Replication::parse`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use serde::Serialize;

use crate::error::{CassandraError, Result};

/// One node as the ring sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub struct RingNode {
    pub address: IpAddr,
    pub datacenter: String,
    pub rack: String,
    pub tokens: Vec<i64>,
}

/// A keyspace's replication, as far as restores handle it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    Simple {
        rf: usize,
    },
    /// NetworkTopologyStrategy with replicas in exactly one data center.
    Network {
        datacenter: String,
        rf: usize,
    },
}

impl Replication {
    /// From `system_schema.keyspaces.replication` (class and options).
    pub fn parse(keyspace: &str, map: &BTreeMap<String, String>) -> Result<Replication> {
        let class = map.get("class").map(String::as_str).unwrap_or("");
        let class = class.rsplit('.').next().unwrap_or(class);
        let bad = |why: String| CassandraError::Invalid(format!("keyspace {keyspace}: {why}"));
        let rf_of = |v: &str| {
            // "3" or, with transient replication, "3/1": the full count first.
            v.split('/')
                .next()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| bad(format!("replication factor {v:?} is not a number")))
        };
        match class {
            "SimpleStrategy" => {
                let rf = map.get("replication_factor").ok_or_else(|| bad("SimpleStrategy without replication_factor".into()))?;
                Ok(Replication::Simple { rf: rf_of(rf)? })
            }
            "NetworkTopologyStrategy" => {
                let dcs: Vec<(&String, &String)> = map.iter().filter(|(k, _)| k.as_str() != "class").collect();
                let dcs: Vec<(&String, usize)> = dcs
                    .into_iter()
                    .map(|(k, v)| rf_of(v).map(|rf| (k, rf)))
                    .collect::<Result<Vec<_>>>()?
                    .into_iter()
                    .filter(|(_, rf)| *rf > 0)
                    .collect();
                match dcs.as_slice() {
                    [(dc, rf)] => Ok(Replication::Network { datacenter: dc.to_string(), rf: *rf }),
                    [] => Err(bad("NetworkTopologyStrategy with no data center".into())),
                    _ => Err(bad(format!(
                        "NetworkTopologyStrategy over {} data centers is not handled by restores (one data center only)",
                        dcs.len()
                    ))),
                }
            }
            other => Err(bad(format!(
                "replication class {other:?} is not handled by restores (SimpleStrategy and single-DC NetworkTopologyStrategy are)"
            ))),
        }
    }

    /// Nominal replication factor.
    pub fn rf(&self) -> usize {
        match self {
            Replication::Simple { rf } | Replication::Network { rf, .. } => *rf,
        }
    }

    /// Replicas a row really has on `ring` (fewer nodes than RF: all of them).
    pub fn effective_rf(&self, ring: &Ring) -> usize {
        let eligible = match self {
            Replication::Simple { .. } => ring.nodes.len(),
            Replication::Network { datacenter, .. } => ring
                .nodes
                .iter()
                .filter(|n| &n.datacenter == datacenter)
                .count(),
        };
        self.rf().min(eligible)
    }
}

/// Replicas that must hold a row so that one acknowledged at QUORUM is kept.
pub fn quorum(rf: usize) -> usize {
    rf / 2 + 1
}

/// The token ring: every node's tokens sorted.
#[derive(Debug, Clone)]
pub struct Ring {
    pub nodes: Vec<RingNode>,
    /// (token, index into `nodes`), ascending.
    tokens: Vec<(i64, usize)>,
}

impl Ring {
    pub fn new(nodes: Vec<RingNode>) -> Result<Ring> {
        let mut tokens: Vec<(i64, usize)> = nodes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| n.tokens.iter().map(move |t| (*t, i)))
            .collect();
        tokens.sort_unstable();
        if tokens.is_empty() {
            return Err(CassandraError::Invalid("the ring has no tokens".into()));
        }
        if let Some(w) = tokens.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(CassandraError::Invalid(format!(
                "token {} is owned twice",
                w[0].0
            )));
        }
        Ok(Ring { nodes, tokens })
    }

    /// For every range `(previous token, token]`: its end token and the
    /// indexes of its replicas, primary first.
    pub fn replicas(&self, repl: &Replication) -> Result<Vec<(i64, Vec<usize>)>> {
        let want = repl.effective_rf(self);
        if want == 0 {
            let dc = match repl {
                Replication::Network { datacenter, .. } => datacenter.as_str(),
                Replication::Simple { .. } => "",
            };
            return Err(CassandraError::Invalid(format!(
                "no node of the cluster is in data center {dc:?}"
            )));
        }
        Ok((0..self.tokens.len())
            .map(|start| (self.tokens[start].0, self.walk(start, repl, want)))
            .collect())
    }

    fn walk(&self, start: usize, repl: &Replication, want: usize) -> Vec<usize> {
        let n = self.tokens.len();
        let clockwise = (0..n).map(|i| self.tokens[(start + i) % n].1);
        let mut out: Vec<usize> = Vec::with_capacity(want);
        match repl {
            Replication::Simple { .. } => {
                for node in clockwise {
                    if !out.contains(&node) {
                        out.push(node);
                        if out.len() == want {
                            break;
                        }
                    }
                }
            }
            Replication::Network { datacenter, .. } => {
                // Cassandra's NTS: take nodes of unseen racks first; nodes of
                // seen racks wait and fill up once every rack has one.
                let racks: BTreeSet<&str> = self
                    .nodes
                    .iter()
                    .filter(|x| &x.datacenter == datacenter)
                    .map(|x| x.rack.as_str())
                    .collect();
                let mut seen_racks: BTreeSet<&str> = BTreeSet::new();
                let mut skipped: Vec<usize> = Vec::new();
                for node in clockwise {
                    let nd = &self.nodes[node];
                    if &nd.datacenter != datacenter
                        || out.contains(&node)
                        || skipped.contains(&node)
                    {
                        continue;
                    }
                    if seen_racks.len() == racks.len() {
                        out.push(node);
                    } else if seen_racks.insert(nd.rack.as_str()) {
                        out.push(node);
                        if seen_racks.len() == racks.len() {
                            // Every rack has a replica: the skipped ones come next.
                            while out.len() < want && !skipped.is_empty() {
                                out.push(skipped.remove(0));
                            }
                        }
                    } else {
                        skipped.push(node);
                    }
                    if out.len() >= want {
                        break;
                    }
                }
                out.truncate(want);
            }
        }
        out
    }
}

/// Same topology: every backup node's tokens are exactly one target node's.
/// Returns, per backup node (by index), the index of its target node; `None`
/// when the layouts differ.
pub fn match_tokens(source: &[RingNode], target: &[RingNode]) -> Option<Vec<usize>> {
    if source.len() != target.len() {
        return None;
    }
    let key = |n: &RingNode| {
        let mut t = n.tokens.clone();
        t.sort_unstable();
        t
    };
    let by_tokens: HashMap<Vec<i64>, usize> = target
        .iter()
        .enumerate()
        .map(|(i, n)| (key(n), i))
        .collect();
    let mut used = BTreeSet::new();
    source
        .iter()
        .map(|n| by_tokens.get(&key(n)).copied().filter(|i| used.insert(*i)))
        .collect()
}

/// Subsets are searched exhaustively up to this many source nodes; above,
/// nodes are dropped greedily (largest first) while coverage still holds.
const EXACT_SEARCH_MAX_NODES: usize = 16;

/// The source nodes whose copies a streaming restore sends: every token range
/// keeps at least `quorum(RF)` of its replicas among them, so a row written
/// at QUORUM is on at least one of them (any two quorums intersect). Of the
/// sets that qualify, the one with the fewest bytes (`bytes[i]`: node i's
/// copy of the table) is taken. Returned ascending.
pub fn choose_sources(ring: &Ring, repl: &Replication, bytes: &[u64]) -> Result<Vec<usize>> {
    let n = ring.nodes.len();
    let replicas = ring.replicas(repl)?;
    let need = quorum(repl.effective_rf(ring));
    let covers = |chosen: &dyn Fn(usize) -> bool| {
        replicas
            .iter()
            .all(|(_, r)| r.iter().filter(|&&i| chosen(i)).count() >= need)
    };
    if n <= EXACT_SEARCH_MAX_NODES {
        let mut best: Option<(u64, u32, u32)> = None;
        for mask in 1u32..(1u32 << n) {
            if !covers(&|i| mask & (1 << i) != 0) {
                continue;
            }
            let total: u64 = (0..n)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| bytes[i])
                .sum();
            let cand = (total, mask.count_ones(), mask);
            if best.is_none_or(|b| (cand.0, cand.1) < (b.0, b.1)) {
                best = Some(cand);
            }
        }
        let (_, _, mask) = best.ok_or_else(|| {
            CassandraError::Invalid("no set of source nodes covers every range".into())
        })?;
        return Ok((0..n).filter(|i| mask & (1 << i) != 0).collect());
    }
    let mut chosen = vec![true; n];
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(bytes[i]));
    for i in order {
        chosen[i] = false;
        if !covers(&|j| chosen[j]) {
            chosen[i] = true;
        }
    }
    Ok((0..n).filter(|&i| chosen[i]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: u8, dc: &str, rack: &str, tokens: &[i64]) -> RingNode {
        RingNode {
            address: IpAddr::from([127, 0, 0, i]),
            datacenter: dc.into(),
            rack: rack.into(),
            tokens: tokens.to_vec(),
        }
    }

    /// The testbed's layout: token i*span/total goes to node i % nodes.
    fn testbed_ring(nodes: usize, vnodes: usize) -> Ring {
        let total = (nodes * vnodes) as i128;
        let mut toks = vec![Vec::new(); nodes];
        for i in 0..total {
            toks[(i as usize) % nodes].push((i64::MIN as i128 + i * (1i128 << 64) / total) as i64);
        }
        Ring::new(
            toks.iter()
                .enumerate()
                .map(|(i, t)| node(i as u8 + 1, "dc1", "r1", t))
                .collect(),
        )
        .unwrap()
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn replication_classes() {
        let s = Replication::parse(
            "k",
            &map(&[
                ("class", "org.apache.cassandra.locator.SimpleStrategy"),
                ("replication_factor", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(s, Replication::Simple { rf: 3 });
        let n = Replication::parse(
            "k",
            &map(&[("class", "NetworkTopologyStrategy"), ("dc1", "2")]),
        )
        .unwrap();
        assert_eq!(
            n,
            Replication::Network {
                datacenter: "dc1".into(),
                rf: 2
            }
        );
        let e = Replication::parse(
            "k",
            &map(&[("class", "NetworkTopologyStrategy"), ("a", "2"), ("b", "1")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("2 data centers"), "{e}");
        let e = Replication::parse("k", &map(&[("class", "LocalStrategy")])).unwrap_err();
        assert!(e.to_string().contains("LocalStrategy"), "{e}");
    }

    #[test]
    fn simple_strategy_takes_next_distinct_nodes() {
        let ring = testbed_ring(3, 4);
        let r = ring.replicas(&Replication::Simple { rf: 2 }).unwrap();
        assert_eq!(r.len(), 12);
        // Tokens alternate nodes 0,1,2,0,1,2,...: range i goes to i%3 and (i+1)%3.
        for (i, (_, reps)) in r.iter().enumerate() {
            assert_eq!(reps, &vec![i % 3, (i + 1) % 3]);
        }
        // RF above the node count: every node.
        let r = testbed_ring(2, 4)
            .replicas(&Replication::Simple { rf: 3 })
            .unwrap();
        assert!(r.iter().all(|(_, reps)| reps.len() == 2));
    }

    #[test]
    fn nts_spreads_over_racks() {
        // Ring order a(r1) b(r1) c(r2): RF 2 must take a and c, not a and b.
        let ring = Ring::new(vec![
            node(1, "dc", "r1", &[0]),
            node(2, "dc", "r1", &[10]),
            node(3, "dc", "r2", &[20]),
        ])
        .unwrap();
        let r = ring
            .replicas(&Replication::Network {
                datacenter: "dc".into(),
                rf: 2,
            })
            .unwrap();
        assert_eq!(r[0].1, vec![0, 2]);
        let r3 = ring
            .replicas(&Replication::Network {
                datacenter: "dc".into(),
                rf: 3,
            })
            .unwrap();
        assert_eq!(r3[0].1, vec![0, 2, 1]);
        assert!(ring
            .replicas(&Replication::Network {
                datacenter: "other".into(),
                rf: 2
            })
            .is_err());
    }

    #[test]
    fn tokens_match_only_with_same_layout() {
        let a = testbed_ring(3, 4);
        let mut b = a.nodes.clone();
        b.rotate_left(1);
        assert_eq!(match_tokens(&a.nodes, &b), Some(vec![2, 0, 1]));
        assert_eq!(match_tokens(&a.nodes, &testbed_ring(4, 4).nodes), None);
        b[0].tokens[0] += 1;
        assert_eq!(match_tokens(&a.nodes, &b), None);
    }

    #[test]
    fn quorum_of_three_replicas_is_two_nodes() {
        let ring = testbed_ring(3, 4);
        let chosen =
            choose_sources(&ring, &Replication::Simple { rf: 3 }, &[100, 90, 110]).unwrap();
        assert_eq!(chosen, vec![0, 1], "the two smallest copies");
        // RF 1: every node holds its own ranges alone.
        assert_eq!(
            choose_sources(&ring, &Replication::Simple { rf: 1 }, &[1, 1, 1]).unwrap(),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn every_range_keeps_a_quorum() {
        for nodes in [4usize, 5, 6, 20] {
            let ring = testbed_ring(nodes, 4);
            let repl = Replication::Simple { rf: 3 };
            let bytes: Vec<u64> = (0..nodes as u64).map(|i| 100 + i * 7 % 13).collect();
            let chosen = choose_sources(&ring, &repl, &bytes).unwrap();
            for (_, reps) in ring.replicas(&repl).unwrap() {
                assert!(
                    reps.iter().filter(|i| chosen.contains(i)).count() >= 2,
                    "{nodes} nodes: {chosen:?}"
                );
            }
            assert!(
                chosen.len() < nodes,
                "{nodes} nodes: nothing saved over all replicas"
            );
        }
    }
}
