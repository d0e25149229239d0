//! `--with-agents`: one `tidemark agent` beside each Cassandra node, so the
//! cluster backup tests and the demo run against what an operator would have.
//!
//! Layout (`<cluster>` = `<root>/<name>`):
//! - `<root>/tidemark/repo` and its passphrase `<root>/tidemark/password`
//!   (0600): one repository shared by every cluster of the root, made once
//!   with `tidemark init` under a file lock;
//! - `<cluster>/agents/token` (0600, 64 hex characters) and
//!   `<cluster>/agents/node<N>.toml` (tidemark's `AgentConfig`);
//! - `<cluster>/node<N>/bin/{nodetool,sstableloader}` (see [`write_tool_scripts`]),
//!   `<cluster>/node<N>/agent/` (the agent's work dir, on the data's
//!   filesystem) and `<cluster>/node<N>/agent.log`;
//! - `<cluster>/tidemark.toml`: tidemark's `ClusterConfig` for the coordinator.
//!
//! The testbed does not link the tidemark crates (its build stays light), so
//! the TOML is written here by hand; crates/cli/tests/testbed_agents.rs
//! parses it with tidemark's own loaders.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::{config, write_tool_scripts, Info};
use crate::process::{self, ProcessRecord};
pub use crate::tidemark::{resolve_bin, Tidemark, TIDEMARK_BIN_ENV};
use crate::tidemark::{ensure_repository, random_hex, toml_path, toml_str, write_atomic, write_secret};
use crate::root::Root;
use crate::{http, net, wait};

/// The agent API's status path (tidemark_cassandra::api::STATUS).
pub const STATUS_PATH: &str = "/v1/status";
/// The first status starts the agent's JMX bridge (a JVM compiling its
/// source file): slow on two busy cores, so a generous wait.
const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(180);
/// Per status request; a ring status can take seconds under load.
const STATUS_TIMEOUT: Duration = Duration::from_secs(60);

/// One node's agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct AgentInfo {
    /// The node it serves (1-based, as in [`super::NodeInfo::node`]).
    pub node: usize,
    /// Base URL of its API, as written in tidemark.toml.
    pub url: String,
    pub listen: SocketAddr,
    /// Its `AgentConfig` file.
    pub config: PathBuf,
    pub log: PathBuf,
}

impl AgentInfo {
    pub fn process_name(&self) -> String {
        format!("agent{}", self.node)
    }
}

/// Before the nodes start (so a missing binary or a failed `tidemark init`
/// costs no JVM start): the shared repository and this cluster's token.
pub fn prepare(root: &Root, info: &mut Info, bin: Option<&Path>, location: Option<&str>) -> Result<()> {
    let bin = resolve_bin(bin)?;
    let (repository, password_file) = ensure_repository(root, &bin, location)?;
    let token_file = root.cluster_dir(&info.name).join("agents/token");
    write_secret(&token_file, &random_hex(32)?)?;
    info.tidemark = Some(Tidemark {
        bin,
        repository,
        password_file,
        token_file,
    });
    Ok(())
}

/// Once the nodes are up: an agent per node, tidemark.toml, and every agent
/// answering its status with the token.
pub fn start_all(root: &Root, info: &mut Info) -> Result<()> {
    let numbers: Vec<usize> = info.nodes.iter().map(|n| n.node).collect();
    let mut records = Vec::new();
    for n in numbers {
        records.push(add_agent(root, info, n)?);
    }
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = info
            .agents
            .iter()
            .zip(&records)
            .map(|(agent, record)| {
                let info = &*info;
                s.spawn(move || wait_ready(info, agent, &[record], true))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("wait thread panicked")))
            })
            .collect()
    });
    results.into_iter().collect()
}

