//! Restore writes: files created in HDFS from their chunks in the
//! repository, streamed (a file is never held whole in memory).
//!
//! The repository index is loaded once per restore (the request names the
//! restore) and kept for its later batches; a new restore id loads it again.
//! After a file is written, HDFS is asked for its checksum and it is
//! compared with the one recorded at backup when both are of the same kind.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use tidemark_cluster::server::{ApiError, ApiResult};
use tidemark_repo::blob::BlobType;
use tidemark_repo::index::Index;
use tidemark_repo::{Id, Repository};
use tokio::sync::{mpsc, Mutex};

use super::Shared;
use crate::api::{WriteFile, WriteReply, WriteRequest, WriteResult};
use crate::webhdfs::{CreateOptions, WebHdfs};

/// Chunks read ahead of the DataNode per file.
const READ_AHEAD: usize = 4;
/// Tries per file when the DataNode named for it cannot be reached.
const WRITE_TRIES: u32 = 4;

/// The index of the restore running now.
#[derive(Default)]
pub(super) struct Restores(Mutex<Option<(String, Arc<Index>)>>);

impl Restores {
    async fn index(&self, restore: &str, repo: &Arc<Repository>) -> Result<Arc<Index>, String> {
        let mut cur = self.0.lock().await;
        if let Some((id, index)) = cur.as_ref() {
            if id == restore {
                return Ok(index.clone());
            }
        }
        let r = repo.clone();
        let index = tokio::task::spawn_blocking(move || r.load_index())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let index = Arc::new(index);
        *cur = Some((restore.to_string(), index.clone()));
        Ok(index)
    }
}

pub(super) async fn write(State(s): State<Arc<Shared>>, Json(req): Json<WriteRequest>) -> ApiResult<WriteReply> {
    let index = s
        .restores
        .index(&req.restore, &s.repo)
        .await
        .map_err(|e| ApiError::internal(format!("agent {}: loading the index: {e}", s.config.name)))?;
    let threads = s.threads;
    let files: Vec<WriteResult> = stream::iter(req.files)
        .map(|f| {
            let (s, index) = (s.clone(), index.clone());
            async move { write_one(&s.repo, &s.hdfs, index, f).await }
        })
        .buffered(threads.max(1))
        .collect()
        .await;
    Ok(Json(WriteReply { files }))
}

async fn write_one(repo: &Arc<Repository>, hdfs: &WebHdfs, index: Arc<Index>, f: WriteFile) -> WriteResult {
    let opts = CreateOptions {
        overwrite: f.overwrite,
        permission: f.permission,
        replication: f.replication,
        block_size: f.block_size,
    };
    let mut exclude: Vec<String> = Vec::new();
    let mut attempt = 0;
    let bytes = loop {
        attempt += 1;
        let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(READ_AHEAD);
        let (r, content, ix) = (repo.clone(), f.content.clone(), index.clone());
        let reader = tokio::task::spawn_blocking(move || feed(&r, &ix, &content, tx));
        let body = reqwest::Body::wrap_stream(tokio_stream(rx));
        let created = hdfs.create(&f.path, &opts, body, &exclude).await;
        let fed = reader.await.unwrap_or_else(|e| Err(e.to_string()));
        match (created, fed) {
            (Ok(()), Ok(n)) => break n,
            // A DataNode the NameNode still counts as live could not be
            // reached: nothing was created; ask for another one.
            (Err((e, Some(dn))), _) if attempt < WRITE_TRIES => {
                tracing::warn!(path = %f.path, datanode = %dn, error = %e, "DataNode unreachable, trying another");
                if let Some(x) = super::read::xfer_address(hdfs, &dn).await {
                    exclude.push(x);
                }
            }
            (Err((e, _)), _) => return failed(e.to_string()),
            (Ok(()), Err(e)) => return failed(format!("{}: reading the backup: {e}", f.path)),
        }
    };
    if bytes != f.size {
        return failed(format!("{}: wrote {bytes} bytes, the backup has {}", f.path, f.size));
    }
    let checksum_ok = match &f.checksum {
        Some(want) if f.size > 0 => match hdfs.checksum(&f.path).await {
            Ok(got) if got.algorithm == want.algorithm => Some(got.bytes == want.bytes),
            Ok(_) => None,
            Err(e) => return failed(format!("{}: written, but its checksum could not be read: {e}", f.path)),
        },
        _ => None,
    };
    if checksum_ok == Some(false) {
        return failed(format!("{}: written, but its HDFS checksum differs from the one recorded at backup", f.path));
    }
    WriteResult { bytes, checksum_ok, error: None }
}

fn failed(e: String) -> WriteResult {
    WriteResult { error: Some(e), ..Default::default() }
}

/// Reads a file's chunks in order into `tx`; returns the bytes sent.
fn feed(repo: &Repository, index: &Index, content: &[Id], tx: mpsc::Sender<Result<Bytes, std::io::Error>>) -> Result<u64, String> {
    let mut n = 0u64;
    for id in content {
        let blob = match repo.read_blob(index, BlobType::Data, id) {
            Ok(b) => b,
            Err(e) => {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                return Err(e.to_string());
            }
        };
        n += blob.len() as u64;
        if tx.blocking_send(Ok(Bytes::from(blob))).is_err() {
            return Err("the DataNode connection closed".into());
        }
    }
    Ok(n)
}

fn tokio_stream(
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}
