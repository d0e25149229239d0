//! The real `tidemark` binary on a local repository: round trips compared
//! byte for byte and by metadata, partial restore, incremental backups,
//! snapshot listing, refusals of bad input, keys, and no plaintext at rest.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use tempfile::TempDir;

/// A scratch directory with a repository path and a source path in it.
struct Setup {
    dir: TempDir,
    repo: Repo,
}

impl Setup {
    fn new(init_args: &[&str]) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::local(&dir.path().join("repo"));
        repo.init(init_args);
        Setup { dir, repo }
    }

    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }

    fn repo_dir(&self) -> std::path::PathBuf {
        self.path("repo")
    }
}

#[test]
fn full_round_trip_restores_bytes_and_metadata() {
    let s = Setup::new(&[]);
    let src = s.path("src");
    let info = make_full_tree(&src, 1);
    let b = s.repo.backup(&[&src], &[]);
    assert_eq!(b["errors"].as_array().map(Vec::len), Some(0), "{b}");
    assert_eq!(
        summary(&b, "total_bytes"),
        info.bytes + 21 * 100,
        "hard link counted per name: {b}"
    );
    assert!(summary(&b, "files_new") >= 10, "{b}");

    let target = s.path("restore");
    let out = s.repo.restore(b["id"].as_str().unwrap(), &target, &[]);
    assert!(out.stderr.contains("restored snapshot"), "{}", out.stderr);
    assert_same_tree(&src, &restored(&target, &src));
    // The sparse file really has holes in the restore.
    let m = fs::metadata(restored(&target, &info.sparse_file)).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert!(
        m.blocks() * 512 < m.len(),
        "{} blocks for {} bytes",
        m.blocks(),
        m.len()
    );

    // `latest` names the same snapshot; restoring into a fresh directory
    // again gives the same tree.
    let target2 = s.path("restore2");
    s.repo.restore("latest", &target2, &[]);
    assert_same_tree(&src, &restored(&target2, &src));
}

#[test]
fn include_restores_only_the_chosen_sub_path() {
    let s = Setup::new(&[]);
    let src = s.path("src");
    make_full_tree(&src, 2);
    s.repo.backup(&[&src], &[]);

    let target = s.path("restore");
    let docs = src.join("docs");
    s.repo
        .restore("latest", &target, &["--include", docs.to_str().unwrap()]);
    let root = restored(&target, &src);
    assert_same_tree(&docs, &root.join("docs"));
    let top: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        top,
        vec![std::ffi::OsString::from("docs")],
        "only docs/ restored"
    );

    // A single file works too, and a path not in the snapshot is an error.
    let target2 = s.path("restore2");
    let deep = src.join("a/b/c/d/e/deep.txt");
    s.repo
        .restore("latest", &target2, &["--include", deep.to_str().unwrap()]);
    assert!(same_content(&deep, &restored(&target2, &deep)));
    assert!(!restored(&target2, &src.join("a/b/mid.txt")).exists());
    let none = s.repo.run([
        "restore",
        "latest",
        "--target",
        s.path("restore3").to_str().unwrap(),
        "--include",
        src.join("no/such/path").to_str().unwrap(),
    ]);
    assert_ne!(none.code, 0, "{none:?}");
    assert!(
        none.stderr.contains("nothing in the snapshot matches"),
        "{}",
        none.stderr
    );
}

#[test]
fn unchanged_tree_is_not_read_again() {
    let s = Setup::new(&[]);
    let src = s.path("src");
    make_full_tree(&src, 3);
    let first = s.repo.backup(&[&src], &[]);
    let second = s.repo.backup(&[&src], &[]);

    assert_eq!(summary(&second, "bytes_read"), 0, "{second}");
    assert_eq!(summary(&second, "files_new"), 0, "{second}");
    assert_eq!(summary(&second, "files_changed"), 0, "{second}");
    assert_eq!(
        summary(&second, "files_unmodified"),
        summary(&first, "total_files"),
        "{second}"
    );
    assert_eq!(
        summary(&second, "total_files"),
        summary(&first, "total_files")
    );
    // Only directory listings (access times move when files are read) may
    // be new: a few KiB, no file data.
    assert!(summary(&second, "data_added") < 64 * 1024, "{second}");
    assert_eq!(second["snapshot"]["parent"], first["id"], "{second}");

    // --force reads everything again, and still stores nothing new.
    let forced = s.repo.backup(&[&src], &["--force"]);
    assert_eq!(
        summary(&forced, "bytes_read"),
        summary(&first, "bytes_read"),
        "{forced}"
    );
    assert!(summary(&forced, "data_added") < 64 * 1024, "{forced}");
}

