//! The real `tidemark` binary killed with SIGKILL in the middle of a backup,
//! and several backups running at once into one repository.
//!
//! After each kill: only complete snapshots are listed and each restores
//! byte for byte, verify (when the command exists) finds nothing wrong,
//! `unlock` removes the dead process's lock, and the next backup completes,
//! reusing what the killed one had stored and indexed.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use common::*;

/// Small chunks and 1 MiB packs: a 100 MiB backup makes about 100 packs and
/// writes index files while it runs, so there is something to kill into.
const INIT: &[&str] = &["--chunk-size-kib", "64", "--pack-size-mib", "1"];

/// Files whose name is an object id (64 hex digits) under `dir`: packs under
/// data/, and not the temporary files of an interrupted write.
fn objects(dir: &Path) -> Vec<PathBuf> {
    if !dir.exists() {
        return Vec::new();
    }
    files_under(dir)
        .into_iter()
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap_or("");
            n.len() == 64 && n.bytes().all(|c| c.is_ascii_hexdigit())
        })
        .collect()
}

/// `n` files of `size` random bytes each (seeded), plus a small text file.
fn big_tree(root: &Path, seed: u64, n: u64, size: u64) -> u64 {
    fs::create_dir_all(root.join("part")).unwrap();
    for i in 0..n {
        let dir = if i % 2 == 0 {
            root.to_path_buf()
        } else {
            root.join("part")
        };
        write_random_file(&dir.join(format!("blob-{i:03}.bin")), seed * 1000 + i, size);
    }
    fs::write(root.join("notes.txt"), "a large tree\n").unwrap();
    n * size + 13
}

#[derive(Debug, Clone, Copy)]
enum Moment {
    /// A fixed, short time after the start.
    Early,
    /// As soon as the first pack file of this run is stored.
    FirstPack,
    /// Once this run has stored many packs and at least one index file.
    MidWay,
}

/// Start a backup of `src`, wait for `moment`, SIGKILL it.
fn kill_backup_at(repo: &Repo, repo_dir: &Path, src: &Path, logs: &Path, moment: Moment) {
    let packs_before = objects(&repo_dir.join("data")).len();
    let index_before = objects(&repo_dir.join("index")).len();
    // Throttled uploads (20 MiB/s) keep the backup running for seconds,
    // whatever the machine's speed, so every kill moment is reached.
    let mut child = repo.spawn(
        [
            "backup".as_ref(),
            "--json".as_ref(),
            "--limit-upload".as_ref(),
            "20480".as_ref(),
            src.as_os_str(),
        ],
        logs,
        &format!("{moment:?}"),
    );
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let err = fs::read_to_string(logs.join(format!("{moment:?}.err"))).unwrap_or_default();
            panic!(
                "backup ended ({status}) before the {moment:?} kill; the tree is too small:\n{err}"
            );
        }
        let packs = objects(&repo_dir.join("data"))
            .len()
            .saturating_sub(packs_before);
        let index = objects(&repo_dir.join("index"))
            .len()
            .saturating_sub(index_before);
        let due = match moment {
            Moment::Early => start.elapsed() >= Duration::from_millis(300),
            Moment::FirstPack => packs >= 1,
            Moment::MidWay => packs >= 50 && index >= 1,
        };
        if due {
            println!(
                "{moment:?}: SIGKILL after {:?}, {packs} new packs, {index} new index files",
                start.elapsed()
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "{moment:?} never came"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    kill9(&mut child);
}

/// Every listed snapshot is one of `expected` (id -> source) and restores
/// byte for byte; verify (if there is such a command) passes.
fn check_repository(repo: &Repo, scratch: &Path, expected: &[(String, PathBuf)]) {
    let snaps = repo.snapshots();
    let listed: Vec<&str> = snaps.iter().map(|s| s["id"].as_str().unwrap()).collect();
    let mut want: Vec<&str> = expected.iter().map(|(id, _)| id.as_str()).collect();
    let mut got = listed.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want, "only complete snapshots are listed");
    for s in &snaps {
        assert_ne!(s["incomplete"], true, "{s}");
    }
    for (id, src) in expected {
        let target = scratch.join(format!("restore-{}", &id[..12]));
        if target.exists() {
            fs::remove_dir_all(&target).unwrap();
        }
        repo.restore(id, &target, &[]);
        assert_same_tree(src, &restored(&target, src));
        fs::remove_dir_all(&target).unwrap();
    }
    repo.verify_read_data();
}

