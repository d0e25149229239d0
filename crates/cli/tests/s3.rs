//! The real `tidemark` binary on a real S3 server (SeaweedFS, testbed's
//! fixture, one server per test binary): `init` creates the bucket, round
//! trips compare bytes and metadata, and with Object Lock the pack versions
//! a backup wrote cannot be deleted through the S3 API.

mod common;

use std::fs;

use common::*;
use tidemark_store::s3::{S3Config, S3Store, Secret};
use tidemark_store::StoreError;

/// A bucket name no other test (or run on the same server) uses.
fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The S3 store behind a repository, opened directly for its version and
/// retention methods (what a thief holding the credentials could call).
fn direct(bucket: &str, prefix: &str) -> S3Store {
    let server = testbed::s3::shared();
    S3Store::new(S3Config {
        endpoint: server.endpoint.clone(),
        bucket: bucket.to_owned(),
        prefix: prefix.to_owned(),
        region: server.region.clone(),
        access_key: server.access_key.clone(),
        secret_key: Secret::new(server.secret_key.clone()),
        lock_days: None,
    })
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn round_trip_on_s3() {
    let bucket = unique("cli-rt");
    let repo = Repo::s3(&bucket, "repos/one");
    let out = repo.init(&[]);
    assert!(out.stdout.contains("created repository"), "{out:?}");
    // A second init at the same place is refused.
    let again = repo.run(["init"]);
    assert_ne!(again.code, 0, "{again:?}");
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);

    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let info = make_full_tree(&src, 31);
    let first = repo.backup(&[&src], &["--tag", "s3"]);
    assert_eq!(first["errors"], serde_json::json!([]), "{first}");

    let target = dir.path().join("restore");
    repo.restore(first["id"].as_str().unwrap(), &target, &[]);
    assert_same_tree(&src, &restored(&target, &src));

    // Incremental on S3 too: nothing read, no file data added.
    let second = repo.backup(&[&src], &[]);
    assert_eq!(summary(&second, "bytes_read"), 0, "{second}");
    assert!(summary(&second, "data_added") < 64 * 1024, "{second}");
    let snaps = repo.snapshots();
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[0]["tags"], serde_json::json!(["s3"]));

    // Partial restore.
    let target2 = dir.path().join("restore2");
    let bin = src.join("bin");
    repo.restore("latest", &target2, &["--include", bin.to_str().unwrap()]);
    assert_same_tree(&bin, &restored(&target2, &bin));
    assert!(!restored(&target2, &info.canary_file).exists());

    // No plaintext in any stored object.
    let store = direct(&bucket, "repos/one");
    let rt = rt();
    let objects = rt
        .block_on(tidemark_store::Store::list(&store, ""))
        .unwrap();
    assert!(
        objects.iter().any(|o| o.key.starts_with("data/")),
        "{objects:?}"
    );
    for o in &objects {
        let bytes = rt
            .block_on(tidemark_store::Store::get(&store, &o.key))
            .unwrap();
        assert!(
            !contains(&bytes, CANARY.as_bytes()),
            "{} holds file content in the clear",
            o.key
        );
        assert!(
            !contains(&bytes, PASSWORD.as_bytes()),
            "{} holds the passphrase",
            o.key
        );
    }

    // Errors on S3 have the same exit codes.
    assert_eq!(repo.with_password("wrong").run(["snapshots"]).code, 12);
    assert_eq!(Repo::s3(&bucket, "repos/none").run(["snapshots"]).code, 10);
}

#[test]
fn object_lock_refuses_deleting_pack_versions() {
    let bucket = unique("cli-lock");
    let repo = Repo::s3(&bucket, "locked");
    repo.init(&["--object-lock-days", "1"]);

    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("data.bin"), 41, 3 * 1024 * 1024 + 5);
    fs::write(src.join("note.txt"), "locked away\n").unwrap();
    let b = repo.backup(&[&src], &[]);
    let id = b["id"].as_str().unwrap().to_string();

    let store = direct(&bucket, "locked");
    let rt = rt();
    let versions = rt.block_on(store.list_versions("data/")).unwrap();
    let packs: Vec<_> = versions.iter().filter(|v| !v.delete_marker).collect();
    assert!(!packs.is_empty(), "the backup stored packs: {versions:?}");
    let now = chrono::Utc::now();
    for v in &packs {
        let until = rt
            .block_on(store.retention(&v.key))
            .unwrap()
            .expect("pack written under retention");
        assert!(
            until > now + chrono::Duration::hours(23),
            "{}: retained until {until}",
            v.key
        );
        match rt.block_on(store.delete_version(&v.key, &v.version_id)) {
            Err(StoreError::Denied { .. }) => {}
            other => panic!(
                "deleting locked version {} of {}: {other:?}",
                v.version_id, v.key
            ),
        }
    }
    // The snapshot and its index are protected as well.
    for prefix in ["snapshots/", "index/", "keys/"] {
        let vs = rt.block_on(store.list_versions(prefix)).unwrap();
        assert!(!vs.is_empty(), "{prefix}");
        for v in vs {
            assert!(
                rt.block_on(store.delete_version(&v.key, &v.version_id))
                    .is_err(),
                "{} deletable",
                v.key
            );
        }
    }

    // Everything is still there: restore works.
    let after = rt.block_on(store.list_versions("data/")).unwrap();
    assert_eq!(after.len(), versions.len(), "{after:?}");
    let target = dir.path().join("restore");
    repo.restore(&id, &target, &[]);
    assert_same_tree(&src, &restored(&target, &src));

    // And a second backup into the locked repository works.
    fs::write(src.join("new.txt"), "after the lock test\n").unwrap();
    repo.backup(&[&src], &[]);
    assert_eq!(repo.snapshots().len(), 2);
}

