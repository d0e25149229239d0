//! The coordinator's MongoDB backup.
//!
//! 1. discover: connect to every replica set (or, through a mongos, to every
//!    shard and the config server replica set) and record what each is;
//!    with a mongos, stop the balancer and wait for migrations (refused
//!    after `freeze-wait`; put back as it was at the end, also on failure
//!    or Ctrl-C);
//! 2. copy: each set's oplog is read from its newest entry on, while its
//!    collections are copied in `_id` order into the repository, several at
//!    once; a heartbeat per set fails the backup fast, naming the set, when
//!    a member stops answering;
//! 3. cut: when every copy is done, the cut is the latest of the sets'
//!    last oplog times at the end of their copies (as one cluster time with
//!    a mongos; else the end of that second, the finest order separate
//!    replica sets share); each set's oplog is read until it holds every
//!    entry up to the cut;
//! 4. commit: per set, the oplog, the trees and one repository snapshot;
//!    then ONE manifest in the catalog. A backup without a manifest does
//!    not exist: a failure anywhere lists nothing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use mongodb::bson::{doc, RawDocumentBuf};
use mongodb::Client;
use tidemark_cluster::manifest::{self, ClusterManifest, NodeBackup, MANIFEST_VERSION};
use tidemark_cluster::tag::{self, new_tag};
use tidemark_repo::ingest::{Session, StoreError};
use tidemark_repo::lock::{Lock, LockKind};
use tidemark_repo::progress::Progress;
use tidemark_repo::snapshot::{BackupSummary, Snapshot};
use tidemark_repo::tree::{Node, NodeKind, Tree};
use tidemark_repo::{Id, Repository};
use tokio::runtime::Handle;

use crate::config::ClusterConfig;
use crate::dump::{self, DocReader};
use crate::error::{Context, MongoError, Result};
use crate::manifest::{self as mm, BackupDetail, CollectionMeta, SetDetail, Timings, Ts};
use crate::oplog::{self, Capture};
use crate::topology::{self, Balancer, ReplicaSet, Topology};

/// Tag of the repository snapshots of MongoDB backups.
pub const STORE_TAG: &str = "mongodb";
/// Databases never copied (the oplog is read on its own; `config` is
/// copied from the config server replica set only).
const SKIP_DBS: &[&str] = &["local", "admin", "config"];
const HEARTBEAT: Duration = Duration::from_secs(2);
const STOPPING: &str = "the backup is being stopped";

/// Host name of a replica set's repository snapshots.
pub fn hostname(cluster: &str, set: &str) -> String {
    tag::hostname(crate::STORE, cluster, set)
}

#[derive(Debug)]
pub struct Outcome {
    pub id: Id,
    pub manifest: ClusterManifest,
}

fn say(progress: Option<&dyn Progress>, m: &str) {
    tracing::info!("{m}");
    if let Some(p) = progress {
        p.phase(m);
    }
}

/// Takes one backup of the deployment `config` describes. Blocking: runs
/// the driver on `rt` (call it from outside the runtime).
pub fn backup(config: &ClusterConfig, repo: Arc<Repository>, rt: &Handle, progress: Option<&dyn Progress>) -> Result<Outcome> {
    let t0 = Instant::now();
    let started = Utc::now();
    let tag = new_tag(started);
    say(progress, "connecting to the replica sets");
    let topo = rt.block_on(topology::discover(config))?;
    let balancer = match &topo.mongos {
        Some(m) => {
            say(progress, "stopping the balancer");
            Some(rt.block_on(Balancer::stop(m, config.mongodb.freeze_wait))?)
        }
        None => None,
    };
    let discover_secs = t0.elapsed().as_secs_f64();
    // Ctrl-C must not leave the balancer off: the copy watches this flag,
    // and the balancer is put back below whatever the outcome.
    let interrupted = Arc::new(AtomicBool::new(false));
    let watcher = {
        let flag = interrupted.clone();
        rt.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                flag.store(true, Ordering::SeqCst);
            }
        })
    };
    let result = Run { config, topo: &topo, repo, rt, tag, progress, interrupted: interrupted.clone() }.go(started, discover_secs, balancer.as_ref().map(|b| b.was_on()));
    watcher.abort();
    if let Some(b) = &balancer {
        say(progress, "starting the balancer again");
        rt.block_on(b.restore());
    }
    if interrupted.load(Ordering::SeqCst) {
        return Err(MongoError::Invalid("interrupted: no backup was recorded".into()));
    }
    result
}

