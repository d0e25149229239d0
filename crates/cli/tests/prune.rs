//! `forget` and `prune` through the real binary on local repositories:
//! retention policy, space reclaimed, delayed deletion, unindexed packs of a
//! killed backup, and prune running over and over beside three backups.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_tidemark");

fn cmd(repo: &Path) -> Command {
    let mut c = Command::new(BIN);
    for v in [
        "TIDEMARK_REPOSITORY",
        "TIDEMARK_PASSWORD_FILE",
        "TIDEMARK_LOG",
    ] {
        c.env_remove(v);
    }
    c.env("TIDEMARK_REPOSITORY", repo)
        .env("TIDEMARK_PASSWORD", "pw")
        .env("TIDEMARK_INSECURE_TEST_KDF", "1")
        .arg("--quiet");
    c
}

fn run(repo: &Path, args: &[&str]) -> Output {
    cmd(repo).args(args).output().expect("run tidemark")
}

/// Run and require success; returns stdout.
fn ok(repo: &Path, args: &[&str]) -> String {
    let o = run(repo, args);
    assert!(
        o.status.success(),
        "tidemark {args:?} failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn json(repo: &Path, args: &[&str]) -> Value {
    let out = ok(repo, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Deterministic pseudo-random bytes (xorshift64*): the same seed always
/// gives the same content, so expected data can be made again later.
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(n);
    out
}

fn init(dir: &Path) -> PathBuf {
    let repo = dir.join("repo");
    ok(&repo, &["init"]);
    repo
}

fn backup(repo: &Path, src: &Path, tags: &[&str]) -> String {
    let mut args = vec!["backup", src.to_str().unwrap()];
    for t in tags {
        args.extend(["--tag", t]);
    }
    ok(repo, &args).trim().to_string()
}

/// (id, tags) of every snapshot.
fn snapshots(repo: &Path) -> Vec<(String, Vec<String>)> {
    json(repo, &["snapshots", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let tags = s["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect();
            (s["id"].as_str().unwrap().to_string(), tags)
        })
        .collect()
}

fn stored_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            stored_bytes(&e.path())
        } else {
            m.len()
        };
    }
    total
}

fn pack_files(repo: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(rd) = std::fs::read_dir(repo.join("data")) else {
        return out;
    };
    for d in rd {
        let d = d.unwrap();
        // data/ also holds the temporary of a pack being written.
        if !d.file_type().unwrap().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(d.path()).unwrap() {
            let name = f.unwrap().file_name().into_string().unwrap();
            if name.len() == 64 {
                out.insert(name);
            }
        }
    }
    out
}

/// Restore `id` and compare every expected file (name -> content) byte for
/// byte, under the snapshot's source path `src`.
fn assert_restores(
    repo: &Path,
    id: &str,
    src: &Path,
    expected: &HashMap<String, Vec<u8>>,
    out: &Path,
) {
    let _ = std::fs::remove_dir_all(out);
    ok(repo, &["restore", id, "--target", out.to_str().unwrap()]);
    let root = out.join(src.strip_prefix("/").unwrap());
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut want: Vec<String> = expected.keys().cloned().collect();
    want.sort();
    assert_eq!(names, want, "files of snapshot {id}");
    for (name, content) in expected {
        let got = std::fs::read(root.join(name)).unwrap();
        assert!(
            got == *content,
            "snapshot {id}: {name} differs after restore ({} vs {} bytes)",
            got.len(),
            content.len()
        );
    }
}

