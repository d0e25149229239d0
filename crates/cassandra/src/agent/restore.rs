//! POST /v1/restore/import and /v1/restore/load: tables from the repository
//! back into Cassandra.
//!
//! Both fetch only the tables' directories from a node snapshot into the
//! agent's work dir (same filesystem as the data dirs, so `nodetool import`
//! moves files instead of copying them), keep only SSTable components, and
//! hand them to Cassandra:
//!
//! - import: `nodetool import <ks> <table> <dir>`, online, into this node
//!   (same token layout as the backed-up node). Import leaves behind what it
//!   could not load; anything left is an error naming the files.
//! - load: sstableloader streams the files to their owners in the target
//!   cluster (any size or token layout). It wants the path to end in
//!   `<keyspace>/<table>`.
//!
//! The target keyspace and table may differ from the source's (restore
//! under another name). The staging is removed afterwards, also on failure.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use chrono::Utc;
use tidemark_cluster::server::ApiResult;
use tidemark_repo::progress::NoProgress;
use tidemark_repo::restore::RestoreOptions;
use tidemark_repo::Id;
use tokio::process::Command;

use super::{api_error, blocking, exclusive, Shared};
use crate::api::{ImportReply, ImportRequest, LoadReply, LoadRequest, TableTarget};
use crate::error::{CassandraError, Result};

pub(super) async fn import_handler(
    State(shared): State<Arc<Shared>>,
    Json(req): Json<ImportRequest>,
) -> ApiResult<ImportReply> {
    check_tables(&req.tables).map_err(api_error)?;
    let s = shared.clone();
    let what = format!(
        "import of {} table(s) from snapshot {}",
        req.tables.len(),
        req.snapshot.short()
    );
    exclusive(&shared, what, async move {
        let staging = unique_dir(&s.work_dir()?.join("restore"));
        let result = import(&s, &req, &staging).await;
        let cleaned = remove_dir(staging).await;
        let reply = result?;
        cleaned?;
        Ok(reply)
    })
    .await
}

pub(super) async fn load_handler(
    State(shared): State<Arc<Shared>>,
    Json(req): Json<LoadRequest>,
) -> ApiResult<LoadReply> {
    check_tables(&req.tables).map_err(api_error)?;
    if req.snapshots.is_empty() {
        return Err(api_error(CassandraError::Invalid(
            "load: no snapshot given".into(),
        )));
    }
    let has_d = s_has_nodes(&shared.config.sstableloader);
    if req.targets.is_empty() && !has_d {
        return Err(api_error(CassandraError::Invalid(
            "load: no target node given".into(),
        )));
    }
    let s = shared.clone();
    let what = format!(
        "load of {} table(s) from {} snapshot(s)",
        req.tables.len(),
        req.snapshots.len()
    );
    exclusive(&shared, what, async move {
        let staging = unique_dir(&s.work_dir()?.join("load"));
        let result = load(&s, &req, &staging).await;
        let cleaned = remove_dir(staging).await;
        let reply = result?;
        cleaned?;
        Ok(reply)
    })
    .await
}

/// Names reach nodetool's command line and paths: CQL identifiers only.
fn check_tables(tables: &[TableTarget]) -> Result<()> {
    if tables.is_empty() {
        return Err(CassandraError::Invalid("no table given".into()));
    }
    let ident = |s: &str| {
        !s.is_empty() && s.len() <= 222 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    for t in tables {
        if !ident(&t.keyspace) || !ident(&t.table) {
            return Err(CassandraError::Invalid(format!(
                "bad target {}.{}: keyspace and table names are letters, digits and '_'",
                t.keyspace, t.table
            )));
        }
        let p = Path::new(&t.source_dir);
        if !p.is_absolute()
            || p.components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(CassandraError::Invalid(format!(
                "bad source_dir {:?}: an absolute path inside the snapshot",
                t.source_dir
            )));
        }
    }
    Ok(())
}

fn s_has_nodes(argv: &[String]) -> bool {
    argv.iter()
        .any(|a| a == "-d" || a == "--nodes" || a.starts_with("--nodes="))
}

/// `<parent>/<time>-<random>`: concurrent or crashed runs never share one.
fn unique_dir(parent: &Path) -> PathBuf {
    parent.join(format!(
        "{}-{}",
        Utc::now().format("%Y%m%dT%H%M%S"),
        Id::random().short()
    ))
}

