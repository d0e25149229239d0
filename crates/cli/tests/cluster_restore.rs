//! `tidemark cluster restore` with the real binary against real Cassandra
//! clusters with agents: a 3-node source (shared by the tests here, one
//! backup of a data set with every CQL type), and a 2-node and a 4-node
//! target in the same testbed root (same repository). Every restore is proven
//! value by value against what was written (`common::cql`).

#[path = "common/restore_clusters.rs"]
mod clusters;
mod common;

use std::sync::OnceLock;

use anyhow::{ensure, Context, Result};
use scylla::value::CqlValue;
use serde_json::Value;
use testbed::cassandra::Info;

use clusters::{config_of, connect, runtime, serial, source, tidemark, TargetCluster};
use common::cql::{self, Dataset};

const KS: &str = "rs";
/// Rows per table: enough for several SSTables per node, quick to compare.
const SCALE: usize = 300;
const RF: usize = 3;

struct Prepared {
    info: Info,
    ds: Dataset,
    backup: String,
}

/// The data set written to the source cluster and its one backup.
fn prepared() -> &'static Prepared {
    static P: OnceLock<Result<Prepared, String>> = OnceLock::new();
    let r = P.get_or_init(|| prepare().map_err(|e| format!("{e:#}")));
    match r {
        Ok(p) => p,
        Err(e) => panic!("preparing the source cluster failed: {e}"),
    }
}

fn prepare() -> Result<Prepared> {
    let info: Info = source().info();
    let ds = runtime().block_on(async {
        let session = connect(&info).await?;
        cql::create_and_fill(&session, KS, RF as u32, SCALE).await
    })?;
    let config = config_of(&info);
    let out = tidemark(&["cluster", "backup", "--config", config.to_str().unwrap()]);
    ensure!(
        out.code == 0,
        "cluster backup failed ({}):\n{}\n{}",
        out.code,
        out.stdout,
        out.stderr
    );
    let backup = out.stdout.trim().to_string();
    ensure!(
        backup.len() >= 8,
        "backup id expected, got {:?}",
        out.stdout
    );
    Ok(Prepared { info, ds, backup })
}

/// `tidemark cluster restore --config SOURCE BACKUP ARGS... --json`, which
/// must succeed; returns its report.
fn restore(p: &Prepared, args: &[&str]) -> Value {
    let config = config_of(&p.info);
    let mut all = vec![
        "cluster",
        "restore",
        "--config",
        config.to_str().unwrap(),
        p.backup.as_str(),
        "--json",
    ];
    all.extend_from_slice(args);
    let out = tidemark(&all);
    assert_eq!(
        out.code, 0,
        "restore {args:?} failed:\n{}\n{}",
        out.stdout, out.stderr
    );
    eprintln!("restore {args:?}: {}", out.stdout);
    out.json()
}

fn table_report<'a>(report: &'a Value, table: &str) -> &'a Value {
    report["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["target_table"] == table)
        .unwrap_or_else(|| panic!("no report for {table}: {report:#}"))
}

#[test]
fn dropped_table_is_recreated_from_the_schema_and_refilled() -> Result<()> {
    let _g = serial();
    let p = prepared();
    runtime().block_on(async {
        let session = connect(&p.info).await?;
        // collections uses the UDT: the definition must come back whole.
        cql::drop_table(&session, KS, "collections").await?;
        let report = restore(p, &["--keyspace", KS, "--table", "collections"]);
        let t = table_report(&report, "collections");
        assert_eq!(t["mode"], "import");
        assert_eq!(t["created"], true);
        assert!(t["files"].as_u64().unwrap() > 0, "{t}");
        assert!(report["schema_statements"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s.as_str().unwrap().contains("collections")));
        cql::check_table(&session, KS, "collections", &p.ds).await
    })
}

#[test]
fn deleted_rows_come_back_with_truncate() -> Result<()> {
    let _g = serial();
    let p = prepared();
    runtime().block_on(async {
        let session = connect(&p.info).await?;
        let deleted = cql::delete_rows(&session, &p.ds, "events", 25).await?;
        ensure!(
            cql::check_table(&session, KS, "events", &p.ds)
                .await
                .is_err(),
            "deleting {} rows changed nothing",
            deleted.len()
        );
        let report = restore(p, &["--table", "rs.events", "--truncate"]);
        let t = table_report(&report, "events");
        assert_eq!(t["truncated"], true);
        assert_eq!(t["mode"], "import");
        cql::check_table(&session, KS, "events", &p.ds).await
    })
}

#[test]
fn truncated_table_is_restored() -> Result<()> {
    let _g = serial();
    let p = prepared();
    runtime().block_on(async {
        let session = connect(&p.info).await?;
        cql::truncate(&session, KS, "counters").await?;
        let report = restore(p, &["--keyspace", KS, "--table", "counters"]);
        let t = table_report(&report, "counters");
        assert_eq!(t["created"], false);
        cql::check_table(&session, KS, "counters", &p.ds).await
    })
}