/// `verify --read-data` when this build has it; prints what it found.
fn verify_read_data(repo: &Path) {
    let help = run(repo, &["verify", "--help"]);
    if !help.status.success() {
        eprintln!("verify is not available in this build; restores were compared instead");
        return;
    }
    let o = run(repo, &["verify", "--read-data"]);
    assert!(
        o.status.success(),
        "verify --read-data failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn write_files(dir: &Path, files: &HashMap<String, Vec<u8>>) {
    std::fs::create_dir_all(dir).unwrap();
    for (n, c) in files {
        std::fs::write(dir.join(n), c).unwrap();
    }
}

#[test]
fn forget_policy_keeps_the_right_snapshots() {
    let t = tempfile::tempdir().unwrap();
    let repo = init(t.path());
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    let mut ids = Vec::new();
    for i in 0..5u64 {
        write_files(&a, &HashMap::from([("f".to_string(), bytes(i, 10_000))]));
        ids.push(backup(&repo, &a, if i == 0 { &["release"] } else { &[] }));
    }
    write_files(&b, &HashMap::from([("g".to_string(), bytes(99, 10_000))]));
    let only_b = backup(&repo, &b, &[]);

    // A policy that keeps nothing is refused and removes nothing.
    let o = run(&repo, &["forget"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--unsafe-allow-remove-all"));
    assert_eq!(snapshots(&repo).len(), 6);

    let dry = json(
        &repo,
        &[
            "forget",
            "--keep-last",
            "2",
            "--keep-tag",
            "release",
            "--dry-run",
            "--json",
        ],
    );
    assert_eq!(dry["removed"], 2);
    assert_eq!(snapshots(&repo).len(), 6, "dry run removes nothing");

    let out = json(
        &repo,
        &[
            "forget",
            "--keep-last",
            "2",
            "--keep-tag",
            "release",
            "--json",
        ],
    );
    let groups = out["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "grouped by host and paths: {out}");
    let ga = groups
        .iter()
        .find(|g| g["group"]["paths"][0] == a.to_str().unwrap())
        .unwrap();
    let reasons: HashMap<&str, Vec<&str>> = ga["keep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap(),
                d["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(reasons.len(), 3);
    assert_eq!(reasons[ids[4].as_str()], vec!["last snapshot"]);
    assert_eq!(reasons[ids[3].as_str()], vec!["last snapshot"]);
    assert_eq!(reasons[ids[0].as_str()], vec!["has tag release"]);
    let removed: BTreeSet<&str> = ga["remove"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(removed, BTreeSet::from([ids[1].as_str(), ids[2].as_str()]));

    let left: BTreeSet<String> = snapshots(&repo).into_iter().map(|(id, _)| id).collect();
    let want: BTreeSet<String> = [&ids[0], &ids[3], &ids[4], &only_b]
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(left, want);
}

/// A snapshot file the store refuses to delete (`chattr +i`, as S3 Object
/// Lock would refuse): forget removes the others, fails naming the one left
/// and how many went, and a later run finishes.
#[test]
fn forget_reports_the_snapshot_it_could_not_remove() {
    let t = tempfile::tempdir().unwrap();
    let repo = init(t.path());
    let a = t.path().join("a");
    let mut ids = Vec::new();
    for i in 0..4u64 {
        write_files(&a, &HashMap::from([("f".to_string(), bytes(i, 10_000))]));
        ids.push(backup(&repo, &a, &[]));
    }
    let stuck = repo.join("snapshots").join(&ids[1]);
    assert!(stuck.exists(), "{}", stuck.display());
    let chattr = |flag: &str| {
        let st = Command::new("chattr").arg(flag).arg(&stuck).status();
        st.is_ok_and(|s| s.success())
    };
    assert!(chattr("+i"), "chattr +i {}", stuck.display());
    let o = run(&repo, &["forget", "--keep-last", "1"]);
    assert!(chattr("-i"), "chattr -i {}", stuck.display());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{stderr}");
    assert!(
        stderr.contains("forget removed 2 of 3 snapshots") && stderr.contains(&ids[1]),
        "{stderr}"
    );
    let left: BTreeSet<String> = snapshots(&repo).into_iter().map(|(id, _)| id).collect();
    assert_eq!(left, BTreeSet::from([ids[1].clone(), ids[3].clone()]));
    ok(&repo, &["forget", "--keep-last", "1"]);
    assert_eq!(snapshots(&repo).len(), 1);
}

#[test]
fn forget_and_prune_shrink_the_repository_and_what_is_left_restores() {
    let t = tempfile::tempdir().unwrap();
    let repo = init(t.path());
    let a = t.path().join("a");
    let shared = bytes(1, 1_000_000);
    let v1 = HashMap::from([
        ("shared".to_string(), shared.clone()),
        ("old".to_string(), bytes(2, 3_000_000)),
    ]);
    let v2 = HashMap::from([
        ("shared".to_string(), shared.clone()),
        ("new".to_string(), bytes(3, 2_000_000)),
    ]);
    write_files(&a, &v1);
    backup(&repo, &a, &[]);
    std::fs::remove_file(a.join("old")).unwrap();
    write_files(&a, &v2);
    let keep = backup(&repo, &a, &[]);
    let size_before = stored_bytes(&repo);
    let packs_before = pack_files(&repo);

    let out = json(
        &repo,
        &[
            "forget",
            "--keep-last",
            "1",
            "--prune",
            "--clock-skew",
            "0s",
            "--max-unused",
            "0",
            "--json",
        ],
    );
    let st = &out["prune"];
    assert_eq!(out["removed"], 1);
    assert!(st["packs_marked_obsolete"].as_u64().unwrap() >= 1, "{st}");
    assert_eq!(
        st["packs_deleted"], 0,
        "marked packs wait for a later prune: {st}"
    );
    assert!(
        packs_before.is_subset(&pack_files(&repo)),
        "no pack deleted yet"
    );
    assert_restores(&repo, &keep, &a, &v2, &t.path().join("r1"));

    std::thread::sleep(Duration::from_millis(2100));
    let st = json(&repo, &["prune", "--clock-skew", "0s", "--json"]);
    assert!(st["packs_deleted"].as_u64().unwrap() >= 1, "{st}");
    assert!(st["bytes_freed"].as_u64().unwrap() >= 3_000_000, "{st}");
    let size_after = stored_bytes(&repo);
    assert!(
        size_after + 2_900_000 < size_before,
        "the 3 MB only the forgotten snapshot had are freed: {size_before} -> {size_after}"
    );
    assert_restores(&repo, &keep, &a, &v2, &t.path().join("r2"));
    verify_read_data(&repo);

    // Nothing left to do: a further prune changes nothing.
    let st = json(&repo, &["prune", "--clock-skew", "0s", "--json"]);
    assert_eq!(
        (
            st["packs_deleted"].as_u64(),
            st["packs_marked_obsolete"].as_u64()
        ),
        (Some(0), Some(0)),
        "{st}"
    );
}

#[test]
fn killed_backup_leaves_unindexed_packs_that_prune_removes_only_by_the_age_rule() {
    let t = tempfile::tempdir().unwrap();
    let repo = init(t.path());
    let src = t.path().join("big");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..10u64 {
        std::fs::write(src.join(format!("f{i}")), bytes(100 + i, 12_000_000)).unwrap();
    }
    let mut child: Child = cmd(&repo)
        .args(["backup", src.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while pack_files(&repo).is_empty() {
        assert!(Instant::now() < deadline, "no pack uploaded in time");
        assert!(
            child.try_wait().unwrap().is_none(),
            "backup finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let left = pack_files(&repo);
    assert!(!left.is_empty());
    assert_eq!(
        std::fs::read_dir(repo.join("index"))
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "killed before any index file"
    );

    // Young packs stay by default.
    let st = json(&repo, &["prune", "--json"]);
    assert_eq!(st["unindexed_deleted"], 0, "{st}");
    assert_eq!(st["unindexed_kept"].as_u64().unwrap(), left.len() as u64);
    // The dead backup's lock looks live for a while: its packs are younger
    // than its start, so they stay even without a minimum age.
    let st = json(
        &repo,
        &[
            "prune",
            "--keep-unindexed-for",
            "0s",
            "--clock-skew",
            "0s",
            "--json",
        ],
    );
    assert_eq!(st["live_locks"], 1, "{st}");
    assert_eq!(st["unindexed_deleted"], 0, "{st}");
    assert_eq!(pack_files(&repo), left);
    // Once the lock is gone (unlock after making sure nothing runs), they go.
    ok(&repo, &["unlock", "--remove-all"]);
    let st = json(
        &repo,
        &[
            "prune",
            "--keep-unindexed-for",
            "0s",
            "--clock-skew",
            "0s",
            "--json",
        ],
    );
    assert_eq!(
        st["unindexed_deleted"].as_u64().unwrap(),
        left.len() as u64,
        "{st}"
    );
    assert!(pack_files(&repo).is_empty());
    // The pack the backup was writing when killed went with them.
    assert_eq!(temporaries(&repo), Vec::<PathBuf>::new(), "{st}");
}

/// Writers' temporaries anywhere in the repository.
fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(temporaries(&e.path()));
        } else if e
            .file_name()
            .to_string_lossy()
            .starts_with(".tidemark-tmp.")
        {
            out.push(e.path());
        }
    }
    out
}

/// The content of worker `w`'s directory at run `r`: a file every worker
/// shares, one of its own that never changes, and one new per run.
fn worker_files(w: u64, r: u64) -> HashMap<String, Vec<u8>> {
    HashMap::from([
        ("common".to_string(), bytes(7, 1_000_000)),
        ("own".to_string(), bytes(1000 + w, 1_000_000)),
        ("run".to_string(), bytes(2000 + w * 100 + r, 1_500_000)),
    ])
}

#[test]
fn prune_again_and_again_beside_three_backups_loses_nothing() {
    const WORKERS: u64 = 3;
    const RUNS: u64 = 6;
    let t = tempfile::tempdir().unwrap();
    let repo = init(t.path());
    let dirs: Vec<PathBuf> = (0..WORKERS)
        .map(|w| t.path().join(format!("w{w}")))
        .collect();
    // Each worker backs up its directory RUNS times, changing it in between,
    // tagging each snapshot with its run so its expected content is known.
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (repo, dir) = (repo.clone(), dirs[w as usize].clone());
            std::thread::spawn(move || {
                for r in 0..RUNS {
                    write_files(&dir, &worker_files(w, r));
                    // Throttled so each backup runs across several prunes.
                    let tag = format!("run{r}");
                    ok(
                        &repo,
                        &[
                            "--limit-upload",
                            "512",
                            "backup",
                            dir.to_str().unwrap(),
                            "--tag",
                            &tag,
                        ],
                    );
                }
            })
        })
        .collect();
    // Aggressive settings, so that marking, repacking and deleting all really
    // happen while the backups run: only the protocol keeps data safe.
    let prune_args = [
        "--prune",
        "--clock-skew",
        "1s",
        "--keep-unindexed-for",
        "0s",
        "--max-unused",
        "0",
        "--json",
    ];
    let mut rounds = 0;
    let (mut marked, mut deleted, mut repacked) = (0, 0, 0);
    while rounds < 3 || workers.iter().any(|h| !h.is_finished()) {
        let mut args = vec!["forget", "--keep-last", "1"];
        args.extend(prune_args);
        let out = json(&repo, &args);
        let st = &out["prune"];
        marked += st["packs_marked_obsolete"].as_u64().unwrap();
        deleted +=
            st["packs_deleted"].as_u64().unwrap() + st["unindexed_deleted"].as_u64().unwrap();
        repacked += st["packs_repacked"].as_u64().unwrap();
        rounds += 1;
        eprintln!(
            "round {rounds}: {} live locks, {} marked, {} still obsolete, {} deleted",
            st["live_locks"],
            st["packs_marked_obsolete"],
            st["packs_still_obsolete"],
            st["packs_deleted"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for h in workers {
        h.join().expect("a backup failed beside prune");
    }
    eprintln!("{rounds} forget+prune rounds: {marked} packs marked, {repacked} repacked, {deleted} deleted");
    assert!(marked > 0 && repacked > 0 && rounds >= 3);
    assert!(deleted > 0, "packs were deleted while backups ran");

    // Every snapshot left restores byte for byte.
    let check_all = |tag: &str| {
        let snaps = snapshots(&repo);
        assert!(snaps.len() >= WORKERS as usize);
        for (i, (id, tags)) in snaps.iter().enumerate() {
            let o = json(&repo, &["snapshots", "--json"]);
            let s = o
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["id"] == id.as_str())
                .unwrap()
                .clone();
            let path = PathBuf::from(s["paths"][0].as_str().unwrap());
            let w = dirs.iter().position(|d| *d == path).unwrap() as u64;
            let r: u64 = tags[0].strip_prefix("run").unwrap().parse().unwrap();
            assert_restores(
                &repo,
                id,
                &path,
                &worker_files(w, r),
                &t.path().join(format!("out-{tag}-{i}")),
            );
        }
    };
    check_all("during");
    verify_read_data(&repo);

    // With the backups done, later prunes delete every obsolete pack.
    std::thread::sleep(Duration::from_millis(3100));
    let mut args = vec!["forget", "--keep-last", "1"];
    args.extend(prune_args);
    json(&repo, &args);
    std::thread::sleep(Duration::from_millis(3100));
    let st = json(
        &repo,
        &[
            "prune",
            "--clock-skew",
            "1s",
            "--keep-unindexed-for",
            "0s",
            "--json",
        ],
    );
    assert_eq!(st["packs_still_obsolete"], 0, "{st}");
    assert_eq!(snapshots(&repo).len(), WORKERS as usize);
    check_all("after");
    verify_read_data(&repo);
}
