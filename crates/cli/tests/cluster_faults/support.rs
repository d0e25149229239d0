//! Helpers of the cluster fault tests (`../cluster_faults.rs`): the shared
//! cluster and the serial lock, running the binary, agents restarted with a
//! changed file (throttled upload, gated snapshot), a backup run in the
//! background, a node added in Joining state and removed again, a second
//! cluster in the same testbed root.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::unprepared::Statement;
use scylla::statement::Consistency;
use serde_json::Value;
use testbed::cassandra::{self, Info, NodeInfo};
use testbed::fixture::{Shared, SharedCell};
use testbed::Kind;
use tidemark_cassandra::config::AgentConfig;

use crate::common::{self, run_command, Output};

pub static CLUSTER: SharedCell = SharedCell::with_agents(
    Kind::Cassandra,
    "TESTBED_CASSANDRA_ROOT",
    Some(3),
    env!("CARGO_BIN_EXE_tidemark"),
);

pub fn tidemark(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    for v in [
        "TIDEMARK_REPOSITORY",
        "TIDEMARK_PASSWORD",
        "TIDEMARK_PASSWORD_FILE",
    ] {
        cmd.env_remove(v);
    }
    cmd.args(args);
    run_command(cmd)
}

pub fn backup(config: &Path) -> Output {
    tidemark(&[
        "cluster",
        "backup",
        "--config",
        &config.display().to_string(),
    ])
}

pub fn listed(config: &Path) -> usize {
    let out = tidemark(&[
        "cluster",
        "list",
        "--json",
        "--config",
        &config.display().to_string(),
    ]);
    assert_eq!(out.code, 0, "cluster list failed:\n{}", out.stderr);
    match out.json() {
        Value::Array(a) => a.len(),
        other => panic!("cluster list --json is not an array: {other}"),
    }
}