struct Run<'a> {
    config: &'a ClusterConfig,
    topo: &'a Topology,
    repo: Arc<Repository>,
    rt: &'a Handle,
    tag: String,
    progress: Option<&'a dyn Progress>,
    interrupted: Arc<AtomicBool>,
}

/// One set's copy, before the cut is known.
struct Copied {
    collections: Vec<(CollectionMeta, Node)>,
    copy_end: Ts,
    users: Option<(Vec<u8>, u64)>,
    roles: Option<(Vec<u8>, u64)>,
}

impl Run<'_> {
    fn go(&self, started: chrono::DateTime<Utc>, discover_secs: f64, balancer_was_on: Option<bool>) -> Result<Outcome> {
        let sets = &self.topo.sets;
        let step = self.config.mongodb.step_timeout_for(sets.len());
        let lock = Lock::acquire(&self.repo, LockKind::Backup)?;
        let index = self.repo.load_index()?;
        // Where each oplog starts: its newest entry now, before any copy.
        let mut starts = Vec::new();
        for s in sets {
            let start = self.timed(step, &s.name, "reading the oplog's newest entry", oplog::last_ts(&s.client, &s.name))?;
            if start == Ts::ZERO && self.rt.block_on(oplog::first_ts(&s.client, &s.name))?.is_none() {
                // An empty oplog is fine only if it exists: FerretDB and a
                // standalone mongod have none.
                self.rt.block_on(check_oplog_exists(&s.client, &s.name))?;
            }
            starts.push(start);
        }
        let captures: Vec<Capture> =
            sets.iter().zip(&starts).map(|(s, &from)| Capture::start(self.rt, s.client.clone(), s.name.clone(), from)).collect();
        let stop = AtomicBool::new(false);
        let beats: Vec<_> = sets.iter().map(|s| self.rt.spawn(heartbeat(s.client.clone(), s.name.clone(), step))).collect();

        say(self.progress, &format!("copying {} replica set(s)", sets.len()));
        let t_copy = Instant::now();
        let sessions: Vec<Session<'_>> = sets.iter().map(|_| Session::new(&self.repo, &index)).collect();
        let copied: Vec<Result<Copied>> = std::thread::scope(|scope| {
            let handles: Vec<_> = sets
                .iter()
                .zip(&sessions)
                .map(|(s, session)| {
                    let stop = &stop;
                    scope.spawn(move || {
                        let r = self.copy_set(s, session, stop);
                        if r.is_err() {
                            stop.store(true, Ordering::SeqCst);
                        }
                        r
                    })
                })
                .collect();
            // The heartbeats: a set that stops answering stops every copy.
            loop {
                if handles.iter().all(|h| h.is_finished()) {
                    break;
                }
                if self.interrupted.load(Ordering::SeqCst) {
                    stop.store(true, Ordering::SeqCst);
                }
                for (b, s) in beats.iter().zip(sets) {
                    if b.is_finished() && !stop.load(Ordering::SeqCst) {
                        stop.store(true, Ordering::SeqCst);
                        tracing::error!("replica set {} stopped answering; stopping the backup", s.name);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(MongoError::Invalid("a copy thread panicked".into())))).collect()
        });
        // A heartbeat that ended found its set not answering.
        let mut beat_errors = Vec::new();
        for b in beats {
            if !b.is_finished() {
                b.abort();
            } else if let Ok(Err(e)) = self.rt.block_on(b) {
                beat_errors.push(e);
            }
        }
        let abort_all = |captures: Vec<Capture>| captures.into_iter().for_each(Capture::abort);
        if let Some(e) = beat_errors.into_iter().next() {
            abort_all(captures);
            return Err(e);
        }
        if self.interrupted.load(Ordering::SeqCst) {
            abort_all(captures);
            return Err(MongoError::Invalid("interrupted".into()));
        }
        // The failure that stopped the others is the one to report.
        if copied.iter().any(Result::is_err) {
            abort_all(captures);
            let mut errs: Vec<MongoError> = copied.into_iter().filter_map(Result::err).collect();
            let first = errs.iter().position(|e| !matches!(e, MongoError::Stopped(_))).unwrap_or(0);
            return Err(errs.swap_remove(first));
        }
        let done: Vec<Copied> = copied.into_iter().map(|c| c.expect("no errors")).collect();
        let copy_secs = t_copy.elapsed().as_secs_f64();

        // The cut.
        let t_cut = Instant::now();
        let latest = done.iter().map(|c| c.copy_end).max().unwrap_or(Ts::ZERO);
        let sharded = self.topo.mongos.is_some();
        let cut = if sharded { latest } else { Ts::end_of_second(latest.t) };
        say(self.progress, &format!("cut at {cut}"));
        let mut captured = Vec::new();
        for ((s, cap), c) in sets.iter().zip(captures).zip(&done) {
            let upto = self.timed(step, &s.name, "waiting for the set's clock to pass the cut", settle(&s.client, &s.name, cut, c.copy_end))?;
            let got = self.rt.block_on(cap.finish(upto, step, &s.name))?;
            captured.push(got);
        }
        let cut_secs = t_cut.elapsed().as_secs_f64();

        // Commit.
        say(self.progress, "writing snapshots and the manifest");
        let t_commit = Instant::now();
        let mut nodes = Vec::new();
        for (((s, session), c), (got, start)) in sets.iter().zip(sessions).zip(done).zip(captured.into_iter().zip(starts)) {
            nodes.push(self.commit_set(s, session, c, got, start, cut)?);
        }
        let commit_secs = t_commit.elapsed().as_secs_f64();
        let detail = BackupDetail {
            cut,
            sharded,
            balancer_was_on,
            read_preference: self.config.mongodb.read_preference.clone(),
            timings: Timings { discover_secs, copy_secs, cut_secs, commit_secs },
        };
        let m = ClusterManifest {
            version: MANIFEST_VERSION,
            store: crate::STORE.into(),
            cluster: self.config.name.clone(),
            tag: self.tag.clone(),
            started,
            finished: Utc::now(),
            nodes,
            detail: serde_json::to_value(&detail).expect("detail serialises"),
            program_version: concat!("tidemark ", env!("CARGO_PKG_VERSION")).into(),
        };
        let id = manifest::save(&self.repo, &m)?;
        lock.release();
        Ok(Outcome { id, manifest: m })
    }

    fn timed<T>(&self, limit: Duration, rs: &str, what: &str, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        match self.rt.block_on(async { tokio::time::timeout(limit, f).await }) {
            Ok(r) => r,
            Err(_) => Err(MongoError::Timeout { rs: rs.into(), what: what.into(), secs: limit.as_secs() }),
        }
    }

    /// Lists and copies one set's collections (several at once).
    fn copy_set(&self, s: &ReplicaSet, session: &Session<'_>, stop: &AtomicBool) -> Result<Copied> {
        let m = &self.config.mongodb;
        let step = m.step_timeout_for(self.topo.sets.len());
        let dbs = self.timed(step, &s.name, "listing databases", async {
            s.client.list_database_names().await.ctx(&s.name, || "listing databases".into())
        })?;
        let mut todo = Vec::new();
        for db in dbs {
            let keep_config = db == "config" && s.info.role == "config";
            if SKIP_DBS.contains(&db.as_str()) && !keep_config {
                continue;
            }
            let entries = self.timed(step, &s.name, "listing collections", dump::cursor_entries(&s.client, &db, doc! { "listCollections": 1 }, &s.name, &format!("listCollections on {db}")))?;
            for spec in entries {
                let name = spec.get_str("name").map_err(|e| MongoError::Invalid(format!("replica set {}: listCollections on {db}: {e}", s.name)))?.to_string();
                if name.starts_with("system.") && name != "system.js" {
                    continue;
                }
                if !m.wants(&db, &name) {
                    continue;
                }
                todo.push((db.clone(), name, spec));
            }
        }
        let jobs = Mutex::new(todo.into_iter());
        let out: Mutex<Vec<(CollectionMeta, Node)>> = Mutex::new(Vec::new());
        let first_err: Mutex<Option<MongoError>> = Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..m.parallel_collections {
                scope.spawn(|| loop {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let next = jobs.lock().unwrap_or_else(|p| p.into_inner()).next();
                    let Some((db, name, spec)) = next else { return };
                    match self.copy_collection(s, session, &db, &name, &spec, stop) {
                        Ok(x) => out.lock().unwrap_or_else(|p| p.into_inner()).push(x),
                        Err(e) => {
                            stop.store(true, Ordering::SeqCst);
                            let mut slot = first_err.lock().unwrap_or_else(|p| p.into_inner());
                            if slot.as_ref().is_none_or(|f| matches!(f, MongoError::Stopped(_))) {
                                *slot = Some(e);
                            }
                            return;
                        }
                    }
                });
            }
        });
        if let Some(e) = first_err.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        if stop.load(Ordering::SeqCst) {
            return Err(MongoError::Stopped(format!("replica set {}: copy stopped (another set failed or stopped answering)", s.name)));
        }
        let copy_end = self.timed(step, &s.name, "reading the oplog's newest entry", oplog::last_ts(&s.client, &s.name))?;
        let (users, roles) = if m.users_and_roles && s.info.role != "shard" {
            (self.read_admin(s, "system.users"), self.read_admin(s, "system.roles"))
        } else {
            (None, None)
        };
        Ok(Copied { collections: out.into_inner().unwrap_or_else(|p| p.into_inner()), copy_end, users, roles })
    }

    /// Users or roles as stored in admin (None when the server has no such
    /// collection or refuses: logged, the backup goes on).
    fn read_admin(&self, s: &ReplicaSet, coll: &str) -> Option<(Vec<u8>, u64)> {
        let c = s.primary.database("admin").collection::<RawDocumentBuf>(coll);
        let r = self.rt.block_on(async {
            let mut cur = c.find(doc! {}).await?;
            let (mut bytes, mut n) = (Vec::new(), 0u64);
            while cur.advance().await? {
                bytes.extend_from_slice(cur.current().as_bytes());
                n += 1;
            }
            Ok::<_, mongodb::error::Error>((bytes, n))
        });
        match r {
            Ok(x) => Some(x),
            Err(e) => {
                tracing::warn!("replica set {}: admin.{coll} not backed up: {e}", s.name);
                None
            }
        }
    }

    fn copy_collection(
        &self,
        s: &ReplicaSet,
        session: &Session<'_>,
        db: &str,
        name: &str,
        spec: &RawDocumentBuf,
        stop: &AtomicBool,
    ) -> Result<(CollectionMeta, Node)> {
        let kind = spec.get_str("type").unwrap_or("collection").to_string();
        let ns = format!("{db}.{name}");
        let mut files = Vec::new();
        let spec_stored = dump::store_bytes(session, spec.as_bytes())?;
        files.push(dump::file_node(mm::SPEC, &spec_stored));
        let mut meta = CollectionMeta { db: db.into(), name: name.into(), kind: kind.clone(), documents: 0, bytes: 0, indexes: 0, checksum: String::new() };
        if kind != "view" {
            let step = self.config.mongodb.step_timeout_for(self.topo.sets.len());
            let indexes = self.timed(step, &s.name, "listing indexes", dump::cursor_entries(&s.client, db, doc! { "listIndexes": name }, &s.name, &format!("listIndexes on {ns}")))?;
            meta.indexes = indexes.len() as u64;
            let stored = dump::store_bytes(session, &dump::concat(indexes.iter().map(|d| d.as_ref())))?;
            files.push(dump::file_node(mm::INDEXES, &stored));
            let mut reader = DocReader::open(self.rt, &s.client, &s.name, db, name)?;
            let mut guarded = Guarded { inner: &mut reader, stop };
            let stored = session.store(&mut guarded, None).map_err(|e| match e {
                StoreError::Repo(r) => MongoError::Repo(r),
                StoreError::Source(io) if io.to_string() == STOPPING => MongoError::Stopped(format!("replica set {}: copy of {ns} stopped", s.name)),
                StoreError::Source(io) => MongoError::Invalid(format!("replica set {}: reading {ns}: {io}", s.name)),
            })?;
            meta.documents = reader.documents;
            meta.bytes = stored.size;
            meta.checksum = reader.hasher.finalize().to_hex().to_string();
            files.push(dump::file_node(mm::DOCUMENTS, &stored));
            if let Some(p) = self.progress {
                p.advance(meta.documents, meta.bytes);
            }
        }
        let tree = session.save_tree(Tree { nodes: files })?;
        let mut dir = Node::new(&mm::encode_name(name), NodeKind::Dir);
        dir.mode = 0o040700;
        dir.subtree = Some(tree);
        Ok((meta, dir))
    }

    fn commit_set(
        &self,
        s: &ReplicaSet,
        session: Session<'_>,
        c: Copied,
        got: oplog::Captured,
        start: Ts,
        cut: Ts,
    ) -> Result<NodeBackup> {
        let dir = |name: &str, nodes: Vec<Node>| -> Result<Node> {
            let id = session.save_tree(Tree { nodes })?;
            let mut n = Node::new(name, NodeKind::Dir);
            n.mode = 0o040700;
            n.subtree = Some(id);
            Ok(n)
        };
        let mut by_db: BTreeMap<String, Vec<Node>> = BTreeMap::new();
        let mut metas = Vec::new();
        for (meta, node) in c.collections {
            by_db.entry(meta.db.clone()).or_default().push(node);
            metas.push(meta);
        }
        metas.sort_by(|a, b| (&a.db, &a.name).cmp(&(&b.db, &b.name)));
        let mut dbs = Vec::new();
        for (db, nodes) in by_db {
            dbs.push(dir(&mm::encode_name(&db), nodes)?);
        }
        let mut root = vec![dir(mm::DB_DIR, dbs)?];
        let oplog_stored = dump::store_bytes(&session, &got.bytes)?;
        root.push(dump::file_node(mm::OPLOG, &oplog_stored));
        let mut admin = Vec::new();
        let (mut users, mut roles) = (0, 0);
        if let Some((b, n)) = &c.users {
            admin.push(dump::file_node(mm::USERS, &dump::store_bytes(&session, b)?));
            users = *n;
        }
        if let Some((b, n)) = &c.roles {
            admin.push(dump::file_node(mm::ROLES, &dump::store_bytes(&session, b)?));
            roles = *n;
        }
        if !admin.is_empty() {
            root.push(dir(mm::ADMIN_DIR, admin)?);
        }
        let total_bytes: u64 = metas.iter().map(|m| m.bytes).sum::<u64>() + oplog_stored.size;
        let tree = session.save_tree(Tree { nodes: root })?;
        let stats = session.finish()?;
        let summary = BackupSummary {
            files_new: metas.len() as u64,
            total_files: metas.len() as u64,
            total_bytes,
            bytes_read: stats.bytes_read,
            blobs_new: stats.blobs_new,
            data_added: stats.data_added,
            data_added_stored: stats.data_added_stored,
            ..Default::default()
        };
        let snapshot = Snapshot {
            time: Utc::now(),
            hostname: hostname(&self.config.name, &s.name),
            username: String::new(),
            paths: vec!["/".into()],
            tags: vec![self.tag.clone(), STORE_TAG.to_string()],
            tree,
            parent: None,
            incomplete: false,
            program_version: concat!("tidemark ", env!("CARGO_PKG_VERSION")).into(),
            summary: summary.clone(),
            original: None,
        };
        let snap_id = self.repo.save_snapshot(&snapshot)?;
        let detail = SetDetail {
            info: s.info.clone(),
            oplog_start: start,
            copy_end: c.copy_end,
            oplog_end: got.last,
            oplog_entries: got.entries,
            collections: metas,
            users,
            roles,
        };
        Ok(NodeBackup {
            node: s.name.clone(),
            host_id: s.info.set_name.clone().unwrap_or_else(|| s.info.hosts.join(",")),
            agent: "coordinator".into(),
            snapshot: snap_id,
            cut_at: cut.to_datetime(),
            uploaded_at: Utc::now(),
            summary,
            detail: serde_json::to_value(&detail).expect("detail serialises"),
        })
    }
}

