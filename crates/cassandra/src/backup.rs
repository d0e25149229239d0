//! The coordinator's cluster backup.
//!
//! 1. check: wait for the rebalancing freeze (see `topology::freeze`);
//! 2. cut: POST snapshot to every agent at once, under one tag;
//! 3. re-check: the same nodes own the same tokens and are all still Up and
//!    Normal, else the cut is not one cluster state;
//! 4. upload: every agent stores its node's snapshot in the repository;
//! 5. commit: ONE cluster manifest in the catalog, only when every node
//!    succeeded (a backup without a manifest does not exist);
//! 6. release: POST clear to every agent, after a failure too.
//!
//! No backup byte passes through the coordinator; the repository is only
//! touched to save the manifest (on a blocking thread: the engine is
//! synchronous).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tidemark_cluster::fanout::{all_ok, post_all};
use tidemark_cluster::manifest::{self, ClusterManifest, NodeBackup, MANIFEST_VERSION};
use tidemark_repo::progress::Progress;
use tidemark_repo::{Id, Repository};

use crate::api::{
    self, ClearReply, ClearRequest, SnapshotReply, SnapshotRequest, UploadReply, UploadRequest,
};
use crate::config::ClusterConfig;
use crate::error::{CassandraError, Result};
use crate::manifest::{BackupDetail, NodeDetail, Timings};
use crate::topology::freeze::{self, Agent};
use crate::topology::{Agents, Cql, Topology};

/// Flush and snapshot of every table on one node: bounded by the flush of
/// the largest memtables, minutes at worst.
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// clearsnapshot and removing the agent's staging links.
pub const CLEAR_TIMEOUT: Duration = Duration::from_secs(120);

/// The tag all nodes snapshot under, the same for every adapter.
pub use tidemark_cluster::tag::{new_tag, TAG_PREFIX};

/// Takes one consistent backup of the cluster and commits its manifest;
/// returns the manifest's id (the backup's id) and the manifest.
pub async fn backup(
    config: &ClusterConfig,
    repo: Arc<Repository>,
    progress: Option<&dyn Progress>,
) -> Result<(Id, ClusterManifest)> {
    let say = |m: &str| {
        tracing::info!("{m}");
        if let Some(p) = progress {
            p.phase(m);
        }
    };
    let agents = Agents::from_config(config)?;
    let cql = Cql::connect(&config.cassandra).await?;
    let repository_id = repo.config.id.to_hex();
    let t0 = Instant::now();
    let started = Utc::now();

    say("checking the cluster (all nodes up and normal, schema agreement, agents ready)");
    let ready =
        freeze::wait_ready(&cql, &agents, &repository_id, config.backup.freeze_wait).await?;
    // Not cleared here: such a tag may be another coordinator's backup of
    // this cluster, running now.
    for m in leftovers(&ready.snapshot_tags) {
        warn(progress, &m);
    }
    let topology = ready.topology;
    let targets = agents.for_topology(&topology);
    let check_secs = t0.elapsed().as_secs_f64();

    let tag = new_tag(started);
    let run = Run {
        config,
        repo,
        cql: &cql,
        agents: &agents,
        targets: &targets,
        topology,
        tag: tag.clone(),
        repository_id,
    };
    let result = run.cut_upload_commit(started, t0, check_secs, &say).await;

    // Released whatever happened: a snapshot left behind pins its SSTables'
    // disk space on the node.
    say(&format!(
        "clearing snapshot {tag} on {} nodes",
        targets.len()
    ));
    let cleared = post_all::<_, _, ClearReply>(
        &targets,
        api::CLEAR,
        ClearRequest { tag: tag.clone() },
        CLEAR_TIMEOUT,
    )
    .await;
    for (a, r) in targets.iter().zip(cleared) {
        if let Err(e) = r {
            let m = format!("clearing snapshot {tag} on node {} failed (remove it with nodetool clearsnapshot -t {tag}): {e}", a.address);
            warn(progress, &m);
        }
    }
    result
}

/// Once: the CLI shows both the log and the progress warnings.
fn warn(progress: Option<&dyn Progress>, m: &str) {
    match progress {
        Some(p) => p.warn(m),
        None => tracing::warn!("{m}"),
    }
}

/// Backup snapshots an earlier run could not release (its agent or node
/// died before the clear): they pin their SSTables' disk space until removed.
fn leftovers(tags: &[(IpAddr, Vec<String>)]) -> Vec<String> {
    tags.iter()
        .flat_map(|(node, tags)| {
            tags.iter()
                .filter(|t| t.starts_with(TAG_PREFIX))
                .map(move |t| {
                    format!(
                    "node {node} still has snapshot {t} of an earlier backup that was not released \
                     (remove it with nodetool clearsnapshot -t {t})"
                )
                })
        })
        .collect()
}

struct Run<'a> {
    config: &'a ClusterConfig,
    repo: Arc<Repository>,
    cql: &'a Cql,
    agents: &'a Agents,
    targets: &'a [Agent],
    topology: Topology,
    tag: String,
    repository_id: String,
}

