//! `testbed up cassandra --with-agents` (through the testbed library, as the
//! fixtures and the `testbed` binary call it) with the real `tidemark agent`:
//! the files it writes parse with tidemark's own loaders and say what the
//! cluster is, every agent answers its status with the token and refuses
//! without it, an agent can be stopped and started on its own, a node added
//! later gets its agent and its line in tidemark.toml, and `down` leaves no
//! process behind.
//!
//! Each test starts a cluster of its own in a temporary root (it is stopped
//! by the test, and by the fixture's watchdog should the test die).

use std::net::{IpAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use testbed::cassandra::{self, Info};
use testbed::fixture::{self, Shared};
use testbed::{Kind, UpOptions};
use tidemark_cassandra::api::AgentStatus;
use tidemark_cassandra::config::{AgentConfig, ClusterConfig};

/// Not set anywhere: each test gets a fresh temporary root.
const NO_REUSE: &str = "TESTBED_AGENTS_TEST_NEVER_SET";

fn start(name: &str, nodes: usize) -> Result<Shared> {
    // Fast key derivation for the root's repository (tests only).
    std::env::set_var("TIDEMARK_INSECURE_TEST_KDF", "1");
    let opts = UpOptions {
        name: Some(name.into()),
        nodes: Some(nodes),
        with_agents: true,
        tidemark_bin: Some(env!("CARGO_BIN_EXE_tidemark").into()),
        ..Default::default()
    };
    fixture::start_or_reuse(Kind::Cassandra, NO_REUSE, &opts)
}

fn mode(path: &Path) -> Result<u32> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("stat {}", path.display()))?
        .permissions()
        .mode()
        & 0o777)
}

/// The agent's status with the token, decoded.
fn status(info: &Info, n: usize, token: &str) -> Result<AgentStatus> {
    let r = cassandra::agent_status(info, n, Some(token))?;
    ensure!(r.status == 200, "agent {n}: HTTP {}: {}", r.status, r.body);
    Ok(serde_json::from_str(&r.body)?)
}

/// Every node as Up/Normal in the agent's ring.
fn assert_ring(st: &AgentStatus, info: &Info) {
    let mut want: Vec<IpAddr> = info.nodes.iter().map(|n| IpAddr::V4(n.address)).collect();
    want.sort();
    let mut got: Vec<IpAddr> = st.ring.iter().map(|m| m.address).collect();
    got.sort();
    assert_eq!(got, want, "ring of the agent of {}", st.node_address);
    for m in &st.ring {
        assert!(m.up && m.state == 'N', "{m:?} is not UN");
    }
}

#[test]
fn three_nodes_with_agents_configs_status_and_down() -> Result<()> {
    let shared = start("agents3", 3)?;
    let result = check_three(&shared);
    let down = shared.root.down();
    result?;
    down?;
    Ok(())
}

