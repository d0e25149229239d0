//! `tidemark cluster restore`: tables, a keyspace or a whole backup into the
//! backup's own cluster or another one that uses the same repository.
//!
//! - `select`: which tables (named, a keyspace's, or every non-system one).
//! - `schema`: the backup's `DESCRIBE SCHEMA` text as named statements.
//! - `target`: the target cluster over CQL (ring, what exists, DDL, TRUNCATE).
//! - `plan`: token ring, replica placement, same-topology matching, the
//!   choice of source replicas for streaming.
//! - `create`: what the target lacks of the restored tables' schema.
//! - `exec`: the agent calls (import, load), in parallel over agents.
//! - `report`: what a restore reports.
//!
//! The flow: check that every target agent uses the backup's repository,
//! create what the target lacks (keyspace, types, table) from the backup's
//! schema, optionally TRUNCATE, then per table either `nodetool import` on
//! every node (the target has the backup's tokens: each node takes the copy
//! of the backup node with its tokens, no streaming) or sstableloader from the
//! agents, fed with only as many replicas' copies as keep a quorum of every
//! token range, and report files, bytes, time and the data amplification.

pub mod create;
pub mod exec;
pub mod plan;
pub mod report;
pub mod schema;
pub mod select;
pub mod target;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use tidemark_cluster::{AgentClient, ClusterManifest, NodeBackup};
use tidemark_repo::Id;
use tokio::task::JoinSet;

use crate::api::{self, AgentStatus, TableFiles, TableTarget};
use crate::config::ClusterConfig;
use crate::error::{CassandraError, Result};
use crate::manifest::{BackupDetail, NodeDetail};
use plan::{Replication, Ring, RingNode};
pub use report::{InitialTokens, Mode, RestoreReport, TableReport};
use target::Target;

/// An agent's status asks its node for the ring; an agent configured with
/// nodetool instead of JMX starts a JVM for it: slow on a busy machine.
const STATUS_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    pub keyspace: Option<String>,
    /// `name` or `keyspace.name`.
    pub tables: Vec<String>,
    pub rename_to: Option<String>,
    pub truncate: bool,
}

/// A cluster backup, decoded for restoring.
#[derive(Debug, Clone)]
pub struct Backup {
    pub id: Id,
    pub manifest: ClusterManifest,
    pub detail: BackupDetail,
    pub nodes: Vec<(NodeBackup, NodeDetail, RingNode)>,
}

impl Backup {
    pub fn new(id: Id, manifest: ClusterManifest) -> Result<Backup> {
        if manifest.store != crate::STORE {
            return Err(CassandraError::Invalid(format!(
                "backup {} is a {} backup, not a Cassandra one",
                id, manifest.store
            )));
        }
        let detail: BackupDetail = manifest.detail()?;
        let mut nodes = Vec::new();
        for n in &manifest.nodes {
            let d: NodeDetail = n.detail()?;
            let address: IpAddr = n.node.parse().map_err(|_| {
                CassandraError::Invalid(format!("backup {id}: node {:?} is not an address", n.node))
            })?;
            let tokens = d
                .tokens
                .iter()
                .map(|t| t.parse::<i64>())
                .collect::<std::result::Result<Vec<i64>, _>>()
                .map_err(|_| {
                    CassandraError::Invalid(format!(
                        "backup {id}: node {address} has a non-Murmur3 token"
                    ))
                })?;
            let ring = RingNode {
                address,
                datacenter: d.datacenter.clone(),
                rack: d.rack.clone(),
                tokens,
            };
            nodes.push((n.clone(), d, ring));
        }
        Ok(Backup {
            id,
            manifest,
            detail,
            nodes,
        })
    }

    fn files(&self, i: usize, ks: &str, table: &str) -> Option<&TableFiles> {
        self.nodes[i]
            .1
            .tables
            .iter()
            .find(|t| t.keyspace == ks && t.table == table)
    }
}

