//! The real `tidemark` binary: `copy` into a repository with its own keys
//! (round trip, idempotence, incremental copies), `stats` figures on data
//! built to have known ratios, `ls` against the files written, and `diff`
//! against a scripted change.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

const TARGET_PASSWORD: &str = "the target's own passphrase 91c2";

/// Every path at and below `root` (directories included), as the snapshot
/// stores them.
fn all_paths(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::from([root.to_path_buf()]);
    if fs::symlink_metadata(root).unwrap().is_dir() {
        for e in fs::read_dir(root).unwrap() {
            out.extend(all_paths(&e.unwrap().path()));
        }
    }
    out
}

/// Bytes of the packs of a local repository.
fn pack_bytes(repo_dir: &Path) -> u64 {
    files_under(&repo_dir.join("data"))
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

fn stats(repo: &Repo, extra: &[&str]) -> Value {
    let mut args = vec!["stats", "--json"];
    args.extend_from_slice(extra);
    repo.ok(args).json()
}

fn f64_of(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("no {field} in {v}"))
}

fn u64_of(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {v}"))
}

#[test]
fn copy_round_trip_is_idempotent_incremental_and_rekeyed() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let source = Repo::local(&dir.path().join("repo"));
    source.init(&[]);
    let target_dir = dir.path().join("target");
    let target = Repo::local(&target_dir).with_password(TARGET_PASSWORD);
    target.init(&[]);
    let copy_to = |extra: &[&str]| {
        let mut args = vec!["copy", "--to", target.location.as_str()];
        args.extend_from_slice(extra);
        source
            .with_env("TIDEMARK_TO_PASSWORD", TARGET_PASSWORD)
            .ok(args)
    };

    make_full_tree(&src, 11);
    let first = source.backup(&[&src], &[]);
    write_random_file(&src.join("second.bin"), 12, 300_000);
    source.backup(&[&src], &[]);
    // The first snapshot's state, as the source restores it.
    let first_id = first["id"].as_str().unwrap();
    let from_source = dir.path().join("from-source");
    source.restore(first_id, &from_source, &[]);

    let out = copy_to(&[]);
    assert_eq!(
        out.stdout.matches("copied snapshot").count(),
        2,
        "{}",
        out.stdout
    );
    let src_snaps = source.snapshots();
    let dst_snaps = target.snapshots();
    assert_eq!(dst_snaps.len(), 2);
    let originals: BTreeSet<&str> = dst_snaps
        .iter()
        .map(|s| s["original"].as_str().unwrap())
        .collect();
    let sources: BTreeSet<&str> = src_snaps
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(originals, sources);
    for (s, d) in src_snaps.iter().zip(&dst_snaps) {
        assert_eq!(s["time"], d["time"]);
        assert_eq!(s["paths"], d["paths"]);
        assert_ne!(
            s["tree"], d["tree"],
            "tree ids are keyed by the target's key"
        );
    }

    // Restores from the copy equal the source files, byte for byte.
    let latest = dir.path().join("from-copy-latest");
    target.restore("latest", &latest, &[]);
    assert_same_tree(&src, &restored(&latest, &src));
    let first_copy = dst_snaps
        .iter()
        .find(|d| d["original"] == first["id"])
        .unwrap();
    let older = dir.path().join("from-copy-first");
    target.restore(first_copy["id"].as_str().unwrap(), &older, &[]);
    assert_same_tree(&restored(&from_source, &src), &restored(&older, &src));

    // Again: nothing to do, nothing written.
    let packs_before = pack_bytes(&target_dir);
    let again = copy_to(&[]);
    assert!(again.stdout.contains("nothing to copy"), "{}", again.stdout);
    assert_eq!(target.snapshots().len(), 2);
    assert_eq!(pack_bytes(&target_dir), packs_before);

    // Each repository opens only with its own passphrase.
    assert_eq!(
        source
            .with_password(TARGET_PASSWORD)
            .run(["snapshots"])
            .code,
        12
    );
    assert_eq!(target.with_password(PASSWORD).run(["snapshots"]).code, 12);
    let wrong = source.with_env("TIDEMARK_TO_PASSWORD", PASSWORD).run([
        "copy",
        "--to",
        target.location.as_str(),
    ]);
    assert_eq!(wrong.code, 12, "{}", wrong.stderr);
    let pw_file = dir.path().join("target-pw");
    fs::write(&pw_file, format!("{TARGET_PASSWORD}\n")).unwrap();
    let by_file = source.run([
        "copy",
        "--to",
        target.location.as_str(),
        "--to-password-file",
        pw_file.to_str().unwrap(),
    ]);
    assert_eq!(by_file.code, 0, "{}", by_file.stderr);

    // A new backup: only that snapshot and its new data travel.
    let tree_bytes = tree_bytes(&src);
    write_random_file(&src.join("third.bin"), 13, 1_000_000);
    source.backup(&[&src], &[]);
    let out = copy_to(&["--json"]).json();
    assert_eq!(out["copied"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(out["skipped"].as_array().unwrap().len(), 2, "{out}");
    // Unchanged files are paired up with the earlier copy, not read again.
    let read = u64_of(&out, "bytes_read");
    assert!(
        (1_000_000..1_100_000).contains(&read),
        "read {read} bytes: {out}"
    );
    let grown = pack_bytes(&target_dir) - packs_before;
    assert!(
        (1_000_000..1_100_000).contains(&grown),
        "target grew by {grown} bytes for 1 MB of new data (tree {tree_bytes})"
    );
    let newest = dir.path().join("from-copy-newest");
    target.restore("latest", &newest, &[]);
    assert_same_tree(&src, &restored(&newest, &src));
}

#[test]
fn stats_ratios_follow_the_data() {
    let dir = tempfile::tempdir().unwrap();

    // Two identical directories of random data: dedup 2, compression 1.
    let random = dir.path().join("random");
    for d in ["one", "two"] {
        fs::create_dir_all(random.join(d)).unwrap();
        write_random_file(&random.join(d).join("data"), 21, 3_000_000);
    }
    let r = Repo::local(&dir.path().join("r1"));
    r.init(&[]);
    r.backup(&[&random], &[]);
    let s = stats(&r, &[]);
    assert_eq!(u64_of(&s, "snapshots"), 1);
    assert_eq!(u64_of(&s, "files"), 2);
    assert_eq!(u64_of(&s, "logical_bytes"), 6_000_000);
    assert_eq!(u64_of(&s, "data_raw_bytes"), 3_000_000);
    let dedup = f64_of(&s, "dedup_ratio");
    assert!((1.99..2.01).contains(&dedup), "{s}");
    let comp = f64_of(&s, "compression_ratio");
    assert!((0.99..1.01).contains(&comp), "{s}");
    let repo_size = &s["repository"];
    assert_eq!(
        u64_of(repo_size, "pack_bytes"),
        pack_bytes(&dir.path().join("r1"))
    );
    assert!(u64_of(repo_size, "total_bytes") > u64_of(repo_size, "pack_bytes"));

    // The same snapshot backed up again: logical doubles, unique stays.
    r.backup(&[&random], &[]);
    let s2 = stats(&r, &[]);
    assert_eq!(u64_of(&s2, "logical_bytes"), 12_000_000);
    assert_eq!(u64_of(&s2, "data_raw_bytes"), 3_000_000);
    // One snapshot chosen: the figures of that one only.
    let one = stats(&r, &["latest"]);
    assert_eq!(u64_of(&one, "snapshots"), 1);
    assert_eq!(u64_of(&one, "logical_bytes"), 6_000_000);

    // Text compresses: ratio above 2, no dedup to speak of.
    let text = dir.path().join("text");
    fs::create_dir_all(&text).unwrap();
    let body: String = (0..60_000)
        .map(|i| format!("line {i:06}: the tide marks how far the sea came in\n"))
        .collect();
    fs::write(text.join("log.txt"), &body).unwrap();
    let t = Repo::local(&dir.path().join("r2"));
    t.init(&[]);
    t.backup(&[&text], &[]);
    let s = stats(&t, &[]);
    assert_eq!(u64_of(&s, "logical_bytes"), body.len() as u64);
    assert!(f64_of(&s, "compression_ratio") > 2.0, "{s}");
    assert!((0.99..1.01).contains(&f64_of(&s, "dedup_ratio")), "{s}");

    // The text form names the figures and the help documents them.
    let txt = t.ok(["stats"]).stdout;
    for w in [
        "logical size",
        "unique data",
        "dedup ratio",
        "compression ratio",
        "repository",
    ] {
        assert!(txt.contains(w), "{txt}");
    }
    let help = t.ok(["stats", "--help"]).stdout;
    for w in [
        "logical_bytes",
        "dedup_ratio",
        "compression_ratio",
        "data_stored_bytes",
        "repository",
    ] {
        assert!(help.contains(w), "{help}");
    }
}

#[test]
fn ls_lists_exactly_the_files_written() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let repo = Repo::local(&dir.path().join("repo"));
    repo.init(&[]);
    make_full_tree(&src, 31);
    repo.backup(&[&src], &[]);

    let listed: Vec<Value> = match repo.ok(["ls", "--json", "latest"]).json() {
        Value::Array(a) => a,
        v => panic!("not an array: {v}"),
    };
    let below: BTreeMap<PathBuf, &Value> = listed
        .iter()
        .map(|e| (PathBuf::from(e["path"].as_str().unwrap()), e))
        .filter(|(p, _)| p.starts_with(&src))
        .collect();
    // Names that are not UTF-8 are listed in their lossy form.
    let want: BTreeSet<PathBuf> = all_paths(&src)
        .into_iter()
        .map(|p| PathBuf::from(p.to_string_lossy().into_owned()))
        .collect();
    assert_eq!(below.keys().cloned().collect::<BTreeSet<_>>(), want);
    // Above the source: only its ancestors.
    assert_eq!(listed.len(), below.len() + src.ancestors().count() - 2);
    for (p, e) in &below {
        let Ok(m) = fs::symlink_metadata(p) else {
            continue;
        };
        if m.is_file() {
            assert_eq!(e["type"], "file", "{p:?}");
            assert_eq!(e["size"].as_u64(), Some(m.len()), "{p:?}");
            assert_eq!(
                e["mode"].as_u64(),
                Some((m.permissions().mode() & 0o7777) as u64),
                "{p:?}"
            );
        }
        if m.is_dir() {
            assert_eq!(e["type"], "dir", "{p:?}");
        }
    }

    // A sub-path, in plain and long form.
    let sub = src.join("docs");
    let plain = repo.ok(["ls", "latest", sub.to_str().unwrap()]).stdout;
    let got: BTreeSet<PathBuf> = plain.lines().map(PathBuf::from).collect();
    let want: BTreeSet<PathBuf> = all_paths(&sub)
        .into_iter()
        .map(|p| PathBuf::from(p.to_string_lossy().into_owned()))
        .collect();
    assert_eq!(got, want);
    let long = repo
        .ok(["ls", "-l", "latest", sub.to_str().unwrap()])
        .stdout;
    assert_eq!(long.lines().count(), want.len());
    assert!(long.lines().next().unwrap().starts_with('d'), "{long}");
    // A path that is not there is an error, not an empty listing.
    assert_ne!(
        repo.run(["ls", "latest", src.join("no-such").to_str().unwrap()])
            .code,
        0
    );
}

