//! Apache Cassandra 5.0 from Maven Central on the machine's Java 17: one JVM
//! per node on its own loopback address 127.0.B.N.
//!
//! Each cluster gets a /24 block B nobody listens on, plus its own storage and
//! CQL ports, so neither a second cluster nor a concurrent test run can meet
//! it. Tokens are assigned up front and the initial nodes skip bootstrap, so
//! they all start at once; an added node bootstraps for real.

pub mod agents;
mod config;
mod tools;

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::kind::{Kind, UpOptions};
use crate::process::{self, ProcessRecord};
use crate::root::Root;
use crate::{cache, net, wait};

pub use agents::{agent_status, start_agent, stop_agent, AgentInfo};
pub use config::{initial_tokens, split_tokens};
pub use tools::{nodetool, nodetool_ok, sstableloader, up_normal_count, write_tool_scripts};

pub const VERSION: &str = "5.0.9";
const JAMM_JAR: &str = "jamm-0.4.0.jar";
pub const DEFAULT_NODES: usize = 3;
/// Few vnodes: realistic enough to exercise token ranges, cheap to manage.
pub const NUM_TOKENS: usize = 4;
/// Room in a block for nodes added after the start.
const MAX_NODES: u8 = 16;
const NODE_START_TIMEOUT: Duration = Duration::from_secs(240);
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(420);

/// How to reach a cluster; what `testbed up cassandra` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Info {
    /// The testbed's name for the cluster inside its root.
    pub name: String,
    /// Cassandra's `cluster_name`.
    pub cluster_name: String,
    pub version: String,
    pub datacenter: String,
    /// `address:port` of every node's CQL endpoint.
    pub contact_points: Vec<String>,
    pub native_port: u16,
    pub storage_port: u16,
    pub num_tokens: usize,
    /// Directory of cassandra-all and its dependencies (the classpath).
    pub jars: PathBuf,
    pub nodes: Vec<NodeInfo>,
    /// With `--with-agents`: binary, repository, passphrase and token files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tidemark: Option<agents::Tidemark>,
    /// With `--with-agents`: the coordinator's file (`tidemark cluster --config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tidemark_config: Option<PathBuf>,
    /// With `--with-agents`: one agent per node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<AgentInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct NodeInfo {
    /// 1-based; the last address octet.
    pub node: usize,
    pub address: Ipv4Addr,
    /// JMX on 127.0.0.1 (Cassandra's local-only JMX).
    pub jmx_port: u16,
    pub data_dir: PathBuf,
    pub commitlog_dir: PathBuf,
    pub hints_dir: PathBuf,
    pub saved_caches_dir: PathBuf,
    /// This node's cassandra.yaml.
    pub config: PathBuf,
    pub log: PathBuf,
    pub tokens: Vec<i64>,
}

impl Info {
    pub fn node(&self, n: usize) -> Result<&NodeInfo> {
        self.nodes
            .iter()
            .find(|x| x.node == n)
            .with_context(|| format!("cluster {} has no node {n}", self.name))
    }

    pub fn agent(&self, n: usize) -> Result<&AgentInfo> {
        self.agents
            .iter()
            .find(|x| x.node == n)
            .with_context(|| format!("cluster {} has no agent for node {n}", self.name))
    }
}

impl NodeInfo {
    pub fn process_name(&self) -> String {
        format!("node{}", self.node)
    }

    pub fn native_addr(&self, info: &Info) -> SocketAddr {
        SocketAddr::from((self.address, info.native_port))
    }
}

/// cassandra-all and its dependencies, fetched once into the download cache.
pub fn jars() -> Result<PathBuf> {
    let dir = cache::maven_jars(
        &format!("cassandra-{VERSION}"),
        &[("org.apache.cassandra", "cassandra-all", VERSION)],
    )?;
    if !dir.join(JAMM_JAR).exists() {
        bail!("{} lacks {JAMM_JAR}", dir.display());
    }
    Ok(dir)
}

