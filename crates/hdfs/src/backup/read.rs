//! The data path of a backup: the files to read, split among the agents.
//!
//! A big file goes to an agent beside a DataNode that holds most of its
//! blocks (GETFILEBLOCKLOCATIONS), so its bytes are read from that
//! DataNode's disks; smaller files, for which one more NameNode call per
//! file would cost more than locality saves, are spread by bytes. Each
//! agent's files go in batches, several batches in flight per agent; an
//! agent that runs out of its own batches takes the largest queue's next
//! one, so a slow agent does not hold the backup back.
//!
//! An agent that fails a request fails the backup: the chunks it reported
//! are safe only once its session has written their index, and a session
//! whose agent died never will. No manifest is committed, so nothing is
//! listed; the chunks it did store are reused by the next backup where
//! their index was written, or removed by prune.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::try_join_all;

use crate::api::{self, ReadFile, ReadReply, ReadRequest, ReadResult};
use crate::config::BackupConfig;
use crate::error::{HdfsError, Result};
use crate::webhdfs::WebHdfs;
use tidemark_cluster::AgentClient;

/// One file to read.
#[derive(Debug, Clone)]
pub struct Job {
    /// Where the result goes (the caller's numbering).
    pub slot: usize,
    /// Absolute path inside the snapshot.
    pub path: String,
    pub length: u64,
}

#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub client: AgentClient,
    /// `host:port` of the DataNode beside it.
    pub datanode: Option<String>,
}

/// What each agent did (files, of which local).
#[derive(Debug, Clone, Copy, Default)]
pub struct Share {
    pub files: u64,
    pub local_files: u64,
    pub bytes: u64,
}

struct Batch {
    jobs: Vec<Job>,
}

/// Reads every job through the agents; results by slot, and each agent's share.
pub async fn read_all(
    hdfs: &WebHdfs,
    agents: &[Target],
    jobs: Vec<Job>,
    cfg: &BackupConfig,
    tag: &str,
    checksums: bool,
) -> Result<(Vec<(usize, ReadResult)>, Vec<Share>)> {
    let (queues, shares) = plan(hdfs, agents, jobs, cfg).await?;
    let queues: Vec<Mutex<VecDeque<Batch>>> = queues.into_iter().map(Mutex::new).collect();
    let results = Mutex::new(Vec::new());
    let workers = agents.iter().enumerate().flat_map(|(a, _)| (0..cfg.in_flight).map(move |_| a));
    try_join_all(workers.map(|a| worker(a, agents, &queues, &results, cfg.timeout, tag, checksums))).await?;
    Ok((results.into_inner().unwrap_or_else(|p| p.into_inner()), shares))
}

async fn worker(
    a: usize,
    agents: &[Target],
    queues: &[Mutex<VecDeque<Batch>>],
    results: &Mutex<Vec<(usize, ReadResult)>>,
    timeout: Duration,
    tag: &str,
    checksums: bool,
) -> Result<()> {
    loop {
        let batch = next_batch(a, queues);
        let Some(batch) = batch else { return Ok(()) };
        let req = ReadRequest {
            tag: tag.to_string(),
            files: batch.jobs.iter().map(|j| ReadFile { path: j.path.clone(), length: j.length }).collect(),
            checksums,
        };
        let agent = &agents[a];
        let reply: ReadReply = agent.client.post(api::READ, &req, timeout).await.map_err(|e| HdfsError::Agent {
            agent: agent.name.clone(),
            reason: format!("reading {} files: {e}", batch.jobs.len()),
        })?;
        if reply.files.len() != batch.jobs.len() {
            return Err(HdfsError::Agent {
                agent: agent.name.clone(),
                reason: format!("answered {} results for {} files", reply.files.len(), batch.jobs.len()),
            });
        }
        let mut r = results.lock().unwrap_or_else(|p| p.into_inner());
        r.extend(batch.jobs.iter().map(|j| j.slot).zip(reply.files));
    }
}

/// This agent's next batch, else the next of the longest queue.
fn next_batch(a: usize, queues: &[Mutex<VecDeque<Batch>>]) -> Option<Batch> {
    if let Some(b) = queues[a].lock().unwrap_or_else(|p| p.into_inner()).pop_front() {
        return Some(b);
    }
    let longest = (0..queues.len()).max_by_key(|&i| queues[i].lock().unwrap_or_else(|p| p.into_inner()).len())?;
    queues[longest].lock().unwrap_or_else(|p| p.into_inner()).pop_back()
}

