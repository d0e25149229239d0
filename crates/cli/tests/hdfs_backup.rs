//! HDFS backups against a real HDFS 3.5.0 (NameNode + 3 DataNodes, a
//! `tidemark agent` beside each): an awkward tree backed up, damaged and
//! restored file by file, by subtree and whole, compared byte for byte and
//! attribute for attribute; an incremental backup after 1% of the files
//! changed and a 1,000-file directory was renamed reads only the changed
//! bytes; the whole backup restored onto a second HDFS with 2 DataNodes;
//! bad input refused with the cause named and nothing listed; a DataNode or
//! an agent killed mid-backup; entries the backup user may not read, and
//! safe mode, on a cluster that checks permissions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use testbed::fixture::SharedCell;
use testbed::hdfs::Info;
use testbed::Kind;
use tidemark_hdfs::webhdfs::{CreateOptions, EntryKind, WebHdfs};

static HDFS: SharedCell = SharedCell::with_agents(Kind::Hdfs, "TESTBED_HDFS_ROOT", Some(3), env!("CARGO_BIN_EXE_tidemark"));

fn serial() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|e| e.into_inner())
}

fn info() -> Info {
    std::env::set_var("TIDEMARK_INSECURE_TEST_KDF", "1");
    HDFS.get().info()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn client(info: &Info) -> WebHdfs {
    WebHdfs::new(std::slice::from_ref(&info.webhdfs), &testbed::hdfs::agents::user(), Duration::from_secs(60))
}

/// A copy of the testbed's coordinator file with another name and root.
fn config_for(info: &Info, name: &str, root: &str, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(info.tidemark_config.as_ref().expect("started with agents")).unwrap();
    let text = text
        .replace("name = \"testbed-hdfs\"", &format!("name = \"{name}\""))
        .replace("roots = [\"/data\"]", &format!("roots = [\"{root}\"]"));
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn tidemark(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(args)
        .env_remove("TIDEMARK_REPOSITORY")
        .env_remove("TIDEMARK_PASSWORD")
        .output()
        .expect("running tidemark");
    Run { code: out.status.code().unwrap_or(-1), stdout: String::from_utf8_lossy(&out.stdout).into(), stderr: String::from_utf8_lossy(&out.stderr).into() }
}

fn ok(args: &[&str]) -> Value {
    let r = tidemark(args);
    assert_eq!(r.code, 0, "tidemark {args:?} failed:\n{}\n{}", r.stdout, r.stderr);
    serde_json::from_str(&r.stdout).unwrap_or(Value::Null)
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

/// What a path holds: bytes (files) and the attributes a restore must bring back.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    kind: EntryKind,
    data: Option<Vec<u8>>,
    owner: String,
    group: String,
    permission: String,
    replication: u16,
    block_size: u64,
    mtime: i64,
    acl: Vec<String>,
    xattrs: Vec<(String, String)>,
}

/// Every entry below `dir`, by path relative to it.
async fn model(h: &WebHdfs, dir: &str) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut todo = vec![String::new()];
    while let Some(rel) = todo.pop() {
        let abs = if rel.is_empty() { dir.to_string() } else { format!("{dir}/{rel}") };
        for s in h.list(&abs).await.unwrap() {
            let r = if rel.is_empty() { s.path_suffix.clone() } else { format!("{rel}/{}", s.path_suffix) };
            let p = format!("{dir}/{r}");
            let data = if s.kind == EntryKind::File {
                let resp = if s.length == 0 { None } else { Some(h.open(&p, s.length, &[]).await.map_err(|(e, _)| e).unwrap()) };
                match resp {
                    Some(resp) => Some(resp.bytes().await.unwrap().to_vec()),
                    None => Some(Vec::new()),
                }
            } else {
                todo.push(r.clone());
                None
            };
            let acl = if s.acl_bit { h.acl(&p).await.unwrap().entries } else { Vec::new() };
            out.insert(
                r,
                Entry {
                    kind: s.kind,
                    data,
                    owner: s.owner.clone(),
                    group: s.group.clone(),
                    permission: s.permission.clone(),
                    replication: s.replication,
                    block_size: s.block_size,
                    // Directories' times move when children are added; files' must match.
                    mtime: if s.kind == EntryKind::File { s.modification_time } else { 0 },
                    acl,
                    xattrs: h.xattrs(&p).await.unwrap(),
                },
            );
        }
    }
    out
}

async fn put(h: &WebHdfs, path: &str, data: Vec<u8>, replication: Option<u16>, block_size: Option<u64>) {
    let opts = CreateOptions { overwrite: true, permission: 0o644, replication, block_size };
    h.create(path, &opts, reqwest::Body::from(data), &[]).await.map_err(|(e, _)| e).unwrap();
}

fn assert_same(want: &BTreeMap<String, Entry>, got: &BTreeMap<String, Entry>, what: &str) {
    let wk: Vec<&String> = want.keys().collect();
    let gk: Vec<&String> = got.keys().collect();
    assert_eq!(wk, gk, "{what}: different paths");
    for (k, w) in want {
        let g = &got[k];
        assert!(w.data == g.data, "{what}: {k}: bytes differ");
        assert_eq!((w.kind, &w.owner, &w.group, &w.permission), (g.kind, &g.owner, &g.group, &g.permission), "{what}: {k}");
        assert_eq!((w.block_size, w.mtime, &w.acl, &w.xattrs), (g.block_size, g.mtime, &g.acl, &g.xattrs), "{what}: {k}");
    }
}

/// The awkward tree under `root`.
async fn build(h: &WebHdfs, root: &str) {
    h.mkdirs(root, 0o755).await.unwrap();
    put(h, &format!("{root}/a dir/ünï cödé file.txt"), b"caf\xc3\xa9 ".repeat(500), None, None).await;
    put(h, &format!("{root}/a dir/empty"), Vec::new(), None, None).await;
    let deep = format!("{root}/d1/d2/d3/d4/d5/d6/d7/d8");
    put(h, &format!("{deep}/leaf with spaces"), noise(1, 3000), None, None).await;
    // Bigger than its 1 MiB block: three blocks on different DataNodes.
    put(h, &format!("{root}/big/blocks.bin"), noise(2, 2_500_000), Some(2), Some(1 << 20)).await;
    put(h, &format!("{root}/r1.bin"), noise(3, 10_000), Some(1), None).await;
    put(h, &format!("{root}/r3.bin"), noise(4, 10_000), Some(3), None).await;
    // Owners, permissions, ACLs and xattrs.
    let secret = format!("{root}/secure/ledger.csv");
    put(h, &secret, b"id,amount\n1,10\n".to_vec(), None, None).await;
    h.set_owner(&secret, "alice", "analysts").await.unwrap();
    h.set_permission(&secret, 0o640).await.unwrap();
    h.modify_acl(&secret, "user:bob:r--").await.unwrap();
    h.set_permission(&format!("{root}/secure"), 0o750).await.unwrap();
    h.modify_acl(&format!("{root}/secure"), "default:group:auditors:r-x").await.unwrap();
    h.set_xattr(&secret, "user.origin", "0x6c6564676572", false).await.unwrap();
    h.set_xattr(&format!("{root}/a dir"), "user.team", "0x6574", false).await.unwrap();
    h.mkdirs(&format!("{root}/tmp"), 0o1777).await.unwrap();
    h.set_permission(&format!("{root}/tmp"), 0o1777).await.unwrap();
    // 1,000 small files in one directory, and 100 more files elsewhere.
    let many: Vec<_> = (0..1000).map(|i| (format!("{root}/many/part-{i:05}"), noise(100 + i, 200))).collect();
    futures_util::future::join_all(many.into_iter().map(|(p, d)| async move { put(h, &p, d, None, None).await })).await;
    for i in 0..100 {
        put(h, &format!("{root}/logs/log-{i:03}.txt"), format!("line {i}\n").repeat(20).into_bytes(), None, None).await;
    }
}

#[test]
fn backup_damage_restore_incremental_and_another_cluster() {
    let _s = serial();
    let info = info();
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let h = client(&info);
    let root = "/t1";
    let config = config_for(&info, "t1", root, dir.path());
    let c = config.to_str().unwrap();
    rt.block_on(build(&h, root));
    let before = rt.block_on(model(&h, root));

    let first = ok(&["cluster", "backup", "--config", c, "--json"]);
    let total: u64 = before.values().filter_map(|e| e.data.as_ref()).map(|d| d.len() as u64).sum();
    assert_eq!(first["total_bytes"].as_u64(), Some(total));
    assert_eq!(first["bytes_read"].as_u64(), Some(total), "a first backup reads everything");

    // Incremental: 11 of the 1,108 files change (1%), the 1,000-file directory is renamed.
    let mut changed = 0u64;
    rt.block_on(async {
        for i in 0..10 {
            let d = format!("line {i} changed\n").into_bytes();
            changed += d.len() as u64;
            put(&h, &format!("{root}/logs/log-{i:03}.txt"), d, None, None).await;
        }
        let d = noise(9, 5000);
        changed += d.len() as u64;
        put(&h, &format!("{root}/logs/new.bin"), d, None, None).await;
        assert!(h.rename(&format!("{root}/many"), &format!("{root}/archive")).await.unwrap());
    });
    let second = ok(&["cluster", "backup", "--config", c, "--json"]);
    assert_eq!(second["bytes_read"].as_u64(), Some(changed), "only the changed bytes are read: {second}");
    let after_incremental = rt.block_on(model(&h, root));
    let total_now: u64 = after_incremental.values().filter_map(|e| e.data.as_ref()).map(|d| d.len() as u64).sum();
    assert_eq!(second["total_bytes"].as_u64(), Some(total_now), "the renamed tree, reused unread, still counts");
    let listing = ok(&["cluster", "list", "--config", c, "--json"]);
    assert_eq!(listing.as_array().unwrap().len(), 2);

    // Damage: a directory deleted, files overwritten, a tree renamed.
    rt.block_on(async {
        assert!(h.delete(&format!("{root}/secure"), true).await.unwrap());
        put(&h, &format!("{root}/a dir/ünï cödé file.txt"), b"overwritten".to_vec(), None, None).await;
        put(&h, &format!("{root}/big/blocks.bin"), b"short".to_vec(), None, None).await;
        assert!(h.rename(&format!("{root}/d1"), &format!("{root}/moved")).await.unwrap());
    });
    let first_id = first["id"].as_str().unwrap();
    // One file, onto the damaged one: refused without --overwrite, then done.
    let file = format!("{root}/a dir/ünï cödé file.txt");
    let refused = tidemark(&["cluster", "restore", "--config", c, first_id, "--path", &file]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("--overwrite"), "{}", refused.stderr);
    ok(&["cluster", "restore", "--config", c, first_id, "--path", &file, "--overwrite", "--json"]);
    let big = format!("{root}/big/blocks.bin");
    let r = ok(&["cluster", "restore", "--config", c, first_id, "--path", &big, "--overwrite", "--json"]);
    assert_eq!(r["checksums_matched"].as_u64(), Some(1), "{r}");
    // One subtree: the deleted directory, with its owners, ACLs and xattrs.
    ok(&["cluster", "restore", "--config", c, first_id, "--path", &format!("{root}/secure"), "--json"]);
    // The renamed tree back at its place.
    ok(&["cluster", "restore", "--config", c, first_id, "--path", &format!("{root}/d1"), "--json"]);
    let now = rt.block_on(model(&h, root));
    for k in ["a dir/ünï cödé file.txt", "big/blocks.bin", "secure", "secure/ledger.csv", "d1/d2/d3/d4/d5/d6/d7/d8/leaf with spaces"] {
        let (w, g) = (&before[k], &now[k]);
        assert!(w.data == g.data, "{k}: bytes differ");
        assert_eq!(w, g, "{k} differs after its restore");
    }

    // The whole root of the incremental backup, under another path.
    let r = ok(&["cluster", "restore", "--config", c, second["id"].as_str().unwrap(), "--target-path", "/restored-t1", "--json"]);
    assert!(r["failed"].as_array().unwrap().is_empty(), "{r}");
    let restored = rt.block_on(model(&h, "/restored-t1/t1"));
    assert_same(&after_incremental, &restored, "whole root");

    // The whole backup onto a second HDFS with 2 DataNodes.
    let shared = HDFS.get();
    let other = testbed::hdfs::start(
        &shared.root,
        &testbed::UpOptions { name: Some("other".into()), nodes: Some(2), with_agents: true, tidemark_bin: Some(env!("CARGO_BIN_EXE_tidemark").into()), ..Default::default() },
    )
    .unwrap();
    let other_config = config_for(&other, "other", root, dir.path());
    let r = ok(&["cluster", "restore", "--config", c, "latest", "--target-config", other_config.to_str().unwrap(), "--json"]);
    assert!(r["failed"].as_array().unwrap().is_empty(), "{r}");
    assert!(r["notes"].to_string().contains("replication"), "r3.bin's replication 3 is capped at 2: {r}");
    let oh = client(&other);
    let on_other = rt.block_on(model(&oh, root));
    assert_same(&after_incremental, &on_other, "other cluster");
    let r3 = rt.block_on(oh.status(&format!("{root}/r3.bin"))).unwrap();
    assert_eq!(r3.replication, 2);

    let v = tidemark(&["cluster", "verify", "--config", c, "latest", "--read-data"]);
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
}

#[test]
fn bad_input_is_refused_and_nothing_is_listed() {
    let _s = serial();
    let info = info();
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let h = client(&info);
    rt.block_on(async {
        h.mkdirs("/t2/x", 0o755).await.unwrap();
        put(&h, "/t2/x/f", b"x".to_vec(), None, None).await;
    });
    // NameNode down (nothing listens there).
    let config = config_for(&info, "t2", "/t2", dir.path());
    let text = std::fs::read_to_string(&config).unwrap().replace(&info.webhdfs, "http://127.0.0.1:9");
    let down = dir.path().join("down.toml");
    std::fs::write(&down, text).unwrap();
    let r = tidemark(&["cluster", "backup", "--config", down.to_str().unwrap()]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("no active NameNode") && r.stderr.contains("127.0.0.1:9"), "{}", r.stderr);
    // A root that is not snapshottable, when tidemark may not make it so.
    let text = std::fs::read_to_string(&config).unwrap().replace("roots = [\"/t2\"]", "roots = [\"/t2\"]\nallow-snapshot = false");
    let refuse = dir.path().join("refuse.toml");
    std::fs::write(&refuse, text).unwrap();
    let r = tidemark(&["cluster", "backup", "--config", refuse.to_str().unwrap()]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("hdfs dfsadmin -allowSnapshot /t2"), "{}", r.stderr);
    // A root that does not exist.
    let missing = config_for(&info, "t2-missing", "/no-such-root", dir.path());
    let r = tidemark(&["cluster", "backup", "--config", missing.to_str().unwrap()]);
    assert!(r.code != 0 && r.stderr.contains("/no-such-root does not exist"), "{}", r.stderr);
    // A malformed file names the field.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, std::fs::read_to_string(&config).unwrap().replace("roots = [\"/t2\"]", "roots = [\"t2/\"]")).unwrap();
    let r = tidemark(&["cluster", "backup", "--config", bad.to_str().unwrap()]);
    assert!(r.code != 0 && r.stderr.contains("hdfs.roots[0]"), "{}", r.stderr);
    // None of them left a backup or a snapshot behind.
    let l = ok(&["cluster", "list", "--config", config.to_str().unwrap(), "--json"]);
    assert_eq!(l.as_array().map(Vec::len), Some(0), "{l}");
    let snaps = rt.block_on(h.status("/t2")).unwrap();
    if snaps.snapshot_enabled == Some(true) {
        assert!(rt.block_on(h.snapshots("/t2")).unwrap().is_empty());
    }
}

/// A file still being written while the backup runs is stored with the
/// length the snapshot gave it, and those bytes are the final file's prefix.
#[test]
fn a_file_being_written_is_stored_with_its_snapshot_length() {
    let _s = serial();
    let info = info();
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let h = std::sync::Arc::new(client(&info));
    let config = config_for(&info, "t3", "/t3", dir.path());
    let c = config.to_str().unwrap().to_string();
    let data = noise(77, 3 * 1024 * 1024 + 12345);
    rt.block_on(h.mkdirs("/t3", 0o755)).unwrap();
    rt.block_on(put(&h, "/t3/steady", noise(78, 1000), None, None));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let writer = {
        let h = h.clone();
        rt.spawn(async move {
            let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) }));
            let opts = CreateOptions { overwrite: true, permission: 0o644, replication: Some(1), block_size: Some(1 << 20) };
            h.create("/t3/growing", &opts, body, &[]).await.map_err(|(e, _)| e)
        })
    };
    // Two whole blocks and a part of the third before the backup.
    let cut = 2 * 1024 * 1024 + 300_000;
    for piece in data[..cut].chunks(64 * 1024) {
        rt.block_on(tx.send(Ok(bytes::Bytes::copy_from_slice(piece)))).unwrap();
    }
    std::thread::sleep(Duration::from_secs(2));
    let b = ok(&["cluster", "backup", "--config", &c, "--json"]);
    for piece in data[cut..].chunks(64 * 1024) {
        rt.block_on(tx.send(Ok(bytes::Bytes::copy_from_slice(piece)))).unwrap();
    }
    drop(tx);
    rt.block_on(writer).unwrap().unwrap();
    let tag = b["tag"].as_str().unwrap();
    let in_snapshot = rt.block_on(h.status(&format!("/t3/.snapshot/{tag}/growing"))).unwrap().length;
    assert!(in_snapshot < data.len() as u64, "the snapshot saw the whole file: {in_snapshot}");
    let r = ok(&["cluster", "restore", "--config", &c, b["id"].as_str().unwrap(), "--path", "/t3/growing", "--target-path", "/restored-t3", "--json"]);
    assert!(r["failed"].as_array().unwrap().is_empty(), "{r}");
    let back = rt.block_on(model(&h, "/restored-t3"));
    let got = back["growing"].data.as_ref().unwrap();
    assert_eq!(got.len() as u64, in_snapshot, "stored with exactly the snapshot's length");
    assert!(got[..] == data[..got.len()], "the stored bytes are the file's prefix");
}