async fn remove_dir(dir: PathBuf) -> Result<()> {
    blocking(move || match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CassandraError::io(&dir, e)),
        _ => Ok(()),
    })
    .await
}

/// Fetches the `source_dir`s of `tables` from `snapshot` below `target`;
/// returns where each table's dir landed, in the order of `tables`.
async fn fetch(
    s: &Arc<Shared>,
    snapshot: Id,
    tables: &[TableTarget],
    target: &Path,
) -> Result<Vec<PathBuf>> {
    let s = s.clone();
    let include: Vec<PathBuf> = tables
        .iter()
        .map(|t| PathBuf::from(&t.source_dir))
        .collect();
    let target = target.to_path_buf();
    blocking(move || {
        let snap = s.repo.load_snapshot(&snapshot).map_err(|e| {
            CassandraError::Invalid(format!(
                "snapshot {} is not in the repository: {e}",
                snapshot.short()
            ))
        })?;
        std::fs::create_dir_all(&target).map_err(|e| CassandraError::io(&target, e))?;
        let opts = RestoreOptions {
            target: target.clone(),
            include: include.clone(),
            threads: None,
        };
        let outcome = tidemark_repo::restore::restore(&s.repo, &snap, &opts, &NoProgress)?;
        if !outcome.errors.is_empty() {
            let list: Vec<String> = outcome
                .errors
                .iter()
                .map(|(p, e)| format!("{}: {e}", p.display()))
                .collect();
            return Err(CassandraError::Invalid(format!(
                "restore from snapshot {}: {}",
                snapshot.short(),
                list.join("; ")
            )));
        }
        include
            .iter()
            .map(|src| {
                let dir = target.join(src.strip_prefix("/").unwrap_or(src));
                if dir.is_dir() {
                    Ok(dir)
                } else {
                    Err(CassandraError::Invalid(format!(
                        "{} is not a directory in snapshot {}",
                        src.display(),
                        snapshot.short()
                    )))
                }
            })
            .collect()
    })
    .await
}

/// Whether a file name is an SSTable component (`<version>-<id>-<format>-<Component>`,
/// e.g. `nb-1-big-Data.db`, `da-3gxs_0s1c_2q9gw2f0p3v0lmxg7b-bti-Partitions.db`).
/// Snapshot extras (`manifest.json`, `schema.cql`) are not.
pub fn is_sstable_component(name: &str) -> bool {
    let parts: Vec<&str> = name.splitn(4, '-').collect();
    parts.len() == 4
        && parts[0].len() == 2
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && !parts[1].is_empty()
        && matches!(parts[2], "big" | "bti")
        && !parts[3].is_empty()
}

/// Removes everything in `dir` that is not an SSTable component (snapshot
/// extras; secondary index sub-dirs, which Cassandra rebuilds on import);
/// returns (files, bytes) of what stays.
fn keep_sstables(dir: &Path) -> Result<(u64, u64)> {
    let (mut files, mut bytes) = (0, 0);
    for entry in std::fs::read_dir(dir).map_err(|e| CassandraError::io(dir, e))? {
        let entry = entry.map_err(|e| CassandraError::io(dir, e))?;
        let path = entry.path();
        let meta = entry.metadata().map_err(|e| CassandraError::io(&path, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if meta.is_file() && is_sstable_component(&name) {
            files += 1;
            bytes += meta.len();
        } else if meta.is_dir() {
            std::fs::remove_dir_all(&path).map_err(|e| CassandraError::io(&path, e))?;
        } else {
            std::fs::remove_file(&path).map_err(|e| CassandraError::io(&path, e))?;
        }
    }
    Ok((files, bytes))
}

fn list_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| CassandraError::io(dir, e))? {
        names.push(
            entry
                .map_err(|e| CassandraError::io(dir, e))?
                .file_name()
                .to_string_lossy()
                .into_owned(),
        );
    }
    names.sort();
    Ok(names)
}

