//! MongoDB backups against the real testbed server: FerretDB v1.24.2 (two
//! independent instances standing in for two replica sets, each with its
//! oplog emulation). No real mongod can be had on this machine; what needs
//! one (mongos, balancer, shard map) is listed untested in docs/mongodb.md.
//!
//! - every BSON type the server stores, unicode keys, arrays of documents,
//!   a document near the 16 MiB limit, and the indexes it accepts: backed
//!   up, verified, damaged and named, restored by database, as a renamed
//!   collection and by filter, compared byte for byte and index for index;
//! - writers inserting and updating numbered documents in both sets during
//!   the backup: each set restores a gap-free prefix of its writes ending
//!   exactly at the cut, and no write after it;
//! - bad input: a set that cannot be reached, one killed mid-backup, a
//!   conflicting target collection, a malformed or refused filter.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use testbed::fixture::SharedCell;
use testbed::Kind;
use tidemark_mongodb::mongodb::bson::{self, doc, spec::BinarySubtype, Binary, Bson, Document, RawDocumentBuf};
use tidemark_mongodb::mongodb::Client;

static MONGO: SharedCell = SharedCell::new(Kind::Mongodb, "TESTBED_MONGODB_ROOT", Some(2));

fn serial() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|e| e.into_inner())
}

fn uris() -> Vec<String> {
    let info: testbed::mongodb::Info = MONGO.get().info();
    info.uris
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn client(rt: &tokio::runtime::Runtime, uri: &str) -> Client {
    rt.block_on(Client::with_uri_str(uri)).unwrap()
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn tidemark(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(args)
        .env_remove("TIDEMARK_REPOSITORY")
        .env_remove("TIDEMARK_PASSWORD")
        .env("TIDEMARK_CACHE_DIR", dir.join("cache"))
        .output()
        .expect("running tidemark");
    Run { code: out.status.code().unwrap_or(-1), stdout: String::from_utf8_lossy(&out.stdout).into(), stderr: String::from_utf8_lossy(&out.stderr).into() }
}

fn ok(dir: &Path, args: &[&str]) -> Value {
    let r = tidemark(dir, args);
    assert_eq!(r.code, 0, "tidemark {args:?} failed:\n{}\n{}", r.stdout, r.stderr);
    serde_json::from_str(&r.stdout).unwrap_or(Value::Null)
}

/// A repository and a coordinator file naming the sets at `uris` "a", "b"...
fn setup(uris: &[String]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("pw"), "test password\n").unwrap();
    let mut text = format!(
        "name = \"shop\"\nrepository = \"{}\"\npassword-file = \"{}\"\n\n[mongodb]\nstep-timeout = \"20s\"\n",
        d.join("repo").display(),
        d.join("pw").display()
    );
    for (i, u) in uris.iter().enumerate() {
        let f = d.join(format!("uri{i}"));
        std::fs::write(&f, format!("{u}\n")).unwrap();
        text.push_str(&format!("\n[[mongodb.replica-set]]\nname = \"{}\"\nuri-file = \"{}\"\n", (b'a' + i as u8) as char, f.display()));
    }
    let config = d.join("m.toml");
    std::fs::write(&config, text).unwrap();
    let init = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["init", "--repo", d.join("repo").to_str().unwrap(), "--password-file", d.join("pw").to_str().unwrap(), "--insecure-test-kdf"])
        .env("TIDEMARK_CACHE_DIR", d.join("cache"))
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    (dir, config)
}

/// A collection as stored: its documents' bytes in _id order and its
/// index specs (without `v` and `ns`).
#[derive(Debug, PartialEq)]
struct Stored {
    docs: Vec<RawDocumentBuf>,
    indexes: Vec<Document>,
}

async fn stored(c: &Client, db: &str, coll: &str) -> Stored {
    let col = c.database(db).collection::<RawDocumentBuf>(coll);
    let mut cur = col.find(doc! {}).sort(doc! { "_id": 1 }).await.unwrap();
    let mut docs = Vec::new();
    while cur.advance().await.unwrap() {
        docs.push(cur.current().to_owned());
    }
    let mut indexes = Vec::new();
    let mut ic = c.database(db).run_cursor_command(doc! { "listIndexes": coll }).await.unwrap();
    use futures_util::StreamExt;
    while let Some(i) = ic.next().await {
        let mut i = i.unwrap();
        i.remove("v");
        i.remove("ns");
        indexes.push(i);
    }
    indexes.sort_by(|a, b| a.get_str("name").unwrap_or("").cmp(b.get_str("name").unwrap_or("")));
    Stored { docs, indexes }
}