impl Run<'_> {
    async fn cut_upload_commit(
        &self,
        started: DateTime<Utc>,
        t0: Instant,
        check_secs: f64,
        say: &(dyn Fn(&str) + Sync),
    ) -> Result<(Id, ClusterManifest)> {
        let (tag, targets) = (&self.tag, self.targets);
        say(&format!("snapshot {tag} on {} nodes", targets.len()));
        let t = Instant::now();
        let cuts: Vec<SnapshotReply> = all_ok(
            targets,
            post_all(
                targets,
                api::SNAPSHOT,
                SnapshotRequest { tag: tag.clone() },
                SNAPSHOT_TIMEOUT,
            )
            .await,
            "snapshot",
        )?;
        let snapshot_secs = t.elapsed().as_secs_f64();
        let first = cuts
            .iter()
            .map(|c| c.cut_at)
            .min()
            .expect("at least one node");
        let last = cuts
            .iter()
            .map(|c| c.cut_at)
            .max()
            .expect("at least one node");
        let spread_ms = (last - first).num_milliseconds();

        say("re-checking the topology");
        self.recheck().await?;

        say(&format!("uploading {} nodes", targets.len()));
        let t = Instant::now();
        let body = UploadRequest {
            tag: tag.clone(),
            cluster: self.config.name.clone(),
        };
        let uploads: Vec<UploadReply> = all_ok(
            targets,
            post_all(
                targets,
                api::UPLOAD,
                body,
                self.config.backup.upload_timeout,
            )
            .await,
            "upload",
        )?;
        let upload_secs = t.elapsed().as_secs_f64();

        let mut nodes = Vec::with_capacity(targets.len());
        for ((a, cut), up) in targets.iter().zip(&cuts).zip(uploads) {
            let n = self
                .topology
                .node(a.address)
                .expect("targets come from the topology");
            let detail = NodeDetail {
                datacenter: n.datacenter.clone(),
                rack: n.rack.clone(),
                tokens: n.tokens.clone(),
                release_version: n.release_version.clone(),
                tables: up.tables,
                cassandra_yaml: up.cassandra_yaml,
            };
            nodes.push(NodeBackup {
                node: a.address.to_string(),
                host_id: n.host_id.clone(),
                agent: a.client.url.clone(),
                snapshot: up.snapshot,
                cut_at: cut.cut_at,
                uploaded_at: up.uploaded_at,
                summary: up.summary,
                detail: serde_json::to_value(detail).expect("node detail serialises"),
            });
        }
        let t = &self.topology;
        let detail = BackupDetail {
            cluster_name: t.cluster_name.clone(),
            partitioner: t.partitioner.clone(),
            release_version: t.release_version(),
            schema: t.schema.clone(),
            keyspaces: t.keyspaces.clone(),
            snapshot_spread_ms: spread_ms,
            timings: Timings {
                check_secs,
                snapshot_secs,
                upload_secs,
                total_secs: t0.elapsed().as_secs_f64(),
            },
        };
        let m = ClusterManifest {
            version: MANIFEST_VERSION,
            store: crate::STORE.into(),
            cluster: self.config.name.clone(),
            tag: tag.clone(),
            started,
            finished: Utc::now(),
            nodes,
            detail: serde_json::to_value(detail).expect("backup detail serialises"),
            program_version: env!("CARGO_PKG_VERSION").into(),
        };
        say("saving the cluster manifest");
        let repo = self.repo.clone();
        let saved = m.clone();
        let id = tokio::task::spawn_blocking(move || manifest::save(&repo, &saved))
            .await
            .map_err(|e| {
                CassandraError::Invalid(format!("saving the manifest: task failed: {e}"))
            })??;
        Ok((id, m))
    }

    /// After the cut: the same nodes with the same host ids and tokens, and
    /// every agent still sees all of them Up and Normal.
    async fn recheck(&self) -> Result<()> {
        let now = freeze::check(self.cql, self.agents, &self.repository_id)
            .await
            .map_err(|e| {
                CassandraError::TopologyChanged(format!("could not read it again: {e}"))
            })?;
        let mut what = self.topology.differences(&now.topology);
        what.extend(now.problems.into_iter().map(|p| p.text));
        if what.is_empty() {
            Ok(())
        } else {
            Err(CassandraError::TopologyChanged(what.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_backup_snapshots_are_leftovers() {
        let a: IpAddr = "127.0.1.1".parse().unwrap();
        let b: IpAddr = "127.0.1.2".parse().unwrap();
        let tags = vec![
            (
                a,
                vec![
                    "mine".to_string(),
                    "tidemark-20261125T160509Z-abcdef".into(),
                ],
            ),
            (b, vec![]),
        ];
        let l = leftovers(&tags);
        assert_eq!(l.len(), 1, "{l:?}");
        assert!(
            l[0].starts_with("node 127.0.1.1 still has snapshot tidemark-20261125T160509Z-abcdef")
                && l[0].ends_with("nodetool clearsnapshot -t tidemark-20261125T160509Z-abcdef)"),
            "{l:?}"
        );
    }
}