#[test]
fn one_changed_byte_adds_about_one_chunk() {
    // 256 KiB average chunks: min 64 KiB, max 1 MiB.
    let s = Setup::new(&["--chunk-size-kib", "256"]);
    let src = s.path("src");
    fs::create_dir_all(&src).unwrap();
    let big = src.join("big.bin");
    let len = 16 * 1024 * 1024;
    write_random_file(&big, 77, len);
    fs::write(src.join("other.txt"), "unchanged\n").unwrap();
    let first = s.repo.backup(&[&src], &[]);
    assert!(summary(&first, "data_added") >= len, "{first}");

    let mut bytes = fs::read(&big).unwrap();
    bytes[9_000_000] ^= 0x5a;
    fs::write(&big, &bytes).unwrap();
    let second = s.repo.backup(&[&src], &[]);
    assert_eq!(summary(&second, "files_changed"), 1, "{second}");
    assert_eq!(summary(&second, "files_unmodified"), 1, "{second}");
    assert_eq!(summary(&second, "bytes_read"), len, "{second}");
    let added = summary(&second, "data_added");
    // One chunk (at most two when the change moves a cut), plus trees.
    assert!(
        added <= 2 * 1024 * 1024 + 16 * 1024,
        "data_added {added} for one changed byte: {second}"
    );
    assert!(added >= 64 * 1024, "the changed chunk was stored: {second}");
    assert!(summary(&second, "blobs_new") <= 2 + 4, "{second}");

    let target = s.path("restore");
    s.repo.restore(second["id"].as_str().unwrap(), &target, &[]);
    assert_same_tree(&src, &restored(&target, &src));
    // The first snapshot still restores the old content.
    let target1 = s.path("restore1");
    s.repo.restore(first["id"].as_str().unwrap(), &target1, &[]);
    let old = fs::read(restored(&target1, &big)).unwrap();
    bytes[9_000_000] ^= 0x5a;
    assert!(old == bytes, "first snapshot restores the original bytes");
}

#[test]
fn snapshots_json_has_id_time_paths_tags() {
    let s = Setup::new(&[]);
    let src = s.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "x").unwrap();
    let before = chrono::Utc::now();
    let b = s.repo.backup(&[&src], &["--tag", "daily", "--tag", "db-1"]);
    let other = s.path("other");
    fs::create_dir_all(&other).unwrap();
    s.repo.backup(&[&other], &[]);

    let snaps = s.repo.snapshots();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    let row = snaps
        .iter()
        .find(|r| r["id"] == b["id"])
        .expect("the tagged snapshot is listed");
    let id = row["id"].as_str().unwrap();
    assert_eq!(id.len(), 64);
    assert!(id.bytes().all(|c| c.is_ascii_hexdigit()));
    assert!(id.starts_with(row["short_id"].as_str().unwrap()));
    let time =
        chrono::DateTime::parse_from_rfc3339(row["time"].as_str().unwrap()).expect("RFC 3339 time");
    assert!(time >= before - chrono::Duration::seconds(1) && time <= chrono::Utc::now());
    assert_eq!(row["paths"], serde_json::json!([src.to_str().unwrap()]));
    assert_eq!(row["tags"], serde_json::json!(["daily", "db-1"]));

    let tagged = s.repo.ok(["snapshots", "--json", "--tag", "daily"]).json();
    assert_eq!(tagged.as_array().unwrap().len(), 1);
    assert_eq!(tagged[0]["id"], b["id"]);
    let none = s.repo.ok(["snapshots", "--json", "--tag", "weekly"]).json();
    assert_eq!(none, serde_json::json!([]));

    // A unique prefix of the id restores.
    let target = s.path("restore");
    s.repo.restore(&id[..8], &target, &[]);
    assert_eq!(fs::read(restored(&target, &src.join("f"))).unwrap(), b"x");
}

