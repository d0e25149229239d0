//! Proofs that the Cassandra testbed is a real cluster: ring state, QUORUM
//! reads and writes across nodes with a real driver, snapshots on disk, and a
//! real bootstrap of a fourth node.
//!
//! One 3-node cluster is shared by the tests here (or reused from
//! `$TESTBED_CASSANDRA_ROOT`); the bootstrap test grows a cluster of its own
//! so the others keep seeing three nodes.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::{NodeIdentifier, SingleTargetLoadBalancingPolicy};
use scylla::statement::unprepared::Statement;
use scylla::statement::Consistency;
use testbed::cassandra::{self, Info};
use testbed::fixture::{self, SharedCell};
use testbed::{Kind, UpOptions};

static CLUSTER: SharedCell = SharedCell::new(Kind::Cassandra, "TESTBED_CASSANDRA_ROOT", Some(3));

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn connect(info: &Info) -> Result<Session> {
    SessionBuilder::new()
        .known_nodes(&info.contact_points)
        .build()
        .await
        .context("connecting the driver")
}

/// A statement that only `node` may coordinate, at `consistency`.
fn through(info: &Info, node: usize, cql: &str, consistency: Consistency) -> Statement {
    let addr = info.node(node).expect("node exists").native_addr(info);
    let mut st = Statement::new(cql);
    st.set_consistency(consistency);
    st.set_load_balancing_policy(Some(SingleTargetLoadBalancingPolicy::new(
        NodeIdentifier::NodeAddress(addr),
        None,
    )));
    st
}

#[test]
fn nodetool_status_shows_three_nodes_up_normal() -> Result<()> {
    let shared = CLUSTER.get();
    let info: Info = shared.info();
    assert_eq!(info.nodes.len(), 3);
    for node in &info.nodes {
        let status = cassandra::nodetool_ok(&info, node.node, &["status"])?;
        let un: Vec<&str> = status.lines().filter(|l| l.starts_with("UN ")).collect();
        assert_eq!(un.len(), 3, "node {} sees:\n{status}", node.node);
        for other in &info.nodes {
            let addr = other.address.to_string();
            assert!(
                un.iter()
                    .any(|l| l.split_whitespace().nth(1) == Some(addr.as_str())),
                "{addr} is not UN in:\n{status}"
            );
        }
    }
    Ok(())
}

#[test]
fn quorum_write_through_one_node_reads_back_through_another() -> Result<()> {
    let info: Info = CLUSTER.get().info();
    runtime().block_on(async {
        let session = connect(&info).await?;
        session
            .query_unpaged(
                "CREATE KEYSPACE IF NOT EXISTS tb_rw WITH replication = \
                 {'class': 'SimpleStrategy', 'replication_factor': 3}",
                (),
            )
            .await?;
        session
            .query_unpaged(
                "CREATE TABLE IF NOT EXISTS tb_rw.kv (k text PRIMARY KEY, v text)",
                (),
            )
            .await?;
        session.await_schema_agreement().await?;

        let value = format!("written-at-{:?}", std::time::SystemTime::now());
        let write = through(
            &info,
            1,
            "INSERT INTO tb_rw.kv (k, v) VALUES (?, ?)",
            Consistency::Quorum,
        );
        let written = session.query_unpaged(write, ("key-1", &value)).await?;
        assert_eq!(
            written.request_coordinator().connection_address(),
            info.node(1)?.native_addr(&info)
        );

        let read = through(
            &info,
            3,
            "SELECT v FROM tb_rw.kv WHERE k = ?",
            Consistency::Quorum,
        );
        let result = session.query_unpaged(read, ("key-1",)).await?;
        assert_eq!(
            result.request_coordinator().connection_address(),
            info.node(3)?.native_addr(&info)
        );
        let (got,): (String,) = result.into_rows_result()?.single_row()?;
        assert_eq!(got, value);
        Ok(())
    })
}

