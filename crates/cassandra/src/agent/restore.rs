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

use std::future::Future;
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

use super::view::is_sstable_component;
use super::{api_error, blocking, exclusive, Shared};
use crate::api::{ImportReply, ImportRequest, LoadReply, LoadRequest, TableTarget};
use crate::error::{CassandraError, Result};
use crate::nodetool::last_lines;

/// Staging of imports and loads below the work dir.
pub(super) const RESTORE_DIR: &str = "restore";
pub(super) const LOAD_DIR: &str = "load";

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
        let parent = s.work_dir()?.join(RESTORE_DIR);
        in_staging(parent, |dir| async move { import(&s, &req, &dir).await }).await
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
    let has_d = names_nodes(&shared.config.sstableloader);
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
        let parent = s.work_dir()?.join(LOAD_DIR);
        in_staging(parent, |dir| async move { load(&s, &req, &dir).await }).await
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

fn names_nodes(argv: &[String]) -> bool {
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

/// Runs `work` in a fresh dir below `parent`, removed afterwards, also when
/// `work` fails (a failed removal is reported only if `work` succeeded).
async fn in_staging<T, F, Fut>(parent: PathBuf, work: F) -> Result<T>
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let staging = unique_dir(&parent);
    let result = work(staging.clone()).await;
    let cleaned = remove_dir(staging).await;
    let reply = result?;
    cleaned?;
    Ok(reply)
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

/// Hard-links the SSTable components of `fetched` into `dest` (created):
/// snapshot extras (manifest.json, schema.cql) and secondary index sub-dirs
/// (Cassandra rebuilds indexes on import and load) stay behind. A link, not
/// a move, so two targets fetched from the same source dir (a table restored
/// under two names) each get all files. Returns (files, bytes) linked.
fn link_sstables(fetched: &Path, dest: &Path) -> Result<(u64, u64)> {
    std::fs::create_dir_all(dest).map_err(|e| CassandraError::io(dest, e))?;
    let (mut files, mut bytes) = (0, 0);
    for entry in std::fs::read_dir(fetched).map_err(|e| CassandraError::io(fetched, e))? {
        let entry = entry.map_err(|e| CassandraError::io(fetched, e))?;
        let path = entry.path();
        let meta = entry.metadata().map_err(|e| CassandraError::io(&path, e))?;
        let name = entry.file_name();
        if meta.is_file() && is_sstable_component(&name.to_string_lossy()) {
            let to = dest.join(&name);
            std::fs::hard_link(&path, &to).map_err(|e| CassandraError::io(&to, e))?;
            files += 1;
            bytes += meta.len();
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
    let fetched = fetch(s, req.snapshot, &req.tables, &staging.join("fetch")).await?;
    let mut reply = ImportReply::default();
    for (i, (t, from)) in req.tables.iter().zip(fetched).enumerate() {
        // Cassandra takes keyspace and table of an SSTable from its path:
        // files in any other dir are "not new SSTables" and silently skipped.
        let dir = staging
            .join(format!("import-{i}"))
            .join(&t.keyspace)
            .join(&t.table);
        let d = dir.clone();
        let (files, bytes) = blocking(move || link_sstables(&from, &d)).await?;
        if files == 0 {
            continue;
        }
        s.control.import(&t.keyspace, &t.table, &dir).await?;
        // An import reports success even when it skipped files; what it
        // loaded was moved out of the dir.
        let d = dir.clone();
        let left = blocking(move || list_names(&d)).await?;
        if !left.is_empty() {
            return Err(CassandraError::Node {
                node: s.config.node_address.to_string(),
                reason: format!(
                    "import {}.{} did not load {} of {files} file(s): {}",
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
        let fetch_dir = staging.join(format!("fetch-{n}"));
        let fetched = fetch(s, *snapshot, &req.tables, &fetch_dir).await?;
        for (i, (t, from)) in req.tables.iter().zip(fetched).enumerate() {
            // sstableloader takes keyspace and table from the last two path
            // components.
            let dir = staging
                .join(format!("load-{n}-{i}"))
                .join(&t.keyspace)
                .join(&t.table);
            let d = dir.clone();
            let (files, bytes) = blocking(move || link_sstables(&from, &d)).await?;
            if files == 0 {
                continue;
            }
            let streamed = sstableloader(s, &req.targets, &dir).await?;
            reply.files += files;
            reply.bytes_read += bytes;
            reply.bytes_streamed += streamed.unwrap_or_else(|| {
                tracing::warn!(dir = %dir.display(), "sstableloader printed no summary; bytes streamed not counted");
                0
            });
            remove_dir(dir).await?;
        }
        remove_dir(fetch_dir).await?;
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
    if !names_nodes(argv) {
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
            last_lines(&stdout, 20),
            last_lines(&stderr, 20)
        )));
    }
    Ok(parse_loader_bytes(&stdout))
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

    /// The end of sstableloader's output (Cassandra 5.0.9, a 45 KB table
    /// streamed to three replicas).
    const LOADER_OUT: &str =
        "progress: [/127.0.66.1:34977]0:5/5 100% [/127.0.66.2:34977]0:5/5 100% \
[/127.0.66.3:34977]0:5/5 100% total: 100% 0.000B/s (avg: 17.509KiB/s)

Summary statistics: 
   Connections per host    : 1         
   Total files transferred : 15        
   Total bytes transferred : 129.296KiB
   Total duration          : 7389 ms   
   Average transfer rate   : 17.498KiB/s
   Peak transfer rate      : 17.991KiB/s

";

    #[test]
    fn loader_summary_gives_bytes_sent() {
        assert_eq!(parse_loader_bytes(LOADER_OUT), Some(132399));
        assert_eq!(
            parse_loader_bytes("   Total bytes transferred : 12.000MiB\n"),
            Some(12 << 20)
        );
        assert_eq!(
            parse_loader_bytes("   Total bytes transferred : 17B\n"),
            Some(17)
        );
        assert_eq!(parse_loader_bytes("progress: ... total: 100%"), None);
    }

    #[test]
    fn targets_are_checked() {
        let t = |ks: &str, table: &str, dir: &str| TableTarget {
            source_dir: dir.into(),
            keyspace: ks.into(),
            table: table.into(),
        };
        check_tables(&[t("ks", "t_1", "/w/view/data/ks/t-1")]).unwrap();
        assert!(check_tables(&[]).is_err());
        for bad in [
            t("k s", "t", "/d"),
            t("ks", "t;x", "/d"),
            t("ks", "t", "rel/dir"),
            t("ks", "t", "/a/../b"),
        ] {
            assert!(check_tables(&[bad]).is_err());
        }
    }
}
