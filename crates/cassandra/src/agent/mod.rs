//! `tidemark agent`: runs beside one Cassandra node and moves that node's
//! SSTables straight between its disks and the repository, on the
//! coordinator's word (see [`crate::api`]).
//!
//! - this module: start-up (token, passphrase, repository, listener), the
//!   routes, status, snapshot and clear, and the one-operation-at-a-time rule;
//! - `view`: the snapshot's files found on disk and staged by hard link;
//! - `upload`: a node snapshot into the repository, with per-table file lists;
//! - `restore`: tables back from the repository, by `nodetool import` or
//!   sstableloader.
//!
//! Long operations (snapshot, upload, clear, import, load) run one at a time
//! (`tidemark_cluster::busy`): another one meanwhile gets 409 naming what
//! runs, and a caller that hangs up does not free the agent. The repository
//! engine is synchronous and blocks on the runtime for storage I/O: it runs
//! only on blocking threads.

mod restore;
mod upload;
mod view;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use tidemark_cluster::auth::{read_secret, Token};
use tidemark_cluster::busy::{self, Busy};
use tidemark_cluster::server::{ApiError, ApiResult};
use tidemark_repo::Repository;
use tidemark_store::OpenOptions;
use tokio::net::TcpListener;

use crate::api::{self, AgentStatus, ClearReply, ClearRequest, SnapshotReply, SnapshotRequest};
use crate::config::AgentConfig;
use crate::control::Control;
use crate::error::{CassandraError, Result};

pub use upload::{hostname, STORE_TAG};
pub use view::{is_sstable_component, valid_tag};

/// The JMX bridge's dir under the work dir (its source file and log).
const JMX_DIR: &str = "jmx-bridge";

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
    /// Snapshot, clear, import and ring status on the node.
    control: Control,
    /// The long operation running now.
    busy: Arc<Busy>,
}

impl Shared {
    fn work_dir(&self) -> Result<PathBuf> {
        tidemark_repo::backup::clean_path(&self.config.work_dir).map_err(Into::into)
    }
}

/// Runs the agent until `shutdown` completes.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    Agent::start(config).await?.serve(shutdown).await
}

impl Agent {
    /// Reads the secrets, opens the repository and binds the listener.
    pub async fn start(config: AgentConfig) -> Result<Agent> {
        let token = config.token()?;
        let password = read_secret(&config.password_file)?;
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
        .map_err(|e| CassandraError::Invalid(format!("opening the repository: {e}")))??;
        std::fs::create_dir_all(&config.work_dir)
            .map_err(|e| CassandraError::io(&config.work_dir, e))?;
        // Nothing runs yet: staging left by a crashed run goes now.
        remove_stale_staging(&config.work_dir)?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| CassandraError::io(format!("listen {}", config.listen), e))?;
        let control = Control::from_config(&config, &config.work_dir.join(JMX_DIR)).await?;
        let busy = Busy::new(format!("agent for {}", config.node_address));
        let shared = Arc::new(Shared {
            config,
            repo: Arc::new(repo),
            control,
            busy,
        });
        Ok(Agent {
            listener,
            token,
            shared,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| CassandraError::io("listener", e))
    }

    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let routes = Router::new()
            .route(api::STATUS, get(status))
            .route(api::SNAPSHOT, post(snapshot))
            .route(api::UPLOAD, post(upload::handler))
            .route(api::CLEAR, post(clear))
            .route(api::IMPORT, post(restore::import_handler))
            .route(api::LOAD, post(restore::load_handler))
            .with_state(self.shared);
        tidemark_cluster::server::serve(self.listener, self.token, routes, shutdown)
            .await
            .map_err(|e| CassandraError::io("agent API", e))
    }
}

/// Removes the view and restore staging a killed agent may have left. Only
/// links and fetched copies live there, never the node's own files.
fn remove_stale_staging(work: &Path) -> Result<()> {
    view::remove_view(work)?;
    for sub in [restore::RESTORE_DIR, restore::LOAD_DIR] {
        let dir = work.join(sub);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(CassandraError::io(&dir, e))
            }
            _ => {}
        }
    }
    Ok(())
}

/// The API's view of an error: bad input is the caller's (400), the rest ours.
fn api_error(e: CassandraError) -> ApiError {
    match e {
        CassandraError::Invalid(m) => ApiError::bad_request(m),
        other => ApiError::internal(other.to_string()),
    }
}

/// Runs `work` as a long operation (see [`busy::exclusive`]), its errors
/// answered as [`api_error`] says.
async fn exclusive<T, F>(shared: &Arc<Shared>, what: String, work: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    busy::exclusive(
        &shared.busy,
        what,
        async move { work.await.map_err(api_error) },
    )
    .await
}

/// Runs synchronous (engine, file system) work on a blocking thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CassandraError::Invalid(format!("blocking task ended abnormally: {e}")))?
}

async fn status(State(shared): State<Arc<Shared>>) -> ApiResult<AgentStatus> {
    let dirs = shared.config.data_dirs.clone();
    let (ring, tags) = tokio::join!(
        shared.control.status(),
        blocking(move || view::snapshot_tags(&dirs))
    );
    // Read last: a nodetool status takes a second or two, the reply says
    // what runs now.
    let busy = shared.busy.current();
    Ok(Json(AgentStatus {
        node_address: shared.config.node_address,
        repository_id: shared.repo.config.id.to_hex(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        busy,
        ring: ring.map_err(api_error)?,
        snapshot_tags: tags.map_err(api_error)?,
    }))
}

async fn snapshot(
    State(shared): State<Arc<Shared>>,
    Json(req): Json<SnapshotRequest>,
) -> ApiResult<SnapshotReply> {
    valid_tag(&req.tag).map_err(api_error)?;
    let s = shared.clone();
    exclusive(&shared, format!("snapshot {}", req.tag), async move {
        // Memtables are flushed first, over every keyspace.
        s.control.snapshot(&req.tag).await?;
        let cut_at = Utc::now();
        let data_dirs = s.config.data_dirs.clone();
        let tag = req.tag.clone();
        let tables = blocking(move || view::find_snapshot(&data_dirs, &tag))
            .await?
            .len();
        Ok(SnapshotReply { cut_at, tables })
    })
    .await
}

async fn clear(
    State(shared): State<Arc<Shared>>,
    Json(req): Json<ClearRequest>,
) -> ApiResult<ClearReply> {
    valid_tag(&req.tag).map_err(api_error)?;
    let s = shared.clone();
    exclusive(&shared, format!("clear {}", req.tag), async move {
        let data_dirs = s.config.data_dirs.clone();
        let tag = req.tag.clone();
        let work = s.work_dir()?;
        let had = blocking(move || {
            let had = !view::find_snapshot(&data_dirs, &tag)?.is_empty();
            Ok(view::remove_view(&work)? || had)
        })
        .await?;
        s.control.clear_snapshot(&req.tag).await?;
        Ok(ClearReply { cleared: had })
    })
    .await
}