/// `text` with the value of every line `key = ...` replaced.
pub fn set_key(text: &str, key: &str, value: &str) -> String {
    text.lines()
        .map(|l| {
            if l.trim_start().starts_with(&format!("{key} =")) {
                format!("{key} = {value}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p
}

pub fn secret(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = write(dir, name, text);
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    p
}

pub fn failed(out: &Output, what: &str) -> String {
    assert_ne!(out.code, 0, "{what}: exit 0\nstdout:\n{}", out.stdout);
    println!("{what}: exit {}\n{}", out.code, out.stderr);
    out.stderr.clone()
}

/// Tests that change the shared cluster run one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn shared() -> &'static Shared {
    // Fast key derivation for the testbed's repository (tests only).
    std::env::set_var("TIDEMARK_INSECURE_TEST_KDF", "1");
    CLUSTER.get()
}

pub fn config_file(shared: &Shared) -> PathBuf {
    PathBuf::from(
        shared.info["tidemark_config"]
            .as_str()
            .expect("cluster started with agents"),
    )
}

pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Runtime::new().expect("runtime"))
}

pub fn connect(info: &Info) -> Session {
    runtime().block_on(async {
        SessionBuilder::new()
            .known_nodes(&info.contact_points)
            .build()
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", info.name))
    })
}

pub fn cql_run(session: &Session, cql: &str) {
    runtime().block_on(async {
        session
            .query_unpaged(cql, ())
            .await
            .unwrap_or_else(|e| panic!("{cql}: {e}"));
        session.await_schema_agreement().await.unwrap();
    });
}

pub fn keyspace_exists(session: &Session, ks: &str) -> bool {
    runtime().block_on(async {
        let rows = session
            .query_unpaged(
                "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = ?",
                (ks,),
            )
            .await
            .unwrap()
            .into_rows_result()
            .unwrap();
        rows.rows_num() > 0
    })
}

/// `tidemark cluster backup` that must succeed; the backup's id.
pub fn backup_ok(config: &Path, what: &str) -> String {
    let out = backup(config);
    assert_eq!(out.code, 0, "{what}: backup failed:\n{}", out.stderr);
    let id = out.stdout.trim().to_string();
    assert!(id.len() >= 8, "{what}: backup id expected, got {id:?}");
    id
}

/// `tidemark cluster verify --read-data` of one backup must pass.
pub fn verify_read_data(config: &Path, id: &str) {
    let out = tidemark(&[
        "cluster",
        "verify",
        "--config",
        &config.display().to_string(),
        id,
        "--read-data",
    ]);
    assert_eq!(
        out.code, 0,
        "verify --read-data of {id}:\n{}\n{}",
        out.stdout, out.stderr
    );
}

/// The tags of this cluster's listed backups.
pub fn listed_tags(config: &Path) -> Vec<String> {
    let out = tidemark(&[
        "cluster",
        "list",
        "--json",
        "--config",
        &config.display().to_string(),
    ]);
    assert_eq!(out.code, 0, "cluster list failed:\n{}", out.stderr);
    out.json()
        .as_array()
        .expect("an array")
        .iter()
        .map(|b| b["tag"].as_str().expect("tag").to_string())
        .collect()
}

/// The snapshot tag a backup run printed (`snapshot TAG on N nodes`).
pub fn tag_of(out: &Output) -> String {
    out.stderr
        .lines()
        .filter_map(|l| l.strip_prefix("snapshot "))
        .find_map(|rest| rest.split_whitespace().next())
        .filter(|t| t.starts_with("tidemark-"))
        .unwrap_or_else(|| panic!("no snapshot tag in the output:\n{}", out.stderr))
        .to_string()
}

/// `<data>/<keyspace>/<table>/snapshots/<tag>` directories on one node.
pub fn snapshot_dirs(node: &NodeInfo, tag: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for ks in fs::read_dir(&node.data_dir).unwrap().flatten() {
        let Ok(tables) = fs::read_dir(ks.path()) else {
            continue;
        };
        for t in tables.flatten() {
            let d = t.path().join("snapshots").join(tag);
            if d.exists() {
                out.push(d);
            }
        }
    }
    out
}

/// Polls `done` every 500 ms until it holds; `limit` only keeps a broken
/// run from hanging forever (it is no assertion on speed).
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

pub fn sigkill(pid: i32, what: &str) {
    let st = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -KILL {pid} ({what}) failed");
}

pub const BULK_KS: &str = "faults_bulk";

/// Rows of [`BULK_ROW`] random bytes each node stores anew per backup.
pub const BULK_ROWS: usize = 16;

pub const BULK_ROW: usize = 64 * 1024;

/// With 1 MiB of new data per node, about a minute of upload on the
/// throttled node: long enough to be hit, short enough for CI.
pub const UPLOAD_KIB_PER_SEC: u64 = 16;

/// Writes new incompressible rows at consistency ALL into a table every
/// node holds (RF 3): every node's next upload has new data to store.
pub fn write_bulk(info: &Info) {
    let session = connect(info);
    cql_run(
        &session,
        &format!(
            "CREATE KEYSPACE IF NOT EXISTS {BULK_KS} WITH replication = \
             {{'class': 'SimpleStrategy', 'replication_factor': 3}}"
        ),
    );
    cql_run(
        &session,
        &format!("CREATE TABLE IF NOT EXISTS {BULK_KS}.blobs (id bigint PRIMARY KEY, b blob)"),
    );
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = common::Rng::new(seed);
    runtime().block_on(async {
        let mut st = Statement::new(format!("INSERT INTO {BULK_KS}.blobs (id, b) VALUES (?, ?)"));
        st.set_consistency(Consistency::All);
        let p = session.prepare(st).await.unwrap();
        for _ in 0..BULK_ROWS {
            let mut b = vec![0u8; BULK_ROW];
            rng.fill(&mut b);
            let id = rng.next_u64() as i64;
            session.execute_unpaged(&p, (id, b)).await.unwrap();
        }
    });
}

/// Node `n`'s agent restarted with a changed file (e.g. a low `[limits]
/// upload-kib-per-sec`, so that its upload lasts long enough to be hit).
/// Dropping it puts the testbed's agent file back and starts the agent
/// again (also after a kill).
pub struct AgentFile {
    shared: &'static Shared,
    n: usize,
    path: PathBuf,
    original: String,
}

impl AgentFile {
    pub fn new(
        shared: &'static Shared,
        n: usize,
        change: impl FnOnce(&str) -> String,
    ) -> AgentFile {
        let info: Info = shared.info();
        let path = info.agent(n).unwrap().config.clone();
        let original = fs::read_to_string(&path).unwrap();
        fs::write(&path, change(&original)).unwrap();
        restart_agent(shared, n).unwrap();
        AgentFile {
            shared,
            n,
            path,
            original,
        }
    }

    pub fn throttled(shared: &'static Shared, n: usize) -> AgentFile {
        AgentFile::new(shared, n, |text| {
            assert!(!text.contains("[limits]"), "{text}");
            format!("{text}\n[limits]\nupload-kib-per-sec = {UPLOAD_KIB_PER_SEC}\n")
        })
    }
}

impl Drop for AgentFile {
    fn drop(&mut self) {
        let r = fs::write(&self.path, &self.original)
            .map_err(anyhow::Error::from)
            .and_then(|()| restart_agent(self.shared, self.n));
        if let Err(e) = r {
            eprintln!("restoring agent {}: {e:#}", self.n);
        }
    }
}

/// Starts node `n`'s agent with its current file (stopping it first if it
/// runs).
pub fn restart_agent(shared: &Shared, n: usize) -> anyhow::Result<()> {
    let (root, name) = (&shared.root, &shared.name);
    if root.process(name, &format!("agent{n}"))?.is_alive() {
        cassandra::stop_agent(root, name, n)?;
    }
    cassandra::start_agent(root, name, n)
}

/// A `tidemark cluster backup` running in the background.
pub struct Running {
    child: std::process::Child,
    stdout: std::thread::JoinHandle<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Running {
    pub fn start(config: &Path) -> Running {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
        for v in [
            "TIDEMARK_REPOSITORY",
            "TIDEMARK_PASSWORD",
            "TIDEMARK_PASSWORD_FILE",
        ] {
            cmd.env_remove(v);
        }
        cmd.args(["cluster", "backup", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let drain = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                s
            })
        };
        let stdout = drain(Box::new(child.stdout.take().unwrap()));
        let stderr = drain(Box::new(child.stderr.take().unwrap()));
        Running {
            child,
            stdout,
            stderr,
        }
    }

    pub fn ended(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    pub fn finish(mut self) -> Output {
        let status = self.child.wait().unwrap();
        Output {
            code: status.code().unwrap_or(-1),
            stdout: self.stdout.join().unwrap(),
            stderr: self.stderr.join().unwrap(),
        }
    }
}

/// Runs `tidemark cluster backup` and calls `hit` as soon as the agent whose
/// work dir is `work` uploads (its staged view exists).
pub fn backup_hit_while_uploading(config: &Path, work: &Path, hit: impl FnOnce()) -> Output {
    let view = work.join("view");
    let mut run = Running::start(config);
    let mut hit = Some(hit);
    while !run.ended() {
        if view.exists() {
            (hit.take().unwrap())();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = run.finish();
    assert!(
        hit.is_none(),
        "the backup ended ({}) before {} existed:\n{}",
        out.code,
        view.display(),
        out.stderr
    );
    out
}

/// Starts node `n` again when dropped (if it is not running).
pub struct NodeBack {
    pub shared: &'static Shared,
    pub n: usize,
}

impl Drop for NodeBack {
    fn drop(&mut self) {
        let (root, name) = (&self.shared.root, &self.shared.name);
        let alive = root
            .process(name, &format!("node{}", self.n))
            .map(|p| p.is_alive())
            .unwrap_or(true);
        if !alive {
            if let Err(e) = cassandra::start_node(root, name, self.n) {
                eprintln!("starting node {} again: {e:#}", self.n);
            }
        }
    }
}

/// Node `n`'s agent with `nodetool snapshot` held at a gate: the snapshot
/// waits until the test opens it, so that something can happen during the
/// cut however slow the machine is. Dropping it restores the agent.
pub struct Gate {
    started: PathBuf,
    go: PathBuf,
    _agent: AgentFile,
}

impl Gate {
    pub fn new(shared: &'static Shared, n: usize, dir: &Path) -> Gate {
        let info: Info = shared.info();
        let (started, go) = (dir.join("snapshot-started"), dir.join("go"));
        let real: Vec<String> = AgentConfig::load(&info.agent(n).unwrap().config)
            .unwrap()
            .nodetool
            .iter()
            .map(|a| format!("'{a}'"))
            .collect();
        let script = write(
            dir,
            "gated-nodetool",
            &format!(
                "#!/bin/sh\n\
                 if [ \"$1\" = snapshot ]; then\n\
                 \x20 touch '{started}'\n\
                 \x20 i=0\n\
                 \x20 while [ ! -e '{go}' ] && [ $i -lt 1800 ]; do sleep 0.5; i=$((i+1)); done\n\
                 fi\n\
                 exec {real} \"$@\"\n",
                started = started.display(),
                go = go.display(),
                real = real.join(" ")
            ),
        );
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        // Without `jmx` the agent runs the (gated) nodetool for snapshots.
        let agent = AgentFile::new(shared, n, |text| {
            let text: String = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("jmx ="))
                .map(|l| format!("{l}\n"))
                .collect();
            set_key(&text, "nodetool", &format!("[\"{}\"]", script.display()))
        });
        Gate {
            started,
            go,
            _agent: agent,
        }
    }

    /// Returns once the agent's snapshot waits at the gate.
    pub fn wait_reached(&self, run: &mut Running) {
        wait_until("the gated snapshot", Duration::from_secs(600), || {
            self.started.exists() || run.ended()
        });
        assert!(
            self.started.exists(),
            "the backup ended before the snapshot"
        );
    }

    pub fn open(&self) {
        fs::write(&self.go, "").unwrap();
    }
}

/// Starts node `n` in write survey mode (see above) and returns once node 1
/// sees it Joining; the thread runs `add_node`, which ends with an error
/// once the node is stopped.
pub fn start_joining(
    shared: &'static Shared,
    info: &Info,
    n: usize,
    joining: &str,
) -> std::thread::JoinHandle<anyhow::Result<NodeInfo>> {
    // Only the new node's JVM may see the option: it is set while add_node
    // spawns it, and removed once the node runs.
    std::env::set_var("JDK_JAVA_OPTIONS", "-Dcassandra.write_survey=true");
    let (root, name) = (shared.root.clone(), shared.name.clone());
    let adder = std::thread::spawn(move || cassandra::add_node(&root, &name));
    let node_name = format!("node{n}");
    wait_until("the new node's JVM", Duration::from_secs(900), || {
        shared.root.process(&shared.name, &node_name).is_ok() || adder.is_finished()
    });
    std::env::remove_var("JDK_JAVA_OPTIONS");
    wait_until(
        "the new node Joining in node 1's view",
        Duration::from_secs(600),
        || {
            assert!(
                !adder.is_finished(),
                "add_node ended before the node joined"
            );
            cassandra::nodetool_ok(info, 1, &["status"])
                .map(|s| {
                    s.lines()
                        .any(|l| l.starts_with("UJ") && l.contains(&format!("{joining} ")))
                })
                .unwrap_or(false)
        },
    );
    adder
}

/// Puts the shared cluster back as it was before a node was added: stops the
/// added node and its agent, removes it from the ring (`nodetool
/// assassinate`: it never owned data), and restores the testbed's records and
/// coordinator file, so a later test binary reusing the cluster finds it as
/// the testbed left it.
pub struct RingBack {
    shared: &'static Shared,
    info: Value,
    config: PathBuf,
    pub toml: String,
}

impl RingBack {
    pub fn new(shared: &'static Shared) -> RingBack {
        let info = shared
            .root
            .cluster(&shared.name)
            .unwrap()
            .info
            .expect("the cluster's info");
        let config = config_file(shared);
        let toml = fs::read_to_string(&config).unwrap();
        RingBack {
            shared,
            info,
            config,
            toml,
        }
    }

    pub fn restore(&self) -> anyhow::Result<()> {
        std::env::remove_var("JDK_JAVA_OPTIONS");
        let (root, name) = (&self.shared.root, &self.shared.name);
        let now: Info = root.info(name)?;
        let orig: Info = serde_json::from_value(self.info.clone())?;
        let added: Vec<&NodeInfo> = now
            .nodes
            .iter()
            .filter(|x| orig.node(x.node).is_err())
            .collect();
        let mut names = Vec::new();
        for x in &added {
            for p in [format!("node{}", x.node), format!("agent{}", x.node)] {
                if root.process(name, &p).is_ok() {
                    root.stop_process(name, &p)?;
                }
                names.push(p);
            }
        }
        for x in &added {
            let addr = x.address.to_string();
            cassandra::nodetool_ok(&orig, 1, &["assassinate", &addr])?;
            // Not `wait_until`: this runs in Drop, maybe while unwinding.
            for o in &orig.nodes {
                let start = Instant::now();
                loop {
                    let s = cassandra::nodetool_ok(&orig, o.node, &["status"])?;
                    let up = s.lines().filter(|l| l.starts_with("UN ")).count();
                    if !s.contains(&format!("{addr} ")) && up == orig.nodes.len() {
                        break;
                    }
                    anyhow::ensure!(
                        start.elapsed() < Duration::from_secs(300),
                        "{addr} still in node {}'s ring:\n{s}",
                        o.node
                    );
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            let _ = fs::remove_dir_all(root.cluster_dir(name).join(format!("node{}", x.node)));
            let _ = fs::remove_file(
                root.cluster_dir(name)
                    .join(format!("agents/node{}.toml", x.node)),
            );
        }
        root.update(|state| {
            if let Some(c) = state.clusters.get_mut(name.as_str()) {
                c.processes.retain(|p| !names.contains(&p.name));
                c.info = Some(self.info.clone());
            }
            Ok(())
        })?;
        fs::write(&self.config, &self.toml)?;
        Ok(())
    }
}

impl Drop for RingBack {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            eprintln!("putting the shared cluster back: {e:#}");
        }
    }
}

/// A second cluster with agents in the shared cluster's testbed root (so it
/// uses the same repository); stopped when dropped.
pub struct Second {
    shared: &'static Shared,
    pub info: Info,
}

impl Second {
    pub fn start(shared: &'static Shared, name: &str, nodes: usize) -> Second {
        let opts = testbed::UpOptions {
            name: Some(name.to_string()),
            nodes: Some(nodes),
            with_agents: true,
            tidemark_bin: Some(PathBuf::from(env!("CARGO_BIN_EXE_tidemark"))),
            ..Default::default()
        };
        let json = testbed::kind::up(Kind::Cassandra, &shared.root, &opts)
            .unwrap_or_else(|e| panic!("starting cluster {name}: {e:#}"));
        Second {
            shared,
            info: serde_json::from_value(json).unwrap(),
        }
    }

    pub fn config(&self) -> PathBuf {
        self.info.tidemark_config.clone().expect("with agents")
    }
}

impl Drop for Second {
    fn drop(&mut self) {
        if let Err(e) = self.shared.root.stop_cluster(&self.info.name) {
            eprintln!("stopping {}: {e:#}", self.info.name);
        }
        let _ = fs::remove_dir_all(self.shared.root.cluster_dir(&self.info.name));
    }
}

/// Every node's tokens, sorted, as a set of token lists.
pub fn token_sets(info: &Info) -> std::collections::BTreeSet<Vec<i64>> {
    info.nodes
        .iter()
        .map(|x| {
            let mut t = x.tokens.clone();
            t.sort_unstable();
            t
        })
        .collect()
}

/// A child this test started, killed (by its own pid) when dropped.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every row of `ks.table`, each as its columns' text (`SELECT *`), sorted:
/// two clusters with the same schema hold the same rows iff these are equal.
pub fn table_rows(session: &Session, ks: &str, table: &str) -> Vec<String> {
    use futures_util::TryStreamExt;
    runtime().block_on(async {
        let mut st = Statement::new(format!("SELECT * FROM \"{ks}\".\"{table}\""));
        st.set_consistency(Consistency::Quorum);
        st.set_page_size(500);
        let mut rows = session
            .query_iter(st, ())
            .await
            .unwrap_or_else(|e| panic!("reading {ks}.{table}: {e}"))
            .rows_stream::<scylla::value::Row>()
            .unwrap();
        let mut out = Vec::new();
        while let Some(row) = rows.try_next().await.unwrap() {
            let cols: Vec<String> = row.columns.iter().map(common::cql::show).collect();
            out.push(cols.join(" | "));
        }
        out.sort();
        out
    })
}