async fn import(s: &Arc<Shared>, req: &ImportRequest, staging: &Path) -> Result<ImportReply> {
    let dirs = fetch(s, req.snapshot, &req.tables, staging).await?;
    let mut reply = ImportReply::default();
    for (t, dir) in req.tables.iter().zip(dirs) {
        let d = dir.clone();
        let (files, bytes) = blocking(move || keep_sstables(&d)).await?;
        if files == 0 {
            continue;
        }
        let dir_s = dir.display().to_string();
        s.nodetool
            .run(&["import", &t.keyspace, &t.table, &dir_s])
            .await?;
        // nodetool import exits 0 even when it skipped files; what it loaded
        // was moved out of the dir.
        let d = dir.clone();
        let left = blocking(move || list_names(&d)).await?;
        if !left.is_empty() {
            return Err(CassandraError::Node {
                node: s.config.node_address.to_string(),
                reason: format!(
                    "nodetool import {}.{} did not load {} of {files} file(s): {}",
                    t.keyspace,
                    t.table,
                    left.len(),
                    left.join(", ")
                ),
            });
        }
        reply.files += files;
        reply.bytes += bytes;
    }
    Ok(reply)
}

async fn load(s: &Arc<Shared>, req: &LoadRequest, staging: &Path) -> Result<LoadReply> {
    let mut reply = LoadReply::default();
    for (n, snapshot) in req.snapshots.iter().enumerate() {
        let fetched = staging.join(format!("fetch-{n}"));
        let dirs = fetch(s, *snapshot, &req.tables, &fetched).await?;
        for (i, (t, dir)) in req.tables.iter().zip(dirs).enumerate() {
            // sstableloader takes keyspace and table from the last two path
            // components.
            let dest = staging
                .join(format!("load-{n}-{i}"))
                .join(&t.keyspace)
                .join(&t.table);
            let d = dest.clone();
            let (files, bytes) = blocking(move || {
                let parent = d.parent().expect("has parent");
                std::fs::create_dir_all(parent).map_err(|e| CassandraError::io(parent, e))?;
                std::fs::rename(&dir, &d).map_err(|e| CassandraError::io(&d, e))?;
                keep_sstables(&d)
            })
            .await?;
            if files == 0 {
                continue;
            }
            let streamed = sstableloader(s, &req.targets, &dest).await?;
            reply.files += files;
            reply.bytes_read += bytes;
            reply.bytes_streamed += streamed.unwrap_or(0);
        }
        remove_dir(fetched).await?;
    }
    Ok(reply)
}

/// Runs the configured sstableloader on `dir`; returns the bytes it reports
/// as transferred, if it printed its summary.
async fn sstableloader(s: &Shared, targets: &[IpAddr], dir: &Path) -> Result<Option<u64>> {
    let argv = &s.config.sstableloader;
    let fail = |output: String| CassandraError::Node {
        node: s.config.node_address.to_string(),
        reason: format!("sstableloader {} failed: {output}", dir.display()),
    };
    let (program, pre) = argv
        .split_first()
        .ok_or_else(|| fail("empty command line".into()))?;
    let mut cmd = Command::new(program);
    cmd.args(pre);
    if !s_has_nodes(argv) {
        let hosts: Vec<String> = targets.iter().map(|a| a.to_string()).collect();
        cmd.args(["-d", &hosts.join(",")]);
    }
    let out = cmd
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| fail(format!("cannot run {program}: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(fail(format!(
            "{}: {}{}",
            out.status,
            tail(&stdout),
            tail(&stderr)
        )));
    }
    Ok(parse_loader_bytes(&stdout))
}

/// The last lines of a long tool output.
fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// sstableloader's summary line `Total bytes transferred : 1.355KiB`
/// (binary units as Cassandra's FBUtilities.prettyPrintMemory prints them).
pub fn parse_loader_bytes(out: &str) -> Option<u64> {
    let line = out
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("Total bytes transferred"))?;
    let value = line.split_once(':')?.1.trim();
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (num, unit) = value.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" | "bytes" => 1u64,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return None,
    };
    Some((num * mult as f64).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sstable_components_are_told_from_snapshot_extras() {
        for yes in [
            "nb-1-big-Data.db",
            "nb-12-big-TOC.txt",
            "da-3gxs_0s1c_2q9gw2f0p3v0lmxg7b-bti-Partitions.db",
        ] {
            assert!(is_sstable_component(yes), "{yes}");
        }
        for no in [
            "manifest.json",
            "schema.cql",
            "nb-1-big",
            "backups",
            ".t_idx",
        ] {
            assert!(!is_sstable_component(no), "{no}");
        }
    }
}
