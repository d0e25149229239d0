//! HDFS 3.5.0 from Maven Central on the machine's Java 17: a NameNode and N
//! DataNodes (default 3), each its own JVM on 127.0.0.1, WebHDFS on.
//!
//! Separate processes rather than MiniDFSCluster, so a DataNode can be
//! stopped on its own and every daemon has its own log. The Maven artifacts
//! lack the web UI resources the HTTP servers refuse to start without; those
//! come from the `tests` jar of the same release, unpacked once into the cache.

pub mod agents;
mod config;
mod dist;
pub mod tools;

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::kind::{Kind, UpOptions};
use crate::process::{self, log_tail, ProcessRecord};
use crate::root::Root;
use crate::{fresh, http, net, wait};

pub const VERSION: &str = "3.5.0";
pub const DEFAULT_DATANODES: usize = 3;
const MAX_DATANODES: usize = 9;
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// How to reach a cluster; what `testbed up hdfs` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Info {
    pub name: String,
    pub version: String,
    /// NameNode HTTP address; the REST API is under `<webhdfs>/webhdfs/v1`.
    pub webhdfs: String,
    /// `hdfs://127.0.0.1:PORT`, the NameNode RPC address (fs.defaultFS).
    pub namenode: String,
    pub rpc_port: u16,
    pub http_port: u16,
    /// The cluster's directory under the root.
    pub dir: PathBuf,
    pub name_dir: PathBuf,
    pub namenode_log: PathBuf,
    /// Hadoop jars (a Java classpath is `<jars>/*`).
    pub jars: PathBuf,
    /// Directory holding `webapps/`, needed on a daemon's classpath.
    pub webapps: PathBuf,
    pub datanodes: Vec<DataNodeInfo>,
    /// With `--with-agents`: the binary, repository and token of the agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tidemark: Option<crate::tidemark::Tidemark>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<agents::AgentInfo>,
    /// The coordinator file (`tidemark cluster ... --config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tidemark_config: Option<PathBuf>,
    /// Whether the NameNode checks permissions (`--permissions`).
    #[serde(default)]
    pub permissions: bool,
    /// The user tidemark's coordinator file and agents act as.
    #[serde(default = "agents::user")]
    pub tidemark_user: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct DataNodeInfo {
    /// 1-based.
    pub node: usize,
    pub xfer_port: u16,
    pub http_port: u16,
    pub ipc_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl Info {
    fn namenode_conf(&self) -> PathBuf {
        self.dir.join("namenode/conf")
    }

    /// Site files a client (e.g. `hdfs dfs` from [`Info::jars`]) can use.
    pub fn client_conf(&self) -> PathBuf {
        self.dir.join("client-conf")
    }

    fn http_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http_port))
    }

    pub fn datanode(&self, n: usize) -> Result<&DataNodeInfo> {
        self.datanodes
            .iter()
            .find(|d| d.node == n)
            .with_context(|| format!("cluster {} has no datanode {n}", self.name))
    }
}

impl DataNodeInfo {
    pub fn process_name(&self) -> String {
        format!("datanode{}", self.node)
    }

    fn conf_dir(&self) -> PathBuf {
        self.data_dir.with_file_name("conf")
    }
}