/// Restores `backup` into the cluster `target_cfg` describes; `repo_id` is
/// the id of the repository the backup was read from.
pub async fn restore(
    backup: &Backup,
    repo_id: &str,
    target_cfg: &ClusterConfig,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let statements = schema::parse(&backup.detail.schema);
    let file_tables = backup.nodes.iter().flat_map(|n| {
        n.1.tables
            .iter()
            .map(|t| (t.keyspace.clone(), t.table.clone()))
    });
    let all = select::backup_tables(&statements, file_tables);
    let selected = select::select(&all, opts.keyspace.as_deref(), &opts.tables)?;
    if let Some(new) = &opts.rename_to {
        if selected.len() != 1 || new.trim().is_empty() {
            return Err(CassandraError::Invalid(format!(
                "--rename-to takes exactly one table and a non-empty name ({} tables selected)",
                selected.len()
            )));
        }
    }
    let whole = opts.keyspace.is_none() && opts.tables.is_empty();

    let agents = check_agents(target_cfg, repo_id).await?;
    let target = Target::connect(target_cfg).await?;
    let target_ring = target.ring(target_cfg).await?;
    let source_ring: Vec<RingNode> = backup.nodes.iter().map(|n| n.2.clone()).collect();
    let mapping = plan::match_tokens(&source_ring, &target_ring);
    let mode = if mapping.is_some() {
        Mode::Import
    } else {
        Mode::Stream
    };
    let mut notes = Vec::new();
    let mut initial_tokens = Vec::new();
    if mapping.is_none() && whole {
        initial_tokens = backup
            .nodes
            .iter()
            .map(|(_, d, r)| {
                let mut t = r.tokens.clone();
                t.sort_unstable();
                InitialTokens {
                    node: r.address.to_string(),
                    datacenter: d.datacenter.clone(),
                    rack: d.rack.clone(),
                    initial_token: t.iter().map(i64::to_string).collect::<Vec<_>>().join(","),
                }
            })
            .collect();
        notes.push(format!(
            "the target's tokens differ from the backup's: streaming; for an import restore start {} nodes with the initial_token values listed",
            backup.nodes.len()
        ));
    }

    let existing = target.existing().await?;
    let schema_plan = create::schema_plan(
        &statements,
        &selected,
        &existing,
        whole,
        opts.rename_to.as_deref(),
    )?;
    notes.extend(schema_plan.notes.iter().cloned());
    for st in &schema_plan.run {
        target.ddl(st).await?;
    }
    let existing = if schema_plan.run.is_empty() {
        existing
    } else {
        target.existing().await?
    };

    let mut tables = Vec::new();
    for (ks, table) in &selected {
        let target_table = opts.rename_to.clone().unwrap_or_else(|| table.clone());
        if !existing
            .tables
            .contains(&(ks.clone(), target_table.clone()))
        {
            return Err(CassandraError::Invalid(format!(
                "table {ks}.{target_table} does not exist on {} and the backup's schema has no definition of {ks}.{table}",
                target_cfg.name
            )));
        }
        let created = schema_plan
            .created
            .contains(&(ks.clone(), target_table.clone()));
        let t0 = Instant::now();
        let truncated = opts.truncate && !created;
        if truncated {
            target.truncate(ks, &target_table).await?;
        }
        let ctx = TableCtx {
            backup,
            ks,
            table,
            target_table: &target_table,
            agents: &agents,
            target_cfg,
        };
        let src_repl = backup
            .detail
            .keyspaces
            .get(ks)
            .map(|m| Replication::parse(ks, m));
        let tgt_repl = existing
            .keyspaces
            .get(ks)
            .map(|m| Replication::parse(ks, m));
        let source_ring = Ring::new(source_ring.clone())?;
        let tgt_ring = Ring::new(target_ring.clone())?;
        let rf_src = match &src_repl {
            Some(Ok(r)) => Some(r.effective_rf(&source_ring)),
            _ => None,
        };
        let rf_tgt = match &tgt_repl {
            Some(Ok(r)) => Some(r.effective_rf(&tgt_ring)),
            _ => None,
        };
        let (sources, totals) = match &mapping {
            Some(m) => ctx.import(m, &target_ring).await?,
            None => {
                let repl = match src_repl {
                    Some(r) => Some(r?),
                    None => None,
                };
                ctx.stream(&source_ring, repl.as_ref(), &target_ring)
                    .await?
            }
        };
        let all_bytes: u64 = (0..backup.nodes.len())
            .filter_map(|i| backup.files(i, ks, table))
            .flat_map(|t| &t.files)
            .map(|f| f.size)
            .sum();
        let replica_bytes = rf_src.map_or(0, |rf| all_bytes / rf.max(1) as u64);
        let moved = match mode {
            Mode::Import => totals.bytes,
            Mode::Stream => totals.bytes_streamed,
        };
        tables.push(TableReport {
            keyspace: ks.clone(),
            table: table.clone(),
            target_table,
            mode,
            created,
            truncated,
            source_nodes: sources,
            files: totals.files,
            bytes: totals.bytes,
            bytes_streamed: totals.bytes_streamed,
            replica_bytes,
            amplification: (replica_bytes > 0).then(|| moved as f64 / replica_bytes as f64),
            amplification_all_replicas: rf_src.zip(rf_tgt).map(|(s, t)| (s * t) as f64),
            duration_secs: t0.elapsed().as_secs_f64(),
        });
    }
    Ok(RestoreReport {
        backup: backup.id.to_hex(),
        source_cluster: backup.manifest.cluster.clone(),
        target_cluster: target_cfg.name.clone(),
        mode,
        schema_statements: schema_plan.run,
        initial_tokens,
        notes,
        tables,
        duration_secs: started.elapsed().as_secs_f64(),
    })
}

