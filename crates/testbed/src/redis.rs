//! A Redis Cluster from Debian's redis-server: N masters (default 3), each
//! with one replica, all on 127.0.0.1; `redis-cli --cluster create` assigns
//! all 16,384 slots.
//!
//! Every node gets its own client and cluster-bus port (the bus port is set
//! explicitly instead of the usual port + 10000, which could be taken).

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::kind::{Kind, UpOptions};
use crate::process::{self, ProcessRecord};
use crate::root::Root;
use crate::{fresh, net, wait};

pub const DEFAULT_MASTERS: usize = 3;
const MAX_MASTERS: usize = 8;
pub const SLOTS: usize = 16_384;
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How to reach a cluster; what `testbed up redis` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Info {
    pub name: String,
    /// redis-server's version, e.g. `7.0.15`.
    pub version: String,
    /// `127.0.0.1:PORT` of every node: any of them serves as a seed.
    pub seeds: Vec<String>,
    pub masters: Vec<String>,
    pub nodes: Vec<NodeInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct NodeInfo {
    /// 1-based.
    pub node: usize,
    pub port: u16,
    pub bus_port: u16,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The cluster's node id (40 hex digits).
    pub id: String,
    /// `master` or `replica`.
    pub role: String,
    /// For a replica: its master's `127.0.0.1:PORT`.
    pub master: Option<String>,
    pub dir: PathBuf,
    pub log: PathBuf,
}

impl NodeInfo {
    pub fn process_name(&self) -> String {
        format!("redis{}", self.node)
    }
}

/// redis-server's version from `redis-server --version`.
pub fn server_version() -> Result<String> {
    let out = Command::new("redis-server")
        .arg("--version")
        .output()
        .context("running redis-server (is Debian's redis-server installed?)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .map(str::to_string)
        .with_context(|| format!("unexpected `redis-server --version`: {text}"))
}

/// Runs `redis-cli -p PORT ARGS` and returns its stdout; a reply starting
/// with ERR (or a failed run) is an error.
pub fn cli(port: u16, args: &[&str]) -> Result<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .context("running redis-cli (is Debian's redis-tools installed?)")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || stdout.starts_with("ERR") {
        bail!(
            "redis-cli -p {port} {} failed ({}): {stdout}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// Starts 2 x N nodes, joins them into one cluster with one replica per
/// master, and waits until every node reports all slots served and every
/// replica's link to its master is up.
pub fn start(root: &Root, opts: &UpOptions) -> Result<Info> {
    let masters = opts.nodes.unwrap_or(DEFAULT_MASTERS);
    if !(3..=MAX_MASTERS).contains(&masters) {
        bail!("--nodes (masters; each gets a replica) must be 3..={MAX_MASTERS}, got {masters}");
    }
    let name = opts.name_or(Kind::Redis);
    let version = server_version()?;
    root.create_cluster(Kind::Redis, &name)?;
    let dir = fresh::cluster_dir(root, &name)?;
    let mut nodes = Vec::new();
    for node in 1..=2 * masters {
        let port = net::free_port()?;
        let node_dir = dir.join(format!("redis{node}"));
        nodes.push(NodeInfo {
            node,
            port,
            bus_port: net::free_port()?,
            addr: format!("127.0.0.1:{port}"),
            id: String::new(),
            role: String::new(),
            master: None,
            log: node_dir.join("redis.log"),
            dir: node_dir,
        });
    }
    let started = Instant::now();
    let mut records = Vec::new();
    for n in &nodes {
        records.push(spawn(root, &name, n)?);
    }
    let watched: Vec<&ProcessRecord> = records.iter().collect();
    let logs: Vec<PathBuf> = nodes.iter().map(|n| n.log.clone()).collect();
    for n in &nodes {
        wait::wait_for(
            &format!("redis {name} node {} on {}", n.node, n.addr),
            START_TIMEOUT,
            &watched,
            std::slice::from_ref(&n.log),
            || Ok(cli(n.port, &["ping"]).is_ok_and(|r| r.trim() == "PONG")),
        )?;
    }
    create_cluster(&nodes, &logs)?;
    wait::wait_for(
        &format!("redis {name}: all {SLOTS} slots served, replicas linked"),
        START_TIMEOUT,
        &watched,
        &logs,
        || Ok(ready(&nodes).unwrap_or(false)),
    )?;
    describe(&mut nodes)?;
    eprintln!(
        "redis {name}: {masters} masters + {masters} replicas ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(Info {
        name,
        version,
        seeds: nodes.iter().map(|n| n.addr.clone()).collect(),
        masters: nodes
            .iter()
            .filter(|n| n.role == "master")
            .map(|n| n.addr.clone())
            .collect(),
        nodes,
    })
}

fn spawn(root: &Root, cluster: &str, n: &NodeInfo) -> Result<ProcessRecord> {
    fs::create_dir_all(&n.dir)?;
    let conf = n.dir.join("redis.conf");
    fs::write(
        &conf,
        format!(
            "bind 127.0.0.1\nport {}\ndir {}\ndaemonize no\nlogfile \"\"\n\
             cluster-enabled yes\ncluster-config-file nodes.conf\n\
             cluster-port {}\ncluster-node-timeout 5000\n\
             # Snapshots only when asked (BGSAVE): a backup tool's business.\n\
             save \"\"\nappendonly no\n",
            n.port,
            n.dir.display(),
            n.bus_port
        ),
    )?;
    let mut cmd = Command::new("redis-server");
    cmd.arg(&conf);
    let record = process::spawn(&n.process_name(), cmd, &n.log, vec![n.port, n.bus_port])?;
    root.add_process(cluster, record.clone())?;
    Ok(record)
}

fn create_cluster(nodes: &[NodeInfo], logs: &[PathBuf]) -> Result<()> {
    let out = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(nodes.iter().map(|n| n.addr.as_str()))
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .output()
        .context("running redis-cli --cluster create")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.contains("All 16384 slots covered") {
        let tails: String = logs
            .iter()
            .map(|l| format!("\n--- {} ---\n{}", l.display(), process::log_tail(l, 20)))
            .collect();
        bail!(
            "redis-cli --cluster create failed ({}):\n{text}{}{tails}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Every node sees the whole cluster with all slots served, and every replica
/// has a live link to its master.
fn ready(nodes: &[NodeInfo]) -> Result<bool> {
    for n in nodes {
        let info = cli(n.port, &["cluster", "info"])?;
        let field = |k: &str| {
            info.lines()
                .find_map(|l| l.trim().strip_prefix(&format!("{k}:")).map(str::to_string))
                .unwrap_or_default()
        };
        if field("cluster_state") != "ok"
            || field("cluster_slots_ok") != SLOTS.to_string()
            || field("cluster_known_nodes") != nodes.len().to_string()
        {
            return Ok(false);
        }
        let replication = cli(n.port, &["info", "replication"])?;
        if replication.contains("role:slave") && !replication.contains("master_link_status:up") {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Fills in ids and roles from `CLUSTER NODES` as the cluster itself reports them.
fn describe(nodes: &mut [NodeInfo]) -> Result<()> {
    let listing = cli(nodes[0].port, &["cluster", "nodes"])?;
    // <id> <ip:port@bus[,hostname]> <flags> <master id or -> ...
    let rows: Vec<Vec<&str>> = listing
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|f: &Vec<&str>| f.len() >= 4)
        .collect();
    let addr_of = |id: &str| {
        rows.iter()
            .find(|f| f[0] == id)
            .map(|f| f[1].split('@').next().unwrap_or("").to_string())
    };
    for n in nodes.iter_mut() {
        let row = rows
            .iter()
            .find(|f| f[1].split('@').next() == Some(n.addr.as_str()))
            .with_context(|| format!("{} missing from CLUSTER NODES:\n{listing}", n.addr))?;
        n.id = row[0].to_string();
        if row[2].contains("master") {
            n.role = "master".into();
        } else {
            n.role = "replica".into();
            n.master = Some(addr_of(row[3]).context("replica of an unknown master")?);
        }
    }
    Ok(())
}