fn one_line_error(out: &Output) -> &str {
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "expected a one-line error, got:\n{}",
        out.stderr
    );
    lines[0]
}

#[test]
fn wrong_passphrase_exits_12_with_one_line() {
    let s = Setup::new(&[]);
    let out = s
        .repo
        .with_password("not the passphrase")
        .run(["snapshots"]);
    assert_eq!(out.code, 12, "{out:?}");
    let line = one_line_error(&out);
    assert!(line.to_lowercase().contains("password"), "{line}");
    assert!(out.stdout.is_empty(), "{out:?}");
}

#[test]
fn missing_repository_exits_10() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::local(&dir.path().join("nothing-here"));
    for args in [
        &["snapshots"][..],
        &["backup", "/etc/hostname"],
        &["restore", "latest", "--target", "/tmp/x"],
    ] {
        let out = repo.run(args);
        assert_eq!(out.code, 10, "{args:?}: {out:?}");
        let line = one_line_error(&out);
        assert!(line.contains("no repository"), "{line}");
    }
    assert!(!dir.path().join("nothing-here/config").exists());
}

#[test]
fn newer_format_version_is_refused_clearly() {
    let s = Setup::new(&[]);
    let config = s.repo_dir().join("config");
    let text = fs::read_to_string(&config).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["version"] = 99.into();
    fs::write(&config, serde_json::to_vec_pretty(&v).unwrap()).unwrap();

    let out = s.repo.run(["snapshots"]);
    assert_ne!(out.code, 0, "{out:?}");
    let line = one_line_error(&out);
    assert!(line.contains("version 99"), "{line}");
    assert!(line.contains("upgrade"), "{line}");
    // Refused before the passphrase matters.
    let out = s.repo.with_password("whatever").run(["snapshots"]);
    assert!(out.stderr.contains("version 99"), "{out:?}");
}

#[test]
fn missing_source_path_writes_no_snapshot() {
    let s = Setup::new(&[]);
    let missing = s.path("does-not-exist");
    let out = s
        .repo
        .run([std::ffi::OsStr::new("backup"), missing.as_os_str()]);
    assert_ne!(out.code, 0, "{out:?}");
    assert_ne!(out.code, 3, "not a partial success: {out:?}");
    let line = one_line_error(&out);
    assert!(line.contains(missing.to_str().unwrap()), "{line}");
    assert!(line.contains("No such file"), "{line}");
    assert_eq!(s.repo.snapshots().len(), 0);
    assert_eq!(
        fs::read_dir(s.repo_dir().join("snapshots"))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
    assert_eq!(
        fs::read_dir(s.repo_dir().join("locks"))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
}

/// As root, permission bits do not stop reads; the backup runs as `nobody`
/// (setpriv) over a tree it can read except one file of mode 000.
#[test]
fn unreadable_file_gives_exit_3_and_the_rest_is_saved() {
    if !is_root() {
        eprintln!("not root: skipping (the test needs setpriv to another user)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let repo_dir = dir.path().join("repo");
    let repo = Repo::local(&repo_dir);
    repo.init(&[]);
    chown_tree(&repo_dir, 65534, 65534);

    let src = dir.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("ok.txt"), "readable\n").unwrap();
    fs::write(src.join("sub/more.txt"), "also readable\n".repeat(1000)).unwrap();
    let locked = src.join("sub/locked.txt");
    fs::write(&locked, "root only\n").unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();

    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
    cmd.arg(env!("CARGO_BIN_EXE_tidemark"));
    cmd.env_clear();
    cmd.env("PATH", "/usr/bin:/bin");
    for (k, v) in &repo.env {
        cmd.env(k, v);
    }
    cmd.arg("-r").arg(&repo.location).arg("backup").arg(&src);
    let out = run_command(cmd);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains(locked.to_str().unwrap()),
        "the file is named: {}",
        out.stderr
    );
    assert!(out.stderr.contains("incomplete"), "{}", out.stderr);

    let snaps = repo.snapshots();
    assert_eq!(snaps.len(), 1, "the snapshot of the rest is written");
    assert_eq!(snaps[0]["incomplete"], true, "{:?}", snaps[0]);
    assert_eq!(snaps[0]["summary"]["errors"], 1);

    let target = dir.path().join("restore");
    repo.restore("latest", &target, &[]);
    let r = restored(&target, &src);
    assert!(same_content(&src.join("ok.txt"), &r.join("ok.txt")));
    assert!(same_content(
        &src.join("sub/more.txt"),
        &r.join("sub/more.txt")
    ));
    assert!(!r.join("sub/locked.txt").exists());
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // The owner of a file this process creates is its effective uid.
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().metadata().unwrap().uid() == 0
}

fn chown_tree(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
    if fs::symlink_metadata(p).unwrap().is_dir() {
        for e in fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path(), uid, gid);
        }
    }
}

