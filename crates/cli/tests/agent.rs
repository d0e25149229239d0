//! `tidemark agent` (the real binary) beside the nodes of a real 3-node
//! Cassandra 5.0 testbed cluster: token check, status, snapshot, upload
//! (incremental: stored SSTables are not read again), clear, import of a
//! truncated table on every node, sstableloader load, one operation at a
//! time.
//!
//! One cluster is shared by every test here (or reused from
//! `$TESTBED_CASSANDRA_ROOT`); the tests that use it run one at a time
//! (`serial()`), each with its own tables and its own agents.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::unprepared::Statement;
use scylla::statement::Consistency;
use serde::de::DeserializeOwned;
use serde::Serialize;
use testbed::cassandra::{self, Info};
use testbed::fixture::SharedCell;
use testbed::Kind;
use tidemark_cassandra::agent::is_sstable_component;
use tidemark_cassandra::api::{
    self, AgentStatus, ClearReply, ClearRequest, ImportReply, ImportRequest, LoadReply,
    LoadRequest, SnapshotReply, SnapshotRequest, TableFiles, TableTarget, UploadReply,
    UploadRequest,
};
use tidemark_cluster::auth::Token;
use tidemark_cluster::{AgentClient, ClusterError};

static CLUSTER: SharedCell = SharedCell::new(Kind::Cassandra, "TESTBED_CASSANDRA_ROOT", Some(3));
static SERIAL: Mutex<()> = Mutex::new(());

const KS: &str = "agent_it";
const CLUSTER_NAME: &str = "it";
/// Generous bound for one call; never an assertion on time.
const CALL: Duration = Duration::from_secs(900);

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The cluster, the secrets and one repository, shared by the tests.
struct Env {
    info: Info,
    dir: PathBuf,
    password_file: PathBuf,
    token_file: PathBuf,
    token: Token,
    repo: PathBuf,
}