/// Writes node `n`'s tool scripts and agent config, starts its agent
/// (registered with the cluster's processes), and lists it in `info` and in
/// tidemark.toml. Does not wait for it: a joining node's agent is listed
/// before it can answer.
pub fn add_agent(root: &Root, info: &mut Info, n: usize) -> Result<ProcessRecord> {
    let agent = write_agent_config(root, info, n)?;
    let record = spawn(root, info, &agent)?;
    info.agents.retain(|a| a.node != n);
    info.agents.push(agent);
    info.tidemark_config = Some(write_cluster_config(root, info)?);
    Ok(record)
}

/// Stops node `n`'s agent (not the node).
pub fn stop_agent(root: &Root, name: &str, n: usize) -> Result<()> {
    let info: Info = root.info(name)?;
    root.stop_process(name, &info.agent(n)?.process_name())
}

/// Starts node `n`'s stopped agent again with the same config and port. Waits
/// until it answers its status: with 200 while the node runs, with anything
/// while it is stopped (the agent's status asks the node).
pub fn start_agent(root: &Root, name: &str, n: usize) -> Result<()> {
    let info: Info = root.info(name)?;
    let agent = info.agent(n)?;
    if root.process(name, &agent.process_name())?.is_alive() {
        bail!("the agent of node {n} of {name} is already running");
    }
    let node_alive = root
        .process(name, &info.node(n)?.process_name())
        .map(|p| p.is_alive())
        .unwrap_or(false);
    let record = spawn(root, &info, agent)?;
    wait_ready(&info, agent, &[&record], node_alive)
}

/// GET /v1/status of node `n`'s agent, with `Authorization: Bearer <token>`
/// when a token is given.
pub fn agent_status(info: &Info, n: usize, token: Option<&str>) -> Result<http::Response> {
    let agent = info.agent(n)?;
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| ("Authorization", b))
        .into_iter()
        .collect();
    http::get_with_headers(agent.listen, STATUS_PATH, &headers, STATUS_TIMEOUT)
}

