//! The data part of a restore: agent calls. Import sends each target node the
//! snapshot of the backup node with its tokens; stream spreads the chosen
//! backup nodes' copies over the target's agents, which load them with
//! sstableloader. Agents run in parallel, each agent's calls one after another
//! (an agent does one long operation at a time).

use std::net::IpAddr;
use std::time::Duration;

use tidemark_cluster::AgentClient;
use tidemark_repo::Id;
use tokio::task::JoinSet;

use crate::api::{self, ImportReply, ImportRequest, LoadReply, LoadRequest, TableTarget};
use crate::error::{CassandraError, Result};

/// One call: which agent, what it fetches.
#[derive(Debug, Clone)]
pub struct Job {
    pub agent: AgentClient,
    pub snapshot: Id,
    pub table: TableTarget,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub files: u64,
    pub bytes: u64,
    pub bytes_streamed: u64,
}

/// `nodetool import` on every target node at once (one job per node).
pub async fn import(jobs: Vec<Job>, timeout: Duration) -> Result<Totals> {
    run(jobs, timeout, None).await
}

/// sstableloader from the agents; `targets` are the target nodes to contact.
pub async fn load(jobs: Vec<Job>, targets: Vec<IpAddr>, timeout: Duration) -> Result<Totals> {
    run(jobs, timeout, Some(targets)).await
}

async fn run(
    jobs: Vec<Job>,
    timeout: Duration,
    load_targets: Option<Vec<IpAddr>>,
) -> Result<Totals> {
    // Group by agent, keeping the order given.
    let mut queues: Vec<(AgentClient, Vec<Job>)> = Vec::new();
    for job in jobs {
        match queues.iter_mut().find(|(a, _)| a.url == job.agent.url) {
            Some((_, q)) => q.push(job),
            None => queues.push((job.agent.clone(), vec![job])),
        }
    }
    let mut set = JoinSet::new();
    for (agent, queue) in queues {
        let targets = load_targets.clone();
        set.spawn(async move {
            let mut t = Totals::default();
            for job in queue {
                match &targets {
                    None => {
                        let req = ImportRequest {
                            snapshot: job.snapshot,
                            tables: vec![job.table.clone()],
                        };
                        let r: ImportReply = agent
                            .post(api::IMPORT, &req, timeout)
                            .await
                            .map_err(|e| context(&job, e))?;
                        t.files += r.files;
                        t.bytes += r.bytes;
                    }
                    Some(targets) => {
                        let req = LoadRequest {
                            snapshots: vec![job.snapshot],
                            tables: vec![job.table.clone()],
                            targets: targets.clone(),
                        };
                        let r: LoadReply = agent
                            .post(api::LOAD, &req, timeout)
                            .await
                            .map_err(|e| context(&job, e))?;
                        t.files += r.files;
                        t.bytes += r.bytes_read;
                        t.bytes_streamed += r.bytes_streamed;
                    }
                }
            }
            Ok::<Totals, CassandraError>(t)
        });
    }
    let mut total = Totals::default();
    let mut first_err = None;
    // Wait for every agent even after a failure: none is left mid-operation
    // behind the coordinator's back.
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(t)) => {
                total.files += t.files;
                total.bytes += t.bytes;
                total.bytes_streamed += t.bytes_streamed;
            }
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(join) => {
                first_err.get_or_insert(CassandraError::Invalid(format!(
                    "restore task failed: {join}"
                )));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

fn context(job: &Job, e: tidemark_cluster::ClusterError) -> CassandraError {
    CassandraError::Node {
        node: job.agent.url.clone(),
        reason: format!(
            "restoring {}.{} from node snapshot {}: {e}",
            job.table.keyspace,
            job.table.table,
            &job.snapshot.to_hex()[..12]
        ),
    }
}
