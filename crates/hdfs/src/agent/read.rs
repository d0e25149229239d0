//! Backup sessions: files read from a snapshot over WebHDFS and stored in
//! the repository.
//!
//! A session is one thread that holds a `Backup` lock and the loaded index
//! and runs `threads` workers; `read` requests queue their files to it and
//! wait for each file's result. The lock is what keeps prune from deleting
//! the session's packs before the coordinator's snapshot references them.
//! `finish` closes the queue, waits for the workers and writes the index;
//! `abort` (or a dropped session) closes it without waiting for the
//! coordinator, and the index of what was stored is still written, so the
//! next backup reuses those chunks.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use axum::extract::State;
use axum::Json;
use tidemark_cluster::server::{ApiError, ApiResult};
use tidemark_repo::ingest::{Session, SessionStats, StoreError};
use tidemark_repo::lock::{Lock, LockKind};
use tidemark_repo::Repository;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::{api_error, Shared};
use crate::api::{FinishReply, ReadReply, ReadRequest, ReadResult, SessionRequest};
use crate::error::{HdfsError, Result};
use crate::webhdfs::WebHdfs;

/// One file for a worker, and where its result goes. A repository failure
/// (the session cannot go on) is an `Err`.
struct Job {
    path: String,
    length: u64,
    checksum: bool,
    reply: oneshot::Sender<std::result::Result<ReadResult, String>>,
}

struct Open {
    jobs: mpsc::Sender<Job>,
    done: JoinHandle<Result<SessionStats>>,
}

/// The open sessions, by backup tag.
#[derive(Default)]
pub(super) struct Sessions(Mutex<HashMap<String, Open>>);

impl Sessions {
    pub fn tags(&self) -> Vec<String> {
        let mut t: Vec<String> = self.0.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        t.sort();
        t
    }

    fn take(&self, tag: &str) -> Option<Open> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(tag)
    }

    pub fn abort_all(&self) {
        let all: Vec<Open> = self.0.lock().unwrap_or_else(|p| p.into_inner()).drain().map(|(_, o)| o).collect();
        for o in all {
            drop(o.jobs);
            let _ = o.done.join();
        }
    }
}

fn check_tag(tag: &str) -> Result<()> {
    if tag.is_empty() || tag.len() > 200 || !tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(HdfsError::Invalid(format!("bad backup tag {tag:?}")));
    }
    Ok(())
}

pub(super) async fn begin(State(s): State<Arc<Shared>>, Json(req): Json<SessionRequest>) -> ApiResult<SessionRequest> {
    check_tag(&req.tag).map_err(api_error)?;
    let ready_rx = {
        let mut open = s.sessions.0.lock().unwrap_or_else(|p| p.into_inner());
        if open.contains_key(&req.tag) {
            return Err(ApiError::conflict(format!("agent {}: backup {} is already open", s.config.name, req.tag)));
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let (repo, hdfs, threads, rt) = (s.repo.clone(), s.hdfs.clone(), s.threads, Handle::current());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::result::Result<(), String>>();
        let done = std::thread::Builder::new()
            .name(format!("session-{}", req.tag))
            .spawn(move || run_session(&repo, &hdfs, threads, rt, rx, ready_tx))
            .map_err(|e| ApiError::internal(format!("starting the session: {e}")))?;
        open.insert(req.tag.clone(), Open { jobs: tx, done });
        ready_rx
    };
    // The lock and the index are taken before the caller is told to go on,
    // so that a refused lock is this request's error.
    let ready = tokio::task::spawn_blocking(move || ready_rx.recv().unwrap_or_else(|_| Err("session ended".into())))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    if let Err(e) = ready {
        if let Some(o) = s.sessions.take(&req.tag) {
            drop(o.jobs);
            let _ = tokio::task::spawn_blocking(move || o.done.join()).await;
        }
        return Err(ApiError::internal(format!("agent {}: opening backup {}: {e}", s.config.name, req.tag)));
    }
    tracing::info!(tag = %req.tag, "backup session open");
    Ok(Json(req))
}

fn run_session(
    repo: &Repository,
    hdfs: &WebHdfs,
    threads: usize,
    rt: Handle,
    jobs: mpsc::Receiver<Job>,
    ready: std::sync::mpsc::Sender<std::result::Result<(), String>>,
) -> Result<SessionStats> {
    let opened = Lock::acquire(repo, LockKind::Backup).and_then(|l| Ok((l, repo.load_index()?)));
    let (lock, index) = match opened {
        Ok(x) => x,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return Err(e.into());
        }
    };
    let _ = ready.send(Ok(()));
    let session = Session::new(repo, &index);
    let jobs = Mutex::new(jobs);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let job = jobs.lock().unwrap_or_else(|p| p.into_inner()).recv();
                let Ok(job) = job else { return };
                let result = read_one(&session, hdfs, &rt, &job);
                let _ = job.reply.send(result);
            });
        }
    });
    let stats = session.finish()?;
    lock.release();
    Ok(stats)
}

/// Tries per file: a read that fails on its way (a DataNode that died, a
/// connection reset) is started again; the NameNode then names another
/// DataNode holding the blocks, and chunks already stored are not stored
/// twice.
const READ_TRIES: u32 = 4;

/// Reads one file into the session. A file that cannot be read is a result
/// with an error; a repository that cannot be written is an `Err`.
fn read_one(session: &Session<'_>, hdfs: &WebHdfs, rt: &Handle, job: &Job) -> std::result::Result<ReadResult, String> {
    let mut attempt = 0;
    let mut exclude: Vec<String> = Vec::new();
    loop {
        attempt += 1;
        match read_once(session, hdfs, rt, job, &mut exclude)? {
            Err((why, retry)) if retry && attempt < READ_TRIES => {
                tracing::warn!(path = %job.path, attempt, error = %why, ?exclude, "read failed, trying again");
                std::thread::sleep(std::time::Duration::from_millis(500 * u64::from(attempt)));
            }
            Err((why, _)) => return Ok(ReadResult { error: Some(why), ..Default::default() }),
            Ok(r) => return Ok(r),
        }
    }
}

