//! The oplog: captured during a backup from before the copy began until
//! past the cut, and replayed on restore up to the cut.
//!
//! Capture reads `local.oplog.rs` in natural order for entries after the
//! last one seen, round after round, on the same member the documents are
//! read from; a round that finds the oplog's oldest entry newer than the
//! last one seen means entries were lost to the capped collection's
//! rollover, and the backup fails naming the gap. It works the same on
//! mongod and on FerretDB's emulation (which has no tailable cursor on it).
//!
//! Replay applies each entry idempotently: inserts and replacements as
//! upserts by `_id`, `$set`/`$unset` updates, MongoDB 5+'s `$v: 2` diffs
//! (applied to the document on this side, then written whole), deletes,
//! the commands of `c` entries and the entries inside `applyOps`
//! (transactions: all of them carry the commit's time, so a transaction is
//! before the cut or after it, whole).

use std::time::Duration;

use mongodb::bson::{doc, Bson, Document, RawDocument, RawDocumentBuf};
use mongodb::Client;
use tokio::sync::watch;

use crate::error::{Context, MongoError, Result};
use crate::manifest::Ts;

const POLL: Duration = Duration::from_millis(200);
/// The oplog of one backup window is held in memory until it is stored.
pub const MAX_CAPTURE_BYTES: usize = 1 << 30;

fn oplog(client: &Client) -> mongodb::Collection<RawDocumentBuf> {
    client.database("local").collection("oplog.rs")
}

fn ts_of(d: &RawDocument) -> Option<Ts> {
    d.get_timestamp("ts").ok().map(Ts::from_bson)
}

/// The newest entry's time (Ts::ZERO for an empty oplog).
pub async fn last_ts(client: &Client, rs: &str) -> Result<Ts> {
    edge(client, rs, -1).await.map(|t| t.unwrap_or(Ts::ZERO))
}

/// The oldest entry's time, if any.
pub async fn first_ts(client: &Client, rs: &str) -> Result<Option<Ts>> {
    edge(client, rs, 1).await
}

async fn edge(client: &Client, rs: &str, dir: i32) -> Result<Option<Ts>> {
    let mut c = oplog(client)
        .find(doc! {})
        .sort(doc! { "$natural": dir })
        .limit(1)
        .await
        .ctx(rs, || "reading local.oplog.rs (is this member part of a replica set?)".into())?;
    if c.advance().await.ctx(rs, || "reading local.oplog.rs".into())? {
        return Ok(ts_of(c.current()));
    }
    Ok(None)
}

/// What a capture gathered.
#[derive(Debug, Default)]
pub struct Captured {
    /// Entries back to back, in oplog order.
    pub bytes: Vec<u8>,
    pub entries: u64,
    /// The last entry's time (the start when none came).
    pub last: Ts,
}

/// A running capture; [`Capture::finish`] once the cut is known.
pub struct Capture {
    until: watch::Sender<Option<Ts>>,
    task: tokio::task::JoinHandle<Result<Captured>>,
}

impl Capture {
    /// Starts reading entries after `from` on `client`'s member.
    pub fn start(rt: &tokio::runtime::Handle, client: Client, rs: String, from: Ts) -> Capture {
        let (until, rx) = watch::channel(None);
        let task = rt.spawn(capture(client, rs, from, rx));
        Capture { until, task }
    }

    /// Waits until every entry up to `upto` (an entry that exists) has been
    /// read, then stops and hands over what was read.
    pub async fn finish(self, upto: Ts, limit: Duration, rs: &str) -> Result<Captured> {
        let _ = self.until.send(Some(upto));
        match tokio::time::timeout(limit, self.task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(MongoError::Invalid(format!("replica set {rs}: oplog capture failed: {e}"))),
            Err(_) => Err(MongoError::Timeout { rs: rs.into(), what: format!("reading the oplog up to {upto}"), secs: limit.as_secs() }),
        }
    }

    /// Stops without waiting for anything (a failed backup).
    pub fn abort(self) {
        self.task.abort();
    }
}

