//! Restore of a MongoDB backup: the whole deployment, databases,
//! collections (renamed if asked), or only the documents matching a filter,
//! onto the same deployment or another one (`--target-config`).
//!
//! Per collection: the copy's documents are inserted, the set's oplog is
//! replayed for it up to the backup's cut, then its indexes are built. A
//! collection that exists on the target is never touched without `--drop`
//! (every conflict is found before anything is written). With a filter,
//! the collection is rebuilt as of the cut in a scratch collection beside
//! it, and the documents the server's own query engine matches there are
//! upserted into the live collection by `_id`; nothing else changes.

use std::collections::BTreeMap;

use mongodb::bson::{doc, Bson, Document, RawDocumentBuf};
use mongodb::Client;
use serde::Serialize;
use tidemark_cluster::manifest::ClusterManifest;
use tidemark_repo::index::Index;
use tidemark_repo::tree::{Node, NodeKind, Tree};
use tidemark_repo::{Id, Repository};
use tokio::runtime::Handle;

use crate::config::ClusterConfig;
use crate::dump::{self, Docs};
use crate::error::{Context, MongoError, Result};
use crate::manifest::{self as mm, BackupDetail, CollectionMeta, SetDetail, Ts};
use crate::oplog::{self, Applied};
use crate::topology::{self, ReplicaSet};

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Whole databases (`--database D`).
    pub databases: Vec<String>,
    /// Collections (`--collection D.C`).
    pub collections: Vec<(String, String)>,
    /// The one selected collection restored under this name (`D.C2`).
    pub rename_to: Option<(String, String)>,
    /// Only documents matching this query, upserted into the live collection.
    pub filter: Option<Document>,
    /// Drop target collections that exist first.
    pub drop: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub backup: String,
    pub cut: String,
    /// The cut as an oplog time (`i` = 4294967295: the end of second `t`).
    pub cut_ts: Ts,
    pub sets: Vec<SetReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SetReport {
    pub set: String,
    pub target: String,
    pub collections: Vec<CollectionReport>,
    pub oplog: Applied,
}

#[derive(Debug, Clone, Serialize)]
pub struct CollectionReport {
    pub source: String,
    pub target: String,
    /// Documents inserted from the copy (or, with a filter, upserted).
    pub documents: u64,
    pub indexes: u64,
}

/// Parses `--filter` (MongoDB extended JSON, e.g. `{"_id": {"$in": [1, 2]}}`).
pub fn parse_filter(text: &str) -> Result<Document> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| MongoError::Refused(format!("--filter is not JSON: {e}")))?;
    match Bson::try_from(v) {
        Ok(Bson::Document(d)) => Ok(d),
        Ok(_) => Err(MongoError::Refused("--filter must be a JSON object (a query document)".into())),
        Err(e) => Err(MongoError::Refused(format!("--filter is not extended JSON: {e}"))),
    }
}

/// Parses `D.C` (the collection may hold dots; the database may not).
pub fn parse_ns(s: &str) -> Result<(String, String)> {
    match s.split_once('.') {
        Some((d, c)) if !d.is_empty() && !c.is_empty() => Ok((d.to_string(), c.to_string())),
        _ => Err(MongoError::Refused(format!("{s:?} is not DATABASE.COLLECTION"))),
    }
}

struct Selected {
    meta: CollectionMeta,
    target: (String, String),
}

struct Plan<'m> {
    set: &'m tidemark_cluster::manifest::NodeBackup,
    detail: SetDetail,
    target: usize,
    collections: Vec<Selected>,
}

/// The oplog's namespaces mapped for replay.
struct Mapping {
    map: BTreeMap<(String, String), (String, String)>,
    commands: bool,
}

impl oplog::Target for Mapping {
    fn map(&self, db: &str, coll: &str) -> Option<(String, String)> {
        self.map.get(&(db.to_string(), coll.to_string())).cloned()
    }
    fn commands(&self) -> bool {
        self.commands
    }
}

