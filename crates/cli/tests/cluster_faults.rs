//! Faults around `tidemark cluster backup` and `cluster restore`, each with
//! the real binary against one shared 3-node Cassandra cluster with agents:
//! malformed coordinator files, a wrong agent token, an unreachable agent, a
//! node down before the backup (refused after the freeze wait); an agent
//! killed while the backup uploads and a node's JVM killed during the cut
//! (the backup fails naming the node); a node's JVM killed while uploading
//! (the cut is taken, so the backup completes and verifies); a bootstrap
//! started during the cut or already under way (refused, naming the joining
//! node); a restore target on another repository (refused, nothing written).
//! A refused or failed backup leaves nothing listed and its snapshots
//! cleared; after the fault is gone the next backup succeeds. Also the
//! whole-backup restore into a new, empty cluster of the same size.
//!
//! The tests that change the shared cluster run one at a time ([`serial`])
//! and leave it as they found it (3 nodes Up/Normal, the testbed's files).
//! Helpers are in `cluster_faults/support.rs`.

#[path = "common/cluster.rs"]
mod cluster;
mod common;
#[path = "cluster_faults/support.rs"]
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{cql, run_command};
use scylla::client::session_builder::SessionBuilder;
use testbed::cassandra::{self, Info, NodeInfo};
use tidemark_cassandra::config::AgentConfig;

use support::*;

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

// ---------------------------------------------------------------------------
// A long upload to hit

// ---------------------------------------------------------------------------
// Killed while uploading

/// SIGKILL of node 2's `tidemark agent` while it uploads: the backup fails
/// naming the node, nothing is listed, the other nodes' snapshots are
/// cleared (the dead agent's node keeps its own, and the warning says how to
/// clear it), and once the agent runs again the next backup succeeds, warns
/// that the node still has the old snapshot, and verifies with every chunk
/// read.
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
    let id = backup_after_leftover(&config, node, &tag, "after the agent was back");
    verify_read_data(&config, &id);
    assert_eq!(listed_tags(&config).len(), before.len() + 1);
    cassandra::nodetool_ok(&info, n, &["clearsnapshot", "-t", &tag]).unwrap();
    assert!(snapshot_dirs(node, &tag).is_empty());
}

/// The next backup after one whose release failed on `node`: it succeeds
/// and warns that `node` still has the old backup's snapshot `tag`.
fn backup_after_leftover(config: &Path, node: &NodeInfo, tag: &str, what: &str) -> String {
    assert!(
        !snapshot_dirs(node, tag).is_empty(),
        "{tag} is gone from {}",
        node.address
    );
    let out = backup(config);
    assert_eq!(out.code, 0, "{what}: backup failed:\n{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "node {} still has snapshot {tag} of an earlier backup that was not released",
            node.address
        )),
        "{what}: no warning about {tag}:\n{}",
        out.stderr
    );
    out.stdout.trim().to_string()
}

/// SIGKILL of node 3's Cassandra JVM while its agent uploads. The cut was
/// taken while every node was Up and Normal and the snapshot's files are
/// hard links on the node's disk, so the agent finishes its upload and the
/// backup is complete: it is listed, the killed node's part holds the new
/// data, and `verify --read-data` passes. Only the release fails on that
/// node (no JMX), which is warned with the command to run; the other nodes'
/// snapshots are cleared. With the node back, the next backup succeeds and
/// warns that the node still has the old snapshot.
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
    let id = backup_after_leftover(&config, node, &tag, "after the node was back");
    verify_read_data(&config, &id);
    cassandra::nodetool_ok(&info, n, &["clearsnapshot", "-t", &tag]).unwrap();
    assert!(snapshot_dirs(node, &tag).is_empty());
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

// ---------------------------------------------------------------------------
// Restores into another cluster

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
    // Every other restored table (other tests' keyspaces in the shared
    // cluster, unchanged since the backup) equals its source, row by row.
    let source = connect(&info);
    let mut others = 0;
    for t in tables.iter().filter(|t| t["keyspace"] != "faults_whole") {
        let (ks, table) = (
            t["keyspace"].as_str().unwrap(),
            t["table"].as_str().unwrap(),
        );
        let want = table_rows(&source, ks, table);
        let got = table_rows(&target, ks, table);
        assert!(
            got == want,
            "{ks}.{table}: {} rows restored, {} in the source",
            got.len(),
            want.len()
        );
        others += want.len();
    }
    println!(
        "{others} rows of {} other tables equal",
        tables.len() - ds.tables.len()
    );
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