fn check_three(shared: &Shared) -> Result<()> {
    let root = &shared.root;
    let info: Info = shared.info();
    let cluster_dir = root.cluster_dir(&info.name);
    assert_eq!(info.nodes.len(), 3);

    // The printed JSON: tidemark_config and per node url, config, log.
    let json = &shared.info;
    let config_path = PathBuf::from(
        json["tidemark_config"]
            .as_str()
            .context("tidemark_config")?,
    );
    assert!(config_path.is_absolute(), "{}", config_path.display());
    assert_eq!(config_path, cluster_dir.join("tidemark.toml"));
    let agents = json["agents"].as_array().context("agents")?;
    assert_eq!(agents.len(), 3);
    for a in agents {
        for key in ["url", "config", "log"] {
            assert!(a[key].is_string(), "agents[].{key} missing in {a}");
        }
    }

    // The shared repository and the secrets.
    let repo = root.dir().join("tidemark/repo");
    let password = root.dir().join("tidemark/password");
    let token_file = cluster_dir.join("agents/token");
    assert_eq!(mode(&password)?, 0o600);
    assert_eq!(mode(&token_file)?, 0o600);
    let token = std::fs::read_to_string(&token_file)?.trim().to_string();
    assert_eq!(token.len(), 64);
    assert!(
        token.chars().all(|c| c.is_ascii_hexdigit()),
        "token is not hex"
    );
    let snapshots = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["snapshots", "--json", "--repo"])
        .arg(&repo)
        .arg("--password-file")
        .arg(&password)
        .output()?;
    assert!(
        snapshots.status.success(),
        "the root's repository does not open with its passphrase: {}",
        String::from_utf8_lossy(&snapshots.stderr)
    );

    // The coordinator file, through tidemark's loader.
    let cluster = ClusterConfig::load(&config_path)?;
    assert_eq!(cluster.name, info.cluster_name);
    assert_eq!(cluster.repository, repo.display().to_string());
    assert_eq!(cluster.password_file, password);
    assert_eq!(cluster.cassandra.contact_points, info.contact_points);
    assert_eq!(cluster.agents.token_file, token_file);
    assert_eq!(cluster.agents.node.len(), 3);
    for node in &info.nodes {
        let agent = info.agent(node.node)?;
        let listed = cluster
            .agent_for(IpAddr::V4(node.address))
            .with_context(|| format!("node {} not in tidemark.toml", node.address))?;
        assert_eq!(listed.url, agent.url);
        assert_eq!(listed.url, format!("http://{}", agent.listen));
    }

    // Each agent's file, through tidemark's loader.
    for node in &info.nodes {
        let agent = info.agent(node.node)?;
        let node_dir = cluster_dir.join(format!("node{}", node.node));
        assert_eq!(
            agent.config,
            cluster_dir.join(format!("agents/node{}.toml", node.node))
        );
        assert_eq!(agent.log, node_dir.join("agent.log"));
        let c = AgentConfig::load(&agent.config)?;
        assert_eq!(c.listen, agent.listen);
        assert_eq!(c.token_file, token_file);
        assert_eq!(c.repository, repo.display().to_string());
        assert_eq!(c.password_file, password);
        assert_eq!(c.node_address, IpAddr::V4(node.address));
        assert_eq!(c.cassandra_yaml, node.config);
        assert_eq!(c.data_dirs, vec![node.data_dir.clone()]);
        assert_eq!(
            c.nodetool,
            vec![node_dir.join("bin/nodetool").display().to_string()]
        );
        assert_eq!(
            c.sstableloader,
            vec![node_dir.join("bin/sstableloader").display().to_string()]
        );
        assert_eq!(c.work_dir, node_dir.join("agent"));
    }
    // The nodetool the agent runs works as it stands in the file.
    let c = AgentConfig::load(&info.agent(2)?.config)?;
    let out = Command::new(&c.nodetool[0]).arg("status").output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("UN ")).count(),
        3,
        "{text}"
    );

    // Status: 200 with the token, the node's own address and the whole ring;
    // 401 without the token or with another one.
    let other = "0".repeat(64);
    for node in &info.nodes {
        let st = status(&info, node.node, &token)?;
        assert_eq!(st.node_address, IpAddr::V4(node.address));
        assert_ring(&st, &info);
        assert_eq!(cassandra::agent_status(&info, node.node, None)?.status, 401);
        assert_eq!(
            cassandra::agent_status(&info, node.node, Some(&other))?.status,
            401
        );
    }

    // Processes: three nodes and three agents, recorded and alive.
    let procs = root.status()?;
    let mut names: Vec<&str> = procs.iter().map(|p| p.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        ["agent1", "agent2", "agent3", "node1", "node2", "node3"]
    );
    assert!(procs.iter().all(|p| p.alive), "{procs:?}");

    // One agent stops and starts on its own; its node stays up.
    cassandra::stop_agent(root, &info.name, 2)?;
    assert!(
        TcpStream::connect(info.agent(2)?.listen).is_err(),
        "agent 2 still listens"
    );
    assert!(root.process(&info.name, "node2")?.is_alive());
    assert!(!root.process(&info.name, "agent2")?.is_alive());
    cassandra::start_agent(root, &info.name, 2)?;
    assert_eq!(
        status(&info, 2, &token)?.node_address,
        IpAddr::V4(info.nodes[1].address)
    );

    // Down: every process of the cluster, agents included, is gone, and so
    // is every member of their process groups (an agent's nodetool JVMs).
    let pgids: Vec<(String, i32)> = root
        .cluster(&info.name)?
        .processes
        .into_iter()
        .map(|p| (p.name, p.pgid))
        .collect();
    assert_eq!(pgids.len(), 6);
    root.down()?;
    for (name, pgid) in &pgids {
        let left = running_in_group(*pgid)?;
        assert!(
            left.is_empty(),
            "{name}: pids {left:?} of its group run after down"
        );
    }
    assert!(root.status()?.is_empty());
    for a in &info.agents {
        assert!(
            TcpStream::connect(a.listen).is_err(),
            "{} still listens after down",
            a.url
        );
    }
    Ok(())
}

/// Pids of running (not zombie) processes in process group `pgid`.
fn running_in_group(pgid: i32) -> Result<Vec<i32>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(pid) = entry?.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name: state, ppid, pgrp.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() != Some(&"Z") && fields.get(2) == Some(&pgid.to_string().as_str()) {
            out.push(pid);
        }
    }
    Ok(out)
}

#[test]
fn added_node_gets_an_agent_and_a_line_in_tidemark_toml() -> Result<()> {
    let shared = start("agentsgrow", 1)?;
    let result = check_grow(&shared);
    let down = shared.root.down();
    result?;
    down?;
    Ok(())
}

fn check_grow(shared: &Shared) -> Result<()> {
    let root = &shared.root;
    let before: Info = shared.info();
    let token = cassandra::agents::read_token(&before)?;
    let node = cassandra::add_node(root, &before.name)?;
    let info: Info = root.info(&before.name)?;
    assert_eq!(info.nodes.len(), 2);
    assert_eq!(info.agents.len(), 2);
    let cluster = ClusterConfig::load(info.tidemark_config.as_deref().context("tidemark_config")?)?;
    assert_eq!(cluster.cassandra.contact_points, info.contact_points);
    let listed = cluster
        .agent_for(IpAddr::V4(node.address))
        .context("the new node is not in tidemark.toml")?;
    assert_eq!(listed.url, info.agent(node.node)?.url);
    AgentConfig::load(&info.agent(node.node)?.config)?;
    for n in [1, node.node] {
        let st = status(&info, n, &token)?;
        assert_ring(&st, &info);
    }
    // Stopping a node leaves its agent running.
    cassandra::stop_node(root, &info.name, node.node)?;
    assert!(root
        .process(&info.name, &format!("agent{}", node.node))?
        .is_alive());
    Ok(())
}