pub fn restore(
    repo: &Repository,
    rt: &Handle,
    backup_id: &Id,
    m: &ClusterManifest,
    target: &ClusterConfig,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    let detail: BackupDetail = m.detail()?;
    if opts.rename_to.is_some() && (opts.collections.len() != 1 || !opts.databases.is_empty()) {
        return Err(MongoError::Refused("--rename-to needs exactly one --collection (and no --database)".into()));
    }
    let whole = opts.databases.is_empty() && opts.collections.is_empty();
    let topo = rt.block_on(topology::discover(target))?;
    let sets = &topo.sets;

    // Plan: which collections, where to.
    let mut plans: Vec<Plan<'_>> = Vec::new();
    for (i, n) in m.nodes.iter().enumerate() {
        let d: SetDetail = n.detail()?;
        let t = match sets.iter().position(|s| s.name == n.node) {
            Some(t) => t,
            None if sets.len() == 1 => 0,
            None if sets.len() == m.nodes.len() => i,
            None => {
                return Err(MongoError::Refused(format!(
                    "the backup's replica set {} has no counterpart among the target's {} sets ({}); name the target sets as in the backup",
                    n.node,
                    sets.len(),
                    sets.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
                )))
            }
        };
        let collections = d
            .collections
            .iter()
            .filter(|c| {
                whole
                    || opts.databases.iter().any(|x| x == &c.db)
                    || opts.collections.iter().any(|(db, name)| db == &c.db && name == &c.name)
            })
            .map(|c| Selected {
                meta: c.clone(),
                target: opts.rename_to.clone().unwrap_or_else(|| (c.db.clone(), c.name.clone())),
            })
            .collect();
        plans.push(Plan { set: n, detail: d, target: t, collections });
    }
    let found = |db: &str, name: Option<&str>| {
        plans.iter().flat_map(|p| &p.collections).any(|c| c.meta.db == db && name.is_none_or(|n| c.meta.name == n))
    };
    for (db, name) in &opts.collections {
        if !found(db, Some(name)) {
            return Err(MongoError::Refused(format!("collection {db}.{name} is not in backup {}", backup_id.short())));
        }
    }
    for db in &opts.databases {
        if !found(db, None) {
            return Err(MongoError::Refused(format!("database {db} is not in backup {}", backup_id.short())));
        }
    }

    // Refuse conflicts before writing anything; check the filter too.
    for p in &plans {
        let s = &sets[p.target];
        for sel in &p.collections {
            let (db, coll) = &sel.target;
            if sel.meta.kind == "view" && opts.filter.is_some() {
                continue;
            }
            let exists = rt.block_on(exists(&s.primary, &s.name, db, coll))?;
            if exists && !opts.drop && opts.filter.is_none() {
                return Err(MongoError::Refused(format!(
                    "replica set {}: {db}.{coll} exists on the target; nothing was restored (use --drop to replace it, or --rename-to)",
                    s.name
                )));
            }
        }
        if let (Some(f), Some(sel)) = (&opts.filter, p.collections.first()) {
            let (db, coll) = &sel.target;
            let c = s.primary.database(db).collection::<Document>(coll);
            rt.block_on(async { c.find(f.clone()).limit(1).await.map(|_| ()) })
                .map_err(|e| MongoError::Refused(format!("--filter is refused by the server: {}", crate::error::describe(&e))))?;
        }
    }

    let index = repo.load_index()?;
    let mut reports = Vec::new();
    for p in plans.iter().filter(|p| !p.collections.is_empty()) {
        let s = &sets[p.target];
        let snap = repo.load_snapshot(&p.set.snapshot)?;
        let root = repo.load_tree(&index, &snap.tree)?;
        let mut coll_reports = Vec::new();
        let mut mapping = Mapping { map: BTreeMap::new(), commands: whole && opts.filter.is_none() };
        // With a filter: each collection is rebuilt in a scratch collection.
        let mut scratch = Vec::new();
        let mut dirs = Vec::new();
        for sel in &p.collections {
            let dir = collection_dir(repo, &index, &root, &sel.meta.db, &sel.meta.name)?;
            let (db, coll) = sel.target.clone();
            let into = if opts.filter.is_some() {
                let tmp = format!("tidemark_restore_{}_{}", &backup_id.to_hex()[..8], scratch.len());
                scratch.push((db.clone(), tmp.clone(), coll.clone()));
                (db.clone(), tmp)
            } else {
                (db.clone(), coll.clone())
            };
            if opts.drop && opts.filter.is_none() {
                rt.block_on(async { s.primary.database(&db).collection::<Document>(&coll).drop().await })
                    .ctx(&s.name, || format!("dropping {db}.{coll}"))?;
            }
            let docs = load_collection(repo, &index, rt, s, &dir, &sel.meta, &into)?;
            mapping.map.insert((sel.meta.db.clone(), sel.meta.name.clone()), into.clone());
            coll_reports.push(CollectionReport { source: sel.meta.ns(), target: format!("{}.{}", sel.target.0, sel.target.1), documents: docs, indexes: 0 });
            dirs.push((dir, into));
        }
        // The oplog up to the cut.
        let oplog_node = root
            .nodes
            .iter()
            .find(|n| n.name == mm::OPLOG)
            .ok_or_else(|| MongoError::Invalid(format!("replica set {}: the backup has no oplog file", p.set.node)))?;
        let mut applied = Applied::default();
        let mut entries = Docs::new(repo, &index, &oplog_node.content, format!("{}/{}", p.set.node, mm::OPLOG));
        while let Some(e) = entries.next_doc()? {
            let Ok(ts) = e.get_timestamp("ts") else { continue };
            let ts = Ts::from_bson(ts);
            if ts <= p.detail.oplog_start || ts > detail.cut {
                continue;
            }
            let e = e.to_owned();
            rt.block_on(oplog::apply(&s.primary, &s.name, &e, &mapping, &mut applied))?;
        }
        // Indexes, then (with a filter) the matching documents.
        for ((dir, into), rep) in dirs.iter().zip(coll_reports.iter_mut()).filter(|_| opts.filter.is_none()) {
            rep.indexes = build_indexes(repo, &index, rt, s, dir, into)?;
        }
        if let Some(f) = &opts.filter {
            for ((db, tmp, coll), rep) in scratch.iter().zip(coll_reports.iter_mut()) {
                rep.documents = rt.block_on(upsert_matching(&s.primary, &s.name, db, tmp, coll, f))?;
                rt.block_on(async { s.primary.database(db).collection::<Document>(tmp).drop().await })
                    .ctx(&s.name, || format!("dropping the scratch collection {db}.{tmp}"))?;
            }
        }
        reports.push(SetReport { set: p.set.node.clone(), target: s.name.clone(), collections: coll_reports, oplog: applied });
    }
    Ok(RestoreReport { backup: backup_id.to_hex(), cut: detail.cut.to_string(), cut_ts: detail.cut, sets: reports })
}

