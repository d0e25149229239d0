//! `tidemark cluster forget` with the real binary against one shared 3-node
//! Cassandra 5.0 testbed cluster with a real agent beside each node:
//! - a keep policy: `--dry-run` changes nothing; `--keep-last 1 --prune`
//!   leaves the newest backup listed, removes the other backups' node
//!   snapshots, the repository shrinks after the delayed deletion, and the
//!   kept backup verifies with `--read-data` and restores two tables whose
//!   every row equals what was written before it; a plain single-repository
//!   snapshot in the same repository is untouched and still restores;
//! - a policy that keeps nothing, or no policy at all, is refused;
//! - the cluster file's `[retention]` table is used when no flag is given;
//! - forgetting by id; an unknown id fails naming it and removes nothing;
//! - a store refusing a delete (an immutable file, as S3 Object Lock would):
//!   of the catalog entry, a clear error and the backup still listed and
//!   whole; of a node snapshot, an error naming it, the backup no longer
//!   listed, and the snapshot left as a leftover;
//! - leftovers (node snapshots of no backup, as a crash between deleting a
//!   backup's catalog entry and its snapshots leaves) are removed by a later
//!   run, but not while younger than the grace period;
//! - `tidemark cluster copy` into another repository: the manifest is
//!   rewritten for the copies' new node snapshot ids, the copy verifies with
//!   `--read-data`, and two tables restored from it (through agents reading
//!   the copy) equal what was written before the backup, value by value.
//!
//! Each test uses its own catalog name for the cluster (a copy of the
//! testbed's coordinator file with `name` changed), so its policies only see
//! its own backups, and its own keyspace. The tests run one at a time
//! ([`serial`]): an agent serves one backup at a time.

#[path = "common/cluster.rs"]
mod cluster;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use anyhow::{ensure, Context, Result};
use cluster::{cluster, cluster_ok, Catalog, Run};
use scylla::value::CqlValue;
use serde_json::Value;
use testbed::cassandra::Info;
use testbed::fixture::SharedCell;
use testbed::Kind;
use tidemark_repo::{FileKind, Id};

static CLUSTER: SharedCell = SharedCell::with_agents(
    Kind::Cassandra,
    "TESTBED_CASSANDRA_ROOT",
    Some(3),
    env!("CARGO_BIN_EXE_tidemark"),
);

fn serial() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|e| e.into_inner())
}

fn info() -> Info {
    // Fast key derivation for the testbed's repository (tests only).
    std::env::set_var("TIDEMARK_INSECURE_TEST_KDF", "1");
    CLUSTER.get().info()
}

/// What every test starts from: the shared cluster to itself, a scratch dir,
/// and the coordinator file `dir/c.toml` under a catalog name of its own.
struct Setup {
    _serial: MutexGuard<'static, ()>,
    info: Info,
    dir: tempfile::TempDir,
    name: String,
    config: PathBuf,
    catalog: Catalog,
}

fn setup(base: &str) -> Result<Setup> {
    let serial = serial();
    let info = info();
    let dir = tempfile::tempdir()?;
    let name = unique(base);
    let config = config_named(&info, dir.path(), "c.toml", &name, "")?;
    let catalog = Catalog::open(&config)?;
    Ok(Setup { _serial: serial, info, dir, name, config, catalog })
}