/// A DataNode killed while the agents read is read around (the files have
/// other replicas); an agent killed mid-backup fails the backup, which then
/// leaves no backup listed and no snapshot of its own behind.
#[test]
fn datanode_or_agent_killed_mid_backup() {
    let _s = serial();
    std::env::set_var("TIDEMARK_INSECURE_TEST_KDF", "1");
    let shared = HDFS.get();
    let bin: PathBuf = env!("CARGO_BIN_EXE_tidemark").into();
    // A cluster of its own: this test kills its processes.
    let info = testbed::hdfs::start(
        &shared.root,
        &testbed::UpOptions { name: Some("faults".into()), nodes: Some(3), with_agents: true, tidemark_bin: Some(bin), ..Default::default() },
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let h = client(&info);
    let config = config_for(&info, "faults", "/f", dir.path());
    // One file per request and one request per agent: the backup takes long
    // enough to be caught in the middle.
    let text = std::fs::read_to_string(&config).unwrap() + "\n[backup]\nbatch-files = 1\nin-flight = 1\n";
    std::fs::write(&config, text).unwrap();
    let c = config.to_str().unwrap().to_string();
    let files: Vec<(String, Vec<u8>)> = (0..120).map(|i| (format!("/f/part-{i:04}"), noise(500 + i, 1 << 20))).collect();
    rt.block_on(async {
        h.mkdirs("/f", 0o755).await.unwrap();
        for chunk in files.chunks(8) {
            futures_util::future::join_all(chunk.iter().map(|(p, d)| put(&h, p, d.clone(), Some(3), None))).await;
        }
    });
    let token = std::fs::read_to_string(&info.tidemark.as_ref().unwrap().token_file).unwrap();
    let sessions_open = |n: usize| -> bool {
        let a = &info.agents[n - 1];
        let r = testbed::http::get_with_headers(a.listen, "/v1/status", &[("Authorization", &format!("Bearer {}", token.trim()))], Duration::from_secs(10));
        r.is_ok_and(|r| r.body.contains("tidemark-"))
    };
    let run_and_kill = |process: &str| -> Run {
        let c2 = c.clone();
        let child = std::thread::spawn(move || tidemark(&["cluster", "backup", "--config", &c2, "--json"]));
        let t0 = std::time::Instant::now();
        while !sessions_open(1) && t0.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(700));
        shared.root.stop_process("faults", process).unwrap();
        child.join().unwrap()
    };

    // An agent dies: the backup fails naming it; nothing is listed and its
    // snapshot is gone.
    let r = run_and_kill("agent1");
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(r.stderr.contains("datanode1"), "the error names the agent: {}", r.stderr);
    let l = ok(&["cluster", "list", "--config", &c, "--json"]);
    assert_eq!(l.as_array().unwrap().len(), 0, "nothing is listed: {l}");
    assert!(rt.block_on(h.snapshots("/f")).unwrap().is_empty(), "the failed backup's snapshot was released");
    testbed::hdfs::agents::start_agent(&shared.root, &info, 1).unwrap();

    // A DataNode dies: the backup completes from the other replicas.
    let r = run_and_kill("datanode2");
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let v = tidemark(&["cluster", "verify", "--config", &c, "latest", "--read-data"]);
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
    let restored = ok(&["cluster", "restore", "--config", &c, "latest", "--target-path", "/back", "--json"]);
    assert!(restored["failed"].as_array().unwrap().is_empty(), "{restored}");
    let back = rt.block_on(model(&h, "/back/f"));
    for (p, d) in &files {
        let name = p.rsplit('/').next().unwrap();
        assert!(back[name].data.as_deref() == Some(&d[..]), "{name} differs");
    }
    shared.root.stop_cluster("faults").unwrap();
}

