//! Faults around `tidemark cluster backup` and `cluster restore`, each with
//! the real binary against one shared 3-node Cassandra cluster with agents:
//! malformed coordinator files, a wrong agent token, an unreachable agent, a
//! node down before the backup (refused after the freeze wait), an agent or a
//! node JVM killed while the backup uploads, a bootstrap under way, and a
//! restore target on another repository. A refused or failed backup leaves
//! nothing listed; after the fault is gone the next backup succeeds. Also the
//! whole-backup restore into a new, empty cluster of the same size.
//!
//! The tests that change the shared cluster run one at a time ([`serial`])
//! and leave it as they found it (3 nodes Up/Normal, the testbed's files).

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use common::{cql, run_command, Output};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::unprepared::Statement;
use scylla::statement::Consistency;
use serde_json::Value;
use testbed::cassandra::{self, Info, NodeInfo};
use testbed::fixture::{Shared, SharedCell};
use testbed::Kind;
use tidemark_cassandra::config::AgentConfig;

static CLUSTER: SharedCell = SharedCell::with_agents(
    Kind::Cassandra,
    "TESTBED_CASSANDRA_ROOT",
    Some(3),
    env!("CARGO_BIN_EXE_tidemark"),
);

fn tidemark(args: &[&str]) -> Output {
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

fn backup(config: &Path) -> Output {
    tidemark(&[
        "cluster",
        "backup",
        "--config",
        &config.display().to_string(),
    ])
}

fn listed(config: &Path) -> usize {
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
fn set_key(text: &str, key: &str, value: &str) -> String {
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

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p
}

fn secret(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = write(dir, name, text);
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn failed(out: &Output, what: &str) -> String {
    assert_ne!(out.code, 0, "{what}: exit 0\nstdout:\n{}", out.stdout);
    println!("{what}: exit {}\n{}", out.code, out.stderr);
    out.stderr.clone()
}

#[test]
fn malformed_config_names_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let token = secret(d, "token", &"ab".repeat(32));
    let pw = secret(d, "password", "pw");
    let good = format!(
        "name = \"c\"\nrepository = \"{repo}\"\npassword-file = \"{pw}\"\n\n\
         [cassandra]\ncontact-points = [\"127.0.0.1:9042\"]\n\n\
         [agents]\ntoken-file = \"{token}\"\n\n\
         [[agents.node]]\naddress = \"127.0.0.1\"\nurl = \"http://127.0.0.1:1\"\n",
        repo = d.join("repo").display(),
        pw = pw.display(),
        token = token.display()
    );

    let unknown = write(d, "unknown.toml", &format!("colour = \"blue\"\n{good}"));
    let err = failed(&backup(&unknown), "unknown key");
    assert!(err.contains(&unknown.display().to_string()), "{err}");
    assert!(err.contains("colour"), "{err}");

    let bad_url = write(
        d,
        "url.toml",
        &set_key(&good, "url", "\"ftp://127.0.0.1:1\""),
    );
    let err = failed(&backup(&bad_url), "bad url");
    assert!(err.contains(&bad_url.display().to_string()), "{err}");
    assert!(err.contains("agents.node[0].url"), "{err}");

    let missing = d.join("no-such.toml");
    let err = failed(&backup(&missing), "missing file");
    assert!(err.contains(&missing.display().to_string()), "{err}");
}

#[test]
fn agent_faults_are_named_and_a_down_node_is_refused() {
    let _g = serial();
    let shared = shared();
    let info: Info = shared.info();
    let config = PathBuf::from(
        shared.info["tidemark_config"]
            .as_str()
            .expect("cluster started with agents"),
    );
    let text = fs::read_to_string(&config).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let session = SessionBuilder::new()
            .known_nodes(&info.contact_points)
            .build()
            .await
            .unwrap();
        cql::create_and_fill(&session, "faults_ks", 3, 40)
            .await
            .unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let before = listed(&config);

    // A token the agents do not know.
    let wrong = secret(d, "wrong-token", &"cd".repeat(32));
    let cfg = write(
        d,
        "wrong-token.toml",
        &set_key(&text, "token-file", &format!("\"{}\"", wrong.display())),
    );
    let err = failed(&backup(&cfg), "wrong token");
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(!err.contains(&"cd".repeat(32)), "the token leaked: {err}");

    // An agent on a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let first_url = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("url = "))
        .unwrap()
        .trim_matches('"')
        .to_string();
    let dead_url = format!("http://127.0.0.1:{port}");
    let cfg = write(d, "dead.toml", &text.replacen(&first_url, &dead_url, 1));
    let err = failed(&backup(&cfg), "unreachable agent");
    assert!(err.contains(&dead_url), "{err}");
    assert_eq!(listed(&config), before, "a failed backup was listed");

    // A node down before the backup: refused after a short freeze wait.
    let node = info.node(3).unwrap();
    let short = write(
        d,
        "short.toml",
        &format!("{text}\n[backup]\nfreeze-wait = \"5s\"\n"),
    );
    cassandra::stop_node(&shared.root, &shared.name, 3).unwrap();
    let out = backup(&short);
    cassandra::start_node(&shared.root, &shared.name, 3).unwrap();
    let err = failed(&out, "node down");
    assert!(err.contains(&node.address.to_string()), "{err}");
    assert_eq!(listed(&config), before, "a refused backup was listed");

    // With the node back, the next backup succeeds.
    let out = backup(&short);
    assert_eq!(out.code, 0, "backup after recovery:\n{}", out.stderr);
    assert_eq!(listed(&config), before + 1);
}

// ---------------------------------------------------------------------------
// Shared cluster, serial tests, small helpers

/// Tests that change the shared cluster run one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn shared() -> &'static Shared {
    // Fast key derivation for the testbed's repository (tests only).
    std::env::set_var("TIDEMARK_INSECURE_TEST_KDF", "1");
    CLUSTER.get()
}

fn config_file(shared: &Shared) -> PathBuf {
    PathBuf::from(
        shared.info["tidemark_config"]
            .as_str()
            .expect("cluster started with agents"),
    )
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Runtime::new().expect("runtime"))
}

