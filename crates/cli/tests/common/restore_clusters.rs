//! Clusters for the cluster-restore tests: one 3-node source cluster with
//! agents shared by the whole test binary, and target clusters of other sizes
//! started in the same testbed root (so they share its repository at
//! `<root>/tidemark/repo`) and stopped by the test that used them. The
//! fixture's watchdog stops whatever is left when the binary exits.
//!
//! `TIDEMARK_RESTORE_TEST_ROOT` names a root to reuse (a source cluster
//! `restore-src` started there with agents is taken as it is).

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};

use anyhow::{Context, Result};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use testbed::cassandra::Info;
use testbed::fixture::{self, Shared};
use testbed::{Kind, UpOptions};

use crate::common::{run_command, Output};

pub const ROOT_ENV: &str = "TIDEMARK_RESTORE_TEST_ROOT";
pub const SOURCE: &str = "restore-src";

fn options(name: &str, nodes: usize) -> UpOptions {
    UpOptions {
        name: Some(name.to_string()),
        nodes: Some(nodes),
        with_agents: true,
        tidemark_bin: Some(PathBuf::from(env!("CARGO_BIN_EXE_tidemark"))),
        ..Default::default()
    }
}

/// The shared source cluster.
pub fn source() -> &'static Shared {
    static CELL: OnceLock<Result<Shared, String>> = OnceLock::new();
    let r = CELL.get_or_init(|| {
        fixture::start_or_reuse(Kind::Cassandra, ROOT_ENV, &options(SOURCE, 3))
            .map_err(|e| format!("{e:#}"))
    });
    match r {
        Ok(s) => s,
        Err(e) => panic!("source cluster failed to start: {e}"),
    }
}

/// Tests that share the source cluster run one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A cluster of `nodes` nodes in the source's root; stopped when dropped.
pub struct TargetCluster {
    pub name: String,
    pub info: Info,
}

impl TargetCluster {
    pub fn start(name: &str, nodes: usize) -> Result<TargetCluster> {
        let root = &source().root;
        let json = testbed::kind::up(Kind::Cassandra, root, &options(name, nodes))
            .with_context(|| format!("starting target cluster {name}"))?;
        let info: Info = serde_json::from_value(json)?;
        Ok(TargetCluster {
            name: name.to_string(),
            info,
        })
    }

    pub fn config(&self) -> PathBuf {
        self.info
            .tidemark_config
            .clone()
            .expect("started with agents")
    }
}

impl Drop for TargetCluster {
    fn drop(&mut self) {
        if let Err(e) = source().root.stop_cluster(&self.name) {
            eprintln!("stopping {}: {e:#}", self.name);
        }
    }
}

pub fn config_of(info: &Info) -> PathBuf {
    info.tidemark_config
        .clone()
        .expect("cluster started with agents")
}

pub async fn connect(info: &Info) -> Result<Session> {
    SessionBuilder::new()
        .known_nodes(&info.contact_points)
        .build()
        .await
        .with_context(|| format!("connecting to {}", info.name))
}

/// Runs `tidemark ARGS...`.
pub fn tidemark(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    cmd.args(args);
    run_command(cmd)
}

pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}