async fn capture(client: Client, rs: String, from: Ts, mut until: watch::Receiver<Option<Ts>>) -> Result<Captured> {
    let mut out = Captured { last: from, ..Default::default() };
    loop {
        let mut cursor = oplog(&client)
            .find(doc! { "ts": { "$gt": out.last.to_bson() } })
            .sort(doc! { "$natural": 1 })
            .batch_size(10_000)
            .await
            .ctx(&rs, || format!("reading the oplog after {}", out.last))?;
        let mut got = 0u64;
        while cursor.advance().await.ctx(&rs, || format!("reading the oplog after {}", out.last))? {
            let e = cursor.current();
            let Some(ts) = ts_of(e) else { continue };
            if ts <= out.last {
                continue;
            }
            out.bytes.extend_from_slice(e.as_bytes());
            out.last = ts;
            out.entries += 1;
            got += 1;
            if out.bytes.len() > MAX_CAPTURE_BYTES {
                return Err(MongoError::Invalid(format!(
                    "replica set {rs}: more than {} MiB of oplog during the backup; it is held in memory until stored: back up at a quieter time",
                    MAX_CAPTURE_BYTES >> 20
                )));
            }
        }
        // Entries between the last one read and the oldest one left are gone.
        if out.last != Ts::ZERO {
            if let Some(first) = first_ts(&client, &rs).await? {
                if first > out.last {
                    return Err(MongoError::Gap(format!(
                        "replica set {rs}: the oplog rolled over past {} (its oldest entry is now {first}) before it was read; make the oplog larger",
                        out.last
                    )));
                }
            }
        }
        let target = *until.borrow();
        if let Some(t) = target {
            if out.last >= t {
                return Ok(out);
            }
        }
        if got == 0 {
            let _ = tokio::time::timeout(POLL, until.changed()).await;
        }
    }
}

/// What replaying did, for the report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    pub inserts: u64,
    pub updates: u64,
    pub deletes: u64,
    pub commands: u64,
    pub skipped: u64,
}

/// Where a namespace's entries go on restore: None leaves them out.
pub trait Target {
    fn map(&self, db: &str, coll: &str) -> Option<(String, String)>;
    /// Whether `c` entries (collection and database commands) are replayed:
    /// only when the whole deployment is restored.
    fn commands(&self) -> bool;
}

/// Replays one entry onto `client`.
pub async fn apply(client: &Client, rs: &str, entry: &RawDocument, target: &dyn Target, applied: &mut Applied) -> Result<()> {
    let entry: Document = Document::try_from(entry).map_err(|e| MongoError::Invalid(format!("replica set {rs}: bad oplog entry: {e}")))?;
    apply_doc(client, rs, &entry, target, applied).await
}

fn split_ns(ns: &str) -> Option<(&str, &str)> {
    ns.split_once('.')
}