#[test]
fn object_lock_on_a_bucket_without_it_is_refused() {
    let bucket = unique("cli-nolock");
    // A plain repository creates the bucket without Object Lock ...
    Repo::s3(&bucket, "plain").init(&[]);
    // ... so a locked repository in the same bucket cannot keep its promise.
    let out = Repo::s3(&bucket, "wants-lock").run(["init", "--object-lock-days", "1"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.to_lowercase().contains("lock"), "{}", out.stderr);
    let config = rt()
        .block_on(tidemark_store::Store::head(
            &direct(&bucket, "wants-lock"),
            "config",
        ))
        .unwrap();
    assert!(config.is_none(), "no repository was created");
}

/// Object keys under `prefix` that are object ids (no temporary uploads).
fn count_objects(rt: &tokio::runtime::Runtime, store: &S3Store, prefix: &str) -> usize {
    rt.block_on(tidemark_store::Store::list(store, prefix))
        .unwrap()
        .iter()
        .filter(|o| o.key.rsplit('/').next().is_some_and(|n| n.len() == 64))
        .count()
}

#[test]
fn sigkill_during_backup_on_s3_then_concurrent_backups() {
    let bucket = unique("cli-crash");
    let repo = Repo::s3(&bucket, "r");
    repo.init(&["--chunk-size-kib", "64", "--pack-size-mib", "1"]);
    let store = direct(&bucket, "r");
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();

    let small = dir.path().join("small");
    make_full_tree(&small, 51);
    let first = repo.backup(&[&small], &[]);
    let first_id = first["id"].as_str().unwrap().to_string();

    let big = dir.path().join("big");
    fs::create_dir_all(&big).unwrap();
    let mut total = 0;
    for i in 0..12 {
        write_random_file(&big.join(format!("f{i:02}.bin")), 500 + i, 4 * 1024 * 1024);
        total += 4 * 1024 * 1024;
    }

    // Kill once this backup has stored many packs and an index file.
    let packs_before = count_objects(&rt, &store, "data/");
    let index_before = count_objects(&rt, &store, "index/");
    let mut child = repo.spawn(
        ["backup".as_ref(), "--json".as_ref(), big.as_os_str()],
        &logs,
        "killed",
    );
    let start = std::time::Instant::now();
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "backup finished before the kill"
        );
        let packs = count_objects(&rt, &store, "data/") - packs_before;
        let index = count_objects(&rt, &store, "index/") - index_before;
        if packs >= 20 && index >= 1 {
            println!(
                "SIGKILL after {:?}: {packs} new packs, {index} new index files",
                start.elapsed()
            );
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(300),
            "no progress to kill into"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    kill9(&mut child);

    let snaps = repo.snapshots();
    assert_eq!(snaps.len(), 1, "only the complete snapshot: {snaps:?}");
    assert_eq!(snaps[0]["id"].as_str().unwrap(), first_id);
    let target = dir.path().join("restore-small");
    repo.restore(&first_id, &target, &[]);
    assert_same_tree(&small, &restored(&target, &small));
    repo.verify_read_data();
    assert_eq!(
        count_objects(&rt, &store, "locks/"),
        1,
        "the dead backup's lock"
    );
    assert_eq!(repo.ok(["unlock"]).stdout.trim(), "removed 1 locks");
    assert_eq!(count_objects(&rt, &store, "locks/"), 0);

    let done = repo.backup(&[&big], &[]);
    let added = summary(&done, "data_added");
    assert!(
        added + 4 * 1024 * 1024 <= total,
        "data_added {added} of {total}: nothing reused: {done}"
    );
    let target = dir.path().join("restore-big");
    repo.restore(done["id"].as_str().unwrap(), &target, &[]);
    assert_same_tree(&big, &restored(&target, &big));

    // Three backups at once into the same bucket, sharing content.
    let mut children = Vec::new();
    let mut sources = Vec::new();
    for i in 0..3u64 {
        let src = dir.path().join(format!("c{i}"));
        fs::create_dir_all(&src).unwrap();
        write_random_file(&src.join("own.bin"), 600 + i, 3 * 1024 * 1024);
        write_random_file(&src.join("shared.bin"), 700, 3 * 1024 * 1024);
        fs::write(src.join("name.txt"), format!("tree {i}\n")).unwrap();
        children.push(repo.spawn(
            ["backup".as_ref(), "--json".as_ref(), src.as_os_str()],
            &logs,
            &format!("c{i}"),
        ));
        sources.push(src);
    }
    for (i, child) in children.iter_mut().enumerate() {
        let status = child.wait().unwrap();
        let err = fs::read_to_string(logs.join(format!("c{i}.err"))).unwrap();
        assert!(status.success(), "concurrent backup {i}: {status}\n{err}");
        let out: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(logs.join(format!("c{i}.out"))).unwrap())
                .unwrap();
        let target = dir.path().join(format!("restore-c{i}"));
        repo.restore(out["id"].as_str().unwrap(), &target, &[]);
        assert_same_tree(&sources[i], &restored(&target, &sources[i]));
    }
    assert_eq!(repo.snapshots().len(), 5);
    assert_eq!(count_objects(&rt, &store, "locks/"), 0);
    repo.verify_read_data();
}
