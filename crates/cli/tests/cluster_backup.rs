//! `tidemark cluster backup | list | verify` against a real 3-node Cassandra
//! 5.0 testbed cluster with a real `tidemark agent` beside each node.
//!
//! One sequence on one cluster (the steps depend on each other, and the
//! catalog counts must not move under a concurrent backup):
//! - a backup of a cluster with data: 3 nodes in the manifest, every user
//!   table with data listed on every node, the snapshot spread recorded;
//!   `list` shows it, `verify` and `verify --read-data` pass;
//! - a second backup without writes reads nothing and adds almost nothing;
//! - after new writes, only the new SSTables are read;
//! - no snapshot is left on any node;
//! - a damaged pack: `verify --read-data` exits 3 naming node and table;
//! - a wrong token, a wrong passphrase, a malformed file: clear errors,
//!   non-zero exits, no manifest.

#[path = "common/cluster.rs"]
mod cluster;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use cluster::{cluster, cluster_ok, files_by_node, Catalog, FlippedBit};
use testbed::cassandra::{self, Info};
use testbed::fixture::SharedCell;
use testbed::Kind;
use tidemark_cassandra::manifest::{BackupDetail, NodeDetail};

static CLUSTER: SharedCell = SharedCell::with_agents(
    Kind::Cassandra,
    "TESTBED_CASSANDRA_ROOT",
    Some(3),
    env!("CARGO_BIN_EXE_tidemark"),
);

const KS: &str = "cbk";
const USERS: usize = 1500;
const EVENTS: usize = 1500;

fn info() -> (Info, PathBuf) {
    // Fast key derivation for the testbed's repository (tests only).
    std::env::set_var("TIDEMARK_INSECURE_TEST_KDF", "1");
    let shared = CLUSTER.get();
    let info: Info = shared.info();
    let config = info
        .tidemark_config
        .clone()
        .expect("cluster started with agents");
    (info, config)
}

/// A keyspace with two tables, RF 2, so every node holds part of each.
fn fill(info: &Info) -> Result<()> {
    let mut script = format!(
        "DROP KEYSPACE IF EXISTS {KS};\n\
         CREATE KEYSPACE {KS} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 2}};\n\
         CREATE TABLE {KS}.users (id int PRIMARY KEY, name text, payload blob);\n\
         CREATE TABLE {KS}.events (k int, c int, v text, PRIMARY KEY (k, c));\n"
    );
    for i in 0..USERS {
        script.push_str(&format!(
            "INSERT INTO {KS}.users (id, name, payload) VALUES ({i}, 'user {i} \u{e9}t\u{e9}', 0x{:0>64x});\n",
            i as u128 * 0x9e37_79b9_7f4a_7c15
        ));
    }
    script.push_str(&events(0, EVENTS));
    testbed::cql::run(info, &script)?;
    Ok(())
}

fn events(from: usize, to: usize) -> String {
    (from..to)
        .map(|i| {
            format!(
                "INSERT INTO {KS}.events (k, c, v) VALUES ({}, {i}, 'event {i} {}');\n",
                i % 97,
                "x".repeat(i % 50)
            )
        })
        .collect()
}

fn cfg(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// The user tables of the cluster (not system keyspaces).
fn user_tables(info: &Info) -> Result<BTreeSet<(String, String)>> {
    let rows = testbed::cql::run(info, &format!("SELECT keyspace_name, table_name FROM system_schema.tables WHERE keyspace_name = '{KS}'"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let (k, t) = r.split_once(" | ").expect("two columns");
            (k.to_string(), t.to_string())
        })
        .collect())
}

fn no_snapshot_left(info: &Info) -> Result<()> {
    for n in &info.nodes {
        let out = cassandra::nodetool_ok(info, n.node, &["listsnapshots"])?;
        ensure!(
            !out.contains("tidemark-"),
            "node {} still has a tidemark snapshot:\n{out}",
            n.node
        );
    }
    Ok(())
}