#[test]
fn dropped_keyspace_is_restored_whole() -> Result<()> {
    let _g = serial();
    let p = prepared();
    runtime().block_on(async {
        let session = connect(&p.info).await?;
        session
            .query_unpaged(format!("DROP KEYSPACE {KS}"), ())
            .await?;
        session.await_schema_agreement().await?;
        let report = restore(p, &["--keyspace", KS]);
        let names: Vec<&str> = report["tables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["table"].as_str().unwrap())
            .collect();
        for t in cql::table_names() {
            assert!(names.contains(&t), "{t} not restored: {names:?}");
        }
        let stmts: Vec<&str> = report["schema_statements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert!(stmts[0].starts_with("CREATE KEYSPACE"), "{stmts:?}");
        let ty = stmts
            .iter()
            .position(|s| s.starts_with("CREATE TYPE"))
            .context("no type created")?;
        let table = stmts
            .iter()
            .position(|s| s.starts_with("CREATE TABLE"))
            .context("no table created")?;
        assert!(ty < table, "types before tables: {stmts:?}");
        cql::check_all(&session, &p.ds).await
    })
}

#[test]
fn rename_restores_next_to_the_live_table() -> Result<()> {
    let _g = serial();
    let p = prepared();
    runtime().block_on(async {
        let session = connect(&p.info).await?;
        let key = cql::overwrite_cell(
            &session,
            &p.ds,
            "people",
            3,
            "name",
            CqlValue::Text("changed since the backup".into()),
        )
        .await?;
        let report = restore(
            p,
            &["--table", "rs.people", "--rename-to", "people_restored"],
        );
        let t = table_report(&report, "people_restored");
        assert_eq!(t["table"], "people");
        assert_eq!(t["created"], true);
        // The copy equals the backup.
        let mut renamed = p.ds.clone();
        let name: &'static str = "people_restored";
        let mut model = renamed.table("people")?.clone();
        model.name = name;
        renamed.tables.insert(name, model);
        cql::check_table(&session, KS, name, &renamed).await?;
        // The live table still has the change, and only it.
        let live = cql::check_table(&session, KS, "people", &p.ds)
            .await
            .expect_err("the live table was touched");
        let text = format!("{live:#}");
        assert!(
            text.contains(&key) && text.contains("changed since the backup"),
            "{text}"
        );
        // Put the live table back for the other tests.
        restore(p, &["--table", "rs.people", "--truncate"]);
        cql::check_table(&session, KS, "people", &p.ds).await
    })
}

#[test]
fn unknown_table_is_refused_with_the_backup_contents() {
    let _g = serial();
    let p = prepared();
    let config = config_of(&p.info);
    let out = tidemark(&[
        "cluster",
        "restore",
        "--config",
        config.to_str().unwrap(),
        &p.backup,
        "--table",
        "rs.nope",
    ]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("rs.nope is not in the backup"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("scalars") && out.stderr.contains("events"),
        "{}",
        out.stderr
    );
    let out = tidemark(&[
        "cluster",
        "restore",
        "--config",
        config.to_str().unwrap(),
        &p.backup,
        "--keyspace",
        "nokeyspace",
    ]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("keyspace \"nokeyspace\" is not in the backup"),
        "{}",
        out.stderr
    );
}

/// Restore into another cluster: schema created there, every row equal,
/// amplification reported and below RF x RF.
fn restore_elsewhere(p: &Prepared, target: &TargetCluster, args: &[&str]) -> Result<Value> {
    let cfg = target.config();
    let mut all = vec!["--target-config", cfg.to_str().unwrap()];
    all.extend_from_slice(args);
    let report = restore(p, &all);
    assert_eq!(report["mode"], "stream", "{report:#}");
    for t in report["tables"].as_array().unwrap() {
        assert_eq!(t["created"], true, "{t}");
        if t["files"].as_u64().unwrap() == 0 {
            continue;
        }
        let amp = t["amplification"]
            .as_f64()
            .with_context(|| format!("no amplification: {t}"))?;
        let bound = (RF * RF) as f64;
        assert!(
            amp > 0.0 && amp < bound,
            "amplification {amp} not below {bound}: {t}"
        );
        let all_replicas = t["amplification_all_replicas"].as_f64().unwrap();
        assert!(
            amp < all_replicas,
            "amplification {amp} not below all replicas to all owners {all_replicas}: {t}"
        );
        assert_eq!(
            t["source_nodes"].as_array().unwrap().len(),
            2,
            "a quorum of 3 replicas: {t}"
        );
    }
    runtime().block_on(async {
        let session = connect(&target.info).await?;
        cql::check_all(&session, &p.ds).await
    })?;
    Ok(report)
}

#[test]
fn whole_backup_streams_into_a_two_node_cluster() -> Result<()> {
    let _g = serial();
    let p = prepared();
    let target = TargetCluster::start("restore-t2", 2)?;
    let report = restore_elsewhere(p, &target, &[])?;
    // Whole backup onto other tokens: the tokens an import restore needs.
    let tokens = report["initial_tokens"]
        .as_array()
        .context("initial_tokens")?;
    assert_eq!(tokens.len(), 3, "{report:#}");
    for t in tokens {
        assert_eq!(
            t["initial_token"].as_str().unwrap().split(',').count(),
            p.info.num_tokens
        );
    }
    Ok(())
}

#[test]
fn keyspace_streams_into_a_four_node_cluster() -> Result<()> {
    let _g = serial();
    let p = prepared();
    let target = TargetCluster::start("restore-t4", 4)?;
    restore_elsewhere(p, &target, &["--keyspace", KS])?;
    Ok(())
}