#[test]
fn nodetool_snapshot_lands_on_disk() -> Result<()> {
    let info: Info = CLUSTER.get().info();
    runtime().block_on(async {
        let session = connect(&info).await?;
        session
            .query_unpaged(
                "CREATE KEYSPACE IF NOT EXISTS tb_snap WITH replication = \
                 {'class': 'SimpleStrategy', 'replication_factor': 3}",
                (),
            )
            .await?;
        session
            .query_unpaged(
                "CREATE TABLE IF NOT EXISTS tb_snap.t (k int PRIMARY KEY, v text)",
                (),
            )
            .await?;
        session.await_schema_agreement().await?;
        let mut insert = Statement::new("INSERT INTO tb_snap.t (k, v) VALUES (?, ?)");
        insert.set_consistency(Consistency::All);
        let insert = session.prepare(insert).await?;
        for k in 0..100 {
            session
                .execute_unpaged(&insert, (k, format!("value {k}")))
                .await?;
        }
        anyhow::Ok(())
    })?;

    let tag = "testbed-proof";
    cassandra::nodetool_ok(&info, 2, &["snapshot", "-t", tag, "tb_snap"])?;
    let node = info.node(2)?;
    let snap = table_dir(&node.data_dir, "tb_snap", "t")?
        .join("snapshots")
        .join(tag);
    let files = names(&snap)?;
    assert!(files.iter().any(|f| f.ends_with("-Data.db")), "{files:?}");
    assert!(files.iter().any(|f| f == "manifest.json"), "{files:?}");
    assert!(files.iter().any(|f| f == "schema.cql"), "{files:?}");
    let listed = cassandra::nodetool_ok(&info, 2, &["listsnapshots"])?;
    assert!(listed.contains(tag), "{listed}");
    Ok(())
}

#[test]
fn fourth_node_bootstraps_and_owns_data() -> Result<()> {
    let opts = UpOptions {
        name: Some("grow".into()),
        nodes: Some(3),
        ..Default::default()
    };
    let shared = fixture::start_or_reuse(Kind::Cassandra, "TESTBED_CASSANDRA_GROW_ROOT", &opts)?;
    let root = &shared.root;
    let info: Info = shared.info();
    ensure!(
        info.nodes.len() == 3,
        "grow cluster must start with 3 nodes"
    );
    let rows = 500;
    runtime().block_on(async {
        let session = connect(&info).await?;
        session
            .query_unpaged(
                "CREATE KEYSPACE grow_ks WITH replication = \
                 {'class': 'SimpleStrategy', 'replication_factor': 2}",
                (),
            )
            .await?;
        session
            .query_unpaged("CREATE TABLE grow_ks.t (k int PRIMARY KEY, v text)", ())
            .await?;
        session.await_schema_agreement().await?;
        let mut insert = Statement::new("INSERT INTO grow_ks.t (k, v) VALUES (?, ?)");
        insert.set_consistency(Consistency::All);
        let insert = session.prepare(insert).await?;
        for k in 0..rows {
            session
                .execute_unpaged(&insert, (k, format!("value {k}")))
                .await?;
        }
        anyhow::Ok(())
    })?;

    let added = cassandra::add_node(root, "grow")?;
    assert_eq!(added.node, 4);
    let info: Info = root.info("grow")?;
    for node in &info.nodes {
        assert_eq!(cassandra::up_normal_count(&info, node.node)?, 4);
    }
    // Bootstrap streamed SSTables of the keyspace onto the new node's disk...
    let data = names(&table_dir(&added.data_dir, "grow_ks", "t")?)?;
    assert!(data.iter().any(|f| f.ends_with("-Data.db")), "{data:?}");
    // ...and the ring gives it a share of the keyspace.
    let status = cassandra::nodetool_ok(&info, 1, &["status", "grow_ks"])?;
    let line = status
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(&added.address.to_string()))
        .with_context(|| format!("node 4 missing from:\n{status}"))?;
    let owns: f64 = line
        .split_whitespace()
        .find(|w| w.ends_with('%'))
        .and_then(|w| w.trim_end_matches('%').parse().ok())
        .with_context(|| format!("no ownership in {line:?}"))?;
    assert!(owns > 10.0, "node 4 owns only {owns}%: {line}");

    // Every row is still there, read through the new node.
    let count: i64 = runtime().block_on(async {
        let session = connect(&info).await?;
        let st = through(&info, 4, "SELECT count(*) FROM grow_ks.t", Consistency::All);
        let (n,): (i64,) = session
            .query_unpaged(st, ())
            .await?
            .into_rows_result()?
            .single_row()?;
        anyhow::Ok(n)
    })?;
    assert_eq!(count, i64::from(rows));

    // A node stops and starts again with its data.
    cassandra::stop_node(root, "grow", 2)?;
    assert_eq!(cassandra::up_normal_count(&info, 1)?, 3);
    cassandra::start_node(root, "grow", 2)?;
    assert_eq!(cassandra::up_normal_count(&info, 1)?, 4);

    if shared.owned {
        let processes = root.cluster("grow")?.processes;
        root.down()?;
        for p in processes {
            assert!(!p.is_alive(), "{} (pid {}) runs after down", p.name, p.pid);
        }
        assert!(root.status()?.is_empty());
    }
    Ok(())
}