/// Every target agent answers and stores into the backup's repository.
async fn check_agents(cfg: &ClusterConfig, repo_id: &str) -> Result<BTreeMap<IpAddr, AgentClient>> {
    let token = cfg.token()?;
    let mut set = JoinSet::new();
    for a in &cfg.agents.node {
        let client = AgentClient::new(&a.url, token.clone());
        let address = a.address;
        set.spawn(async move {
            let st: std::result::Result<AgentStatus, _> =
                client.get(api::STATUS, STATUS_TIMEOUT).await;
            (address, client, st)
        });
    }
    let mut out = BTreeMap::new();
    while let Some(r) = set.join_next().await {
        let (address, client, st) =
            r.map_err(|e| CassandraError::Invalid(format!("status task failed: {e}")))?;
        let st = st?;
        if !st.repository_id.eq_ignore_ascii_case(repo_id) {
            return Err(CassandraError::Invalid(format!(
                "agent {} (node {address}) of cluster {} uses repository {}, but the backup is in repository {}: \
                 a restore target must use the backup's repository",
                client.url,
                cfg.name,
                short(&st.repository_id),
                short(repo_id)
            )));
        }
        out.insert(address, client);
    }
    Ok(out)
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// One table's data move.
struct TableCtx<'a> {
    backup: &'a Backup,
    ks: &'a str,
    table: &'a str,
    target_table: &'a str,
    agents: &'a BTreeMap<IpAddr, AgentClient>,
    target_cfg: &'a ClusterConfig,
}

impl TableCtx<'_> {
    fn agent(&self, address: IpAddr) -> Result<AgentClient> {
        self.agents.get(&address).cloned().ok_or_else(|| {
            CassandraError::Invalid(format!(
                "cluster {}: node {address} has no agent in the config",
                self.target_cfg.name
            ))
        })
    }

    fn target(&self, files: &TableFiles) -> TableTarget {
        TableTarget {
            source_dir: files.dir.clone(),
            keyspace: self.ks.to_string(),
            table: self.target_table.to_string(),
        }
    }

    /// Each target node imports the copy of the backup node with its tokens.
    async fn import(
        &self,
        mapping: &[usize],
        target_ring: &[RingNode],
    ) -> Result<(Vec<String>, exec::Totals)> {
        let mut jobs = Vec::new();
        let mut sources = Vec::new();
        for (i, (nb, _, ring)) in self.backup.nodes.iter().enumerate() {
            let Some(files) = self.backup.files(i, self.ks, self.table) else {
                continue;
            };
            if files.files.is_empty() {
                continue;
            }
            let agent = self.agent(target_ring[mapping[i]].address)?;
            jobs.push(exec::Job {
                agent,
                snapshot: nb.snapshot,
                table: self.target(files),
            });
            sources.push(ring.address.to_string());
        }
        let totals = exec::import(jobs, self.target_cfg.restore.timeout).await?;
        Ok((sources, totals))
    }

    /// The chosen backup nodes' copies, spread over the target's agents by
    /// size, each loaded to its owners by sstableloader.
    async fn stream(
        &self,
        source: &Ring,
        repl: Option<&Replication>,
        target_ring: &[RingNode],
    ) -> Result<(Vec<String>, exec::Totals)> {
        let n = self.backup.nodes.len();
        let bytes: Vec<u64> = (0..n)
            .map(|i| {
                self.backup
                    .files(i, self.ks, self.table)
                    .map_or(0, |t| t.files.iter().map(|f| f.size).sum())
            })
            .collect();
        let chosen: Vec<usize> = match repl {
            Some(r) => plan::choose_sources(source, r, &bytes)?,
            // No replication recorded (should not happen): every copy.
            None => (0..n).collect(),
        };
        let mut chosen: Vec<usize> = chosen.into_iter().filter(|&i| bytes[i] > 0).collect();
        chosen.sort_by_key(|&i| std::cmp::Reverse(bytes[i]));
        let agents: Vec<AgentClient> = self.agents.values().cloned().collect();
        let mut load = vec![0u64; agents.len()];
        let mut jobs = Vec::new();
        let mut sources = Vec::new();
        for i in chosen {
            let files = self
                .backup
                .files(i, self.ks, self.table)
                .expect("has bytes");
            let a = (0..agents.len())
                .min_by_key(|&a| load[a])
                .expect("at least one agent");
            load[a] += bytes[i];
            jobs.push(exec::Job {
                agent: agents[a].clone(),
                snapshot: self.backup.nodes[i].0.snapshot,
                table: self.target(files),
            });
            sources.push(self.backup.nodes[i].2.address.to_string());
        }
        sources.sort();
        let targets: Vec<IpAddr> = target_ring.iter().map(|r| r.address).collect();
        let totals = exec::load(jobs, targets, self.target_cfg.restore.timeout).await?;
        Ok((sources, totals))
    }
}