#[test]
fn keys_add_list_remove() {
    let s = Setup::new(&[]);
    let second = "a second, different passphrase";
    let out = s
        .repo
        .with_env("TIDEMARK_NEW_PASSWORD", second)
        .ok(["key", "add"]);
    assert!(out.stdout.starts_with("added key "), "{out:?}");

    let keys = s.repo.ok(["key", "list", "--json"]).json();
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    let first_id = keys.iter().find(|k| k["current"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let second_id = keys.iter().find(|k| k["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // The second passphrase opens the repository, and sees its key as current.
    let with_second = s.repo.with_password(second);
    let keys2 = with_second.ok(["key", "list", "--json"]).json();
    let current: Vec<_> = keys2
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["current"] == true)
        .collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["id"].as_str().unwrap(), second_id);

    // The key in use cannot be removed.
    let out = s.repo.run(["key", "remove", &first_id]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(one_line_error(&out).contains("key in use"), "{out:?}");

    // Another key can; afterwards the first passphrase no longer opens it.
    with_second.ok(["key", "remove", &first_id[..12]]);
    let out = s.repo.run(["snapshots"]);
    assert_eq!(out.code, 12, "{out:?}");
    with_second.ok(["snapshots"]);

    // The last key cannot be removed.
    let out = with_second.run(["key", "remove", &second_id]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(one_line_error(&out).contains("last key"), "{out:?}");
    assert_eq!(
        with_second
            .ok(["key", "list", "--json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn no_plaintext_secret_at_rest() {
    let s = Setup::new(&[]);
    let src = s.path("src");
    let info = make_full_tree(&src, 4);
    // Highly compressible text would show through if data were not encrypted.
    fs::write(src.join("plain.txt"), format!("{CANARY}\n").repeat(500)).unwrap();
    s.repo.backup(&[&src], &["--tag", "tag-visible-nowhere"]);
    s.repo
        .with_env("TIDEMARK_NEW_PASSWORD", "second-secret-passphrase")
        .ok(["key", "add"]);

    let files = files_under(&s.repo_dir());
    assert!(
        files.iter().any(|f| f.to_str().unwrap().contains("/data/")),
        "{files:?}"
    );
    let needles: Vec<&[u8]> = vec![
        PASSWORD.as_bytes(),
        b"second-secret-passphrase",
        CANARY.as_bytes(),
        b"name with spaces",
        b"tag-visible-nowhere",
        b"deep down",
        src.to_str().unwrap().as_bytes(),
    ];
    let big = fs::read(&info.big_file).unwrap();
    let big_sample = &big[1_000_000..1_000_064];
    for f in &files {
        let bytes = fs::read(f).unwrap();
        for n in &needles {
            assert!(
                !contains(&bytes, n),
                "{} holds {:?} in the clear",
                f.display(),
                String::from_utf8_lossy(n)
            );
        }
        assert!(
            !contains(&bytes, big_sample),
            "{} holds file content in the clear",
            f.display()
        );
    }
}

#[test]
fn backup_of_several_paths_and_restore_of_each() {
    let s = Setup::new(&[]);
    let a = s.path("a");
    let b = s.path("b");
    make_full_tree(&a, 5);
    fs::create_dir_all(&b).unwrap();
    fs::write(b.join("one"), random_bytes(9, 300_000)).unwrap();
    let out = s.repo.backup(&[&a, &b], &[]);
    let mut paths: Vec<String> = out["snapshot"]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        vec![
            a.to_str().unwrap().to_string(),
            b.to_str().unwrap().to_string()
        ]
    );
    let target = s.path("restore");
    s.repo.restore("latest", &target, &[]);
    assert_same_tree(&a, &restored(&target, &a));
    assert_same_tree(&b, &restored(&target, &b));
}

/// The comparison itself must notice each kind of difference, or the round
/// trips above prove nothing.
#[test]
fn tree_comparison_catches_each_kind_of_difference() {
    let s = Setup::new(&[]);
    let src = s.path("src");
    make_full_tree(&src, 6);
    s.repo.backup(&[&src], &[]);
    type Damage = fn(&Path);
    let damages: Vec<(&str, Damage)> = vec![
        ("one byte", |r| {
            let p = r.join("bin/random.bin");
            let mut b = fs::read(&p).unwrap();
            b[4_000_000] ^= 1;
            let t = filetime::FileTime::from_last_modification_time(&fs::metadata(&p).unwrap());
            fs::write(&p, b).unwrap();
            filetime::set_file_mtime(&p, t).unwrap();
        }),
        ("mode", |r| {
            fs::set_permissions(r.join("secret.key"), fs::Permissions::from_mode(0o644)).unwrap()
        }),
        ("owner", |r| {
            std::os::unix::fs::lchown(r.join("owned-by-1234.txt"), Some(0), None).unwrap()
        }),
        ("mtime by 1 ns", |r| {
            let p = r.join("docs/readme.txt");
            let t = filetime::FileTime::from_last_modification_time(&fs::metadata(&p).unwrap());
            let t2 = filetime::FileTime::from_unix_time(
                t.unix_seconds(),
                (t.nanoseconds() + 1) % 1_000_000_000,
            );
            filetime::set_file_mtime(&p, t2).unwrap();
        }),
        ("symlink target", |r| {
            let p = r.join("dangling-link");
            let t =
                filetime::FileTime::from_last_modification_time(&fs::symlink_metadata(&p).unwrap());
            fs::remove_file(&p).unwrap();
            std::os::unix::fs::symlink("../nowhere/at/al1", &p).unwrap();
            filetime::set_symlink_file_times(&p, t, t).unwrap();
        }),
        ("hard link split", |r| {
            let p = r.join("a/hard-2");
            let m = fs::metadata(&p).unwrap();
            let t = filetime::FileTime::from_last_modification_time(&m);
            let b = fs::read(&p).unwrap();
            fs::remove_file(&p).unwrap();
            fs::write(&p, b).unwrap();
            filetime::set_file_mtime(&p, t).unwrap();
        }),
        ("holes filled", |r| {
            let p = r.join("sparse.img");
            let m = fs::metadata(&p).unwrap();
            let t = filetime::FileTime::from_last_modification_time(&m);
            let b = fs::read(&p).unwrap();
            fs::write(&p, b).unwrap();
            filetime::set_file_mtime(&p, t).unwrap();
        }),
        ("missing empty dir", |r| {
            fs::remove_dir(r.join("empty-dir")).unwrap()
        }),
    ];
    for (i, (what, damage)) in damages.into_iter().enumerate() {
        let target = s.path(&format!("restore-{i}"));
        s.repo.restore("latest", &target, &[]);
        let r = restored(&target, &src);
        assert_same_tree(&src, &r);
        damage(&r);
        // Undo the side effect on directory times, so only the damage differs.
        copy_dir_times(&src, &r);
        let caught = std::panic::catch_unwind(|| assert_same_tree(&src, &r));
        assert!(caught.is_err(), "the comparison missed: {what}");
    }
}

fn copy_dir_times(from: &Path, to: &Path) {
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() && to.join(e.file_name()).is_dir() {
            copy_dir_times(&e.path(), &to.join(e.file_name()));
        }
    }
    let t = filetime::FileTime::from_last_modification_time(&fs::metadata(from).unwrap());
    filetime::set_file_mtime(to, t).unwrap();
}