#[test]
fn diff_reports_exactly_a_scripted_change() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let repo = Repo::local(&dir.path().join("repo"));
    repo.init(&[]);
    fs::create_dir_all(src.join("stable/deep")).unwrap();
    fs::create_dir_all(src.join("old")).unwrap();
    write_random_file(&src.join("stable/deep/big"), 41, 500_000);
    fs::write(src.join("old/a"), "aaaa").unwrap();
    fs::write(src.join("old/b"), "bbbbbb").unwrap();
    fs::write(src.join("edited"), "version one").unwrap();
    fs::write(src.join("chmodded"), "same content").unwrap();
    fs::write(src.join("removed"), "12345678").unwrap();
    let first = repo.backup(&[&src], &[]);

    fs::remove_dir_all(src.join("old")).unwrap();
    fs::remove_file(src.join("removed")).unwrap();
    fs::write(src.join("edited"), "version two!").unwrap();
    fs::set_permissions(src.join("chmodded"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::create_dir_all(src.join("fresh")).unwrap();
    fs::write(src.join("fresh/x"), "xyz").unwrap();
    fs::write(src.join("added"), "0123456789").unwrap();
    let second = repo.backup(&[&src], &[]);

    let (a, b) = (
        first["id"].as_str().unwrap(),
        second["id"].as_str().unwrap(),
    );
    let d = repo.ok(["diff", "--json", a, b]).json();
    let rel = |p: &str| {
        Path::new(p)
            .strip_prefix(&src)
            .map(|r| r.display().to_string())
            .ok()
    };
    let mut changes: Vec<(String, String)> = d["changes"]
        .as_array()
        .unwrap()
        .iter()
        // Directories whose content changed get a new mtime: metadata-only.
        .filter(|c| !(c["type"] == "dir" && c["change"] == "metadata"))
        .map(|c| {
            (
                rel(c["path"].as_str().unwrap()).unwrap_or_default(),
                c["change"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    changes.sort();
    let want: Vec<(String, String)> = [
        ("added", "added"),
        ("chmodded", "metadata"),
        ("edited", "modified"),
        ("fresh", "added"),
        ("fresh/x", "added"),
        ("old", "removed"),
        ("old/a", "removed"),
        ("old/b", "removed"),
        ("removed", "removed"),
    ]
    .iter()
    .map(|(p, c)| (p.to_string(), c.to_string()))
    .collect();
    assert_eq!(changes, want, "{d}");
    let s = &d["summary"];
    assert_eq!(
        (
            u64_of(s, "added"),
            u64_of(s, "removed"),
            u64_of(s, "modified")
        ),
        (3, 4, 1),
        "{s}"
    );
    assert_eq!(u64_of(s, "bytes_added"), 10 + 3 + 12);
    assert_eq!(u64_of(s, "bytes_removed"), 4 + 6 + 8 + 11);

    let text = repo.ok(["diff", a, b]).stdout;
    assert!(
        text.contains(&format!("+    {}/\n", src.join("fresh").display())),
        "{text}"
    );
    assert!(
        text.contains(&format!("M    {}\n", src.join("edited").display())),
        "{text}"
    );
    assert!(
        text.contains(&format!("U    {}\n", src.join("chmodded").display())),
        "{text}"
    );
    assert!(
        text.contains(&format!("-    {}\n", src.join("removed").display())),
        "{text}"
    );
    assert!(!text.contains("stable"), "unchanged subtree listed: {text}");
    // A snapshot against itself: no change.
    let same = repo.ok(["diff", "--json", a, a]).json();
    assert!(same["changes"].as_array().unwrap().is_empty(), "{same}");
}
