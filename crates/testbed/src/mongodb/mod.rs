//! The MongoDB wire protocol through FerretDB v1.24.2 on SQLite, with its
//! oplog emulation switched on; with `--nodes N`, N independent instances
//! that stand in for shards.
//!
//! No real mongod can be obtained on this machine (no registry it reaches
//! ships one). FerretDB is not mongod: it has no sharding, no balancer and no
//! replica set status; its `local.oplog.rs` is an emulation (inserts, updates
//! as whole-document `$set`, deletes) that it writes on a best-effort basis.

mod build;
pub mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bson::doc;
use serde::{Deserialize, Serialize};

use crate::kind::{Kind, UpOptions};
use crate::process::{self, ProcessRecord};
use crate::root::Root;
use crate::{fresh, http, net, wait};

pub use build::ferretdb;

pub const VERSION: &str = "1.24.2";
pub const DEFAULT_NODES: usize = 1;
const MAX_NODES: usize = 8;
/// FerretDB emulates the oplog only for this replica set name.
pub const REPL_SET_NAME: &str = "rs0";
/// Room for every write a test makes; FerretDB trims capped collections.
const OPLOG_BYTES: i64 = 256 << 20;
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How to reach the instances; what `testbed up mongodb` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Info {
    pub name: String,
    /// `ferretdb <version>`: not a mongod.
    pub server: String,
    pub backend: String,
    pub repl_set_name: String,
    /// One connection string per instance (independent, one per "shard").
    pub uris: Vec<String>,
    pub instances: Vec<InstanceInfo>,
    /// With `--with-agents`: the coordinator file naming every instance as
    /// a replica set (`rs0-1`, `rs0-2`, ...) and the root's repository.
    #[serde(default)]
    pub tidemark_config: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct InstanceInfo {
    /// 1-based.
    pub node: usize,
    pub port: u16,
    /// FerretDB's HTTP debug endpoint (metrics, /debug/readyz).
    pub debug_port: u16,
    pub uri: String,
    /// The SQLite databases, one file per MongoDB database.
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl InstanceInfo {
    pub fn process_name(&self) -> String {
        format!("ferretdb{}", self.node)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

/// Starts N FerretDB instances and waits until each answers `ping` and has
/// its capped `local.oplog.rs`.
pub fn start(root: &Root, opts: &UpOptions) -> Result<Info> {
    let nodes = opts.nodes.unwrap_or(DEFAULT_NODES);
    if nodes == 0 || nodes > MAX_NODES {
        bail!("--nodes (instances) must be 1..={MAX_NODES}, got {nodes}");
    }
    let name = opts.name_or(Kind::Mongodb);
    let binary = ferretdb(VERSION)?;
    root.create_cluster(Kind::Mongodb, &name)?;
    let dir = fresh::cluster_dir(root, &name)?;
    let mut info = Info {
        name: name.clone(),
        server: format!("ferretdb {VERSION}"),
        backend: "sqlite".into(),
        repl_set_name: REPL_SET_NAME.into(),
        uris: Vec::new(),
        instances: Vec::new(),
        tidemark_config: None,
    };
    for node in 1..=nodes {
        let port = net::free_port()?;
        let node_dir = dir.join(format!("ferretdb{node}"));
        // directConnection: a driver given a replica set name would otherwise
        // look for members and a primary the way it would with mongod.
        let uri = format!("mongodb://127.0.0.1:{port}/?directConnection=true");
        info.uris.push(uri.clone());
        info.instances.push(InstanceInfo {
            node,
            port,
            debug_port: net::free_port()?,
            uri,
            data_dir: node_dir.join("data"),
            log: node_dir.join("ferretdb.log"),
        });
    }
    let started = Instant::now();
    let mut records = Vec::new();
    for inst in &info.instances {
        records.push(spawn(root, &info, inst, &binary)?);
    }
    for (inst, record) in info.instances.iter().zip(&records) {
        wait_ready(&info, inst, record)?;
        create_oplog(inst)?;
    }
    if opts.with_agents {
        info.tidemark_config = Some(write_cluster_config(root, &info, opts)?);
    }
    eprintln!(
        "mongodb {name}: {nodes} FerretDB instances ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(info)
}

fn spawn(
    root: &Root,
    info: &Info,
    inst: &InstanceInfo,
    binary: &std::path::Path,
) -> Result<ProcessRecord> {
    std::fs::create_dir_all(&inst.data_dir)?;
    let state_dir = inst.data_dir.with_file_name("state");
    std::fs::create_dir_all(&state_dir)?;
    let mut cmd = Command::new(binary);
    cmd.arg("--handler=sqlite")
        // The trailing slash matters: FerretDB wants a directory URI.
        .arg(format!("--sqlite-url=file:{}/", inst.data_dir.display()))
        .arg(format!("--state-dir={}", state_dir.display()))
        .arg(format!("--listen-addr={}", inst.addr()))
        .arg(format!("--debug-addr=127.0.0.1:{}", inst.debug_port))
        .arg(format!("--repl-set-name={}", info.repl_set_name))
        // No network here, and tests have no business reporting anywhere.
        .arg("--telemetry=disable")
        .arg("--log-level=info");
    let record = process::spawn(
        &inst.process_name(),
        cmd,
        &inst.log,
        vec![inst.port, inst.debug_port],
    )?;
    root.add_process(&info.name, record.clone())?;
    Ok(record)
}

fn wait_ready(info: &Info, inst: &InstanceInfo, record: &ProcessRecord) -> Result<()> {
    let debug = SocketAddr::from(([127, 0, 0, 1], inst.debug_port));
    wait::wait_for(
        &format!(
            "mongodb {} instance {} on {}",
            info.name,
            inst.node,
            inst.addr()
        ),
        START_TIMEOUT,
        &[record],
        std::slice::from_ref(&inst.log),
        || {
            let probe = http::get(debug, "/debug/readyz").map(|r| r.status == 200);
            Ok(probe.unwrap_or(false) && wire::ping(inst.addr()).is_ok())
        },
    )
}

/// FerretDB logs writes to `local.oplog.rs` only once that collection exists
/// and is capped; a replica set member would have made it itself.
fn create_oplog(inst: &InstanceInfo) -> Result<()> {
    wire::command(
        inst.addr(),
        "local",
        doc! { "create": "oplog.rs", "capped": true, "size": OPLOG_BYTES },
    )
    .with_context(|| format!("creating local.oplog.rs on {}", inst.addr()))?;
    let listed = wire::command(
        inst.addr(),
        "local",
        doc! { "listCollections": 1, "filter": { "name": "oplog.rs" } },
    )?;
    let batch = listed
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .context("listCollections reply without a cursor")?;
    let capped = batch.iter().any(|c| {
        c.as_document()
            .and_then(|c| c.get_document("options").ok())
            .and_then(|o| o.get_bool("capped").ok())
            == Some(true)
    });
    if !capped {
        bail!(
            "local.oplog.rs on {} is not a capped collection: {listed}",
            inst.addr()
        );
    }
    Ok(())
}

/// `<cluster>/tidemark.toml`: one `[[mongodb.replica-set]]` per instance,
/// each connection string in a file of its own (0600), the root's
/// repository (see `tidemark::ensure_repository`). The coordinator copies
/// every set itself (no MongoDB agents yet), so there is no token.
fn write_cluster_config(root: &Root, info: &Info, opts: &UpOptions) -> Result<PathBuf> {
    use crate::tidemark::{ensure_repository, resolve_bin, toml_path, toml_str, write_atomic, write_secret};
    let bin = resolve_bin(opts.tidemark_bin.as_deref())?;
    let (repo, password) = ensure_repository(root, &bin, opts.repository.as_deref())?;
    let dir = root.cluster_dir(&info.name);
    let mut text = format!(
        "# tidemark coordinator file for testbed MongoDB (FerretDB) {name}; written by testbed.\n\
         name = {cluster}\n\
         repository = {repo}\n\
         password-file = {pw}\n\
         \n\
         [mongodb]\n",
        name = info.name,
        cluster = toml_str(&format!("testbed-{}", info.name)),
        repo = toml_path(&repo)?,
        pw = toml_path(&password)?,
    );
    for inst in &info.instances {
        let uri_file = dir.join(format!("ferretdb{}/uri", inst.node));
        write_secret(&uri_file, &inst.uri)?;
        text.push_str(&format!(
            "\n[[mongodb.replica-set]]\nname = {}\nuri-file = {}\n",
            toml_str(&format!("{}-{}", info.repl_set_name, inst.node)),
            toml_path(&uri_file)?
        ));
    }
    let path = dir.join("tidemark.toml");
    write_atomic(&path, &text)?;
    Ok(path)
}
