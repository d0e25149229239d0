//! Shared clusters for integration tests.
//!
//! A test binary starts a cluster once (the first test that asks) and every
//! test in it uses that one. Rust's test harness has no "after all" hook, so a
//! small watchdog shell process, started before the cluster, waits for the
//! test binary to exit (however it exits: success, panic, abort, Ctrl-C) and
//! then stops every process group listed in the root and removes the root.
//!
//! CI can instead start one cluster with `testbed up` and name its root in an
//! environment variable (e.g. `TESTBED_CASSANDRA_ROOT`): test binaries then
//! reuse it and leave it running for the next binary.
//!
//! Cassandra with a `tidemark agent` per node (tests in the cli crate, where
//! the binary is built):
//!
//! ```ignore
//! static CLUSTER: SharedCell = SharedCell::with_agents(
//!     Kind::Cassandra, "TESTBED_CASSANDRA_ROOT", Some(3), env!("CARGO_BIN_EXE_tidemark"));
//! ```
//!
//! A cluster found under `$TESTBED_CASSANDRA_ROOT` is reused only if it has
//! agents (start it with `testbed up cassandra --with-agents`). A test that
//! changes the cluster (stops nodes, adds one) gets its own with
//! [`start_or_reuse`], an `UpOptions { with_agents: true, .. }` and an
//! environment variable nobody sets.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

use crate::kind::{self, Kind, UpOptions};
use crate::root::Root;

/// A running cluster a test can use.
#[derive(Debug)]
pub struct Shared {
    pub root: Root,
    pub name: String,
    pub info: serde_json::Value,
    /// True if this process started it (and its watchdog will stop it).
    pub owned: bool,
}

impl Shared {
    /// The info decoded as the kind's own type.
    pub fn info<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_value(self.info.clone()).expect("cluster info decodes")
    }
}

/// Reuses the cluster at `$env_var` if it is up there, else starts one: in
/// the root `$env_var` names, or in a fresh temporary root.
pub fn start_or_reuse(kind: Kind, env_var: &str, opts: &UpOptions) -> Result<Shared> {
    let name = opts.name_or(kind);
    let (root, temporary) = match std::env::var_os(env_var) {
        Some(dir) => {
            let root = Root::new(PathBuf::from(dir))?;
            if let Ok(cluster) = root.cluster(&name) {
                let alive = cluster.processes.iter().all(|p| p.is_alive());
                if let (Some(info), true) = (cluster.info, alive) {
                    let has_agents = info["agents"].as_array().is_some_and(|a| !a.is_empty());
                    if opts.with_agents && !has_agents {
                        bail!(
                            "cluster {name:?} under ${env_var} runs without agents; \
                             start it with `testbed up {kind} --with-agents`"
                        );
                    }
                    return Ok(Shared {
                        root,
                        name,
                        info,
                        owned: false,
                    });
                }
            }
            (root, false)
        }
        None => {
            let dir = tempfile::Builder::new()
                .prefix(&format!("testbed-{kind}-"))
                .tempdir()
                .context("creating a temporary root")?
                .keep();
            (Root::new(dir)?, std::env::var_os("TESTBED_KEEP").is_none())
        }
    };
    spawn_watchdog(&root, temporary)?;
    let info = kind::up(kind, &root, opts)?;
    Ok(Shared {
        root,
        name,
        info,
        owned: true,
    })
}

/// One shared cluster per test binary: `static C: SharedCell = SharedCell::new(..)`
/// then `C.get()` in each test.
pub struct SharedCell {
    cell: OnceLock<Result<Shared, String>>,
    kind: Kind,
    env_var: &'static str,
    nodes: Option<usize>,
    with_agents: bool,
    tidemark_bin: Option<&'static str>,
}

impl SharedCell {
    pub const fn new(kind: Kind, env_var: &'static str, nodes: Option<usize>) -> SharedCell {
        SharedCell {
            cell: OnceLock::new(),
            kind,
            env_var,
            nodes,
            with_agents: false,
            tidemark_bin: None,
        }
    }

    /// A cluster with a `tidemark agent` beside each node, run from
    /// `tidemark_bin` (in a test: `env!("CARGO_BIN_EXE_tidemark")`).
    pub const fn with_agents(
        kind: Kind,
        env_var: &'static str,
        nodes: Option<usize>,
        tidemark_bin: &'static str,
    ) -> SharedCell {
        SharedCell {
            cell: OnceLock::new(),
            kind,
            env_var,
            nodes,
            with_agents: true,
            tidemark_bin: Some(tidemark_bin),
        }
    }

    /// The shared cluster; panics (in every test that asks) if it failed to
    /// start, with the start error and log tails. Only the first caller starts.
    pub fn get(&'static self) -> &'static Shared {
        let result = self.cell.get_or_init(|| {
            let opts = UpOptions {
                name: None,
                nodes: self.nodes,
                with_agents: self.with_agents,
                tidemark_bin: self.tidemark_bin.map(PathBuf::from),
                ..Default::default()
            };
            start_or_reuse(self.kind, self.env_var, &opts).map_err(|e| format!("{e:#}"))
        });
        match result {
            Ok(shared) => shared,
            Err(e) => panic!("shared {} cluster failed to start: {e}", self.kind),
        }
    }
}

/// Watches this process from outside; see the module docs.
const WATCHDOG: &str = r#"
parent=$1; root=$2; remove=$3
while kill -s 0 "$parent" 2>/dev/null; do sleep 1; done
groups=$(cat "$root/pgids" 2>/dev/null)
for g in $groups; do kill -s TERM -- "-$g" 2>/dev/null; done
i=0
while [ $i -lt 30 ]; do
  alive=
  for g in $groups; do kill -s 0 -- "-$g" 2>/dev/null && alive=1; done
  [ -z "$alive" ] && break
  sleep 1; i=$((i+1))
done
for g in $groups; do kill -s KILL -- "-$g" 2>/dev/null; done
[ "$remove" = 1 ] && rm -rf "$root"
exit 0
"#;

fn spawn_watchdog(root: &Root, remove_root: bool) -> Result<()> {
    use std::os::unix::process::CommandExt;
    Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG)
        .arg("testbed-watchdog")
        .arg(std::process::id().to_string())
        .arg(root.dir())
        .arg(if remove_root { "1" } else { "0" })
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting the fixture watchdog")?;
    Ok(())
}