fn bin(subtype: BinarySubtype, bytes: Vec<u8>) -> Bson {
    Bson::Binary(Binary { subtype, bytes })
}

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn typed_doc(i: i64) -> Document {
    doc! {
        "_id": i,
        "double": 1.5 * i as f64,
        "string": format!("ünïcødé текст {i}"),
        "doc": { "nested": { "deep": i, "list": [1, "two", 3.0] } },
        "array_of_docs": [ { "k": i }, { "k": -i, "more": [ { "x": 1 } ] } ],
        "bin_generic": bin(BinarySubtype::Generic, noise(i as u64, 100)),
        "uuid": bin(BinarySubtype::Uuid, noise(i as u64 + 7, 16)),
        "md5": bin(BinarySubtype::Md5, noise(i as u64 + 9, 16)),
        "user_bin": bin(BinarySubtype::UserDefined(0x80), vec![1, 2, 3]),
        "oid": bson::oid::ObjectId::from_bytes([i as u8; 12]),
        "bool": i % 2 == 0,
        "date_before_1970": bson::DateTime::from_millis(-2_000_000_000_000 + i),
        "date": bson::DateTime::from_millis(1_796_000_000_000 + i),
        "null": Bson::Null,
        "regex": Bson::RegularExpression(bson::Regex { pattern: format!("^a{i}.*b$"), options: "i".into() }),
        "int32": i as i32,
        "int64": i64::MAX - i,
        "timestamp": Bson::Timestamp(bson::Timestamp { time: 1_700_000_000, increment: i as u32 }),
        "ключ": "значение",
        "emoji 🎉": true,
    }
}