#[test]
fn sigkill_during_backup_leaves_a_usable_repository() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    let repo = Repo::local(&repo_dir);
    repo.init(INIT);
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();

    // A complete snapshot from before the crashes must survive them.
    let small = dir.path().join("small");
    make_full_tree(&small, 11);
    let first = repo.backup(&[&small], &[]);
    let mut expected = vec![(first["id"].as_str().unwrap().to_string(), small.clone())];

    let big = dir.path().join("big");
    let total = big_tree(&big, 12, 27, 4 * 1024 * 1024);
    assert!(total > 100 * 1024 * 1024);

    for moment in [Moment::Early, Moment::FirstPack, Moment::MidWay] {
        kill_backup_at(&repo, &repo_dir, &big, &logs, moment);
        let locks = objects(&repo_dir.join("locks")).len();
        if !matches!(moment, Moment::Early) {
            assert_eq!(locks, 1, "the killed backup left its lock");
        }
        check_repository(&repo, dir.path(), &expected);

        // The dead process's lock goes with `unlock` (no --remove-all).
        let out = repo.ok(["unlock"]);
        assert_eq!(
            out.stdout.trim(),
            format!("removed {locks} locks"),
            "{out:?}"
        );
        assert_eq!(objects(&repo_dir.join("locks")).len(), 0);
    }

    // The next backup completes and reuses what the killed ones indexed.
    let done = repo.backup(&[&big], &[]);
    let added = summary(&done, "data_added");
    assert!(
        added + 8 * 1024 * 1024 <= total,
        "data_added {added} of {total}: indexed packs of the killed backup were not reused: {done}"
    );
    assert_eq!(summary(&done, "total_bytes"), total, "{done}");
    println!("backup after the kills: data_added {added} of {total}");
    expected.push((done["id"].as_str().unwrap().to_string(), big.clone()));
    check_repository(&repo, dir.path(), &expected);
}

#[test]
fn concurrent_backups_of_overlapping_trees() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    let repo = Repo::local(&repo_dir);
    repo.init(INIT);
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();

    // Three trees: each has its own data and a copy of the same shared data,
    // so the backups race to store the same chunks.
    let mut sources = Vec::new();
    for i in 0..3u64 {
        let src = dir.path().join(format!("src-{i}"));
        big_tree(&src, 20 + i, 4, 3 * 1024 * 1024);
        write_random_file(&src.join("shared-a.bin"), 99, 5 * 1024 * 1024);
        fs::create_dir_all(src.join("nested")).unwrap();
        write_random_file(&src.join("nested/shared-b.bin"), 98, 2 * 1024 * 1024 + 17);
        sources.push(src);
    }
    let mut children: Vec<(Child, &PathBuf)> = sources
        .iter()
        .enumerate()
        .map(|(i, src)| {
            (
                repo.spawn(
                    ["backup".as_ref(), "--json".as_ref(), src.as_os_str()],
                    &logs,
                    &format!("b{i}"),
                ),
                src,
            )
        })
        .collect();
    let mut expected = Vec::new();
    for (i, (child, src)) in children.iter_mut().enumerate() {
        let status = child.wait().unwrap();
        let err = fs::read_to_string(logs.join(format!("b{i}.err"))).unwrap();
        assert!(status.success(), "backup {i}: {status}\n{err}");
        let out: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(logs.join(format!("b{i}.out"))).unwrap())
                .unwrap();
        expected.push((out["id"].as_str().unwrap().to_string(), (*src).clone()));
    }
    assert_eq!(
        objects(&repo_dir.join("locks")).len(),
        0,
        "every backup removed its lock"
    );
    check_repository(&repo, dir.path(), &expected);
}
