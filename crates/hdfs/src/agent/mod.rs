//! `tidemark agent` for HDFS: runs beside a DataNode and moves file bytes
//! straight between HDFS and the repository on the coordinator's word (see
//! [`crate::api`]). It reads from snapshot paths through WebHDFS; the
//! NameNode sends its reads to the DataNode closest to it, which is its
//! own DataNode when it holds the blocks (the coordinator gives each agent
//! the files whose blocks its DataNode holds).
//!
//! - this module: start-up (token, passphrase, repository, listener), the
//!   routes and status;
//! - `read`: backup sessions, each a repository lock, the index and worker
//!   threads that read files and store their chunks;
//! - `write`: files created from the repository (restore).
//!
//! The repository engine is synchronous and blocks on the runtime for
//! storage I/O: it runs only on its own threads, never on the runtime's.

mod read;
mod write;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use tidemark_cluster::auth::Token;
use tidemark_cluster::server::{ApiError, ApiResult};
use tidemark_repo::Repository;
use tidemark_store::OpenOptions;
use tokio::net::TcpListener;

use crate::api::{self, AgentStatus};
use crate::config::AgentConfig;
use crate::error::{HdfsError, Result};
use crate::webhdfs::WebHdfs;

/// Files read or written at once by default (see `limits.threads`).
const DEFAULT_THREADS: usize = 4;

/// A started agent: repository open, listener bound, not yet serving.
pub struct Agent {
    listener: TcpListener,
    token: Token,
    shared: Arc<Shared>,
}

/// What every handler sees.
struct Shared {
    config: AgentConfig,
    repo: Arc<Repository>,
    hdfs: Arc<WebHdfs>,
    threads: usize,
    sessions: read::Sessions,
    restores: write::Restores,
}

pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    Agent::start(config).await?.serve(shutdown).await
}

impl Agent {
    /// Reads the secrets, opens the repository and binds the listener.
    pub async fn start(config: AgentConfig) -> Result<Agent> {
        let token = config.token()?;
        let password = tidemark_cluster::auth::read_secret(&config.password_file)?;
        let location = config.location();
        let opts = OpenOptions {
            limit_upload: config.limits.upload_kib_per_sec.map(|k| k * 1024),
            limit_download: config.limits.download_kib_per_sec.map(|k| k * 1024),
            ..Default::default()
        };
        let rt = tokio::runtime::Handle::current();
        // The metadata cache: each backup loads the whole index, which
        // otherwise costs one request per index file on object storage.
        let cache = tidemark_repo::cache::Cache::configured_root();
        let repo = tokio::task::spawn_blocking(move || {
            tidemark_repo::repo::open_location_cached(&location, &opts, rt, password.as_bytes(), &[], cache.as_deref(), false)
        })
        .await
        .map_err(|e| HdfsError::Invalid(format!("opening the repository: {e}")))??;
        let listener =
            TcpListener::bind(config.listen).await.map_err(|e| HdfsError::io(format!("listen {}", config.listen), e))?;
        let hdfs = Arc::new(WebHdfs::new(&config.hdfs.namenodes, &config.hdfs.user, config.hdfs.request_timeout));
        let threads = config.limits.threads.unwrap_or(DEFAULT_THREADS);
        let shared = Arc::new(Shared {
            config,
            repo: Arc::new(repo),
            hdfs,
            threads,
            sessions: Default::default(),
            restores: Default::default(),
        });
        Ok(Agent { listener, token, shared })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().map_err(|e| HdfsError::io("listener", e))
    }

    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let routes = Router::new()
            .route(api::STATUS, get(status))
            .route(api::BEGIN, post(read::begin))
            .route(api::READ, post(read::read))
            .route(api::FINISH, post(read::finish))
            .route(api::ABORT, post(read::abort))
            .route(api::WRITE, post(write::write))
            .with_state(self.shared.clone());
        let result = tidemark_cluster::server::serve(self.listener, self.token, routes, shutdown)
            .await
            .map_err(|e| HdfsError::io("agent API", e));
        // Sessions still open at shutdown end without an index: their packs
        // are unreferenced and prune removes them.
        self.shared.sessions.abort_all();
        result
    }
}

/// The API's view of an error: bad input is the caller's (400), the rest ours.
fn api_error(e: HdfsError) -> ApiError {
    match e {
        HdfsError::Invalid(m) => ApiError::bad_request(m),
        other => ApiError::internal(other.to_string()),
    }
}

async fn status(State(shared): State<Arc<Shared>>) -> ApiResult<AgentStatus> {
    let namenode = match shared.hdfs.status("/").await {
        Ok(_) => Ok(shared.hdfs.active_namenode().to_string()),
        Err(e) => Err(e.to_string()),
    };
    Ok(Json(AgentStatus {
        name: shared.config.name.clone(),
        store: crate::STORE.into(),
        repository_id: shared.repo.config.id.to_hex(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        namenode,
        sessions: shared.sessions.tags(),
    }))
}