fn connect(info: &Info) -> Session {
    runtime().block_on(async {
        SessionBuilder::new()
            .known_nodes(&info.contact_points)
            .build()
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", info.name))
    })
}

fn cql_run(session: &Session, cql: &str) {
    runtime().block_on(async {
        session
            .query_unpaged(cql, ())
            .await
            .unwrap_or_else(|e| panic!("{cql}: {e}"));
        session.await_schema_agreement().await.unwrap();
    });
}

fn keyspace_exists(session: &Session, ks: &str) -> bool {
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
fn backup_ok(config: &Path, what: &str) -> String {
    let out = backup(config);
    assert_eq!(out.code, 0, "{what}: backup failed:\n{}", out.stderr);
    let id = out.stdout.trim().to_string();
    assert!(id.len() >= 8, "{what}: backup id expected, got {id:?}");
    id
}

/// `tidemark cluster verify --read-data` of one backup must pass.
fn verify_read_data(config: &Path, id: &str) {
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
fn listed_tags(config: &Path) -> Vec<String> {
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
fn tag_of(out: &Output) -> String {
    out.stderr
        .lines()
        .filter_map(|l| l.strip_prefix("snapshot "))
        .find_map(|rest| rest.split_whitespace().next())
        .filter(|t| t.starts_with("tidemark-"))
        .unwrap_or_else(|| panic!("no snapshot tag in the output:\n{}", out.stderr))
        .to_string()
}

/// `<data>/<keyspace>/<table>/snapshots/<tag>` directories on one node.
fn snapshot_dirs(node: &NodeInfo, tag: &str) -> Vec<PathBuf> {
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
fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn sigkill(pid: i32, what: &str) {
    let st = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -KILL {pid} ({what}) failed");
}

// ---------------------------------------------------------------------------
// A long upload to hit

const BULK_KS: &str = "faults_bulk";
/// Rows of [`BULK_ROW`] random bytes each node stores anew per backup.
const BULK_ROWS: usize = 16;
const BULK_ROW: usize = 64 * 1024;
/// With 1 MiB of new data per node, about a minute of upload on the
/// throttled node: long enough to be hit, short enough for CI.
const UPLOAD_KIB_PER_SEC: u64 = 16;

/// Writes new incompressible rows at consistency ALL into a table every
/// node holds (RF 3): every node's next upload has new data to store.
fn write_bulk(info: &Info) {
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
struct AgentFile {
    shared: &'static Shared,
    n: usize,
    path: PathBuf,
    original: String,
}

impl AgentFile {
    fn new(shared: &'static Shared, n: usize, change: impl FnOnce(&str) -> String) -> AgentFile {
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

    fn throttled(shared: &'static Shared, n: usize) -> AgentFile {
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
fn restart_agent(shared: &Shared, n: usize) -> anyhow::Result<()> {
    let (root, name) = (&shared.root, &shared.name);
    if root.process(name, &format!("agent{n}"))?.is_alive() {
        cassandra::stop_agent(root, name, n)?;
    }
    cassandra::start_agent(root, name, n)
}

/// A `tidemark cluster backup` running in the background.
struct Running {
    child: std::process::Child,
    stdout: std::thread::JoinHandle<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Running {
    fn start(config: &Path) -> Running {
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

    fn ended(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    fn finish(mut self) -> Output {
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
fn backup_hit_while_uploading(config: &Path, work: &Path, hit: impl FnOnce()) -> Output {
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

// ---------------------------------------------------------------------------
// Killed while uploading

/// SIGKILL of node 2's `tidemark agent` while it uploads: the backup fails
/// naming the node, nothing is listed, the other nodes' snapshots are
/// cleared (the dead agent's node keeps its own, and the warning says how to
/// clear it), and once the agent runs again the next backup succeeds and
/// verifies with every chunk read.
#[test]
fn agent_killed_while_uploading_fails_the_backup_naming_its_node() {
    let _g = serial();
    let shared = shared();
    let info: Info = shared.info();
    let config = config_file(shared);
    let n = 2;
    let node = info.node(n).unwrap();
    let work = AgentConfig::load(&info.agent(n).unwrap().config)
        .unwrap()
        .work_dir;
    let before = listed_tags(&config);
    write_bulk(&info);

    let throttled = AgentFile::throttled(shared, n);
    let out = backup_hit_while_uploading(&config, &work, || {
        let agent = shared.root.process(&shared.name, "agent2").unwrap();
        sigkill(agent.pid, "agent of node 2");
    });
    let err = failed(&out, "agent killed while uploading");
    let tag = tag_of(&out);
    assert!(
        err.contains(&format!("node {}: upload failed", node.address)),
        "{err}"
    );
    let after = listed_tags(&config);
    assert_eq!(after, before, "a failed backup was listed");
    assert!(!after.contains(&tag));
    for other in info.nodes.iter().filter(|x| x.node != n) {
        let left = snapshot_dirs(other, &tag);
        assert!(left.is_empty(), "node {}: {left:?}", other.address);
    }
    assert!(
        err.contains(&format!(
            "clearing snapshot {tag} on node {} failed",
            node.address
        )) && err.contains(&format!("nodetool clearsnapshot -t {tag}")),
        "{err}"
    );

    drop(throttled);
    cassandra::nodetool_ok(&info, n, &["clearsnapshot", "-t", &tag]).unwrap();
    assert!(snapshot_dirs(node, &tag).is_empty());
    let id = backup_ok(&config, "after the agent was back");
    verify_read_data(&config, &id);
    assert_eq!(listed_tags(&config).len(), before.len() + 1);
}

/// SIGKILL of node 3's Cassandra JVM while its agent uploads. The cut was
/// taken while every node was Up and Normal and the snapshot's files are
/// hard links on the node's disk, so the agent finishes its upload and the
/// backup is complete: it is listed, the killed node's part holds the new
/// data, and `verify --read-data` passes. Only the release fails on that
/// node (no JMX), which is warned with the command to run; the other nodes'
/// snapshots are cleared. With the node back, the next backup succeeds.
#[test]
fn node_killed_while_uploading_leaves_a_complete_backup() {
    let _g = serial();
    let shared = shared();
    let info: Info = shared.info();
    let config = config_file(shared);
    let n = 3;
    let node = info.node(n).unwrap();
    let work = AgentConfig::load(&info.agent(n).unwrap().config)
        .unwrap()
        .work_dir;
    let before = listed_tags(&config);
    write_bulk(&info);

    let throttled = AgentFile::throttled(shared, n);
    let out = backup_hit_while_uploading(&config, &work, || {
        let jvm = shared.root.process(&shared.name, "node3").unwrap();
        sigkill(jvm.pid, "node 3");
    });
    let node_back = NodeBack { shared, n };
    assert_eq!(
        out.code, 0,
        "backup with node 3 killed after the cut:\n{}",
        out.stderr
    );
    let id = out.stdout.trim().to_string();
    let tag = tag_of(&out);
    let after = listed_tags(&config);
    assert_eq!(after.len(), before.len() + 1);
    assert!(after.contains(&tag), "{after:?}");
    // The killed node's part of the backup has the data written before it.
    let m = cluster::Catalog::open(&config)
        .unwrap()
        .manifest(&id)
        .unwrap();
    let files = cluster::files_by_node(&m).unwrap();
    let mine = &files[&node.address.to_string()];
    let bulk: u64 = mine
        .get(&(BULK_KS.to_string(), "blobs".to_string()))
        .map(|f| f.values().sum())
        .unwrap_or(0);
    assert!(
        bulk >= (BULK_ROWS * BULK_ROW) as u64,
        "node {}: {bulk} bytes of {BULK_KS}.blobs",
        node.address
    );
    verify_read_data(&config, &id);
    for other in info.nodes.iter().filter(|x| x.node != n) {
        let left = snapshot_dirs(other, &tag);
        assert!(left.is_empty(), "node {}: {left:?}", other.address);
    }
    assert!(
        out.stderr.contains(&format!(
            "clearing snapshot {tag} on node {} failed",
            node.address
        )),
        "{}",
        out.stderr
    );

    drop(node_back);
    drop(throttled);
    cassandra::nodetool_ok(&info, n, &["clearsnapshot", "-t", &tag]).unwrap();
    assert!(snapshot_dirs(node, &tag).is_empty());
    let id = backup_ok(&config, "after the node was back");
    verify_read_data(&config, &id);
}

/// SIGKILL of node 3's JVM during the cut (its `nodetool snapshot` held at
/// a gate until the node is dead): the backup fails naming the node and the
/// step, nothing is listed, the other nodes' snapshots are cleared, and with
/// the node back the next backup succeeds and verifies with every chunk read.
#[test]
fn node_killed_during_the_cut_fails_the_backup_naming_it() {
    let _g = serial();
    let shared = shared();
    let info: Info = shared.info();
    let config = config_file(shared);
    let n = 3;
    let node = info.node(n).unwrap();
    let before = listed_tags(&config);
    let d = tempfile::tempdir().unwrap();

    let gate = Gate::new(shared, n, d.path());
    let mut run = Running::start(&config);
    gate.wait_reached(&mut run);
    let jvm = shared.root.process(&shared.name, "node3").unwrap();
    let node_back = NodeBack { shared, n };
    sigkill(jvm.pid, "node 3");
    wait_until("node 3's JVM gone", Duration::from_secs(60), || {
        !jvm.is_alive()
    });
    gate.open();
    let out = run.finish();
    let err = failed(&out, "node killed during the cut");
    assert!(
        err.contains(&format!("node {}: snapshot failed", node.address)),
        "{err}"
    );
    let tag = tag_of(&out);
    assert_eq!(listed_tags(&config), before, "a failed backup was listed");
    for x in &info.nodes {
        let left = snapshot_dirs(x, &tag);
        assert!(left.is_empty(), "node {}: {left:?}", x.address);
    }

    drop(node_back);
    drop(gate);
    let id = backup_ok(&config, "after the node was back");
    verify_read_data(&config, &id);
    assert_eq!(listed_tags(&config).len(), before.len() + 1);
}

/// Starts node `n` again when dropped (if it is not running).
struct NodeBack {
    shared: &'static Shared,
    n: usize,
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

// ---------------------------------------------------------------------------
// A bootstrap under way

/// A fourth node starts to bootstrap, first while the nodes take their
/// snapshots (the re-check after the cut fails the backup), then with it
/// still joining before a backup starts (the freeze check refuses it after
/// its wait). Both name the joining node; nothing is listed and the cut's
/// snapshots are cleared on every node.
///
/// Deterministic on a slow machine: node 1's agent runs `nodetool snapshot`
/// through a gate the test opens once the new node is Joining, and the new
/// node runs in Cassandra's write survey mode (`-Dcassandra.write_survey=true`):
/// it bootstraps like any new node (Joining in every node's `nodetool
/// status`) and then stays Joining until `nodetool join`. It is then stopped
/// and removed from the ring, and the testbed's files are put back.
#[test]
fn a_bootstrap_under_way_is_refused_naming_the_joining_node() {
    let _g = serial();
    let shared = shared();
    let info: Info = shared.info();
    let config = config_file(shared);
    let before = listed_tags(&config);
    let ring_back = RingBack::new(shared);
    let n = info.nodes.iter().map(|x| x.node).max().unwrap() + 1;
    let block = info.nodes[0].address.octets()[2];
    let joining = std::net::Ipv4Addr::new(127, 0, block, n as u8).to_string();
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    // The operator's file from before the node was added (add_node lists the
    // new node's agent in the testbed's file).
    let operators = write(d, "cluster.toml", &ring_back.toml);

    // 1. The bootstrap starts during the cut.
    let gate = Gate::new(shared, 1, d);
    let mut run = Running::start(&operators);
    gate.wait_reached(&mut run);
    let adder = start_joining(shared, &info, n, &joining);
    gate.open();
    let out = run.finish();
    let err = failed(&out, "bootstrap during the cut");
    assert!(
        err.contains("topology changed during the backup")
            && err.contains(&format!("node {joining} (host id"))
            && err.contains("Joining"),
        "{err}"
    );
    let tag = tag_of(&out);
    for x in &info.nodes {
        let left = snapshot_dirs(x, &tag);
        assert!(left.is_empty(), "node {}: {left:?}", x.address);
    }
    assert_eq!(listed_tags(&config), before, "a failed backup was listed");
    drop(gate);

    // 2. Still joining when the next backup starts: refused after the wait.
    let short = write(
        d,
        "short.toml",
        &format!("{}\n[backup]\nfreeze-wait = \"5s\"\n", ring_back.toml),
    );
    let out = backup(&short);
    let err = failed(&out, "bootstrap under way");
    assert!(
        err.contains("cluster not ready for a consistent backup")
            && err.contains(&format!("node {joining} (host id"))
            && err.contains("Joining"),
        "{err}"
    );
    assert_eq!(listed_tags(&config), before, "a refused backup was listed");

    drop(ring_back);
    match adder.join().unwrap() {
        Ok(_) => panic!("add_node succeeded although the node never left write survey mode"),
        Err(e) => println!("add_node ended as expected: {e}"),
    }
}

/// Node `n`'s agent with `nodetool snapshot` held at a gate: the snapshot
/// waits until the test opens it, so that something can happen during the
/// cut however slow the machine is. Dropping it restores the agent.
struct Gate {
    started: PathBuf,
    go: PathBuf,
    _agent: AgentFile,
}

impl Gate {
    fn new(shared: &'static Shared, n: usize, dir: &Path) -> Gate {
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
        let agent = AgentFile::new(shared, n, |text| {
            set_key(text, "nodetool", &format!("[\"{}\"]", script.display()))
        });
        Gate {
            started,
            go,
            _agent: agent,
        }
    }

    /// Returns once the agent's snapshot waits at the gate.
    fn wait_reached(&self, run: &mut Running) {
        wait_until("the gated snapshot", Duration::from_secs(600), || {
            self.started.exists() || run.ended()
        });
        assert!(
            self.started.exists(),
            "the backup ended before the snapshot"
        );
    }

    fn open(&self) {
        fs::write(&self.go, "").unwrap();
    }
}

/// Starts node `n` in write survey mode (see above) and returns once node 1
/// sees it Joining; the thread runs `add_node`, which ends with an error
/// once the node is stopped.
fn start_joining(
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
struct RingBack {
    shared: &'static Shared,
    info: Value,
    config: PathBuf,
    toml: String,
}

impl RingBack {
    fn new(shared: &'static Shared) -> RingBack {
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

    fn restore(&self) -> anyhow::Result<()> {
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

// ---------------------------------------------------------------------------
// Restores into another cluster

/// A second cluster with agents in the shared cluster's testbed root (so it
/// uses the same repository); stopped when dropped.
struct Second {
    shared: &'static Shared,
    info: Info,
}

impl Second {
    fn start(shared: &'static Shared, name: &str, nodes: usize) -> Second {
        let opts = testbed::UpOptions {
            name: Some(name.to_string()),
            nodes: Some(nodes),
            with_agents: true,
            tidemark_bin: Some(PathBuf::from(env!("CARGO_BIN_EXE_tidemark"))),
        };
        let json = testbed::kind::up(Kind::Cassandra, &shared.root, &opts)
            .unwrap_or_else(|e| panic!("starting cluster {name}: {e:#}"));
        Second {
            shared,
            info: serde_json::from_value(json).unwrap(),
        }
    }

    fn config(&self) -> PathBuf {
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
fn token_sets(info: &Info) -> std::collections::BTreeSet<Vec<i64>> {
    info.nodes
        .iter()
        .map(|x| {
            let mut t = x.tokens.clone();
            t.sort_unstable();
            t
        })
        .collect()
}

/// The whole backup (no --keyspace/--table) into a new, empty 3-node cluster:
/// the schema is created from the backup and every row of the data set reads
/// back equal, value by value. The testbed gives a new cluster of the same
/// size the same initial tokens, so the restore takes the `nodetool import`
/// path (each node takes the copy of the backup node with its tokens); had
/// the tokens differed it would have to stream, and the test says which.
#[test]
fn whole_backup_restores_into_an_empty_cluster_of_the_same_size() {
    let _g = serial();
    let shared = shared();
    let info: Info = shared.info();
    let config = config_file(shared);
    let session = connect(&info);
    let ds = runtime()
        .block_on(cql::create_and_fill(&session, "faults_whole", 3, 150))
        .unwrap();
    let id = backup_ok(&config, "whole backup");

    let second = Second::start(shared, "faults-whole", 3);
    let target = connect(&second.info);
    assert!(
        !keyspace_exists(&target, "faults_whole"),
        "the target is new"
    );
    let same_tokens = token_sets(&info) == token_sets(&second.info);
    let expected = if same_tokens { "import" } else { "stream" };
    println!(
        "the new cluster's tokens {} the source's: expecting {expected}",
        if same_tokens { "equal" } else { "differ from" }
    );
    let target_cfg = second.config();
    let out = tidemark(&[
        "cluster",
        "restore",
        "--config",
        &config.display().to_string(),
        &id,
        "--target-config",
        &target_cfg.display().to_string(),
        "--json",
    ]);
    assert_eq!(out.code, 0, "restore:\n{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    println!(
        "restore path: {}, {:.1}s",
        report["mode"], report["duration_secs"]
    );
    assert_eq!(report["mode"], expected, "{report:#}");
    let tables = report["tables"].as_array().unwrap();
    for name in ds.tables.keys() {
        let t = tables
            .iter()
            .find(|t| t["keyspace"] == "faults_whole" && t["table"] == *name)
            .unwrap_or_else(|| panic!("no report for faults_whole.{name}: {report:#}"));
        assert_eq!(t["created"], true, "{t}");
        assert_eq!(t["mode"], expected, "{t}");
    }
    runtime().block_on(cql::check_all(&target, &ds)).unwrap();
}

/// `--target-config` naming a cluster whose config and agents use another
/// repository: refused, naming the agent, its node and both repositories,
/// before anything is written (the keyspace the restore would create stays
/// absent, the other repository stays empty).
#[test]
fn restore_target_on_another_repository_is_refused() {
    let _g = serial();
    let shared = shared();
    let info: Info = shared.info();
    let config = config_file(shared);
    let session = connect(&info);
    let ks = "faults_foreign";
    cql_run(&session, &format!("DROP KEYSPACE IF EXISTS {ks}"));
    cql_run(
        &session,
        &format!(
            "CREATE KEYSPACE {ks} WITH replication = \
             {{'class': 'SimpleStrategy', 'replication_factor': 3}}"
        ),
    );
    cql_run(
        &session,
        &format!("CREATE TABLE {ks}.t (k int PRIMARY KEY, v text)"),
    );
    cql_run(
        &session,
        &format!("INSERT INTO {ks}.t (k, v) VALUES (1, 'one')"),
    );
    let id = backup_ok(&config, "backup of the keyspace");
    cql_run(&session, &format!("DROP KEYSPACE {ks}"));

    // Another repository and an agent for node 1 that stores into it.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pw = secret(d, "foreign-password", "another passphrase 3c9e");
    let foreign = d.join("foreign-repo");
    let init = run_command({
        let mut c = Command::new(env!("CARGO_BIN_EXE_tidemark"));
        c.env("TIDEMARK_INSECURE_TEST_KDF", "1")
            .env_remove("TIDEMARK_PASSWORD")
            .arg("init")
            .arg("--repo")
            .arg(&foreign)
            .arg("--password-file")
            .arg(&pw);
        c
    });
    assert_eq!(init.code, 0, "init:\n{}", init.stderr);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let quoted = |p: &Path| format!("\"{}\"", p.display());
    let agent_text = fs::read_to_string(&info.agent(1).unwrap().config).unwrap();
    let agent_text = set_key(&agent_text, "listen", &format!("\"127.0.0.1:{port}\""));
    let agent_text = set_key(&agent_text, "repository", &quoted(&foreign));
    let agent_text = set_key(&agent_text, "password-file", &quoted(&pw));
    fs::create_dir(d.join("work")).unwrap();
    let agent_text = set_key(&agent_text, "work-dir", &quoted(&d.join("work")));
    let agent_cfg = write(d, "foreign-agent.toml", &agent_text);
    let log = fs::File::create(d.join("foreign-agent.log")).unwrap();
    let agent = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["agent", "--config"])
            .arg(&agent_cfg)
            .env_remove("TIDEMARK_PASSWORD")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_until(
        "the foreign agent listening",
        Duration::from_secs(120),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );

    let text = fs::read_to_string(&config).unwrap();
    let node1_url = info.agent(1).unwrap().url.clone();
    let target_text = set_key(&text, "repository", &quoted(&foreign));
    let target_text = set_key(&target_text, "password-file", &quoted(&pw));
    let target_text = target_text.replacen(&format!("\"{node1_url}\""), &format!("\"{url}\""), 1);
    let target = write(d, "foreign-target.toml", &target_text);
    let out = tidemark(&[
        "cluster",
        "restore",
        "--config",
        &config.display().to_string(),
        &id,
        "--keyspace",
        ks,
        "--target-config",
        &target.display().to_string(),
    ]);
    let err = failed(&out, "target on another repository");
    let node1 = info.node(1).unwrap().address.to_string();
    assert!(
        err.contains(&format!("agent {url} (node {node1})"))
            && err.contains("a restore target must use the backup's repository"),
        "{err}"
    );
    assert!(
        !err.contains("another passphrase"),
        "a passphrase leaked: {err}"
    );
    assert!(
        !keyspace_exists(&session, ks),
        "the refused restore created {ks}"
    );
    let snaps = run_command({
        let mut c = Command::new(env!("CARGO_BIN_EXE_tidemark"));
        c.env_remove("TIDEMARK_PASSWORD")
            .arg("-r")
            .arg(&foreign)
            .arg("--password-file")
            .arg(&pw)
            .args(["snapshots", "--json"]);
        c
    });
    assert_eq!(snaps.code, 0, "{}", snaps.stderr);
    assert_eq!(
        snaps.json(),
        serde_json::json!([]),
        "the other repository was written"
    );
    drop(agent);
}

/// A child this test started, killed (by its own pid) when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
