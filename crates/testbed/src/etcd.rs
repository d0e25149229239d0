//! An etcd cluster from Debian's etcd-server (3.4): N members (default 3) on
//! 127.0.0.1, bootstrapped statically with `--initial-cluster`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::kind::{Kind, UpOptions};
use crate::process::{self, ProcessRecord};
use crate::root::Root;
use crate::{fresh, http, net, wait};

pub const DEFAULT_MEMBERS: usize = 3;
const MAX_MEMBERS: usize = 7;
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How to reach a cluster; what `testbed up etcd` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Info {
    pub name: String,
    /// etcd's version, e.g. `3.4.23`.
    pub version: String,
    /// Client URLs of all members (`http://127.0.0.1:PORT`), for `--endpoints`.
    pub endpoints: Vec<String>,
    pub members: Vec<MemberInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct MemberInfo {
    /// 1-based.
    pub node: usize,
    /// etcd's member name.
    pub member: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub client_url: String,
    pub peer_url: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl MemberInfo {
    pub fn process_name(&self) -> String {
        format!("etcd{}", self.node)
    }

    fn client_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }
}

/// etcd's version from `etcd --version`.
pub fn server_version() -> Result<String> {
    let out = Command::new("etcd")
        .arg("--version")
        .output()
        .context("running etcd (is Debian's etcd-server installed?)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("etcd Version:"))
        .map(|v| v.trim().to_string())
        .with_context(|| format!("unexpected `etcd --version`: {text}"))
}

/// Runs `etcdctl --endpoints ENDPOINTS ARGS` (API v3) and returns stdout.
pub fn etcdctl(endpoints: &[String], args: &[&str]) -> Result<String> {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .arg("--command-timeout=10s")
        .args(args)
        .output()
        .context("running etcdctl (is Debian's etcd-client installed?)")?;
    if !out.status.success() {
        bail!(
            "etcdctl {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts all members at once and waits until each reports itself healthy
/// (which needs an elected leader) and every one lists all members.
pub fn start(root: &Root, opts: &UpOptions) -> Result<Info> {
    let count = opts.nodes.unwrap_or(DEFAULT_MEMBERS);
    if count == 0 || count > MAX_MEMBERS {
        bail!("--nodes (members) must be 1..={MAX_MEMBERS}, got {count}");
    }
    let name = opts.name_or(Kind::Etcd);
    let version = server_version()?;
    root.create_cluster(Kind::Etcd, &name)?;
    let dir = fresh::cluster_dir(root, &name)?;
    let mut members = Vec::new();
    for node in 1..=count {
        let (client_port, peer_port) = (net::free_port()?, net::free_port()?);
        let member_dir = dir.join(format!("etcd{node}"));
        members.push(MemberInfo {
            node,
            member: format!("m{node}"),
            client_port,
            peer_port,
            client_url: format!("http://127.0.0.1:{client_port}"),
            peer_url: format!("http://127.0.0.1:{peer_port}"),
            data_dir: member_dir.join("data"),
            log: member_dir.join("etcd.log"),
        });
    }
    let info = Info {
        name: name.clone(),
        version,
        endpoints: members.iter().map(|m| m.client_url.clone()).collect(),
        members,
    };
    let initial_cluster: Vec<String> = info
        .members
        .iter()
        .map(|m| format!("{}={}", m.member, m.peer_url))
        .collect();
    let initial_cluster = initial_cluster.join(",");
    // Unique per start, so members of another cluster can never join this one.
    let token = format!(
        "testbed-{name}-{}-{}",
        std::process::id(),
        info.members[0].peer_port
    );

    let started = Instant::now();
    let mut records = Vec::new();
    for m in &info.members {
        std::fs::create_dir_all(&m.data_dir)?;
        let mut cmd = Command::new("etcd");
        cmd.arg(format!("--name={}", m.member))
            .arg(format!("--data-dir={}", m.data_dir.display()))
            .arg(format!("--listen-client-urls={}", m.client_url))
            .arg(format!("--advertise-client-urls={}", m.client_url))
            .arg(format!("--listen-peer-urls={}", m.peer_url))
            .arg(format!("--initial-advertise-peer-urls={}", m.peer_url))
            .arg(format!("--initial-cluster={initial_cluster}"))
            .arg(format!("--initial-cluster-token={token}"))
            .arg("--initial-cluster-state=new")
            .arg("--logger=zap")
            .arg("--log-outputs=stderr");
        let record = process::spawn(
            &m.process_name(),
            cmd,
            &m.log,
            vec![m.client_port, m.peer_port],
        )?;
        root.add_process(&name, record.clone())?;
        records.push(record);
    }
    let watched: Vec<&ProcessRecord> = records.iter().collect();
    let logs: Vec<PathBuf> = info.members.iter().map(|m| m.log.clone()).collect();
    wait::wait_for(
        &format!("etcd {name}: {count} healthy members"),
        START_TIMEOUT,
        &watched,
        &logs,
        || Ok(ready(&info).unwrap_or(false)),
    )?;
    eprintln!(
        "etcd {name}: {count} members ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(info)
}

fn ready(info: &Info) -> Result<bool> {
    for m in &info.members {
        let health = http::get(m.client_addr(), "/health")?;
        let healthy: serde_json::Value = serde_json::from_str(&health.body).unwrap_or_default();
        if health.status != 200 || healthy["health"] != "true" {
            return Ok(false);
        }
        let listed = etcdctl(std::slice::from_ref(&m.client_url), &["member", "list"])?;
        if listed.lines().filter(|l| l.contains("started")).count() != info.members.len() {
            return Ok(false);
        }
    }
    Ok(true)
}