/// The cluster's agent token (first line of its token file).
pub fn read_token(info: &Info) -> Result<String> {
    let tm = setup(info)?;
    let text = fs::read_to_string(&tm.token_file)
        .with_context(|| format!("reading {}", tm.token_file.display()))?;
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

/// Polls the agent's status until it answers 200 (or, with `need_ok` false,
/// any HTTP status). 401 is an error at once: the token does not match.
pub fn wait_ready(
    info: &Info,
    agent: &AgentInfo,
    watched: &[&ProcessRecord],
    need_ok: bool,
) -> Result<()> {
    let token = read_token(info)?;
    let mut last = String::from("no answer yet");
    let waited = wait::wait_for(
        &format!(
            "tidemark agent of cassandra {} node {} at {}",
            info.name, agent.node, agent.url
        ),
        AGENT_READY_TIMEOUT,
        watched,
        std::slice::from_ref(&agent.log),
        || match agent_status(info, agent.node, Some(&token)) {
            Ok(r) if r.status == 200 => Ok(true),
            Ok(r) if r.status == 401 => bail!("the agent refuses the cluster's token (401)"),
            Ok(r) => {
                last = format!(
                    "HTTP {}: {}",
                    r.status,
                    r.body.chars().take(500).collect::<String>()
                );
                Ok(!need_ok)
            }
            Err(e) => {
                last = format!("{e:#}");
                Ok(false)
            }
        },
    );
    waited.with_context(|| format!("last status answer: {last}"))
}

fn setup(info: &Info) -> Result<&Tidemark> {
    info.tidemark
        .as_ref()
        .with_context(|| format!("cluster {} was started without --with-agents", info.name))
}

fn spawn(root: &Root, info: &Info, agent: &AgentInfo) -> Result<ProcessRecord> {
    let tm = setup(info)?;
    let mut cmd = Command::new(&tm.bin);
    // -v: the agent's info-level log in agent.log, for post-mortems.
    cmd.arg("-v")
        .arg("agent")
        .arg("--config")
        .arg(&agent.config);
    // Everything comes from the config file; nothing from the caller's shell.
    for var in [
        "TIDEMARK_REPOSITORY",
        "TIDEMARK_PASSWORD",
        "TIDEMARK_PASSWORD_FILE",
    ] {
        cmd.env_remove(var);
    }
    let record = process::spawn(
        &agent.process_name(),
        cmd,
        &agent.log,
        vec![agent.listen.port()],
    )?;
    root.add_process(&info.name, record.clone())?;
    Ok(record)
}

fn write_agent_config(root: &Root, info: &Info, n: usize) -> Result<AgentInfo> {
    let tm = setup(info)?;
    let (nodetool, sstableloader) = write_tool_scripts(info, n)?;
    let node = info.node(n)?;
    let node_dir = config::node_dir(node);
    let work_dir = node_dir.join("agent");
    fs::create_dir_all(&work_dir).with_context(|| format!("creating {}", work_dir.display()))?;
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, net::free_port()?));
    let path = root
        .cluster_dir(&info.name)
        .join(format!("agents/node{n}.toml"));
    let text = format!(
        "# tidemark agent for testbed cluster {name}, node {n} ({addr}); written by testbed.\n\
         listen = {listen}\n\
         token-file = {token}\n\
         repository = {repo}\n\
         password-file = {pw}\n\
         node-address = {addr_s}\n\
         cassandra-yaml = {yaml}\n\
         data-dirs = [{data}]\n\
         jmx = {jmx}\n\
         nodetool = [{nodetool}]\n\
         sstableloader = [{loader}]\n\
         work-dir = {work}\n",
        name = info.name,
        addr = node.address,
        listen = toml_str(&listen.to_string()),
        token = toml_path(&tm.token_file)?,
        repo = toml_path(&tm.repository)?,
        pw = toml_path(&tm.password_file)?,
        addr_s = toml_str(&node.address.to_string()),
        yaml = toml_path(&node.config)?,
        data = toml_path(&node.data_dir)?,
        jmx = toml_str(&format!("127.0.0.1:{}", node.jmx_port)),
        nodetool = toml_path(&nodetool)?,
        loader = toml_path(&sstableloader)?,
        work = toml_path(&work_dir)?,
    );
    write_atomic(&path, &text)?;
    Ok(AgentInfo {
        node: n,
        url: format!("http://{listen}"),
        listen,
        config: path,
        log: node_dir.join("agent.log"),
    })
}

/// `<cluster>/tidemark.toml`, replaced atomically: a coordinator may read it
/// while a node is being added.
fn write_cluster_config(root: &Root, info: &Info) -> Result<PathBuf> {
    let tm = setup(info)?;
    let contact: Vec<String> = info.contact_points.iter().map(|c| toml_str(c)).collect();
    let mut text = format!(
        "# tidemark coordinator file for testbed cluster {name}; written by testbed.\n\
         name = {cluster}\n\
         repository = {repo}\n\
         password-file = {pw}\n\
         \n\
         [cassandra]\n\
         contact-points = [{contact}]\n\
         \n\
         [agents]\n\
         token-file = {token}\n",
        name = info.name,
        cluster = toml_str(&info.cluster_name),
        repo = toml_path(&tm.repository)?,
        pw = toml_path(&tm.password_file)?,
        contact = contact.join(", "),
        token = toml_path(&tm.token_file)?,
    );
    let mut agents: Vec<&AgentInfo> = info.agents.iter().collect();
    agents.sort_by_key(|a| a.node);
    for agent in agents {
        let node = info.node(agent.node)?;
        text.push_str(&format!(
            "\n[[agents.node]]\naddress = {}\nurl = {}\n",
            toml_str(&node.address.to_string()),
            toml_str(&agent.url)
        ));
    }
    let path = root.cluster_dir(&info.name).join("tidemark.toml");
    write_atomic(&path, &text)?;
    Ok(path)
}

