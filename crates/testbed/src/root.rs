//! The root: one state directory holding every cluster the testbed started
//! there, with a JSON state file so `down` and `status` work from any process.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::kind::Kind;
use crate::process::ProcessRecord;

const STATE_FILE: &str = "state.json";
/// Plain list of process group ids, one per line, for the fixture watchdog
/// (a shell loop that cannot parse JSON).
const PGIDS_FILE: &str = "pgids";

/// Everything started under one root, keyed by cluster name.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct State {
    pub clusters: BTreeMap<String, ClusterState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ClusterState {
    pub kind: Kind,
    pub name: String,
    /// The kind's connection info (what `up` printed), once it was ready.
    #[serde(default)]
    pub info: Option<serde_json::Value>,
    pub processes: Vec<ProcessRecord>,
}

/// Status of one process, for `testbed status`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ProcessStatus {
    pub cluster: String,
    pub kind: Kind,
    pub name: String,
    pub pid: i32,
    pub alive: bool,
    pub ports: Vec<u16>,
    pub log: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Root {
    dir: PathBuf,
}

impl Root {
    /// Opens (creating if needed) a root directory.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Root> {
        let dir = dir.into();
        fs::create_dir_all(&dir).with_context(|| format!("creating root {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        Ok(Root { dir })
    }

    /// `$TESTBED_ROOT`, else /tmp/testbed.
    pub fn default_dir() -> PathBuf {
        std::env::var_os("TESTBED_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp/testbed"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Directory for one cluster's files (configs, data, logs).
    pub fn cluster_dir(&self, cluster: &str) -> PathBuf {
        self.dir.join(cluster)
    }

    pub fn load(&self) -> Result<State> {
        let path = self.dir.join(STATE_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Read-modify-write of the state under an exclusive lock, so concurrent
    /// starts (parallel tests) do not lose each other's records.
    pub fn update<T>(&self, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let lock = File::create(self.dir.join(".lock"))?;
        let _guard = Flock::lock(lock, FlockArg::LockExclusive)
            .map_err(|(_, e)| anyhow!("locking {}: {e}", self.dir.display()))?;
        let mut state = self.load()?;
        let out = f(&mut state)?;
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        fs::write(&tmp, serde_json::to_vec_pretty(&state)?)?;
        fs::rename(&tmp, self.dir.join(STATE_FILE))?;
        let pgids: String = state
            .clusters
            .values()
            .flat_map(|c| &c.processes)
            .filter(|p| p.is_alive())
            .map(|p| format!("{}\n", p.pgid))
            .collect();
        fs::write(self.dir.join(PGIDS_FILE), pgids)?;
        Ok(out)
    }

    pub fn cluster(&self, name: &str) -> Result<ClusterState> {
        self.load()?
            .clusters
            .remove(name)
            .ok_or_else(|| anyhow!("no cluster named {name:?} under {}", self.dir.display()))
    }

    /// The connection info of a ready cluster, typed.
    pub fn info<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T> {
        let cluster = self.cluster(name)?;
        let info = cluster
            .info
            .ok_or_else(|| anyhow!("cluster {name:?} never became ready"))?;
        serde_json::from_value(info).with_context(|| format!("decoding info of {name:?}"))
    }

    /// Registers a new cluster; fails if the name is taken by a live one.
    pub fn create_cluster(&self, kind: Kind, name: &str) -> Result<()> {
        self.update(|state| {
            if let Some(old) = state.clusters.get(name) {
                if old.processes.iter().any(|p| p.is_alive()) {
                    return Err(anyhow!(
                        "cluster {name:?} is already running under {}",
                        self.dir.display()
                    ));
                }
            }
            state.clusters.insert(
                name.to_string(),
                ClusterState {
                    kind,
                    name: name.to_string(),
                    info: None,
                    processes: Vec::new(),
                },
            );
            Ok(())
        })
    }

    pub fn set_info(&self, name: &str, info: serde_json::Value) -> Result<()> {
        self.update(|state| {
            let cluster = state
                .clusters
                .get_mut(name)
                .ok_or_else(|| anyhow!("no cluster {name:?}"))?;
            cluster.info = Some(info);
            Ok(())
        })
    }

    /// Records a started process (replacing a dead one of the same name).
    pub fn add_process(&self, cluster: &str, record: ProcessRecord) -> Result<()> {
        self.update(|state| {
            let c = state
                .clusters
                .get_mut(cluster)
                .ok_or_else(|| anyhow!("no cluster {cluster:?}"))?;
            c.processes.retain(|p| p.name != record.name);
            c.processes.push(record);
            Ok(())
        })
    }

    pub fn process(&self, cluster: &str, name: &str) -> Result<ProcessRecord> {
        self.cluster(cluster)?
            .processes
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| anyhow!("no process {name:?} in cluster {cluster:?}"))
    }

    /// Stops one process; its record stays (marked dead) so it can be restarted.
    pub fn stop_process(&self, cluster: &str, name: &str) -> Result<()> {
        self.process(cluster, name)?.stop(stop_grace())
    }

    /// Stops every process of one cluster and forgets the cluster.
    pub fn stop_cluster(&self, name: &str) -> Result<()> {
        let cluster = self.cluster(name)?;
        stop_all(&cluster.processes)?;
        self.update(|state| {
            state.clusters.remove(name);
            Ok(())
        })
    }

    /// Stops everything started under this root.
    pub fn down(&self) -> Result<()> {
        let state = self.load()?;
        let all: Vec<ProcessRecord> = state
            .clusters
            .values()
            .flat_map(|c| c.processes.clone())
            .collect();
        stop_all(&all)?;
        self.update(|state| {
            state.clusters.clear();
            Ok(())
        })
    }

    pub fn status(&self) -> Result<Vec<ProcessStatus>> {
        let state = self.load()?;
        Ok(state
            .clusters
            .values()
            .flat_map(|c| {
                c.processes.iter().map(|p| ProcessStatus {
                    cluster: c.name.clone(),
                    kind: c.kind,
                    name: p.name.clone(),
                    pid: p.pid,
                    alive: p.is_alive(),
                    ports: p.ports.clone(),
                    log: p.log.clone(),
                })
            })
            .collect())
    }
}

/// A single stopped server gets this long to shut down cleanly before
/// SIGKILL: it will be started again on the same data.
fn stop_grace() -> Duration {
    Duration::from_secs(30)
}

/// Whole clusters are being thrown away: a shorter wait. Ten Cassandra JVMs
/// draining at once on 2 cores could take the full 30 s.
fn down_grace() -> Duration {
    Duration::from_secs(10)
}

/// Stops processes in parallel: a clean JVM shutdown takes seconds each.
fn stop_all(processes: &[ProcessRecord]) -> Result<()> {
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = processes
            .iter()
            .map(|p| s.spawn(move || p.stop(down_grace())))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("stop thread panicked"))
            .collect()
    });
    results.into_iter().collect()
}
