//! `--with-agents`: one `tidemark agent` beside each DataNode and the
//! coordinator file, so the HDFS backup tests and the demo run against what
//! an operator would have.
//!
//! Layout (`<cluster>` = `<root>/<name>`): the repository shared by the
//! root's clusters (`<root>/tidemark/`, see `crate::tidemark`),
//! `<cluster>/agents/token`, `<cluster>/agents/datanode<N>.toml` (tidemark's
//! HDFS `AgentConfig`), `<cluster>/datanode<N>/agent.log` and
//! `<cluster>/tidemark.toml` (the coordinator's `ClusterConfig` with an
//! `[hdfs]` table: `roots = ["/data"]`, the user of `--tidemark-user`, by default the
//! NameNode's own).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::Info;
use crate::process::ProcessRecord;
use crate::root::Root;
use crate::tidemark::{self, read_token, toml_path, toml_str, write_atomic, Tidemark};
use crate::{http, net, wait};

/// The user the testbed's tidemark acts as (simple auth): the one running
/// the NameNode, which HDFS makes its superuser (snapshots, chown).
pub fn user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map_or_else(|| "root".to_string(), |u| u.name)
}
/// The root the coordinator file protects.
pub const ROOT: &str = "/data";
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// One DataNode's agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct AgentInfo {
    /// The DataNode it sits beside (1-based).
    pub node: usize,
    pub url: String,
    pub listen: SocketAddr,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl AgentInfo {
    pub fn process_name(&self) -> String {
        format!("agent{}", self.node)
    }
}

/// Once the cluster is up: an agent per DataNode, each answering its status
/// with the token, then tidemark.toml.
pub fn start_all(
    root: &Root,
    info: &mut Info,
    bin: Option<&std::path::Path>,
    location: Option<&str>,
) -> Result<()> {
    let tm = tidemark::prepare(root, &info.name, bin, location)?;
    info.tidemark = Some(tm.clone());
    let token = read_token(&tm)?;
    let mut started = Vec::new();
    for dn in info.datanodes.clone() {
        let agent = write_agent_config(root, info, &tm, dn.node)?;
        let record = tidemark::spawn_agent(
            root,
            &info.name,
            &tm,
            &agent.process_name(),
            &agent.config,
            &agent.log,
            agent.listen.port(),
        )?;
        started.push((agent, record));
    }
    for (agent, record) in &started {
        wait_ready(agent, record, &token)?;
    }
    info.agents = started.into_iter().map(|(a, _)| a).collect();
    info.tidemark_config = Some(write_cluster_config(root, info, &tm)?);
    Ok(())
}

/// Starts the agent of DataNode `n` again (after `stop-agent`).
pub fn start_agent(root: &Root, info: &Info, n: usize) -> Result<ProcessRecord> {
    let tm = info.tidemark.as_ref().with_context(|| format!("cluster {} was started without --with-agents", info.name))?;
    let agent = info.agents.iter().find(|a| a.node == n).with_context(|| format!("no agent {n}"))?;
    let record = tidemark::spawn_agent(root, &info.name, tm, &agent.process_name(), &agent.config, &agent.log, agent.listen.port())?;
    wait_ready(agent, &record, &read_token(tm)?)?;
    Ok(record)
}

fn wait_ready(agent: &AgentInfo, record: &ProcessRecord, token: &str) -> Result<()> {
    let bearer = format!("Bearer {token}");
    let mut last = String::from("no answer yet");
    let waited = wait::wait_for(
        &format!("tidemark HDFS agent {} at {}", agent.node, agent.url),
        READY_TIMEOUT,
        &[record],
        std::slice::from_ref(&agent.log),
        || match http::get_with_headers(agent.listen, "/v1/status", &[("Authorization", &bearer)], Duration::from_secs(30)) {
            Ok(r) if r.status == 200 => Ok(true),
            Ok(r) if r.status == 401 => bail!("the agent refuses the cluster's token (401)"),
            Ok(r) => {
                last = format!("HTTP {}: {}", r.status, r.body.chars().take(300).collect::<String>());
                Ok(false)
            }
            Err(e) => {
                last = format!("{e:#}");
                Ok(false)
            }
        },
    );
    waited.with_context(|| format!("last status answer: {last}"))
}

fn write_agent_config(root: &Root, info: &Info, tm: &Tidemark, n: usize) -> Result<AgentInfo> {
    let dn = info.datanode(n)?;
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, net::free_port()?));
    let path = root.cluster_dir(&info.name).join(format!("agents/datanode{n}.toml"));
    let text = format!(
        "# tidemark HDFS agent for testbed cluster {name}, DataNode {n}; written by testbed.\n\
         listen = {listen}\n\
         token-file = {token}\n\
         repository = {repo}\n\
         password-file = {pw}\n\
         name = {agent}\n\
         \n\
         [hdfs]\n\
         namenodes = [{nn}]\n\
         user = {user}\n",
        name = info.name,
        listen = toml_str(&listen.to_string()),
        token = toml_path(&tm.token_file)?,
        repo = toml_path(&tm.repository)?,
        pw = toml_path(&tm.password_file)?,
        agent = toml_str(&format!("datanode{n}")),
        nn = toml_str(&info.webhdfs),
        user = toml_str(&info.tidemark_user),
    );
    write_atomic(&path, &text)?;
    Ok(AgentInfo { node: n, url: format!("http://{listen}"), listen, config: path, log: dn.data_dir.with_file_name("agent.log") })
}

/// `<cluster>/tidemark.toml`: the coordinator's file.
fn write_cluster_config(root: &Root, info: &Info, tm: &Tidemark) -> Result<PathBuf> {
    let mut text = format!(
        "# tidemark coordinator file for testbed HDFS cluster {name}; written by testbed.\n\
         name = {cluster}\n\
         repository = {repo}\n\
         password-file = {pw}\n\
         \n\
         [hdfs]\n\
         namenodes = [{nn}]\n\
         user = {user}\n\
         roots = [{root_dir}]\n\
         \n\
         [agents]\n\
         token-file = {token}\n",
        name = info.name,
        cluster = toml_str(&format!("testbed-{}", info.name)),
        repo = toml_path(&tm.repository)?,
        pw = toml_path(&tm.password_file)?,
        nn = toml_str(&info.webhdfs),
        user = toml_str(&info.tidemark_user),
        root_dir = toml_str(ROOT),
        token = toml_path(&tm.token_file)?,
    );
    for a in &info.agents {
        let dn = info.datanode(a.node)?;
        text.push_str(&format!(
            "\n[[agents.node]]\nname = {}\nurl = {}\ndatanode = {}\n",
            toml_str(&format!("datanode{}", a.node)),
            toml_str(&a.url),
            toml_str(&format!("127.0.0.1:{}", dn.xfer_port))
        ));
    }
    let path = root.cluster_dir(&info.name).join("tidemark.toml");
    write_atomic(&path, &text)?;
    Ok(path)
}