async fn apply_doc(client: &Client, rs: &str, e: &Document, target: &dyn Target, applied: &mut Applied) -> Result<()> {
    let op = e.get_str("op").unwrap_or("");
    let ns = e.get_str("ns").unwrap_or("");
    let what = || format!("replaying {op} on {ns} at {}", e.get_timestamp("ts").map(|t| Ts::from_bson(t).to_string()).unwrap_or_default());
    let o = e.get_document("o").ok();
    if op == "n" || ns.is_empty() && op != "c" {
        applied.skipped += 1;
        return Ok(());
    }
    if op == "c" {
        let Some(o) = o else { return Ok(()) };
        if let Ok(inner) = o.get_array("applyOps") {
            for i in inner {
                if let Some(d) = i.as_document() {
                    Box::pin(apply_doc(client, rs, d, target, applied)).await?;
                }
            }
            return Ok(());
        }
        if !target.commands() {
            applied.skipped += 1;
            return Ok(());
        }
        let db = ns.split('.').next().unwrap_or("");
        return match client.database(db).run_command(o.clone()).await {
            Ok(_) => {
                applied.commands += 1;
                Ok(())
            }
            // Idempotence: what the copy already holds (48 NamespaceExists,
            // 26 NamespaceNotFound, 85/86 index already there).
            Err(err) if matches!(code(&err), Some(48 | 26 | 85 | 86 | 27)) => {
                applied.skipped += 1;
                Ok(())
            }
            Err(err) => Err(MongoError::server(rs, what(), err)),
        };
    }
    let Some((db, coll)) = split_ns(ns) else {
        applied.skipped += 1;
        return Ok(());
    };
    let Some((tdb, tcoll)) = target.map(db, coll) else {
        applied.skipped += 1;
        return Ok(());
    };
    let c = client.database(&tdb).collection::<Document>(&tcoll);
    let Some(o) = o else { return Err(MongoError::Invalid(format!("replica set {rs}: {} without o", what()))) };
    match op {
        "i" => {
            let id = o.get("_id").cloned().ok_or_else(|| MongoError::Invalid(format!("replica set {rs}: {} without _id", what())))?;
            c.replace_one(doc! { "_id": id }, o.clone()).upsert(true).await.ctx(rs, what)?;
            applied.inserts += 1;
        }
        "d" => {
            c.delete_one(o.clone()).await.ctx(rs, what)?;
            applied.deletes += 1;
        }
        "u" => {
            let filter = e.get_document("o2").map_err(|_| MongoError::Invalid(format!("replica set {rs}: {} without o2", what())))?;
            match update_kind(o) {
                Update::Replace(doc) => {
                    c.replace_one(filter.clone(), doc).upsert(true).await.ctx(rs, what)?;
                }
                Update::Operators(upd) => {
                    c.update_one(filter.clone(), upd).await.ctx(rs, what)?;
                }
                Update::Diff(diff) => {
                    let found = c.find_one(filter.clone()).await.ctx(rs, what)?;
                    // Gone since (deleted later in the window): the delete
                    // entry follows; nothing to change now.
                    if let Some(mut doc) = found {
                        apply_diff(&mut doc, &diff).map_err(|why| MongoError::Invalid(format!("replica set {rs}: {}: {why}", what())))?;
                        c.replace_one(filter.clone(), doc).await.ctx(rs, what)?;
                    }
                }
            }
            applied.updates += 1;
        }
        _ => applied.skipped += 1,
    }
    Ok(())
}