/// Splits the jobs among the agents: big files by block location, the rest
/// by bytes; then into batches.
async fn plan(hdfs: &WebHdfs, agents: &[Target], mut jobs: Vec<Job>, cfg: &BackupConfig) -> Result<(Vec<VecDeque<Batch>>, Vec<Share>)> {
    let mut shares = vec![Share::default(); agents.len()];
    let mut per_agent: Vec<Vec<Job>> = vec![Vec::new(); agents.len()];
    // Biggest first: the spread by bytes comes out even.
    jobs.sort_by(|a, b| b.length.cmp(&a.length).then(a.path.cmp(&b.path)));
    let any_datanode = agents.iter().any(|a| a.datanode.is_some());
    for job in jobs {
        let mut choice = None;
        if any_datanode && job.length >= cfg.locality_min_bytes {
            // A failed lookup costs only locality.
            if let Ok(blocks) = hdfs.block_locations(&job.path, job.length).await {
                choice = best_local(agents, &blocks);
            }
        }
        let local = choice.is_some();
        let a = choice.unwrap_or_else(|| (0..agents.len()).min_by_key(|&i| shares[i].bytes).expect("at least one agent"));
        shares[a].files += 1;
        shares[a].local_files += u64::from(local);
        shares[a].bytes += job.length;
        per_agent[a].push(job);
    }
    let queues = per_agent.into_iter().map(|jobs| batches(jobs, cfg.batch_files, cfg.batch_bytes)).collect();
    Ok((queues, shares))
}

/// The agent whose DataNode holds the most blocks (ties: the first).
fn best_local(agents: &[Target], blocks: &[Vec<String>]) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (i, a) in agents.iter().enumerate() {
        let Some(dn) = &a.datanode else { continue };
        let held = blocks.iter().filter(|names| names.iter().any(|n| n == dn)).count();
        if held > 0 && best.is_none_or(|(_, h)| held > h) {
            best = Some((i, held));
        }
    }
    best.map(|(i, _)| i)
}

fn batches(jobs: Vec<Job>, max_files: usize, max_bytes: u64) -> VecDeque<Batch> {
    let mut out = VecDeque::new();
    let mut cur: Vec<Job> = Vec::new();
    let mut bytes = 0u64;
    for j in jobs {
        if !cur.is_empty() && (cur.len() >= max_files || bytes + j.length > max_bytes) {
            out.push_back(Batch { jobs: std::mem::take(&mut cur) });
            bytes = 0;
        }
        bytes += j.length;
        cur.push(j);
    }
    if !cur.is_empty() {
        out.push_back(Batch { jobs: cur });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(slot: usize, length: u64) -> Job {
        Job { slot, path: format!("/f{slot}"), length }
    }

    #[test]
    fn batches_respect_both_limits_and_a_big_file_goes_alone() {
        let b = batches(vec![job(0, 10), job(1, 10), job(2, 10), job(3, 500), job(4, 1)], 2, 100);
        let sizes: Vec<Vec<usize>> = b.iter().map(|b| b.jobs.iter().map(|j| j.slot).collect()).collect();
        assert_eq!(sizes, vec![vec![0, 1], vec![2], vec![3], vec![4]]);
    }

    #[test]
    fn the_agent_beside_most_blocks_is_chosen() {
        let token = tidemark_cluster::auth::Token::generate();
        let t = |n: &str, dn: Option<&str>| Target {
            name: n.into(),
            client: AgentClient::new("http://127.0.0.1:1", token.clone()),
            datanode: dn.map(str::to_string),
        };
        let agents = vec![t("a", Some("10.0.0.1:9866")), t("b", Some("10.0.0.2:9866")), t("c", None)];
        let blocks = vec![
            vec!["10.0.0.1:9866".to_string(), "10.0.0.2:9866".to_string()],
            vec!["10.0.0.2:9866".to_string()],
        ];
        assert_eq!(best_local(&agents, &blocks), Some(1));
        assert_eq!(best_local(&agents, &[vec!["10.0.0.9:9866".to_string()]]), None);
    }
}
