//! `tidemark agent --config FILE`: the agent beside one node (Cassandra) or
//! DataNode (HDFS, a file with an `[hdfs]` table), until SIGINT or SIGTERM.

use std::path::PathBuf;

use anyhow::{Context, Result};
use tidemark_cassandra::agent::Agent;
use tidemark_cassandra::config::AgentConfig;
use tidemark_cassandra::CassandraError;

use crate::ctx::{runtime, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The agent's TOML file (see README: Cassandra agent)
    #[arg(long)]
    pub config: PathBuf,
}

/// Repository errors keep their type, so wrong passphrase and missing
/// repository get their own exit codes.
fn unwrap_repo(e: CassandraError) -> anyhow::Error {
    match e {
        CassandraError::Repo(r) => anyhow::Error::from(r),
        other => anyhow::Error::from(other),
    }
}

pub fn run(_g: &Global, a: Args) -> Result<i32> {
    if super::cluster::backup::has_section(&a.config, "hdfs")? {
        return run_hdfs(&a);
    }
    let config = AgentConfig::load(&a.config)?;
    let node = config.node_address;
    runtime().block_on(async move {
        let agent = Agent::start(config).await.map_err(unwrap_repo)?;
        let addr = agent.local_addr()?;
        eprintln!("agent for {node} listening on {addr}");
        agent.serve(shutdown_signal()?).await.map_err(unwrap_repo)
    })?;
    Ok(0)
}

/// The HDFS agent (an agent file with an `[hdfs]` table).
fn run_hdfs(a: &Args) -> Result<i32> {
    let config = tidemark_hdfs::config::AgentConfig::load(&a.config)?;
    let name = config.name.clone();
    runtime().block_on(async move {
        let agent = tidemark_hdfs::agent::Agent::start(config).await.map_err(super::cluster::backup::unwrap_hdfs)?;
        let addr = agent.local_addr()?;
        eprintln!("HDFS agent {name} listening on {addr}");
        agent.serve(shutdown_signal()?).await.map_err(super::cluster::backup::unwrap_hdfs)
    })?;
    Ok(0)
}

/// Resolves on the first SIGINT or SIGTERM.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let _enter = runtime().enter();
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("agent stopping");
    })
}