async fn exists(client: &Client, rs: &str, db: &str, coll: &str) -> Result<bool> {
    let names = client.database(db).list_collection_names().filter(doc! { "name": coll }).await.ctx(rs, || format!("listing {db}"))?;
    Ok(!names.is_empty())
}

/// The tree of one collection's files.
fn collection_dir(repo: &Repository, index: &Index, root: &Tree, db: &str, coll: &str) -> Result<Tree> {
    let sub = |t: &Tree, name: &str| -> Result<Tree> {
        let n: &Node = t
            .nodes
            .iter()
            .find(|n| n.name == name && n.kind == NodeKind::Dir)
            .ok_or_else(|| MongoError::Invalid(format!("the backup has no {name} for {db}.{coll}")))?;
        Ok(repo.load_tree(index, n.subtree.as_ref().ok_or_else(|| MongoError::Invalid(format!("{name}: no listing")))?)?)
    };
    let dbs = sub(root, mm::DB_DIR)?;
    let d = sub(&dbs, &mm::encode_name(db))?;
    sub(&d, &mm::encode_name(coll))
}

fn file<'t>(dir: &'t Tree, name: &str) -> Option<&'t Node> {
    dir.nodes.iter().find(|n| n.name == name && n.kind == NodeKind::File)
}

/// Creates the collection with its options and inserts the copy's documents.
fn load_collection(
    repo: &Repository,
    index: &Index,
    rt: &Handle,
    s: &ReplicaSet,
    dir: &Tree,
    meta: &CollectionMeta,
    into: &(String, String),
) -> Result<u64> {
    let (db, coll) = into;
    let spec_node = file(dir, mm::SPEC).ok_or_else(|| MongoError::Invalid(format!("{}: no spec", meta.ns())))?;
    let spec = RawDocumentBuf::from_bytes(dump::read_file(repo, index, spec_node)?)
        .map_err(|e| MongoError::Invalid(format!("{}: bad spec: {e}", meta.ns())))?
        .to_document()
        .map_err(|e| MongoError::Invalid(format!("{}: bad spec: {e}", meta.ns())))?;
    let mut create = doc! { "create": coll.clone() };
    if let Ok(o) = spec.get_document("options") {
        for (k, v) in o {
            create.insert(k.clone(), v.clone());
        }
    }
    rt.block_on(async { s.primary.database(db).run_command(create).await })
        .ctx(&s.name, || format!("creating {db}.{coll} with the backed-up options"))?;
    if meta.kind == "view" {
        return Ok(0);
    }
    let node = file(dir, mm::DOCUMENTS).ok_or_else(|| MongoError::Invalid(format!("{}: no documents file", meta.ns())))?;
    let c = s.primary.database(db).collection::<RawDocumentBuf>(coll);
    let mut docs = Docs::new(repo, index, &node.content, format!("{}/{}", meta.ns(), mm::DOCUMENTS));
    let (mut batch, mut bytes, mut n) = (Vec::new(), 0usize, 0u64);
    let flush = |batch: &mut Vec<RawDocumentBuf>| -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let b = std::mem::take(batch);
        rt.block_on(async { c.insert_many(b).ordered(false).await }).ctx(&s.name, || format!("inserting into {db}.{coll}"))?;
        Ok(())
    };
    while let Some(d) = docs.next_doc()? {
        bytes += d.as_bytes().len();
        batch.push(d.to_owned());
        n += 1;
        if bytes >= dump::INSERT_BYTES || batch.len() >= 10_000 {
            flush(&mut batch)?;
            bytes = 0;
        }
    }
    flush(&mut batch)?;
    Ok(n)
}