/// The testbed's coordinator file under another catalog name, plus `extra`,
/// written as `dir/file`.
fn config_named(info: &Info, dir: &Path, file: &str, name: &str, extra: &str) -> Result<PathBuf> {
    let base = info
        .tidemark_config
        .as_ref()
        .context("cluster started with agents")?;
    let text = std::fs::read_to_string(base)?;
    let mut out: String = text
        .lines()
        .map(|l| {
            if l.starts_with("name = ") {
                format!("name = \"{name}\"\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    out.push_str(extra);
    let path = dir.join(file);
    std::fs::write(&path, out)?;
    Ok(path)
}

/// A catalog name no earlier run on a reused cluster has used.
fn unique(base: &str) -> String {
    format!(
        "{base}-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp()
    )
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// `tidemark ARGS` on the cluster's repository (single-repository commands).
fn tidemark(catalog: &Catalog, args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    cmd.arg("--repo")
        .arg(&catalog.config.repository)
        .arg("--password-file")
        .arg(&catalog.config.password_file)
        .args(args)
        .env_remove("TIDEMARK_REPOSITORY")
        .env_remove("TIDEMARK_PASSWORD");
    let out = cmd.output().expect("running tidemark");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn tidemark_ok(catalog: &Catalog, args: &[&str]) -> Result<Run> {
    let r = tidemark(catalog, args);
    ensure!(
        r.code == 0,
        "tidemark {args:?} exited {}:\n{}\n{}",
        r.code,
        r.stdout,
        r.stderr
    );
    Ok(r)
}

/// Every snapshot id in the repository (`tidemark snapshots --json`).
fn snapshot_ids(catalog: &Catalog) -> Result<BTreeSet<String>> {
    let v = tidemark_ok(catalog, &["snapshots", "--json"])?.json();
    v.as_array()
        .context("snapshots --json is an array")?
        .iter()
        .map(|s| s["id"].as_str().map(str::to_string).context("snapshot id"))
        .collect()
}

/// The cluster's backup ids, oldest first (`cluster list --json`).
fn listed(config: &Path) -> Result<Vec<String>> {
    let v = cluster_ok(&["list", "--config", s(config), "--json"])?.json();
    v.as_array()
        .context("list --json is an array")?
        .iter()
        .map(|b| b["id"].as_str().map(str::to_string).context("id"))
        .collect()
}

fn backup(config: &Path) -> Result<String> {
    Ok(cluster_ok(&["backup", "--config", s(config)])?
        .stdout
        .trim()
        .to_string())
}

/// The node snapshot ids of one backup, from its manifest.
fn node_snapshots(catalog: &Catalog, backup: &str) -> Result<BTreeSet<String>> {
    Ok(catalog
        .manifest(backup)?
        .nodes
        .iter()
        .map(|n| n.snapshot.to_hex())
        .collect())
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|b| b["id"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).expect("reading the repository") {
        let e = e.expect("dir entry");
        let m = e.metadata().expect("metadata");
        n += if m.is_dir() {
            dir_bytes(&e.path())
        } else {
            m.len()
        };
    }
    n
}

/// Deterministic bytes that zstd cannot shrink (each generation's unique).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a keyspace holds: kv rows id -> (gen, v, payload); bulk id -> payload.
#[derive(Clone, Default)]
struct Model {
    kv: BTreeMap<i32, (i32, String, Vec<u8>)>,
    bulk: BTreeMap<i32, Vec<u8>>,
}

const BULK_ROWS: i32 = 150;
const BULK_BYTES: usize = 2048;

/// Writes generation `g` (1, 2, 3, ...): kv rows inserted, updated and
/// deleted; the bulk table truncated and refilled with new incompressible
/// data, so an older backup's bulk SSTables are needed by no newer one.
fn write_gen(info: &Info, ks: &str, g: i32, m: &mut Model, bulk: bool) -> Result<()> {
    let mut script = String::new();
    if g == 1 {
        script.push_str(&format!(
            "DROP KEYSPACE IF EXISTS {ks};\n\
             CREATE KEYSPACE {ks} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 2}};\n\
             CREATE TABLE {ks}.kv (id int PRIMARY KEY, gen int, v text, payload blob);\n\
             CREATE TABLE {ks}.bulk (id int PRIMARY KEY, payload blob);\n"
        ));
    }
    let (upd, new, del) = match g {
        1 => (0..0, 0..120, 0..0),
        2 => (0..60, 120..180, 0..0),
        _ => (
            60..90,
            (150 + 30 * g)..(180 + 30 * g),
            (g - 3) * 40..(g - 2) * 40,
        ),
    };
    for id in upd.chain(new) {
        let v = format!("row {id} gen {g} \u{e9}t\u{e9}");
        let p = noise(((id as u64) << 8) | g as u64, 64 + (id as usize % 200));
        script.push_str(&format!(
            "INSERT INTO {ks}.kv (id, gen, v, payload) VALUES ({id}, {g}, '{v}', 0x{});\n",
            hex(&p)
        ));
        m.kv.insert(id, (g, v, p));
    }
    for id in del {
        script.push_str(&format!("DELETE FROM {ks}.kv WHERE id = {id};\n"));
        m.kv.remove(&id);
    }
    if bulk {
        script.push_str(&format!("TRUNCATE {ks}.bulk;\n"));
        m.bulk.clear();
        for id in 0..BULK_ROWS {
            let p = noise(1_000_000 + (g as u64) * 10_000 + id as u64, BULK_BYTES);
            script.push_str(&format!(
                "INSERT INTO {ks}.bulk (id, payload) VALUES ({id}, 0x{});\n",
                hex(&p)
            ));
            m.bulk.insert(id, p);
        }
    }
    testbed::cql::run(info, &script)?;
    Ok(())
}

/// Every row of `ks.table` equals the model, value by value.
fn assert_rows(info: &Info, ks: &str, kv_table: &str, bulk_table: &str, m: &Model) -> Result<()> {
    let mut got = testbed::cql::run(
        info,
        &format!("SELECT id, gen, v, payload FROM {ks}.{kv_table}"),
    )?;
    got.sort();
    let mut want: Vec<String> =
        m.kv.iter()
            .map(|(id, (g, v, p))| format!("{id} | {g} | {v} | {:?}", CqlValue::Blob(p.clone())))
            .collect();
    want.sort();
    ensure!(
        got.len() == want.len(),
        "{ks}.{kv_table}: {} rows, {} written",
        got.len(),
        want.len()
    );
    for (g, w) in got.iter().zip(&want) {
        ensure!(g == w, "{ks}.{kv_table}: row differs:\n got {g}\nwant {w}");
    }
    let mut got = testbed::cql::run(info, &format!("SELECT id, payload FROM {ks}.{bulk_table}"))?;
    got.sort();
    let mut want: Vec<String> = m
        .bulk
        .iter()
        .map(|(id, p)| format!("{id} | {:?}", CqlValue::Blob(p.clone())))
        .collect();
    want.sort();
    ensure!(
        got == want,
        "{ks}.{bulk_table}: {} rows differ from the {} written",
        got.len(),
        want.len()
    );
    Ok(())
}

fn forget_json(args: &[&str]) -> Result<Value> {
    let mut all = vec!["forget"];
    all.extend_from_slice(args);
    all.push("--json");
    Ok(cluster_ok(&all)?.json())
}

#[test]
fn keep_last_dry_run_then_prune_keeps_a_restorable_backup() -> Result<()> {
    let Setup { _serial, info, dir, config, catalog, .. } = setup("forget-policy")?;
    let ks = "fgp";

    // Three backups, the data changing between them.
    let mut model = Model::default();
    let mut backups = Vec::new();
    for g in 1..=3 {
        write_gen(&info, ks, g, &mut model, true)?;
        backups.push(backup(&config)?);
    }
    let at_third = model.clone();
    // Changes after the kept backup, which the restore must not show.
    write_gen(&info, ks, 4, &mut model, true)?;
    assert_eq!(listed(&config)?, backups);

    // A plain single-repository snapshot in the same repository.
    let files = dir.path().join("plain");
    std::fs::create_dir(&files)?;
    std::fs::write(files.join("a.bin"), noise(7, 100_000))?;
    let plain = tidemark_ok(&catalog, &["backup", s(&files), "--json"])?.json();
    let plain_id = plain["id"]
        .as_str()
        .context("plain snapshot id")?
        .to_string();

    // Refused: no rule at all, a rule that keeps nothing, ids with rules.
    let r = cluster(&["forget", "--config", s(&config)]);
    ensure!(
        r.code != 0 && r.stderr.contains("--allow-empty"),
        "no policy accepted: {r:?}"
    );
    let r = cluster(&["forget", "--config", s(&config), "--keep-within", "0h"]);
    ensure!(
        r.code != 0 && r.stderr.contains("--allow-empty"),
        "empty policy accepted: {r:?}"
    );
    let r = cluster(&[
        "forget",
        "--config",
        s(&config),
        backups[0].as_str(),
        "--keep-last",
        "1",
    ]);
    ensure!(
        r.code != 0 && r.stderr.contains("not both"),
        "ids with rules accepted: {r:?}"
    );

    let snaps_before = snapshot_ids(&catalog)?;
    ensure!(
        snaps_before.contains(&plain_id),
        "plain snapshot {plain_id} not listed"
    );
    let forgotten: BTreeSet<String> = node_snapshots(&catalog, &backups[0])?
        .union(&node_snapshots(&catalog, &backups[1])?)
        .cloned()
        .collect();
    let kept_nodes = node_snapshots(&catalog, &backups[2])?;
    assert_eq!((forgotten.len(), kept_nodes.len()), (6, 3));

    // Dry run: the plan, and nothing changed.
    let plan = forget_json(&["--config", s(&config), "--keep-last", "1", "--dry-run"])?;
    assert_eq!(ids(&plan["keep"]), vec![backups[2].clone()], "{plan}");
    assert_eq!(
        ids(&plan["remove"]),
        vec![backups[1].clone(), backups[0].clone()],
        "{plan}"
    );
    assert_eq!(plan["keep"][0]["nodes"], 3);
    assert!(
        plan["keep"][0]["total_bytes"].as_u64().unwrap_or(0) > 0,
        "{plan}"
    );
    let planned: BTreeSet<String> = plan["snapshots_removed"]
        .as_array()
        .context("snapshots_removed")?
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(planned, forgotten);
    assert_eq!(listed(&config)?, backups, "dry run changed the list");
    assert_eq!(
        snapshot_ids(&catalog)?,
        snaps_before,
        "dry run changed the snapshots"
    );

    // The real run, with prune.
    let bytes_before = dir_bytes(&catalog.dir());
    let out = forget_json(&[
        "--config",
        s(&config),
        "--keep-last",
        "1",
        "--prune",
        "--clock-skew",
        "0s",
    ])?;
    assert_eq!(
        ids(&out["remove"]),
        vec![backups[1].clone(), backups[0].clone()],
        "{out}"
    );
    assert!(
        out["prune"]["bytes_marked"].as_u64().unwrap_or(0) > 0,
        "prune marked nothing: {out}"
    );
    assert_eq!(listed(&config)?, vec![backups[2].clone()]);
    let snaps_after = snapshot_ids(&catalog)?;
    let want: BTreeSet<String> = snaps_before.difference(&forgotten).cloned().collect();
    assert_eq!(
        snaps_after, want,
        "exactly the forgotten backups' node snapshots are gone"
    );
    assert!(snaps_after.contains(&plain_id) && kept_nodes.is_subset(&snaps_after));
    // Prune deletes what it marked obsolete on a later run (delayed
    // deletion, safe beside running backups) whose lock started after the
    // mark. The mark is rounded up to the next whole second and the later
    // lock's start compared in whole seconds (rounded down), so up to two
    // seconds must pass between the mark and the next prune: hence the wait.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let second = tidemark_ok(&catalog, &["prune", "--clock-skew", "0s", "--json"])?.json();
    assert_eq!(second["packs_still_obsolete"], 0, "{second}");
    assert!(
        second["packs_deleted"].as_u64().unwrap_or(0) > 0,
        "{second}"
    );
    let bytes_after = dir_bytes(&catalog.dir());
    // Two generations of bulk data, one copy per replica (RF 2), at least.
    let bulk_gen = (BULK_ROWS as u64) * BULK_BYTES as u64;
    ensure!(
        bytes_after + 2 * bulk_gen <= bytes_before,
        "repository went from {bytes_before} to {bytes_after} bytes only"
    );
    println!("repository: {bytes_before} -> {bytes_after} bytes");

    // The kept backup is whole and restores every row.
    cluster_ok(&[
        "verify",
        "--config",
        s(&config),
        backups[2].as_str(),
        "--read-data",
    ])?;
    for t in ["kv", "bulk"] {
        cluster_ok(&[
            "restore",
            "--config",
            s(&config),
            backups[2].as_str(),
            "--keyspace",
            ks,
            "--table",
            t,
            "--rename-to",
            format!("{t}_back").as_str(),
        ])?;
    }
    assert_rows(&info, ks, "kv_back", "bulk_back", &at_third)?;
    assert_rows(&info, ks, "kv", "bulk", &model)?;

    // The plain snapshot is untouched: the whole repository checks, and it
    // restores byte for byte.
    tidemark_ok(&catalog, &["verify", "--read-data"])?;
    let target = dir.path().join("restored");
    tidemark_ok(
        &catalog,
        &["restore", plain_id.as_str(), "--target", s(&target)],
    )?;
    let back = walk_files(&target)?;
    ensure!(
        back.len() == 1 && std::fs::read(&back[0])? == noise(7, 100_000),
        "plain snapshot restored {back:?}"
    );
    testbed::cql::run(&info, &format!("DROP KEYSPACE {ks}"))?;
    Ok(())
}

/// Makes a repository file undeletable (`chattr +i`: the filesystem then
/// refuses the delete, as S3 Object Lock would) until dropped.
struct Immutable(PathBuf);

impl Immutable {
    fn new(path: &Path) -> Result<Immutable> {
        let st = Command::new("chattr").arg("+i").arg(path).status()?;
        ensure!(st.success(), "chattr +i {} failed", path.display());
        Ok(Immutable(path.to_path_buf()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let st = Command::new("chattr").arg("-i").arg(&self.0).status();
        assert!(
            st.is_ok_and(|s| s.success()),
            "chattr -i {}",
            self.0.display()
        );
    }
}

fn walk_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk_files(&p)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}

#[test]
fn named_backups_unknown_ids_retention_table_and_crash_leftovers() -> Result<()> {
    let Setup { _serial, info, dir, name, config, catalog } = setup("forget-named")?;
    let name = name.as_str();
    let ks = "fgn";
    let mut model = Model::default();
    let mut backups = Vec::new();
    for g in 1..=3 {
        write_gen(&info, ks, g, &mut model, false)?;
        backups.push(backup(&config)?);
    }
    assert_eq!(listed(&config)?, backups);
    let snaps_before = snapshot_ids(&catalog)?;

    // The file's [retention] table applies when no flag is given.
    let with_retention = config_named(
        &info,
        dir.path(),
        "retention.toml",
        name,
        "\n[retention]\nkeep-last = 2\n",
    )?;
    let plan = forget_json(&["--config", s(&with_retention), "--dry-run"])?;
    assert_eq!(ids(&plan["remove"]), vec![backups[0].clone()], "{plan}");
    assert_eq!(plan["keep"][0]["reasons"][0], "last backup", "{plan}");
    // Flags take precedence over the table.
    let plan = forget_json(&[
        "--config",
        s(&with_retention),
        "--dry-run",
        "--keep-last",
        "3",
    ])?;
    assert_eq!(ids(&plan["remove"]), Vec::<String>::new(), "{plan}");
    // A bad table is refused by name.
    let bad = config_named(
        &info,
        dir.path(),
        "bad.toml",
        name,
        "\n[retention]\nkeep-within = \"a week\"\n",
    )?;
    let r = cluster(&["forget", "--config", s(&bad), "--dry-run"]);
    ensure!(
        r.code != 0 && r.stderr.contains("retention.keep-within"),
        "{r:?}"
    );

    // Unknown ids fail naming the id, and nothing is removed, even when
    // named beside a good id.
    for args in [vec!["deadbeef"], vec![&backups[0][..8], "deadbeef"]] {
        let mut all = vec!["forget", "--config", s(&config)];
        all.extend(args.iter().copied());
        let r = cluster(&all);
        ensure!(r.code != 0 && r.stderr.contains("deadbeef"), "{r:?}");
    }
    assert_eq!(listed(&config)?, backups);
    assert_eq!(snapshot_ids(&catalog)?, snaps_before);

    // The store refuses to delete the first backup's catalog entry (an
    // immutable file, as S3 Object Lock would): a clear error, and the
    // backup is still listed and whole.
    let entry = catalog
        .dir()
        .join(FileKind::Catalog.key(&backups[0].parse::<Id>()?));
    {
        let _locked = Immutable::new(&entry)?;
        let r = cluster(&["forget", "--config", s(&config), &backups[0][..10]]);
        ensure!(
            r.code != 0 && r.stderr.contains("still listed and complete"),
            "{r:?}"
        );
    }
    assert_eq!(listed(&config)?, backups);
    assert_eq!(snapshot_ids(&catalog)?, snaps_before);
    cluster_ok(&["verify", "--config", s(&config), backups[0].as_str()])?;

    // By id (a prefix): only that backup and its node snapshots go.
    let first = node_snapshots(&catalog, &backups[0])?;
    let out = forget_json(&["--config", s(&config), &backups[0][..10]])?;
    assert_eq!(ids(&out["remove"]), vec![backups[0].clone()], "{out}");
    assert_eq!(listed(&config)?, backups[1..].to_vec());
    let now = snapshot_ids(&catalog)?;
    assert_eq!(
        now,
        snaps_before
            .difference(&first)
            .cloned()
            .collect::<BTreeSet<_>>()
    );

    // The store refuses to delete one node snapshot of the second backup:
    // the error names it and the way out; the backup is no longer listed
    // (its catalog entry went first), its other node snapshots are gone.
    let second = node_snapshots(&catalog, &backups[1])?;
    let stuck = second.iter().next().context("a node snapshot")?.clone();
    let stuck_file = catalog
        .dir()
        .join(FileKind::Snapshot.key(&stuck.parse::<Id>()?));
    {
        let _locked = Immutable::new(&stuck_file)?;
        let r = cluster(&["forget", "--config", s(&config), backups[1].as_str()]);
        ensure!(
            r.code != 0
                && r.stderr.contains(&stuck[..8])
                && r.stderr.contains("later `tidemark cluster forget`"),
            "{r:?}"
        );
    }
    assert_eq!(listed(&config)?, backups[2..].to_vec());
    let left_now = snapshot_ids(&catalog)?;
    let want: BTreeSet<String> = now
        .difference(&second)
        .cloned()
        .chain([stuck.clone()])
        .collect();
    assert_eq!(left_now, want);

    // That snapshot is a leftover now, like those of a crash between the
    // two steps. A run within the grace period leaves it (it could belong
    // to a backup about to commit its manifest) ...
    let out = forget_json(&["--config", s(&config), "--keep-last", "5"])?;
    assert_eq!(out["leftovers"].as_array().map(Vec::len), Some(0), "{out}");
    assert_eq!(snapshot_ids(&catalog)?, left_now);
    // ... and once it is old enough, a run removes exactly it.
    let out = forget_json(&[
        "--config",
        s(&config),
        "--keep-last",
        "5",
        "--leftover-grace",
        "0s",
    ])?;
    let left: Vec<String> = out["leftovers"]
        .as_array()
        .context("leftovers")?
        .iter()
        .map(|l| l["snapshot"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(left, vec![stuck.clone()], "{out}");
    assert_eq!(ids(&out["remove"]), Vec::<String>::new(), "{out}");
    assert_eq!(
        snapshot_ids(&catalog)?,
        now.difference(&second).cloned().collect::<BTreeSet<_>>()
    );
    assert_eq!(listed(&config)?, backups[2..].to_vec());
    cluster_ok(&["verify", "--config", s(&config), backups[2].as_str()])?;
    testbed::cql::run(&info, &format!("DROP KEYSPACE {ks}"))?;
    Ok(())
}

/// Extra `tidemark agent` processes beside the testbed's, one per node,
/// serving the same nodes from another repository; killed when dropped.
struct OffsiteAgents {
    children: Vec<std::process::Child>,
    /// Testbed agent URL -> this agent's URL.
    urls: Vec<(String, String)>,
}

impl OffsiteAgents {
    fn start(info: &Info, dir: &Path, repo: &Path, password: &Path) -> Result<OffsiteAgents> {
        let mut agents = OffsiteAgents {
            children: Vec::new(),
            urls: Vec::new(),
        };
        for a in &info.agents {
            let port = testbed::net::free_port()?;
            let work = dir.join(format!("agent{}-work", a.node));
            std::fs::create_dir_all(&work)?;
            let text: String = std::fs::read_to_string(&a.config)?
                .lines()
                .map(|l| {
                    let key = l.split(" = ").next().unwrap_or_default();
                    match key {
                        "listen" => format!("listen = \"127.0.0.1:{port}\"\n"),
                        "repository" => format!("repository = \"{}\"\n", repo.display()),
                        "password-file" => format!("password-file = \"{}\"\n", password.display()),
                        "work-dir" => format!("work-dir = \"{}\"\n", work.display()),
                        _ => format!("{l}\n"),
                    }
                })
                .collect();
            let file = dir.join(format!("agent{}.toml", a.node));
            std::fs::write(&file, text)?;
            let log = std::fs::File::create(dir.join(format!("agent{}.log", a.node)))?;
            let child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
                .args(["agent", "--config", s(&file)])
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()?;
            agents.children.push(child);
            agents
                .urls
                .push((a.url.clone(), format!("http://127.0.0.1:{port}")));
        }
        for (_, url) in &agents.urls {
            let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse()?;
            // Bounded: an agent binds its port within a second or two.
            let up = (0..300).any(|_| {
                std::net::TcpStream::connect(addr).is_ok() || {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    false
                }
            });
            ensure!(
                up,
                "offsite agent {url} did not start (see its log in {})",
                dir.display()
            );
        }
        Ok(agents)
    }
}

impl Drop for OffsiteAgents {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn copy_carries_the_manifest_and_the_copy_restores() -> Result<()> {
    let Setup { _serial, info, dir, config, catalog, .. } = setup("forget-copy")?;
    let ks = "fgc";
    let mut model = Model::default();
    write_gen(&info, ks, 1, &mut model, true)?;
    let b1 = backup(&config)?;
    let at_backup = model.clone();
    // Changes after the backup, which a restore of it must not show.
    write_gen(&info, ks, 2, &mut model, true)?;

    // The offsite repository, with its own passphrase and keys.
    let offsite = dir.path().join("offsite");
    let pw = dir.path().join("offsite.pass");
    std::fs::write(&pw, "offsite passphrase 5e1f\n")?;
    let init = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["--repo", s(&offsite), "--password-file", s(&pw), "init"])
        .output()?;
    ensure!(
        init.status.success(),
        "init: {}",
        String::from_utf8_lossy(&init.stderr)
    );

    let copy_args = [
        "copy",
        "--config",
        s(&config),
        "--to-repo",
        s(&offsite),
        "--to-password-file",
        s(&pw),
    ];
    let r = cluster(&[&copy_args[..], &["deadbeef"]].concat());
    ensure!(r.code != 0 && r.stderr.contains("deadbeef"), "{r:?}");
    let out = cluster_ok(&[&copy_args[..], &[b1.as_str(), "--json"]].concat())?.json();
    let copied = out["backups"][0]["target"]
        .as_str()
        .context("copied id")?
        .to_string();
    assert_eq!(out["backups"][0]["already_there"], false, "{out}");
    // The copies have new ids, and the manifest names them.
    let source_nodes = node_snapshots(&catalog, &b1)?;
    let pairs = out["backups"][0]["node_snapshots"]
        .as_array()
        .context("pairs")?;
    assert_eq!(pairs.len(), 3, "{out}");
    for p in pairs {
        let (from, to) = (
            p[0].as_str().unwrap_or_default(),
            p[1].as_str().unwrap_or_default(),
        );
        ensure!(source_nodes.contains(from) && from != to, "{p}");
    }
    // A second run finds it there and copies nothing.
    let again = cluster_ok(&[&copy_args[..], &[b1.as_str(), "--json"]].concat())?.json();
    assert_eq!(again["backups"][0]["already_there"], true, "{again}");
    assert_eq!(
        again["backups"][0]["target"].as_str(),
        Some(copied.as_str())
    );

    // A coordinator file for the copy: the same cluster, the offsite
    // repository, and agents that read from it.
    let agents = OffsiteAgents::start(&info, dir.path(), &offsite, &pw)?;
    let text = std::fs::read_to_string(&config)?;
    let mut copy_text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("repository = ") {
                format!("repository = \"{}\"\n", offsite.display())
            } else if l.starts_with("password-file = ") {
                format!("password-file = \"{}\"\n", pw.display())
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    for (old, new) in &agents.urls {
        copy_text = copy_text.replace(&format!("\"{old}\""), &format!("\"{new}\""));
    }
    let copy_config = dir.path().join("offsite.toml");
    std::fs::write(&copy_config, copy_text)?;

    assert_eq!(listed(&copy_config)?, vec![copied.clone()]);
    let offsite_catalog = Catalog::open(&copy_config)?;
    let m = offsite_catalog.manifest(&copied)?;
    assert_eq!(m.tag, catalog.manifest(&b1)?.tag);
    cluster_ok(&[
        "verify",
        "--config",
        s(&copy_config),
        copied.as_str(),
        "--read-data",
    ])?;
    for t in ["kv", "bulk"] {
        cluster_ok(&[
            "restore",
            "--config",
            s(&copy_config),
            copied.as_str(),
            "--keyspace",
            ks,
            "--table",
            t,
            "--rename-to",
            format!("{t}_copy").as_str(),
        ])?;
    }
    assert_rows(&info, ks, "kv_copy", "bulk_copy", &at_backup)?;
    drop(agents);
    testbed::cql::run(&info, &format!("DROP KEYSPACE {ks}"))?;
    Ok(())
}