/// One try: Ok(Err((why, worth another try))) when the file could not be read.
#[allow(clippy::type_complexity)]
fn read_once(
    session: &Session<'_>,
    hdfs: &WebHdfs,
    rt: &Handle,
    job: &Job,
    exclude: &mut Vec<String>,
) -> std::result::Result<std::result::Result<ReadResult, (String, bool)>, String> {
    let opened = if job.length == 0 { None } else { Some(rt.block_on(hdfs.open(&job.path, job.length, exclude))) };
    let stored = match opened {
        None => session.store(&mut io::empty(), Some(0)),
        Some(Err((e, datanode))) => {
            let retry = e.is_temporary() || matches!(&e, HdfsError::Remote { status, .. } if *status >= 500);
            // The NameNode does not know yet that this DataNode is gone:
            // the next try asks it for another one.
            if let Some(dn) = datanode {
                if let Some(xfer) = rt.block_on(xfer_address(hdfs, &dn)) {
                    exclude.push(xfer);
                }
            }
            return Ok(Err((e.to_string(), retry)));
        }
        Some(Ok(resp)) => session.store(&mut Body { resp, rt, buf: bytes::Bytes::new() }, Some(job.length)),
    };
    let stored = match stored {
        Ok(s) => s,
        Err(StoreError::Source(e)) => return Ok(Err((format!("reading {}: {e}", job.path), true))),
        Err(StoreError::Repo(e)) => return Err(e.to_string()),
    };
    if stored.size != job.length {
        return Ok(Err((format!("{}: {} bytes in the snapshot, {} could be read", job.path, job.length, stored.size), true)));
    }
    let checksum = if job.checksum {
        match rt.block_on(hdfs.checksum(&job.path)) {
            Ok(c) => Some(c),
            Err(e) => {
                // The bytes are stored; only the cross-check is missing.
                tracing::warn!(path = %job.path, error = %e, "no checksum");
                None
            }
        }
    } else {
        None
    };
    Ok(Ok(ReadResult { content: stored.content, size: stored.size, checksum, error: None }))
}

/// The transfer address (`host:port`, what `excludedatanodes` takes) of
/// the DataNode whose HTTP address is `http`.
pub(super) async fn xfer_address(hdfs: &WebHdfs, http: &str) -> Option<String> {
    let nodes = hdfs.datanodes().await.ok()?;
    nodes.into_iter().find(|d| d.http == http).map(|d| d.name)
}

/// A response body as a blocking `Read` (the engine's threads are not the
/// runtime's, so they may wait on it).
struct Body<'a> {
    resp: reqwest::Response,
    rt: &'a Handle,
    buf: bytes::Bytes,
}

impl Read for Body<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.buf.is_empty() {
            match self.rt.block_on(self.resp.chunk()) {
                Ok(Some(b)) => self.buf = b,
                Ok(None) => return Ok(0),
                Err(e) => return Err(io::Error::other(e)),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf = self.buf.slice(n..);
        Ok(n)
    }
}

pub(super) async fn read(State(s): State<Arc<Shared>>, Json(req): Json<ReadRequest>) -> ApiResult<ReadReply> {
    let mut waits = Vec::with_capacity(req.files.len());
    {
        let open = s.sessions.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some(o) = open.get(&req.tag) else {
            return Err(ApiError::conflict(format!("agent {}: no open backup {}", s.config.name, req.tag)));
        };
        for f in req.files {
            let (tx, rx) = oneshot::channel();
            let job = Job { path: f.path, length: f.length, checksum: req.checksums, reply: tx };
            if o.jobs.send(job).is_err() {
                return Err(ApiError::internal(format!("agent {}: backup {} ended", s.config.name, req.tag)));
            }
            waits.push(rx);
        }
    }
    let mut files = Vec::with_capacity(waits.len());
    for w in waits {
        match w.await {
            Ok(Ok(r)) => files.push(r),
            Ok(Err(e)) => return Err(ApiError::internal(format!("agent {}: repository: {e}", s.config.name))),
            Err(_) => return Err(ApiError::internal(format!("agent {}: backup {} ended", s.config.name, req.tag))),
        }
    }
    Ok(Json(ReadReply { files }))
}

pub(super) async fn finish(State(s): State<Arc<Shared>>, Json(req): Json<SessionRequest>) -> ApiResult<FinishReply> {
    let Some(o) = s.sessions.take(&req.tag) else {
        return Err(ApiError::conflict(format!("agent {}: no open backup {}", s.config.name, req.tag)));
    };
    drop(o.jobs);
    let stats = tokio::task::spawn_blocking(move || o.done.join())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|_| ApiError::internal("the backup session panicked"))?
        .map_err(api_error)?;
    tracing::info!(tag = %req.tag, ?stats, "backup session finished");
    Ok(Json(FinishReply { stats }))
}

pub(super) async fn abort(State(s): State<Arc<Shared>>, Json(req): Json<SessionRequest>) -> ApiResult<bool> {
    let Some(o) = s.sessions.take(&req.tag) else { return Ok(Json(false)) };
    drop(o.jobs);
    let _ = tokio::task::spawn_blocking(move || o.done.join()).await;
    tracing::info!(tag = %req.tag, "backup session aborted");
    Ok(Json(true))
}