/// Starts a new cluster and waits until every node serves CQL and sees all
/// others Up/Normal.
pub fn start(root: &Root, opts: &UpOptions) -> Result<Info> {
    let nodes = opts.nodes.unwrap_or(DEFAULT_NODES);
    if nodes == 0 || nodes > MAX_NODES as usize {
        bail!("--nodes must be 1..={MAX_NODES}, got {nodes}");
    }
    let name = opts.name_or(Kind::Cassandra);
    let jars = jars()?;
    root.create_cluster(Kind::Cassandra, &name)?;
    // A new cluster never inherits data from an earlier one of the same name.
    let dir = root.cluster_dir(&name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }

    let block = net::free_block()?;
    let block_addrs: Vec<Ipv4Addr> = (1..=MAX_NODES)
        .map(|n| Ipv4Addr::new(127, 0, block, n))
        .collect();
    let storage_port = net::free_port_on(&block_addrs)?;
    let native_port = net::free_port_on(&block_addrs)?;
    let mut info = Info {
        name: name.clone(),
        cluster_name: format!("testbed-{name}"),
        version: VERSION.to_string(),
        datacenter: config::DATACENTER.to_string(),
        contact_points: Vec::new(),
        native_port,
        storage_port,
        num_tokens: NUM_TOKENS,
        jars,
        nodes: Vec::new(),
        tidemark: None,
        tidemark_config: None,
        agents: Vec::new(),
    };
    for (i, tokens) in initial_tokens(nodes, NUM_TOKENS).into_iter().enumerate() {
        let node = new_node(root, &info, block_addrs[i], i + 1, tokens)?;
        info.contact_points
            .push(node.native_addr(&info).to_string());
        info.nodes.push(node);
    }
    if opts.with_agents {
        agents::prepare(root, &mut info, opts.tidemark_bin.as_deref(), opts.repository.as_deref())?;
    }

    let _slot = start_slot()?;
    let started = Instant::now();
    let mut records = Vec::new();
    for node in &info.nodes {
        config::write_node_files(&info, node, false)?;
        records.push(spawn_node(root, &info, node, false)?);
    }
    let watched: Vec<&ProcessRecord> = records.iter().collect();
    for node in &info.nodes {
        wait_cql(&info, node, 0, &watched, NODE_START_TIMEOUT)?;
    }
    wait_all_normal(&info, &watched)?;
    if opts.with_agents {
        agents::start_all(root, &mut info)?;
    }
    eprintln!(
        "cassandra {name}: {nodes} nodes{} ready in {:.1}s",
        if opts.with_agents { " and agents" } else { "" },
        started.elapsed().as_secs_f64()
    );
    Ok(info)
}

fn new_node(
    root: &Root,
    info: &Info,
    address: Ipv4Addr,
    n: usize,
    tokens: Vec<i64>,
) -> Result<NodeInfo> {
    let dir = root.cluster_dir(&info.name).join(format!("node{n}"));
    Ok(NodeInfo {
        node: n,
        address,
        jmx_port: net::free_port()?,
        data_dir: dir.join("data"),
        commitlog_dir: dir.join("commitlog"),
        hints_dir: dir.join("hints"),
        saved_caches_dir: dir.join("saved_caches"),
        config: dir.join("conf/cassandra.yaml"),
        log: dir.join("node.log"),
        tokens,
    })
}

fn spawn_node(root: &Root, info: &Info, node: &NodeInfo, joining: bool) -> Result<ProcessRecord> {
    let mut cmd = Command::new("java");
    cmd.args(config::node_jvm_args(info, node, joining));
    let record = process::spawn(
        &node.process_name(),
        cmd,
        &node.log,
        vec![info.native_port, info.storage_port, node.jmx_port],
    )?;
    root.add_process(&info.name, record.clone())?;
    Ok(record)
}

/// CQL is served once the log (past `log_offset`, i.e. this run) says so and
/// the port accepts.
fn wait_cql(
    info: &Info,
    node: &NodeInfo,
    log_offset: u64,
    watched: &[&ProcessRecord],
    timeout: Duration,
) -> Result<()> {
    let addr = node.native_addr(info);
    wait::wait_for(
        &format!("cassandra {} node {} CQL on {addr}", info.name, node.node),
        timeout,
        watched,
        std::slice::from_ref(&node.log),
        || {
            Ok(
                log_since(&node.log, log_offset).contains("Starting listening for CQL clients")
                    && wait::tcp_open(addr),
            )
        },
    )
}