/// On a cluster that checks permissions, tidemark acting as a user that is
/// not the superuser: a file it may not read and a directory it may not
/// list are named, the backup exits 3 and stores the rest (verified and
/// restored byte for byte); the next backup cannot have a snapshot diff
/// (HDFS gives one only to a user who may read the whole tree) and says
/// so; a NameNode in safe mode is refused with the command that ends it,
/// and nothing is listed for it.
#[test]
fn unreadable_entries_and_safe_mode() {
    let _s = serial();
    std::env::set_var("TIDEMARK_INSECURE_TEST_KDF", "1");
    let shared = HDFS.get();
    let info = testbed::hdfs::start(
        &shared.root,
        &testbed::UpOptions {
            name: Some("perms".into()),
            nodes: Some(1),
            with_agents: true,
            tidemark_bin: Some(env!("CARGO_BIN_EXE_tidemark").into()),
            permissions: true,
            tidemark_user: Some("backup".into()),
            repository: None,
        },
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    // The superuser prepares what an admin would: a root the backup user
    // owns and may snapshot, a target for the restore.
    let su = client(&info);
    let config = config_for(&info, "perms", "/p", dir.path());
    let c = config.to_str().unwrap().to_string();
    let readable: Vec<(&str, Vec<u8>)> = vec![("a.txt", b"plain text".to_vec()), ("sub/b.bin", noise(77, 300_000)), ("sub/c", Vec::new())];
    rt.block_on(async {
        for d in ["/p", "/p/sub", "/p/private", "/back"] {
            su.mkdirs(d, 0o755).await.unwrap();
        }
        for (p, d) in &readable {
            put(&su, &format!("/p/{p}"), d.clone(), Some(1), None).await;
        }
        put(&su, "/p/secret.key", b"not for backup".to_vec(), Some(1), None).await;
        put(&su, "/p/private/x", b"x".to_vec(), Some(1), None).await;
        su.set_owner("/p/secret.key", "alice", "alice").await.unwrap();
        su.set_permission("/p/secret.key", 0o600).await.unwrap();
        su.set_owner("/p/private", "alice", "alice").await.unwrap();
        su.set_permission("/p/private", 0o700).await.unwrap();
        for d in ["/p", "/back"] {
            su.set_owner(d, "backup", "backup").await.unwrap();
        }
        su.allow_snapshot("/p").await.unwrap();
    });

    let r = tidemark(&["cluster", "backup", "--config", &c, "--json"]);
    assert_eq!(r.code, 3, "incomplete backup exits 3:\n{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("/p/secret.key"), "the unreadable file is named: {}", r.stderr);
    assert!(r.stderr.contains("/p/private"), "the unlistable directory is named: {}", r.stderr);
    assert!(!r.stderr.contains("/p/sub/b.bin"), "{}", r.stderr);
    let row: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(row["files"].as_u64(), Some(readable.len() as u64), "the readable files are stored: {row}");
    let l = ok(&["cluster", "list", "--config", &c, "--json"]);
    assert_eq!(l.as_array().unwrap().len(), 1, "the incomplete backup is listed: {l}");
    let v = tidemark(&["cluster", "verify", "--config", &c, "latest", "--read-data"]);
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
    let restored = ok(&["cluster", "restore", "--config", &c, "latest", "--target-path", "/back", "--json"]);
    assert!(restored["failed"].as_array().unwrap().is_empty(), "{restored}");
    let back = rt.block_on(model(&su, "/back/p"));
    let mut want: Vec<&str> = readable.iter().map(|(p, _)| *p).collect();
    want.push("sub");
    want.sort_unstable();
    assert_eq!(back.keys().map(String::as_str).collect::<Vec<_>>(), want, "exactly the readable entries are restored");
    for (p, d) in &readable {
        assert!(back[*p].data.as_deref() == Some(&d[..]), "{p} differs");
    }

    // The next backup: no diff for this user, a full walk (unchanged files
    // are still not read again), and the same entries named.
    let second = tidemark(&["cluster", "backup", "--config", &c, "--json"]);
    let r = &second;
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("snapshot diff was refused"), "the full walk's reason is given: {}", r.stderr);
    assert!(r.stderr.contains("/p/secret.key") && r.stderr.contains("/p/private"), "{}", r.stderr);
    let row: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(row["bytes_read"].as_u64(), Some(0), "unchanged files are not read again: {row}");

    // Safe mode: refused, naming the way out; nothing more is listed.
    let dfsadmin = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let out = testbed::hdfs::tools::shell(&info, testbed::hdfs::tools::Class::Dfsadmin, &args).unwrap().output().unwrap();
        assert!(out.status.success(), "dfsadmin {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    dfsadmin(&["-safemode", "enter"]);
    let r = tidemark(&["cluster", "backup", "--config", &c, "--json"]);
    dfsadmin(&["-safemode", "leave"]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(r.stderr.contains("safe mode") && r.stderr.contains("-safemode leave"), "{}", r.stderr);
    let l = ok(&["cluster", "list", "--config", &c, "--json"]);
    assert_eq!(l.as_array().unwrap().len(), 2, "nothing listed for the refused backup: {l}");
    // The NameNode may list a snapshot deleted a moment ago (seen under
    // load): wait a little for the listing, but the older one must go.
    let mut left = rt.block_on(su.snapshots("/p")).unwrap();
    for _ in 0..20 {
        if left.len() == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
        left = rt.block_on(su.snapshots("/p")).unwrap();
    }
    assert_eq!(left.len(), 1, "only the newest backup's snapshot is kept: {left:?}; second backup said: {}", second.stderr);
    shared.root.stop_cluster("perms").unwrap();
}