#[test]
fn backup_list_verify_incremental_damage_and_bad_input() -> Result<()> {
    let (info, config) = info();
    let catalog = Catalog::open(&config)?;
    let before = catalog.backups()?.len();
    fill(&info)?;
    let tables = user_tables(&info)?;
    assert_eq!(tables.len(), 2);

    // 1. A first backup.
    let row = cluster_ok(&["backup", "--config", cfg(&config), "--json"])?.json();
    let id1 = row["id"].as_str().context("id")?.to_string();
    assert_eq!(row["nodes"], 3, "{row}");
    let m1 = catalog.manifest(&id1)?;
    assert_eq!(m1.store, "cassandra");
    assert_eq!(m1.cluster, catalog.config.name);
    assert!(m1.tag.starts_with("tidemark-"), "{}", m1.tag);
    let mut addrs: Vec<String> = m1.nodes.iter().map(|n| n.node.clone()).collect();
    addrs.sort();
    let mut want: Vec<String> = info.nodes.iter().map(|n| n.address.to_string()).collect();
    want.sort();
    assert_eq!(addrs, want);
    let detail: BackupDetail = m1.detail()?;
    assert!(
        detail.schema.contains(&format!("CREATE TABLE {KS}.users")),
        "{}",
        detail.schema
    );
    assert!(detail.keyspaces.contains_key(KS));
    let first = m1.nodes.iter().map(|n| n.cut_at).min().unwrap();
    let last = m1.nodes.iter().map(|n| n.cut_at).max().unwrap();
    assert_eq!(detail.snapshot_spread_ms, (last - first).num_milliseconds());
    assert!(detail.snapshot_spread_ms >= 0);
    for n in &m1.nodes {
        let d: NodeDetail = n.detail()?;
        assert_eq!(d.tokens.len(), info.num_tokens, "node {}", n.node);
        let have: BTreeSet<(String, String)> = d
            .tables
            .iter()
            .filter(|t| t.files.iter().any(|f| f.name.ends_with("-Data.db")))
            .map(|t| (t.keyspace.clone(), t.table.clone()))
            .collect();
        for t in &tables {
            assert!(
                have.contains(t),
                "node {} lacks {t:?}; has {have:?}",
                n.node
            );
        }
        assert!(
            n.summary.bytes_read > 0 || before > 0,
            "node {}: {:?}",
            n.node,
            n.summary
        );
        assert!(m1.started <= n.cut_at && n.cut_at <= m1.finished);
    }
    println!("first backup: {row}");

    // 2. list shows it, and only this cluster's backups.
    let list = cluster_ok(&["list", "--config", cfg(&config), "--json"])?.json();
    let rows = list.as_array().context("array")?;
    assert_eq!(rows.len(), before + 1);
    assert!(rows
        .iter()
        .all(|r| r["cluster"] == catalog.config.name.as_str()));
    let r = rows
        .iter()
        .find(|r| r["id"] == id1.as_str())
        .context("listed")?;
    assert_eq!(
        (r["nodes"].as_u64(), r["tables"].as_u64().unwrap() >= 2),
        (Some(3), true),
        "{r}"
    );
    assert_eq!(r["snapshot_spread_ms"], detail.snapshot_spread_ms);
    let text = cluster_ok(&["list", "--config", cfg(&config)])?.stdout;
    assert!(text.contains(&id1[..8]), "{text}");

    // 3. verify passes, with and without reading the data.
    let v = cluster_ok(&["verify", "--config", cfg(&config), &id1[..8]])?;
    assert!(v.stdout.contains("no damage"), "{}", v.stdout);
    let v = cluster_ok(&[
        "verify",
        "--config",
        cfg(&config),
        &id1[..8],
        "--read-data",
        "--json",
    ])?
    .json();
    assert_eq!(v["damage"].as_array().map(Vec::len), Some(0), "{v}");
    assert_eq!(v["chunks_read"], v["chunks"]);
    no_snapshot_left(&info)?;

    // 4. No writes to user tables: no stored SSTable is read again. Cassandra
    // itself may flush system tables (system.local, compaction history)
    // between two backups; only those new files may be read.
    let id2 = cluster_ok(&["backup", "--config", cfg(&config)])?
        .stdout
        .trim()
        .to_string();
    let m2 = catalog.manifest(&id2)?;
    let (before, after) = (files_by_node(&m1)?, files_by_node(&m2)?);
    for n in &m2.nodes {
        println!("second backup, node {}: {:?}", n.node, n.summary);
        let mut new_bytes = 0;
        for (table, files) in &after[&n.node] {
            for (name, size) in files {
                if before[&n.node].get(table).is_none_or(|f| !f.contains_key(name)) {
                    assert!(
                        table.0.starts_with("system"),
                        "node {}: new file {name} in user table {table:?} without writes",
                        n.node
                    );
                    new_bytes += size;
                }
            }
        }
        assert_eq!(
            n.summary.bytes_read, new_bytes,
            "node {} read more than the system tables' new files: {:?}",
            n.node, n.summary
        );
        assert!(
            n.summary.data_added_stored < 256 * 1024,
            "node {}: {:?}",
            n.node,
            n.summary
        );
        for (table, files) in &after[&n.node] {
            if !table.0.starts_with("system") {
                assert_eq!(Some(files), before[&n.node].get(table), "node {} table {table:?}", n.node);
            }
        }
    }

    // 5. New writes: only the new SSTables are read.
    testbed::cql::run(&info, &events(EVENTS, EVENTS + 500))?;
    let id3 = cluster_ok(&["backup", "--config", cfg(&config)])?
        .stdout
        .trim()
        .to_string();
    let m3 = catalog.manifest(&id3)?;
    let (old, new) = (files_by_node(&m2)?, files_by_node(&m3)?);
    let mut any_new = false;
    for n in &m3.nodes {
        let mut new_bytes = 0;
        let mut new_tables = BTreeSet::new();
        for (table, files) in &new[&n.node] {
            for (name, size) in files {
                if old[&n.node]
                    .get(table)
                    .is_none_or(|f| !f.contains_key(name))
                {
                    new_bytes += size;
                    new_tables.insert(table.clone());
                }
            }
        }
        println!(
            "third backup, node {}: new SSTable bytes {new_bytes} in {new_tables:?}; {:?}",
            n.node, n.summary
        );
        assert_eq!(
            n.summary.bytes_read, new_bytes,
            "node {} read more than its new SSTables",
            n.node
        );
        assert!(
            !new_tables.contains(&(KS.to_string(), "users".to_string())),
            "users had no writes: {new_tables:?}"
        );
        any_new |= new_tables.contains(&(KS.to_string(), "events".to_string()));
    }
    assert!(any_new, "the new events reached no node's SSTables");
    no_snapshot_left(&info)?;

    // 6. A damaged pack: named by node and table.
    let victim = &m3.nodes[0];
    let d: NodeDetail = victim.detail()?;
    let users = d
        .tables
        .iter()
        .find(|t| t.keyspace == KS && t.table == "users")
        .context("users on node")?;
    let data = users
        .files
        .iter()
        .find(|f| f.name.ends_with("-Data.db"))
        .context("a Data.db")?;
    let path = format!("{}/{}", users.dir, data.name);
    let (pack, offset) = catalog.chunk_place(&victim.snapshot, &path, 0)?;
    {
        let _flip = FlippedBit::new(&pack, offset + 40)?;
        let structure = cluster(&["verify", "--config", cfg(&config), "latest"]);
        assert_eq!(
            structure.code, 0,
            "same size, so only reading finds it: {}{}",
            structure.stdout, structure.stderr
        );
        let bad = cluster(&["verify", "--config", cfg(&config), "latest", "--read-data"]);
        assert_eq!(bad.code, 3, "{}{}", bad.stdout, bad.stderr);
        let line = format!("damaged: node {} table {KS}.users {path}", victim.node);
        assert!(
            bad.stdout.contains(&line),
            "wanted {line:?} in:\n{}",
            bad.stdout
        );
    }
    cluster_ok(&["verify", "--config", cfg(&config), "latest", "--read-data"])?;

    // 7. Bad input: clear errors, no manifest.
    let count = catalog.backups()?.len();
    let dir = tempfile::tempdir()?;
    let text = std::fs::read_to_string(&config)?;
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{}\n", "ab".repeat(32)))?;
    let bad_token = write_variant(dir.path(), "bad-token.toml", &text, "token-file", &token)?;
    let r = cluster(&["backup", "--config", cfg(&bad_token)]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("refused the credentials"), "{}", r.stderr);
    assert!(
        !r.stderr.contains(&"ab".repeat(32)),
        "the token leaked: {}",
        r.stderr
    );

    let pw = dir.path().join("pw");
    std::fs::write(&pw, "not the passphrase\n")?;
    let bad_pw = write_variant(dir.path(), "bad-pw.toml", &text, "password-file", &pw)?;
    let r = cluster(&["backup", "--config", cfg(&bad_pw)]);
    assert_eq!(r.code, 12, "{}", r.stderr);
    let r = cluster(&["list", "--config", cfg(&bad_pw)]);
    assert_eq!(r.code, 12, "{}", r.stderr);

    let malformed = dir.path().join("malformed.toml");
    std::fs::write(&malformed, text.replace("contact-points", "contact-pints"))?;
    let r = cluster(&["backup", "--config", cfg(&malformed)]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("malformed.toml") && r.stderr.contains("contact-pints"),
        "{}",
        r.stderr
    );

    assert_eq!(
        catalog.backups()?.len(),
        count,
        "a refused backup wrote a manifest"
    );
    no_snapshot_left(&info)?;
    Ok(())
}

/// `text` with the first `key = ...` line replaced to point at `value`.
fn write_variant(dir: &Path, name: &str, text: &str, key: &str, value: &Path) -> Result<PathBuf> {
    let mut done = false;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if !done && l.trim_start().starts_with(&format!("{key} ")) {
                done = true;
                format!("{key} = {:?}", value.display().to_string())
            } else {
                l.to_string()
            }
        })
        .collect();
    ensure!(done, "no {key} line in the cluster file");
    let path = dir.join(name);
    std::fs::write(&path, out.join("\n"))?;
    Ok(path)
}