#[test]
fn sstableloader_streams_a_snapshot_into_a_two_node_cluster() -> Result<()> {
    let source: Info = CLUSTER.get().info();
    let rows = 200;
    let schema_ks = "CREATE KEYSPACE IF NOT EXISTS tb_load WITH replication = \
                     {'class': 'SimpleStrategy', 'replication_factor': 2}";
    let schema_t = "CREATE TABLE IF NOT EXISTS tb_load.t (k int PRIMARY KEY, v text)";
    runtime().block_on(async {
        let session = connect(&source).await?;
        session.query_unpaged(schema_ks, ()).await?;
        session.query_unpaged(schema_t, ()).await?;
        session.await_schema_agreement().await?;
        let mut insert = Statement::new("INSERT INTO tb_load.t (k, v) VALUES (?, ?)");
        insert.set_consistency(Consistency::All);
        let insert = session.prepare(insert).await?;
        for k in 0..rows {
            session
                .execute_unpaged(&insert, (k, format!("loaded {k}")))
                .await?;
        }
        anyhow::Ok(())
    })?;
    // RF 2 of 3: each node holds part of the data, so load every node's snapshot.
    let staging = tempfile::tempdir()?;
    for node in &source.nodes {
        cassandra::nodetool_ok(&source, node.node, &["snapshot", "-t", "load", "tb_load"])?;
        let snap = table_dir(&node.data_dir, "tb_load", "t")?.join("snapshots/load");
        // sstableloader takes the keyspace and table from the last two path parts.
        let dir = staging
            .path()
            .join(format!("n{}", node.node))
            .join("tb_load/t");
        std::fs::create_dir_all(&dir)?;
        for name in names(&snap)? {
            if name.ends_with(".db") || name.ends_with(".txt") || name.ends_with(".crc32") {
                std::fs::copy(snap.join(&name), dir.join(&name))?;
            }
        }
    }

    let opts = UpOptions {
        name: Some("restore2".into()),
        nodes: Some(2),
        ..Default::default()
    };
    let target = fixture::start_or_reuse(Kind::Cassandra, "TESTBED_CASSANDRA_RESTORE_ROOT", &opts)?;
    let info: Info = target.info();
    assert_eq!(info.nodes.len(), 2);
    assert_ne!(info.contact_points, source.contact_points);
    runtime().block_on(async {
        let session = connect(&info).await?;
        session.query_unpaged(schema_ks, ()).await?;
        session.query_unpaged(schema_t, ()).await?;
        session.await_schema_agreement().await?;
        anyhow::Ok(())
    })?;
    for node in &source.nodes {
        let dir = staging
            .path()
            .join(format!("n{}", node.node))
            .join("tb_load/t");
        let out = cassandra::sstableloader(&info, &[dir.display().to_string()])?;
        assert!(
            out.status.success(),
            "sstableloader failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let got: Vec<(i32, String)> = runtime().block_on(async {
        let session = connect(&info).await?;
        let mut st = Statement::new("SELECT k, v FROM tb_load.t");
        st.set_consistency(Consistency::All);
        let rows = session.query_unpaged(st, ()).await?.into_rows_result()?;
        let all: Vec<(i32, String)> = rows.rows::<(i32, String)>()?.collect::<Result<_, _>>()?;
        anyhow::Ok(all)
    })?;
    let mut got = got;
    got.sort();
    let want: Vec<(i32, String)> = (0..rows).map(|k| (k, format!("loaded {k}"))).collect();
    assert_eq!(got, want);
    if target.owned {
        target.root.stop_cluster("restore2")?;
    }
    Ok(())
}

/// `<data>/<ks>/<table>-<id>`: the table id is only known to the server.
fn table_dir(data: &Path, ks: &str, table: &str) -> Result<PathBuf> {
    let prefix = format!("{table}-");
    std::fs::read_dir(data.join(ks))
        .with_context(|| format!("listing {}", data.join(ks).display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .with_context(|| format!("no {ks}.{table} directory under {}", data.display()))
}

fn names(dir: &Path) -> Result<Vec<String>> {
    Ok(std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect())
}