/// A reader that gives up when the backup is being stopped.
struct Guarded<'a, 'b> {
    inner: &'a mut DocReader<'b>,
    stop: &'a AtomicBool,
}

impl std::io::Read for Guarded<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.stop.load(Ordering::SeqCst) {
            return Err(std::io::Error::other(STOPPING));
        }
        self.inner.read(buf)
    }
}

/// Fails when the set's primary does not answer `hello` within `limit`.
async fn heartbeat(client: Client, rs: String, limit: Duration) -> Result<()> {
    loop {
        match tokio::time::timeout(limit, client.database("admin").run_command(doc! { "hello": 1 })).await {
            Ok(Ok(_)) => tokio::time::sleep(HEARTBEAT).await,
            Ok(Err(e)) => return Err(MongoError::server(&rs, "heartbeat (hello)", e)),
            Err(_) => return Err(MongoError::Timeout { rs, what: "heartbeat (hello)".into(), secs: limit.as_secs() }),
        }
    }
}

/// Waits until the set's clock is past the cut (so no later write can get
/// a time at or before it), then returns its newest oplog entry: reading
/// up to it reads every entry up to the cut.
async fn settle(client: &Client, rs: &str, cut: Ts, copy_end: Ts) -> Result<Ts> {
    loop {
        let hello = topology::command(client, "admin", doc! { "hello": 1 }, rs, "hello").await?;
        let now = hello.get_datetime("localTime").map(|d| (d.timestamp_millis() / 1000) as u32).unwrap_or(0);
        if now > cut.t {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(oplog::last_ts(client, rs).await?.max(copy_end))
}

async fn check_oplog_exists(client: &Client, rs: &str) -> Result<()> {
    let names = client
        .database("local")
        .list_collection_names()
        .await
        .ctx(rs, || "listing the local database".into())?;
    if names.iter().any(|n| n == "oplog.rs") {
        return Ok(());
    }
    Err(MongoError::NotReady(format!(
        "replica set {rs} has no local.oplog.rs: a consistent backup needs a replica set member (a standalone mongod has no oplog; FerretDB needs the capped collection and --repl-set-name)"
    )))
}

/// Used by tests: a backup's manifest detail.
pub fn detail(m: &ClusterManifest) -> Result<BackupDetail> {
    Ok(m.detail()?)
}

/// A set's detail in a manifest.
pub fn set_detail(n: &NodeBackup) -> Result<SetDetail> {
    Ok(n.detail()?)
}
