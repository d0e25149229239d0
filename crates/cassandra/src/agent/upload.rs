//! POST /v1/upload: a node snapshot into the repository as one repository
//! snapshot, plus the file list of every table.
//!
//! The snapshot's hard links are staged at stable paths (see `view`) and
//! backed up with `ignore_ctime`: SSTables are immutable, and a new snapshot
//! link changes only a file's ctime, so an SSTable stored by the previous
//! backup of this node (same host name, same paths) is recognised by path,
//! size, mtime and inode and not read again. The file lists come from the
//! stored trees, never from reading the files a second time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use tidemark_cluster::server::{ApiError, ApiResult};
use tidemark_repo::backup::{BackupOptions, ParentChoice};
use tidemark_repo::progress::NoProgress;
use tidemark_repo::tree::{Node, NodeKind};
use tidemark_repo::walk::{Visit, Walker};
use tidemark_repo::Id;

use super::view::{self, split_table_dir, valid_tag};
use super::{api_error, blocking, exclusive, Shared};
use crate::api::{SstableFile, TableFiles, UploadReply, UploadRequest};
use crate::error::{CassandraError, Result};

/// Tag every node snapshot carries besides the backup's own tag.
pub const STORE_TAG: &str = crate::STORE;

/// Host name of a node's repository snapshots: `cassandra/<cluster>/<node>`
/// (see `tidemark_cluster::tag`).
pub fn hostname(cluster: &str, node: &str) -> String {
    tidemark_cluster::tag::hostname(crate::STORE, cluster, node)
}

pub(super) async fn handler(
    State(shared): State<Arc<Shared>>,
    Json(req): Json<UploadRequest>,
) -> ApiResult<UploadReply> {
    valid_tag(&req.tag).map_err(api_error)?;
    if req.cluster.is_empty()
        || req.cluster.contains('/')
        || req.cluster.chars().any(char::is_control)
    {
        return Err(api_error(CassandraError::Invalid(format!(
            "bad cluster name {:?}: it must be non-empty, without '/'",
            req.cluster
        ))));
    }
    // A tag the node does not have is the caller's mistake: 404, before
    // the agent counts as busy.
    let (dirs, tag) = (shared.config.data_dirs.clone(), req.tag.clone());
    let found = blocking(move || Ok(!view::find_snapshot(&dirs, &tag)?.is_empty()))
        .await
        .map_err(api_error)?;
    if !found {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: no_snapshot(&shared, &req.tag),
        });
    }
    let s = shared.clone();
    exclusive(&shared, format!("upload {}", req.tag), async move {
        blocking(move || upload(&s, &req)).await
    })
    .await
}

fn no_snapshot(s: &Shared, tag: &str) -> String {
    format!(
        "node {}: no snapshot tagged {tag:?} (take it first: POST /v1/snapshot)",
        s.config.node_address
    )
}

fn upload(s: &Shared, req: &UploadRequest) -> Result<UploadReply> {
    let work = s.work_dir()?;
    let tables = view::find_snapshot(&s.config.data_dirs, &req.tag)?;
    if tables.is_empty() {
        // Cleared since the handler looked.
        return Err(CassandraError::Invalid(no_snapshot(s, &req.tag)));
    }
    let view = view::stage(&work, &tables, &s.config.cassandra_yaml)?;
    let result = store(s, req, &view);
    // The view is only hard links; they go whatever happened (the snapshot
    // itself stays until clear).
    let removed = view::remove_view(&work);
    let reply = result?;
    removed?;
    Ok(reply)
}

fn store(s: &Shared, req: &UploadRequest, view: &Path) -> Result<UploadReply> {
    let threads = s.config.limits.upload_threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let opts = BackupOptions {
        paths: vec![view.to_path_buf()],
        tags: vec![req.tag.clone(), STORE_TAG.to_string()],
        hostname: Some(hostname(&req.cluster, &s.config.node_address.to_string())),
        parent: ParentChoice::Auto,
        threads: Some(threads),
        ignore_ctime: true,
    };
    let outcome = tidemark_repo::backup::backup(&s.repo, &opts, &NoProgress)?;
    if !outcome.errors.is_empty() {
        let list: Vec<String> = outcome
            .errors
            .iter()
            .map(|(p, e)| format!("{}: {e}", p.display()))
            .collect();
        return Err(CassandraError::Node {
            node: s.config.node_address.to_string(),
            reason: format!(
                "repository snapshot {} is incomplete, {} file(s) unreadable: {}",
                outcome.id.short(),
                list.len(),
                list.join("; ")
            ),
        });
    }
    let tables = table_files(s, &outcome.snapshot.tree, &view.join("data"))?;
    Ok(UploadReply {
        snapshot: outcome.id,
        uploaded_at: outcome.snapshot.time,
        summary: outcome.snapshot.summary,
        tables,
        cassandra_yaml: view
            .join("conf")
            .join("cassandra.yaml")
            .display()
            .to_string(),
    })
}

/// Every table below `data` (`<ks>/<table>-<id>/...`) in the stored tree.
/// File names below a table dir are relative to it (`.idx/nb-1-big-Data.db`
/// for a secondary index's files).
fn table_files(s: &Shared, root: &Id, data: &Path) -> Result<Vec<TableFiles>> {
    let index = s.repo.load_index()?;
    let mut walker = Walker::new(&s.repo, &index);
    let start = walker.locate(root, data)?;
    let key = s.repo.key();
    let mut tables: BTreeMap<(String, String), Vec<SstableFile>> = BTreeMap::new();
    let mut visit = |path: &Path, node: &Node| -> tidemark_repo::Result<Visit> {
        let Ok(rel) = path.strip_prefix(data) else {
            return Ok(Visit::Descend);
        };
        let parts: Vec<String> = rel
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        if parts.len() == 2 && node.kind == NodeKind::Dir {
            tables
                .entry((parts[0].clone(), parts[1].clone()))
                .or_default();
        }
        if parts.len() >= 3 && node.kind == NodeKind::File {
            tables
                .entry((parts[0].clone(), parts[1].clone()))
                .or_default()
                .push(SstableFile {
                    name: parts[2..].join("/"),
                    size: node.size,
                    content: crate::api::file_content(key, &node.content),
                });
        }
        Ok(Visit::Descend)
    };
    walker.walk(&start, &mut visit)?;
    let mut out = Vec::with_capacity(tables.len());
    for ((keyspace, dir_name), files) in tables {
        let Some((table, table_id)) = split_table_dir(&dir_name) else {
            continue;
        };
        out.push(TableFiles {
            keyspace: keyspace.clone(),
            table: table.to_string(),
            table_id: table_id.to_string(),
            dir: PathBuf::from(data)
                .join(&keyspace)
                .join(&dir_name)
                .display()
                .to_string(),
            files,
        });
    }
    Ok(out)
}