fn code(e: &mongodb::error::Error) -> Option<i32> {
    match &*e.kind {
        mongodb::error::ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

#[derive(Debug, PartialEq)]
enum Update {
    Replace(Document),
    Operators(Document),
    Diff(Document),
}

/// How an update entry's `o` is to be applied.
fn update_kind(o: &Document) -> Update {
    if let (Ok(2), Ok(diff)) = (o.get_i32("$v").or_else(|_| o.get_i64("$v").map(|v| v as i32)), o.get_document("diff")) {
        return Update::Diff(diff.clone());
    }
    if !o.keys().any(|k| k.starts_with('$')) {
        return Update::Replace(o.clone());
    }
    // FerretDB logs every update as `$set` of the whole new document, `_id`
    // included (a real update never sets `_id`): that is a replacement, and
    // applying it as `$set` would keep fields the update removed.
    if let Ok(set) = o.get_document("$set") {
        if set.contains_key("_id") && o.keys().all(|k| k == "$set" || k == "$v") {
            return Update::Replace(set.clone());
        }
    }
    let mut ops = o.clone();
    ops.remove("$v");
    Update::Operators(ops)
}

/// Applies a `$v: 2` document diff: `d` (fields removed), `u` (fields set),
/// `i` (fields inserted), `s<field>` (a sub-diff of an object or, with
/// `a: true`, of an array: `u<n>` sets element n, `s<n>` diffs it, `l`
/// truncates or extends to a length).
pub fn apply_diff(doc: &mut Document, diff: &Document) -> std::result::Result<(), String> {
    for (k, v) in diff {
        match k.as_str() {
            "d" => {
                for f in v.as_document().ok_or("d is not a document")?.keys() {
                    doc.remove(f);
                }
            }
            "u" | "i" => {
                for (f, val) in v.as_document().ok_or("u/i is not a document")? {
                    doc.insert(f.clone(), val.clone());
                }
            }
            "a" => {}
            _ if k.starts_with('s') => {
                let field = &k[1..];
                let sub = v.as_document().ok_or("a sub-diff is not a document")?;
                match doc.get_mut(field) {
                    Some(Bson::Document(d)) if !sub.get_bool("a").unwrap_or(false) => apply_diff(d, sub)?,
                    Some(Bson::Array(a)) => apply_array_diff(a, sub)?,
                    _ => return Err(format!("sub-diff of {field}, which is not an object or array here")),
                }
            }
            other => return Err(format!("unknown diff section {other}")),
        }
    }
    Ok(())
}

fn apply_array_diff(a: &mut Vec<Bson>, diff: &Document) -> std::result::Result<(), String> {
    if let Some(l) = diff.get("l") {
        let len = match l {
            Bson::Int32(n) => *n as usize,
            Bson::Int64(n) => *n as usize,
            _ => return Err("l is not a number".into()),
        };
        a.resize(len, Bson::Null);
    }
    for (k, v) in diff {
        if k == "a" || k == "l" {
            continue;
        }
        let (kind, idx) = k.split_at(1);
        let idx: usize = idx.parse().map_err(|_| format!("array diff key {k}"))?;
        if idx >= a.len() {
            a.resize(idx + 1, Bson::Null);
        }
        match kind {
            "u" => a[idx] = v.clone(),
            "s" => {
                let sub = v.as_document().ok_or("an element sub-diff is not a document")?;
                match &mut a[idx] {
                    Bson::Document(d) if !sub.get_bool("a").unwrap_or(false) => apply_diff(d, sub)?,
                    Bson::Array(inner) => apply_array_diff(inner, sub)?,
                    _ => return Err(format!("sub-diff of element {idx}, which is not an object or array")),
                }
            }
            _ => return Err(format!("array diff key {k}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ferretdb_whole_document_set_is_a_replacement_and_real_set_is_not() {
        // As FerretDB v1.24.2 logged `replace_one({_id: 1}, {x: 9})` here.
        let ferret = doc! { "$v": 1, "$set": { "_id": 1, "x": 9 } };
        assert_eq!(update_kind(&ferret), Update::Replace(doc! { "_id": 1, "x": 9 }));
        let real = doc! { "$v": 1, "$set": { "a": 5 }, "$unset": { "b": true } };
        assert_eq!(update_kind(&real), Update::Operators(doc! { "$set": { "a": 5 }, "$unset": { "b": true } }));
        assert_eq!(update_kind(&doc! { "_id": 1, "y": 2 }), Update::Replace(doc! { "_id": 1, "y": 2 }));
        let v2 = doc! { "$v": 2, "diff": { "u": { "a": 1 } } };
        assert_eq!(update_kind(&v2), Update::Diff(doc! { "u": { "a": 1 } }));
    }

    #[test]
    fn v2_diffs_change_fields_objects_and_arrays() {
        let mut d = doc! { "_id": 1, "a": 1, "gone": true, "o": { "x": 1, "y": 2 }, "arr": [1, 2, 3, { "k": 1 }] };
        let diff = doc! {
            "d": { "gone": false },
            "u": { "a": 2 },
            "i": { "new": "v" },
            "so": { "u": { "x": 10 }, "d": { "y": false } },
            "sarr": { "a": true, "l": 4, "u0": 100, "s3": { "u": { "k": 2 } } },
        };
        apply_diff(&mut d, &diff).unwrap();
        assert_eq!(d, doc! { "_id": 1, "a": 2, "o": { "x": 10 }, "arr": [100, 2, 3, { "k": 2 }], "new": "v" });
        let mut t = doc! { "arr": [1, 2, 3] };
        apply_diff(&mut t, &doc! { "sarr": { "a": true, "l": 1 } }).unwrap();
        assert_eq!(t, doc! { "arr": [1] });
        let e = apply_diff(&mut doc! { "n": 1 }, &doc! { "sn": { "u": { "x": 1 } } }).unwrap_err();
        assert!(e.contains("not an object"), "{e}");
    }
}