fn write_secret(path: &Path, text: &str) {
    std::fs::write(path, format!("{text}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let shared = CLUSTER.get();
        let info: Info = shared.info();
        // Inside the testbed root: removed with a temporary cluster.
        let dir = shared
            .root
            .dir()
            .join(format!("agent-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let password_file = dir.join("password");
        write_secret(&password_file, common::PASSWORD);
        let token = Token::generate();
        let token_file = dir.join("token");
        write_secret(&token_file, token.expose());
        let repo = dir.join("repo");
        init_repo(&repo, &password_file);
        Env {
            info,
            dir,
            password_file,
            token_file,
            token,
            repo,
        }
    })
}

fn init_repo(repo: &Path, password_file: &Path) {
    let r = common::Repo::local(repo).with_env("TIDEMARK_PASSWORD", "");
    r.ok([
        OsStrArg::from("init"),
        "--password-file".into(),
        password_file.into(),
    ]);
}

type OsStrArg = std::ffi::OsString;

/// One `tidemark agent` process; killed when dropped.
struct AgentProc {
    child: Child,
    addr: String,
    client: AgentClient,
    log: Arc<Mutex<String>>,
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl AgentProc {
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

fn node_dir(info: &Info, n: usize) -> PathBuf {
    info.node(n)
        .unwrap()
        .config
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Writes node `n`'s agent file (`extra` appended) and starts the agent on
/// a free port, which it names on stderr.
fn start_agent(n: usize, repo: &Path, extra: &str) -> AgentProc {
    let e = env();
    let node = e.info.node(n).unwrap();
    let (nodetool, loader) = cassandra::write_tool_scripts(&e.info, n).unwrap();
    let work = node_dir(&e.info, n).join("agent");
    let config = format!(
        "listen = \"127.0.0.1:0\"\ntoken-file = {:?}\nrepository = {:?}\npassword-file = {:?}\n\
         node-address = \"{}\"\ncassandra-yaml = {:?}\ndata-dirs = [{:?}]\nnodetool = [{:?}]\n\
         sstableloader = [{:?}]\nwork-dir = {:?}\n{extra}\n",
        e.token_file,
        repo,
        e.password_file,
        node.address,
        node.config,
        node.data_dir,
        nodetool,
        loader,
        work
    );
    let file = e.dir.join(format!("node{n}-{}.toml", std::process::id()));
    std::fs::write(&file, config).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    for v in [
        "TIDEMARK_REPOSITORY",
        "TIDEMARK_PASSWORD",
        "TIDEMARK_PASSWORD_FILE",
        "TIDEMARK_LOG",
    ] {
        cmd.env_remove(v);
    }
    let mut child = cmd
        .args(["agent", "--config"])
        .arg(&file)
        .env("TIDEMARK_INSECURE_TEST_KDF", "1")
        .env("TIDEMARK_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let addr = loop {
        let mut line = String::new();
        if lines.read_line(&mut line).unwrap() == 0 {
            let status = child.wait().unwrap();
            panic!("agent for node {n} exited ({status}) before listening:\n{seen}");
        }
        seen.push_str(&line);
        if let Some(rest) = line
            .trim()
            .strip_prefix(&format!("agent for {} listening on ", node.address))
        {
            break rest.to_string();
        }
    };
    // Keep draining stderr so the agent never blocks on a full pipe.
    let log = Arc::new(Mutex::new(seen));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in lines.lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    let client = AgentClient::new(&format!("http://{addr}"), e.token.clone());
    AgentProc {
        child,
        addr,
        client,
        log,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn post<B: Serialize, R: DeserializeOwned>(
    a: &AgentProc,
    path: &str,
    body: &B,
) -> Result<R, ClusterError> {
    rt().block_on(a.client.post(path, body, CALL))
}

fn status(a: &AgentProc) -> AgentStatus {
    rt().block_on(a.client.get(api::STATUS, CALL))
        .unwrap_or_else(|e| panic!("status: {e}\n{}", a.log()))
}

fn snapshot(a: &AgentProc, tag: &str) -> SnapshotReply {
    post(a, api::SNAPSHOT, &SnapshotRequest { tag: tag.into() })
        .unwrap_or_else(|e| panic!("snapshot: {e}\n{}", a.log()))
}

fn upload(a: &AgentProc, tag: &str) -> UploadReply {
    post(
        a,
        api::UPLOAD,
        &UploadRequest {
            tag: tag.into(),
            cluster: CLUSTER_NAME.into(),
        },
    )
    .unwrap_or_else(|e| panic!("upload: {e}\n{}", a.log()))
}

fn clear(a: &AgentProc, tag: &str) -> ClearReply {
    post(a, api::CLEAR, &ClearRequest { tag: tag.into() })
        .unwrap_or_else(|e| panic!("clear: {e}\n{}", a.log()))
}

/// The status code of a request sent by hand, with `auth` as the whole
/// Authorization header (none if `None`).
fn raw_request(addr: &str, method: &str, path: &str, auth: Option<&str>, body: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad reply {reply:?}"))
}

fn remote_status(e: &ClusterError) -> Option<(u16, String)> {
    match e {
        ClusterError::Remote {
            status, message, ..
        } => Some((*status, message.clone())),
        _ => None,
    }
}

fn tags_on(n: usize) -> Vec<String> {
    let out = cassandra::nodetool_ok(&env().info, n, &["listsnapshots"]).unwrap();
    tidemark_cassandra::nodetool::parse_listsnapshots(&out)
}

/// A tag unique to this run (node snapshots outlive a reused cluster's run).
fn tag(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

// ---- CQL ----

async fn session() -> Session {
    SessionBuilder::new()
        .known_nodes(&env().info.contact_points)
        .build()
        .await
        .unwrap()
}

async fn exec(s: &Session, cql: &str) {
    let mut st = Statement::new(cql);
    st.set_consistency(Consistency::All);
    s.query_unpaged(st, ())
        .await
        .unwrap_or_else(|e| panic!("{cql}: {e}"));
}

/// `KS.<table>` (and more tables of the same shape), empty.
fn create_tables(tables: &[&str]) {
    rt().block_on(async {
        let s = session().await;
        exec(
            &s,
            &format!("CREATE KEYSPACE IF NOT EXISTS {KS} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 3}}"),
        )
        .await;
        for t in tables {
            exec(&s, &format!("CREATE TABLE IF NOT EXISTS {KS}.{t} (k int PRIMARY KEY, v text)")).await;
            exec(&s, &format!("TRUNCATE {KS}.{t}")).await;
        }
        s.await_schema_agreement().await.unwrap();
    })
}

fn value(k: i32, round: u32) -> String {
    format!(
        "value {k} of round {round} {}",
        "x".repeat((k as usize * 7) % 300)
    )
}

/// Writes keys `keys` at ALL; returns what was written.
fn write_rows(table: &str, keys: std::ops::Range<i32>, round: u32) -> BTreeMap<i32, String> {
    rt().block_on(async {
        let s = session().await;
        let mut st = Statement::new(format!("INSERT INTO {KS}.{table} (k, v) VALUES (?, ?)"));
        st.set_consistency(Consistency::All);
        let insert = s.prepare(st).await.unwrap();
        let mut written = BTreeMap::new();
        for k in keys {
            let v = value(k, round);
            s.execute_unpaged(&insert, (k, &v)).await.unwrap();
            written.insert(k, v);
        }
        written
    })
}

/// Every row of the table, read at ALL (every replica answers).
fn read_rows(table: &str) -> BTreeMap<i32, String> {
    rt().block_on(async {
        let s = session().await;
        let mut st = Statement::new(format!("SELECT k, v FROM {KS}.{table}"));
        st.set_consistency(Consistency::All);
        let rows = s
            .query_unpaged(st, ())
            .await
            .unwrap()
            .into_rows_result()
            .unwrap();
        rows.rows::<(i32, String)>()
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    })
}

fn table_in<'a>(reply: &'a UploadReply, table: &str) -> &'a TableFiles {
    reply
        .tables
        .iter()
        .find(|t| t.keyspace == KS && t.table == table)
        .unwrap_or_else(|| panic!("{KS}.{table} not in the upload reply"))
}

/// (table dir, file name) -> size, over every table of an upload.
fn all_files(reply: &UploadReply) -> BTreeMap<(String, String), u64> {
    let mut m = BTreeMap::new();
    for t in &reply.tables {
        for f in &t.files {
            m.insert((t.dir.clone(), f.name.clone()), f.size);
        }
    }
    m
}

/// Bytes of the files in `now` that `before` did not have.
fn new_bytes(before: &UploadReply, now: &UploadReply) -> u64 {
    let old = all_files(before);
    all_files(now)
        .into_iter()
        .filter(|(k, _)| !old.contains_key(k))
        .map(|(_, s)| s)
        .sum()
}

/// name -> size of every SSTable component in node `n`'s snapshot dir of
/// `KS.table` (without the snapshot's manifest.json and schema.cql).
fn files_on_disk(n: usize, table: &str, table_id: &str, tag: &str) -> BTreeMap<String, u64> {
    let dir = env()
        .info
        .node(n)
        .unwrap()
        .data_dir
        .join(KS)
        .join(format!("{table}-{table_id}"))
        .join("snapshots")
        .join(tag);
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .filter(|e| is_sstable_component(&e.file_name().to_string_lossy()))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect()
}

fn sstable_count(t: &TableFiles) -> usize {
    t.files
        .iter()
        .filter(|f| f.name.ends_with("-Data.db"))
        .count()
}

// ---- tests ----

#[test]
fn requests_without_the_right_token_get_401_and_change_nothing() {
    let _s = serial();
    let a = start_agent(1, &env().repo, "");
    let t = tag("unauth");
    let body = format!("{{\"tag\":\"{t}\"}}");
    assert_eq!(raw_request(&a.addr, "GET", api::STATUS, None, ""), 401);
    assert_eq!(
        raw_request(&a.addr, "POST", api::SNAPSHOT, None, &body),
        401
    );
    let wrong = Token::generate();
    assert_eq!(
        raw_request(
            &a.addr,
            "POST",
            api::SNAPSHOT,
            Some(&format!("Bearer {}", wrong.expose())),
            &body
        ),
        401
    );
    // The right token without "Bearer" is refused too.
    assert_eq!(
        raw_request(
            &a.addr,
            "POST",
            api::SNAPSHOT,
            Some(env().token.expose()),
            &body
        ),
        401
    );
    let wrong_client = AgentClient::new(&format!("http://{}", a.addr), wrong);
    let e = rt()
        .block_on(wrong_client.post::<_, SnapshotReply>(
            api::SNAPSHOT,
            &SnapshotRequest { tag: t.clone() },
            CALL,
        ))
        .unwrap_err();
    assert!(matches!(e, ClusterError::Unauthorized { .. }), "{e}");
    assert!(
        !tags_on(1).contains(&t),
        "a refused request made snapshot {t}"
    );
    // The right token works, and the secrets never reach the agent's output.
    assert_eq!(
        raw_request(
            &a.addr,
            "GET",
            api::STATUS,
            Some(&format!("Bearer {}", env().token.expose())),
            ""
        ),
        200
    );
    let log = a.log();
    assert!(
        !log.contains(env().token.expose()) && !log.contains(common::PASSWORD),
        "secret in log:\n{log}"
    );
}

#[test]
fn status_shows_node_repository_and_ring() {
    let _s = serial();
    let e = env();
    let a1 = start_agent(1, &e.repo, "");
    let a2 = start_agent(2, &e.repo, "");
    let s1 = status(&a1);
    let s2 = status(&a2);
    assert_eq!(s1.node_address, IpAddr::V4(e.info.node(1).unwrap().address));
    assert_eq!(s2.node_address, IpAddr::V4(e.info.node(2).unwrap().address));
    assert_eq!(s1.repository_id.len(), 64);
    assert_eq!(s1.repository_id, s2.repository_id);
    assert_eq!(s1.busy, None);
    assert_eq!(s1.version, env!("CARGO_PKG_VERSION"));
    let want: BTreeSet<IpAddr> = e.info.nodes.iter().map(|n| IpAddr::V4(n.address)).collect();
    for s in [&s1, &s2] {
        let got: BTreeSet<IpAddr> = s.ring.iter().map(|m| m.address).collect();
        assert_eq!(got, want);
        for m in &s.ring {
            assert!(m.up && m.state == 'N', "{m:?}");
            assert_eq!(m.datacenter, e.info.datacenter);
            assert_eq!(m.host_id.len(), 36, "{m:?}");
        }
    }
    let host_ids: BTreeSet<&str> = s1.ring.iter().map(|m| m.host_id.as_str()).collect();
    assert_eq!(host_ids.len(), 3);
    // A tag made outside the agent shows up.
    let t = tag("status");
    cassandra::nodetool_ok(&e.info, 1, &["snapshot", "-t", &t, "system_schema"]).unwrap();
    assert!(status(&a1).snapshot_tags.contains(&t));
    assert!(clear(&a1, &t).cleared);
    assert!(!status(&a1).snapshot_tags.contains(&t));
}

#[test]
fn upload_is_incremental_and_clear_is_idempotent() {
    let _s = serial();
    let e = env();
    create_tables(&["inc"]);
    write_rows("inc", 0..1500, 1);
    let a = start_agent(1, &e.repo, "");

    // First backup of the table: its files are in the repository, listed
    // with the sizes they have on the node.
    let t1 = tag("inc1");
    let snap = snapshot(&a, &t1);
    assert!(snap.tables > 1, "{snap:?}");
    assert!(tags_on(1).contains(&t1));
    let up1 = upload(&a, &t1);
    let inc1 = table_in(&up1, "inc").clone();
    assert!(sstable_count(&inc1) >= 1, "{inc1:?}");
    let listed: BTreeMap<String, u64> = inc1
        .files
        .iter()
        .map(|f| (f.name.clone(), f.size))
        .collect();
    assert_eq!(listed, files_on_disk(1, "inc", &inc1.table_id, &t1));
    assert!(!files_on_disk(1, "inc", &inc1.table_id, &t1).is_empty());
    assert!(
        inc1.dir
            .ends_with(&format!("/view/data/{KS}/inc-{}", inc1.table_id)),
        "{}",
        inc1.dir
    );
    let repo = common::Repo::local(&e.repo);
    let ls = repo
        .ok(["ls", &up1.snapshot.to_hex(), &inc1.dir, "--json"])
        .json();
    let stored: BTreeMap<String, u64> = ls
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["type"] == "file")
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_string(),
                n["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(stored, listed);
    let inc_bytes: u64 = listed.values().sum();
    assert!(up1.summary.bytes_read >= inc_bytes, "{:?}", up1.summary);
    assert!(up1.cassandra_yaml.ends_with("/view/conf/cassandra.yaml"));
    let snaps = repo.snapshots();
    let s = snaps
        .iter()
        .find(|s| s["id"].as_str() == Some(up1.snapshot.to_hex().as_str()))
        .unwrap_or_else(|| panic!("{snaps:?}"));
    assert_eq!(
        s["hostname"],
        format!(
            "cassandra/{CLUSTER_NAME}/{}",
            e.info.node(1).unwrap().address
        )
    );
    // The view's links are gone; the node's snapshot stays until clear.
    assert!(!node_dir(&e.info, 1).join("agent/view").exists());
    assert!(clear(&a, &t1).cleared);
    assert!(!tags_on(1).contains(&t1));
    assert!(
        !clear(&a, &t1).cleared,
        "clearing twice is fine and says there was nothing"
    );

    // No new writes: the files of the previous backup are recognised without
    // reading them; only files the node made meanwhile (system tables) are read.
    let t2 = tag("inc2");
    snapshot(&a, &t2);
    let up2 = upload(&a, &t2);
    let inc2 = table_in(&up2, "inc");
    assert_eq!(inc2.files, inc1.files, "same files, same content ids");
    let fresh = new_bytes(&up1, &up2);
    println!(
        "second upload without writes: bytes_read {} (new files of system tables: {fresh})",
        up2.summary.bytes_read
    );
    assert_eq!(up2.summary.bytes_read, fresh, "{:?}", up2.summary);
    // Nothing of the user's was read; a system table flushed meanwhile may be.
    let old = all_files(&up1);
    for (dir, name) in all_files(&up2).keys().filter(|k| !old.contains_key(*k)) {
        assert!(
            dir.contains("/view/data/system"),
            "{dir}/{name} is new without writes"
        );
    }
    assert!(up2.summary.files_unmodified >= inc1.files.len() as u64);

    // New writes: only the new SSTables are read.
    let t3 = tag("inc3");
    write_rows("inc", 1500..2000, 2);
    snapshot(&a, &t3);
    let up3 = upload(&a, &t3);
    let inc3 = table_in(&up3, "inc");
    assert!(sstable_count(inc3) > sstable_count(&inc1), "{inc3:?}");
    for f in &inc1.files {
        assert!(inc3.files.contains(f), "{} changed or vanished", f.name);
    }
    let fresh = new_bytes(&up2, &up3);
    let inc_new: u64 = inc3
        .files
        .iter()
        .filter(|f| !inc2.files.iter().any(|g| g.name == f.name))
        .map(|f| f.size)
        .sum();
    assert!(inc_new > 0);
    assert_eq!(up3.summary.bytes_read, fresh, "{:?}", up3.summary);
    assert!(
        up3.summary.bytes_read < up3.summary.total_bytes,
        "{:?}",
        up3.summary
    );
    for t in [&t2, &t3] {
        assert!(clear(&a, t).cleared);
    }

    // Unknown and malformed tags are refused with a clear word.
    let e404 = post::<_, UploadReply>(
        &a,
        api::UPLOAD,
        &UploadRequest {
            tag: tag("never-taken"),
            cluster: CLUSTER_NAME.into(),
        },
    )
    .unwrap_err();
    let (code, msg) = remote_status(&e404).unwrap_or_else(|| panic!("{e404}"));
    assert_eq!(code, 404, "{msg}");
    assert!(
        msg.contains("never-taken") && msg.contains("no snapshot tagged"),
        "{msg}"
    );
    for bad in ["../etc", "a b", "", "-rf"] {
        let e400 =
            post::<_, SnapshotReply>(&a, api::SNAPSHOT, &SnapshotRequest { tag: bad.into() })
                .unwrap_err();
        let (code, msg) = remote_status(&e400).unwrap_or_else(|| panic!("{e400}"));
        assert_eq!(code, 400, "{msg}");
        assert!(msg.contains("bad snapshot tag"), "{msg}");
    }
}

/// Snapshot, upload and clear on every node; returns the uploads by node.
fn back_up_all(agents: &[AgentProc], name: &str) -> Vec<UploadReply> {
    let t = tag(name);
    for a in agents {
        snapshot(a, &t);
    }
    let ups = agents.iter().map(|a| upload(a, &t)).collect();
    for a in agents {
        assert!(clear(a, &t).cleared);
    }
    ups
}

#[test]
fn truncated_table_comes_back_by_import_on_every_node() {
    let _s = serial();
    let e = env();
    create_tables(&["rt", "rt_copy"]);
    let written = write_rows("rt", 0..2000, 1);
    let agents: Vec<AgentProc> = (1..=3).map(|n| start_agent(n, &e.repo, "")).collect();
    let ups = back_up_all(&agents, "rt");

    rt().block_on(async { exec(&session().await, &format!("TRUNCATE {KS}.rt")).await });
    assert!(read_rows("rt").is_empty());

    // Each node's own files through its own agent: back into the table, and
    // the same files under another name (a rename restore).
    for (a, up) in agents.iter().zip(&ups) {
        let source_dir = table_in(up, "rt").dir.clone();
        let sstable_bytes: u64 = table_in(up, "rt").files.iter().map(|f| f.size).sum();
        let req = ImportRequest {
            snapshot: up.snapshot,
            tables: vec![
                TableTarget {
                    source_dir: source_dir.clone(),
                    keyspace: KS.into(),
                    table: "rt".into(),
                },
                TableTarget {
                    source_dir,
                    keyspace: KS.into(),
                    table: "rt_copy".into(),
                },
            ],
        };
        let reply: ImportReply =
            post(a, api::IMPORT, &req).unwrap_or_else(|err| panic!("import: {err}\n{}", a.log()));
        assert_eq!(reply.bytes, 2 * sstable_bytes, "{reply:?}");
        assert!(reply.files > 0);
    }
    let back = read_rows("rt");
    assert_eq!(back.len(), written.len());
    assert_eq!(back, written);
    assert_eq!(read_rows("rt_copy"), written);
    for n in 1..=3 {
        let staging = node_dir(&e.info, n).join("agent/restore");
        let left: Vec<_> = std::fs::read_dir(&staging)
            .map(|d| d.collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "staging left on node {n}: {left:?}");
    }

    // A snapshot that does not hold the dir is refused with its name.
    let bad = ImportRequest {
        snapshot: ups[0].snapshot,
        tables: vec![TableTarget {
            source_dir: "/no/such/dir".into(),
            keyspace: KS.into(),
            table: "rt".into(),
        }],
    };
    let err = post::<_, ImportReply>(&agents[0], api::IMPORT, &bad).unwrap_err();
    assert!(err.to_string().contains("/no/such/dir"), "{err}");
}

#[test]
fn sstableloader_streams_a_backed_up_table_into_another() {
    let _s = serial();
    let e = env();
    create_tables(&["ld", "ld_target"]);
    let written = write_rows("ld", 0..1000, 3);
    let a1 = start_agent(1, &e.repo, "");
    let up = back_up_all(std::slice::from_ref(&a1), "ld").remove(0);
    let src = table_in(&up, "ld");
    let sstable_bytes: u64 = src.files.iter().map(|f| f.size).sum();
    // Through another node's agent: it streams to every owner.
    let a2 = start_agent(2, &e.repo, "");
    let req = LoadRequest {
        snapshots: vec![up.snapshot],
        tables: vec![TableTarget {
            source_dir: src.dir.clone(),
            keyspace: KS.into(),
            table: "ld_target".into(),
        }],
        targets: e.info.nodes.iter().map(|n| IpAddr::V4(n.address)).collect(),
    };
    let reply: LoadReply =
        post(&a2, api::LOAD, &req).unwrap_or_else(|err| panic!("load: {err}\n{}", a2.log()));
    println!("load: {reply:?}");
    assert_eq!(reply.bytes_read, sstable_bytes);
    assert!(reply.files > 0);
    assert!(reply.bytes_streamed > 0, "{reply:?}");
    assert_eq!(read_rows("ld_target"), written);
}

#[test]
fn a_second_operation_while_one_runs_gets_409() {
    let _s = serial();
    let e = env();
    // A fresh repository and a slow upload limit: the upload stores all of
    // the node's snapshot and stays busy long enough to be seen.
    let repo = e.dir.join(format!("repo-409-{}", std::process::id()));
    init_repo(&repo, &e.password_file);
    let a = Arc::new(start_agent(3, &repo, "[limits]\nupload-kib-per-sec = 8\n"));
    let t = tag("busy");
    snapshot(&a, &t);
    let runner = {
        let a = a.clone();
        let t = t.clone();
        std::thread::spawn(move || upload(&a, &t))
    };
    let busy = loop {
        let s = status(&a);
        if let Some(b) = s.busy {
            break b;
        }
        assert!(
            !runner.is_finished(),
            "the upload ended before status saw it running"
        );
    };
    assert!(busy.contains("upload"), "{busy}");
    let other = tag("busy-other");
    let err = post::<_, SnapshotReply>(&a, api::SNAPSHOT, &SnapshotRequest { tag: other.clone() })
        .unwrap_err();
    let (code, msg) = remote_status(&err).unwrap_or_else(|| panic!("{err}"));
    assert_eq!(code, 409, "{msg}");
    assert!(msg.contains("upload") && msg.contains(&t), "{msg}");
    let up = runner.join().unwrap();
    println!("throttled upload: {:?}", up.summary);
    assert!(up.summary.bytes_read > 0);
    assert!(
        !tags_on(3).contains(&other),
        "the refused snapshot was taken"
    );
    assert_eq!(status(&a).busy, None);
    assert!(clear(&a, &t).cleared);
}

#[test]
fn bad_config_is_named_and_no_secret_is_printed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\ncolour = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["agent", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("agent.toml") && err.contains("colour"),
        "{err}"
    );

    // A wrong passphrase: exit 12, and neither secret appears.
    let e = env();
    let wrong_pw = dir.path().join("wrong");
    write_secret(&wrong_pw, "not the passphrase 93ab");
    let node = e.info.node(1).unwrap();
    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:0\"\ntoken-file = {:?}\nrepository = {:?}\npassword-file = {:?}\n\
             node-address = \"{}\"\ncassandra-yaml = {:?}\ndata-dirs = [{:?}]\nnodetool = [\"nodetool\"]\n\
             sstableloader = [\"sstableloader\"]\nwork-dir = {:?}\n",
            e.token_file,
            e.repo,
            wrong_pw,
            node.address,
            node.config,
            node.data_dir,
            dir.path().join("work")
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["agent", "--config"])
        .arg(&file)
        .env("TIDEMARK_INSECURE_TEST_KDF", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(12), "{err}");
    assert!(
        !err.contains("not the passphrase") && !err.contains(e.token.expose()),
        "{err}"
    );
}