/// Every node's own view (nodetool status through its JMX) shows every node UN.
fn wait_all_normal(info: &Info, watched: &[&ProcessRecord]) -> Result<()> {
    let want = info.nodes.len();
    let logs: Vec<PathBuf> = info.nodes.iter().map(|n| n.log.clone()).collect();
    for node in &info.nodes {
        wait::wait_for(
            &format!(
                "cassandra {} node {} sees {want} nodes UN",
                info.name, node.node
            ),
            Duration::from_secs(120),
            watched,
            &logs,
            || Ok(up_normal_count(info, node.node).unwrap_or(0) == want),
        )?;
    }
    Ok(())
}

fn log_since(path: &std::path::Path, offset: u64) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = (offset as usize).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

fn log_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Adds a node that bootstraps (streams its share of the data) into a running
/// cluster; returns it once every node sees it Up/Normal.
pub fn add_node(root: &Root, name: &str) -> Result<NodeInfo> {
    let mut info: Info = root.info(name)?;
    let n = info.nodes.iter().map(|x| x.node).max().unwrap_or(0) + 1;
    if n > MAX_NODES as usize {
        bail!("cluster {name} already has {MAX_NODES} addresses in use");
    }
    let block = info.nodes[0].address.octets()[2];
    let existing: Vec<i64> = info.nodes.iter().flat_map(|x| x.tokens.clone()).collect();
    let tokens = split_tokens(&existing, info.num_tokens);
    let node = new_node(
        root,
        &info,
        Ipv4Addr::new(127, 0, block, n as u8),
        n,
        tokens,
    )?;
    config::write_node_files(&info, &node, true)?;
    let _slot = start_slot()?;
    let record = spawn_node(root, &info, &node, true)?;
    // Recorded while it joins, so a test can watch (and a coordinator reach)
    // a joining node; with agents its agent starts now and is listed in
    // tidemark.toml, whether or not it answers yet.
    info.contact_points
        .push(node.native_addr(&info).to_string());
    info.nodes.push(node.clone());
    let agent = match info.tidemark {
        Some(_) => Some(agents::add_agent(root, &mut info, n)?),
        None => None,
    };
    root.set_info(name, serde_json::to_value(&info)?)?;
    wait_cql(&info, &node, 0, &[&record], BOOTSTRAP_TIMEOUT)?;
    let records = live_records(root, &info)?;
    wait_all_normal(&info, &records.iter().collect::<Vec<_>>())?;
    if let Some(agent_record) = agent {
        agents::wait_ready(&info, info.agent(n)?, &[&agent_record], true)?;
    }
    Ok(node)
}

/// Stops one node cleanly (SIGTERM: Cassandra drains, then exits). Its agent,
/// if any, keeps running ([`stop_agent`] stops that).
pub fn stop_node(root: &Root, name: &str, n: usize) -> Result<()> {
    let info: Info = root.info(name)?;
    root.stop_process(name, &info.node(n)?.process_name())
}

/// Starts a stopped node again with its data and waits until all see it UN.
pub fn start_node(root: &Root, name: &str, n: usize) -> Result<()> {
    let info: Info = root.info(name)?;
    let node = info.node(n)?;
    if root.process(name, &node.process_name())?.is_alive() {
        bail!("node {n} of {name} is already running");
    }
    let offset = log_len(&node.log);
    let _slot = start_slot()?;
    let record = spawn_node(root, &info, node, false)?;
    wait_cql(&info, node, offset, &[&record], NODE_START_TIMEOUT)?;
    let records = live_records(root, &info)?;
    wait_all_normal(&info, &records.iter().collect::<Vec<_>>())
}

/// One Cassandra start at a time on this machine: JVM start-up is the most
/// CPU-hungry phase, and several at once on 2 cores time out where one after
/// the other does not. Held until the started nodes are ready.
fn start_slot() -> Result<Flock<File>> {
    let path = std::env::temp_dir().join("testbed-cassandra-start.lock");
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow!("locking {}: {e}", path.display()))
}

/// The nodes' process records, to watch while waiting on the ring (not the
/// agents': a test may have stopped one on purpose).
fn live_records(root: &Root, info: &Info) -> Result<Vec<ProcessRecord>> {
    let nodes: Vec<String> = info.nodes.iter().map(NodeInfo::process_name).collect();
    Ok(root
        .cluster(&info.name)?
        .processes
        .into_iter()
        .filter(|p| nodes.contains(&p.name))
        .collect())
}