#[test]
fn every_type_and_index_round_trips_by_database_renamed_collection_and_filter_and_damage_is_named() {
    let _g = serial();
    let uris = uris();
    let rt = rt();
    let a = client(&rt, &uris[0]);
    let (dir, config) = setup(&uris);
    let d = dir.path();
    let cfg = config.to_str().unwrap();
    let db = a.database("types_t");
    rt.block_on(async {
        db.drop().await.unwrap();
        let things = db.collection::<Document>("things");
        things.insert_many((0..300).map(typed_doc)).await.unwrap();
        // A document near the 16 MiB limit.
        things.insert_one(doc! { "_id": 1_000_000i64, "big": bin(BinarySubtype::Generic, noise(99, 16 * 1024 * 1024 - 4096)) }).await.unwrap();
        // Decimal128 is a type FerretDB v1 does not store: it must refuse,
        // not store something else (docs/mongodb.md says so).
        let dec = bson::Decimal128::from_bytes([1; 16]);
        assert!(db.collection::<Document>("refused").insert_one(doc! { "d": dec }).await.is_err(), "FerretDB stored a Decimal128: update the docs and this test");
    });
    // Indexes: those the server takes must come back; those it refuses are named.
    let wanted = [
        doc! { "key": { "string": 1 }, "name": "string_unique", "unique": true },
        doc! { "key": { "int32": 1, "date": -1 }, "name": "compound" },
        doc! { "key": { "date": 1 }, "name": "ttl", "expireAfterSeconds": 3_000_000_000i64 },
        doc! { "key": { "int64": 1 }, "name": "partial", "partialFilterExpression": { "bool": true } },
        doc! { "key": { "double": -1 }, "name": "sparse", "sparse": true },
    ];
    let mut refused = Vec::new();
    for spec in &wanted {
        let r = rt.block_on(async { db.run_command(doc! { "createIndexes": "things", "indexes": [spec.clone()] }).await });
        if let Err(e) = r {
            refused.push(format!("{}: {e}", spec.get_str("name").unwrap()));
        }
    }
    eprintln!("indexes FerretDB refused: {refused:#?}");
    // FerretDB v1.24.2 refuses TTL and partial indexes (NotImplemented);
    // docs/mongodb.md says so. Any change in what it takes fails here, so
    // the test and the docs are widened instead of passing by skipping.
    let refused_names: Vec<&str> = refused.iter().map(|r| r.split(':').next().unwrap()).collect();
    assert_eq!(refused_names, ["ttl", "partial"], "{refused:#?}");
    let before = rt.block_on(stored(&a, "types_t", "things"));
    assert_eq!(before.docs.len(), 301);

    let b = ok(d, &["cluster", "backup", "--config", cfg, "--json"]);
    let id = b["id"].as_str().unwrap().to_string();
    let v = tidemark(d, &["cluster", "verify", "--config", cfg, &id, "--read-data"]);
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
    assert!(v.stdout.contains("no damage"), "{}", v.stdout);

    // The whole database, after it was dropped.
    rt.block_on(async { db.drop().await.unwrap() });
    ok(d, &["cluster", "restore", "--config", cfg, &id, "--database", "types_t"]);
    assert_eq!(rt.block_on(stored(&a, "types_t", "things")), before, "database restore differs");

    // The collection under another name, beside the live one.
    ok(d, &["cluster", "restore", "--config", cfg, &id, "--collection", "types_t.things", "--rename-to", "types_t.things_copy"]);
    assert_eq!(rt.block_on(stored(&a, "types_t", "things_copy")), before, "renamed restore differs");

    // Documents by filter, into the live collection: only they change.
    rt.block_on(async {
        let t = db.collection::<Document>("things");
        t.update_one(doc! { "_id": 3i64 }, doc! { "$set": { "string": "broken" }, "$unset": { "doc": "" } }).await.unwrap();
        t.delete_one(doc! { "_id": 4i64 }).await.unwrap();
        t.update_one(doc! { "_id": 10i64 }, doc! { "$set": { "string": "kept as it is now" } }).await.unwrap();
    });
    let r = ok(d, &["cluster", "restore", "--config", cfg, &id, "--collection", "types_t.things", "--filter", r#"{"_id": {"$in": [3, 4]}}"#, "--json"]);
    assert_eq!(r["sets"][0]["collections"][0]["documents"], 2, "{r}");
    let now = rt.block_on(stored(&a, "types_t", "things"));
    assert_eq!(now.docs.len(), before.docs.len());
    for (x, y) in now.docs.iter().zip(&before.docs) {
        let id = x.get_i64("_id").unwrap();
        if id == 10 {
            assert_ne!(x, y, "the filter restored a document it does not match");
        } else {
            assert_eq!(x, y, "document {id} differs after the filtered restore");
        }
    }
    let names: Vec<String> = rt.block_on(async { db.list_collection_names().await.unwrap() });
    assert!(!names.iter().any(|n| n.starts_with("tidemark_restore_")), "scratch collection left behind: {names:?}");

    // Damage: every data pack gets a flipped byte; verify names the collection.
    let mut packs = Vec::new();
    for e in walk(&d.join("repo").join("data")) {
        if std::fs::metadata(&e).unwrap().len() > 4096 {
            packs.push(e);
        }
    }
    assert!(!packs.is_empty());
    for p in &packs {
        let mut bytes = std::fs::read(p).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x5a;
        std::fs::write(p, bytes).unwrap();
    }
    let v = tidemark(d, &["cluster", "verify", "--config", cfg, &id, "--read-data"]);
    assert_eq!(v.code, 3, "{}{}", v.stdout, v.stderr);
    assert!(v.stdout.contains("damaged: a/") || v.stdout.contains("damaged: a "), "{}", v.stdout);
    let r = tidemark(d, &["cluster", "restore", "--config", cfg, &id, "--collection", "types_t.things", "--rename-to", "types_t.from_damaged"]);
    assert_ne!(r.code, 0, "a restore from damaged packs succeeded:\n{}", r.stdout);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Each set's writes to w.log as its oplog has them: (op, _id, time).
async fn writes(c: &Client) -> Vec<(String, i64, bson::Timestamp)> {
    let o = c.database("local").collection::<Document>("oplog.rs");
    let mut cur = o.find(doc! { "ns": "w.log" }).await.unwrap();
    let mut out = Vec::new();
    while cur.advance().await.unwrap() {
        let e = cur.deserialize_current().unwrap();
        let op = e.get_str("op").unwrap().to_string();
        let id = match op.as_str() {
            "u" => e.get_document("o2").unwrap().get_i64("_id").unwrap(),
            _ => e.get_document("o").unwrap().get_i64("_id").unwrap(),
        };
        out.push((op, id, e.get_timestamp("ts").unwrap()));
    }
    out
}

#[test]
fn writes_during_the_backup_restore_as_a_gap_free_prefix_ending_at_the_cut() {
    let _g = serial();
    let uris = uris();
    let rt = rt();
    let clients: Vec<Client> = uris.iter().map(|u| client(&rt, u)).collect();
    let (dir, config) = setup(&uris);
    let d = dir.path();
    let cfg = config.to_str().unwrap();
    rt.block_on(async {
        for c in &clients {
            c.database("w").drop().await.unwrap();
            // Enough documents that the copy takes a while.
            let big = "x".repeat(2000);
            let log = c.database("w").collection::<Document>("log");
            log.insert_many((0..3000i64).map(|i| doc! { "_id": -1 - i, "pad": &big })).await.unwrap();
        }
    });
    // Writers: insert n, then mark n-1 updated; both sets at once.
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = clients
        .iter()
        .cloned()
        .map(|c| {
            let stop = stop.clone();
            rt.spawn(async move {
                let log = c.database("w").collection::<Document>("log");
                let mut n = 0i64;
                while !stop.load(Ordering::SeqCst) {
                    log.insert_one(doc! { "_id": n, "updated": false }).await.unwrap();
                    if n > 0 {
                        log.update_one(doc! { "_id": n - 1 }, doc! { "$set": { "updated": true } }).await.unwrap();
                    }
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let b = ok(d, &["cluster", "backup", "--config", cfg, "--json"]);
    let id = b["id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(2500));
    stop.store(true, Ordering::SeqCst);
    let written: Vec<i64> = handles.into_iter().map(|h| rt.block_on(h).unwrap()).collect();
    let logs: Vec<_> = clients.iter().map(|c| rt.block_on(writes(c))).collect();

    let r = ok(d, &["cluster", "restore", "--config", cfg, &id, "--database", "w", "--drop", "--json"]);
    let cut = bson::Timestamp { time: r["cut_ts"]["t"].as_u64().unwrap() as u32, increment: r["cut_ts"]["i"].as_u64().unwrap() as u32 };
    let le = |t: &bson::Timestamp| (t.time, t.increment) <= (cut.time, cut.increment);
    for (s, (c, log)) in clients.iter().zip(&logs).enumerate() {
        let mut got: Vec<(i64, bool)> = rt.block_on(async {
            let mut cur = c.database("w").collection::<Document>("log").find(doc! { "_id": { "$gte": 0i64 } }).await.unwrap();
            let mut v = Vec::new();
            while cur.advance().await.unwrap() {
                let d = cur.deserialize_current().unwrap();
                v.push((d.get_i64("_id").unwrap(), d.get_bool("updated").unwrap()));
            }
            v
        });
        got.sort();
        let inserted: Vec<i64> = log.iter().filter(|(op, id, t)| op == "i" && *id >= 0 && le(t)).map(|x| x.1).collect();
        let after = log.iter().filter(|(op, id, t)| op == "i" && *id >= 0 && !le(t)).count();
        assert!(after > 0, "set {s}: no write after the cut; the test proves nothing (written {})", written[s]);
        assert!(!inserted.is_empty(), "set {s}: no write before the cut");
        let ids: Vec<i64> = got.iter().map(|x| x.0).collect();
        let expect: Vec<i64> = (0..ids.len() as i64).collect();
        assert_eq!(ids, expect, "set {s}: not a gap-free prefix");
        let mut want = inserted.clone();
        want.sort();
        assert_eq!(ids, want, "set {s}: the restore holds other writes than those up to the cut {cut}");
        for (id, updated) in &got {
            let upd = log.iter().any(|(op, i, t)| op == "u" && i == id && le(t));
            assert_eq!(*updated, upd, "set {s}: document {id}'s update is {} the cut", if upd { "before" } else { "after" });
        }
        eprintln!("set {s}: {} writes up to the cut {cut}, {after} after it; {} documents updated in the restore", inserted.len(), got.iter().filter(|x| x.1).count());
        let pre: u64 = rt.block_on(async { c.database("w").collection::<Document>("log").count_documents(doc! { "_id": { "$lt": 0i64 } }).await.unwrap() });
        assert_eq!(pre, 3000, "set {s}: documents from before the backup");
    }
}

#[test]
fn bad_input_is_refused_with_the_cause_named_and_nothing_listed() {
    let _g = serial();
    let uris = uris();
    let rt = rt();
    let a = client(&rt, &uris[0]);
    // A set nobody listens for.
    let dead = format!("mongodb://127.0.0.1:{}/?directConnection=true", free_port());
    let (dir, config) = setup(&[uris[0].clone(), dead]);
    let d = dir.path();
    let cfg = config.to_str().unwrap();
    let r = tidemark(d, &["cluster", "backup", "--config", cfg]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("replica set #2") || r.stderr.contains("replica set b"), "{}", r.stderr);
    let l = ok(d, &["cluster", "list", "--config", cfg, "--json"]);
    assert_eq!(l.as_array().unwrap().len(), 0, "{l}");

    // Conflicts, filters and names on a good backup.
    let (dir, config) = setup(&uris[..1]);
    let d = dir.path();
    let cfg = config.to_str().unwrap();
    rt.block_on(async {
        a.database("bad_t").drop().await.unwrap();
        a.database("bad_t").collection::<Document>("c").insert_many((0..50i64).map(|i| doc! { "_id": i })).await.unwrap();
    });
    let id = ok(d, &["cluster", "backup", "--config", cfg, "--json"])["id"].as_str().unwrap().to_string();
    rt.block_on(async { a.database("bad_t").collection::<Document>("c").insert_one(doc! { "_id": 99i64 }).await.unwrap() });
    let r = tidemark(d, &["cluster", "restore", "--config", cfg, &id, "--collection", "bad_t.c"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("bad_t.c exists") && r.stderr.contains("--drop"), "{}", r.stderr);
    let n = rt.block_on(async { a.database("bad_t").collection::<Document>("c").count_documents(doc! {}).await.unwrap() });
    assert_eq!(n, 51, "a refused restore changed the collection");
    for (filter, says) in [(r#"{"_id": "#, "not JSON"), (r#"[1, 2]"#, "JSON object"), (r#"{"_id": {"$bogus": 1}}"#, "refused by the server")] {
        let r = tidemark(d, &["cluster", "restore", "--config", cfg, &id, "--collection", "bad_t.c", "--filter", filter]);
        assert_ne!(r.code, 0);
        assert!(r.stderr.contains(says), "{filter}: {}", r.stderr);
    }
    let r = tidemark(d, &["cluster", "restore", "--config", cfg, &id, "--collection", "bad_t.nope"]);
    assert!(r.code != 0 && r.stderr.contains("not in backup"), "{}", r.stderr);
    let n = rt.block_on(async { a.database("bad_t").collection::<Document>("c").count_documents(doc! {}).await.unwrap() });
    assert_eq!(n, 51);
}

#[test]
fn a_set_killed_mid_backup_fails_the_backup_naming_it_and_lists_nothing() {
    let _g = serial();
    let shared = MONGO.get();
    let opts = testbed::UpOptions { name: Some("killed".into()), nodes: Some(1), ..Default::default() };
    let info = testbed::mongodb::start(&shared.root, &opts).unwrap();
    let rt = rt();
    let c = client(&rt, &info.uris[0]);
    rt.block_on(async {
        let pad = "y".repeat(4000);
        let big = c.database("slow").collection::<Document>("c");
        for chunk in 0..20i64 {
            big.insert_many((0..2000i64).map(|i| doc! { "_id": chunk * 2000 + i, "pad": &pad })).await.unwrap();
        }
    });
    let (dir, config) = setup(&[MONGO.get().info::<testbed::mongodb::Info>().uris[0].clone(), info.uris[0].clone()]);
    let d = dir.path().to_path_buf();
    let cfg = config.to_str().unwrap().to_string();
    let child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["cluster", "backup", "--config", &cfg])
        .env("TIDEMARK_CACHE_DIR", d.join("cache"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    shared.root.stop_cluster("killed").unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the backup succeeded although set b was killed:\n{err}");
    assert!(err.contains("replica set b"), "{err}");
    let l = ok(&d, &["cluster", "list", "--config", &cfg, "--json"]);
    assert_eq!(l.as_array().unwrap().len(), 0, "{l}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