/// Formats a fresh namespace, starts the NameNode and the DataNodes, and
/// waits until all DataNodes are live, safe mode is off and WebHDFS answers.
pub fn start(root: &Root, opts: &UpOptions) -> Result<Info> {
    let nodes = opts.nodes.unwrap_or(DEFAULT_DATANODES);
    if nodes == 0 || nodes > MAX_DATANODES {
        bail!("--nodes (DataNodes) must be 1..={MAX_DATANODES}, got {nodes}");
    }
    let name = opts.name_or(Kind::Hdfs);
    let (jars, webapps) = dist::fetch()?;
    root.create_cluster(Kind::Hdfs, &name)?;
    let dir = fresh::cluster_dir(root, &name)?;
    let (rpc_port, http_port) = (net::free_port()?, net::free_port()?);
    let mut info = Info {
        name: name.clone(),
        version: VERSION.to_string(),
        webhdfs: format!("http://127.0.0.1:{http_port}"),
        namenode: format!("hdfs://127.0.0.1:{rpc_port}"),
        rpc_port,
        http_port,
        name_dir: dir.join("namenode/name"),
        namenode_log: dir.join("namenode/namenode.log"),
        dir,
        jars,
        webapps,
        datanodes: Vec::new(),
        tidemark: None,
        agents: Vec::new(),
        tidemark_config: None,
        permissions: opts.permissions,
        tidemark_user: opts.tidemark_user.clone().unwrap_or_else(agents::user),
    };
    for node in 1..=nodes {
        let dn_dir = info.dir.join(format!("datanode{node}"));
        info.datanodes.push(DataNodeInfo {
            node,
            xfer_port: net::free_port()?,
            http_port: net::free_port()?,
            ipc_port: net::free_port()?,
            data_dir: dn_dir.join("data"),
            log: dn_dir.join("datanode.log"),
        });
    }
    let started = Instant::now();
    config::write_namenode(&info)?;
    config::write_client(&info)?;
    format(&info)?;

    let mut records = vec![spawn_namenode(root, &info)?];
    for dn in &info.datanodes {
        config::write_datanode(&info, dn)?;
        records.push(spawn_datanode(root, &info, dn)?);
    }
    wait_ready(&info, &records.iter().collect::<Vec<_>>(), nodes)?;
    if opts.with_agents {
        agents::start_all(root, &mut info, opts.tidemark_bin.as_deref(), opts.repository.as_deref())?;
    }
    eprintln!(
        "hdfs {name}: namenode and {nodes} datanodes ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(info)
}

fn format(info: &Info) -> Result<()> {
    let log = info.dir.join("namenode/format.log");
    let out = fs::File::create(&log)?;
    let status = config::java(
        info,
        &info.namenode_conf(),
        "256m",
        "org.apache.hadoop.hdfs.server.namenode.NameNode",
    )
    .args(["-format", "-nonInteractive", "-force"])
    .stdin(std::process::Stdio::null())
    .stdout(out.try_clone()?)
    .stderr(out)
    .status()
    .context("running the NameNode format")?;
    if !status.success() {
        bail!(
            "formatting the NameNode failed ({status}); last lines of {}:\n{}",
            log.display(),
            log_tail(&log, 60)
        );
    }
    Ok(())
}

fn spawn_namenode(root: &Root, info: &Info) -> Result<ProcessRecord> {
    let cmd = config::java(
        info,
        &info.namenode_conf(),
        "512m",
        "org.apache.hadoop.hdfs.server.namenode.NameNode",
    );
    let record = process::spawn(
        "namenode",
        cmd,
        &info.namenode_log,
        vec![info.rpc_port, info.http_port],
    )?;
    root.add_process(&info.name, record.clone())?;
    Ok(record)
}

fn spawn_datanode(root: &Root, info: &Info, dn: &DataNodeInfo) -> Result<ProcessRecord> {
    let cmd = config::java(
        info,
        &dn.conf_dir(),
        "256m",
        "org.apache.hadoop.hdfs.server.datanode.DataNode",
    );
    let record = process::spawn(
        &dn.process_name(),
        cmd,
        &dn.log,
        vec![dn.xfer_port, dn.http_port, dn.ipc_port],
    )?;
    root.add_process(&info.name, record.clone())?;
    Ok(record)
}

fn wait_ready(info: &Info, watched: &[&ProcessRecord], nodes: usize) -> Result<()> {
    let mut logs = vec![info.namenode_log.clone()];
    logs.extend(info.datanodes.iter().map(|d| d.log.clone()));
    wait::wait_for(
        &format!(
            "hdfs {}: {nodes} live datanodes, out of safe mode",
            info.name
        ),
        START_TIMEOUT,
        watched,
        &logs,
        || Ok(ready(info, nodes).unwrap_or(false)),
    )
}

/// Asks the NameNode itself (JMX over HTTP): every DataNode registered with
/// space to offer, safe mode off, and WebHDFS answering.
pub fn ready(info: &Info, nodes: usize) -> Result<bool> {
    let state = jmx(info, "Hadoop:service=NameNode,name=FSNamesystemState")?;
    let live = state["NumLiveDataNodes"].as_u64().unwrap_or(0) as usize;
    if live < nodes || state["FSState"] != "Operational" {
        return Ok(false);
    }
    let fs = jmx(info, "Hadoop:service=NameNode,name=FSNamesystem")?;
    if fs["CapacityRemaining"].as_u64().unwrap_or(0) == 0 {
        return Ok(false);
    }
    let nn = jmx(info, "Hadoop:service=NameNode,name=NameNodeInfo")?;
    if nn["Safemode"].as_str() != Some("") {
        return Ok(false);
    }
    let root = http::get(info.http_addr(), "/webhdfs/v1/?op=GETFILESTATUS")?;
    Ok(root.status == 200 && root.body.contains("\"DIRECTORY\""))
}

/// One JMX bean of the NameNode as JSON.
fn jmx(info: &Info, bean: &str) -> Result<serde_json::Value> {
    let resp = http::get(info.http_addr(), &format!("/jmx?qry={bean}"))?;
    if resp.status != 200 {
        bail!("JMX {bean}: HTTP {}", resp.status);
    }
    let all: serde_json::Value = serde_json::from_str(&resp.body)?;
    // An empty list while the bean is not registered yet: not ready.
    Ok(all.pointer("/beans/0").cloned().unwrap_or_default())
}