/// Builds the backed-up indexes (all but `_id_`, which the server makes).
fn build_indexes(repo: &Repository, index: &Index, rt: &Handle, s: &ReplicaSet, dir: &Tree, into: &(String, String)) -> Result<u64> {
    let Some(node) = file(dir, mm::INDEXES) else { return Ok(0) };
    let (db, coll) = into;
    let mut specs = Vec::new();
    for raw in dump::split_docs(&dump::read_file(repo, index, node)?, &format!("{db}.{coll} indexes"))? {
        let mut d = raw.to_document().map_err(|e| MongoError::Invalid(format!("{db}.{coll}: bad index spec: {e}")))?;
        if d.get_str("name") == Ok("_id_") {
            continue;
        }
        // `ns` is gone since 4.4 and `v` is the server's choice (FerretDB
        // refuses it); the rest of the spec is the index.
        d.remove("ns");
        d.remove("v");
        specs.push(Bson::Document(d));
    }
    if specs.is_empty() {
        return Ok(0);
    }
    let n = specs.len() as u64;
    rt.block_on(async { s.primary.database(db).run_command(doc! { "createIndexes": coll.clone(), "indexes": specs }).await })
        .ctx(&s.name, || format!("building the indexes of {db}.{coll}"))?;
    Ok(n)
}

/// Upserts the scratch collection's documents matching `filter` into the
/// live one, by `_id`.
async fn upsert_matching(client: &Client, rs: &str, db: &str, scratch: &str, live: &str, filter: &Document) -> Result<u64> {
    let from = client.database(db).collection::<Document>(scratch);
    let to = client.database(db).collection::<Document>(live);
    let mut cur = from.find(filter.clone()).await.ctx(rs, || format!("finding the filter's documents in {db}.{scratch}"))?;
    let mut n = 0;
    while cur.advance().await.ctx(rs, || format!("reading {db}.{scratch}"))? {
        let d = cur.deserialize_current().ctx(rs, || format!("reading {db}.{scratch}"))?;
        let id = d.get("_id").cloned().unwrap_or(Bson::Null);
        to.replace_one(doc! { "_id": id }, d).upsert(true).await.ctx(rs, || format!("upserting into {db}.{live}"))?;
        n += 1;
    }
    Ok(n)
}
