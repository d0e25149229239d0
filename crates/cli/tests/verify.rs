//! `tidemark verify` and `tidemark repair index` on real local repositories
//! made with the real binary, damaged on disk the way storage damages them:
//! bit flips, truncation, deletion.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// A repository with one snapshot of two multi-MiB random files and a few
/// small ones; 64 KiB chunks and 1 MiB packs make several packs.
struct Fixture {
    dir: tempfile::TempDir,
    src: PathBuf,
    snapshot: String,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("docs")).unwrap();
        std::fs::write(src.join("big1"), random(3 << 20, 1)).unwrap();
        std::fs::write(src.join("big2"), random(3 << 20, 2)).unwrap();
        for i in 0..5 {
            std::fs::write(
                src.join(format!("docs/small{i}.txt")),
                format!("small file {i}\n").repeat(i + 1),
            )
            .unwrap();
        }
        let mut f = Fixture {
            dir,
            src,
            snapshot: String::new(),
        };
        f.ok(&["init", "--chunk-size-kib", "64", "--pack-size-mib", "1"]);
        f.ok(&["backup", f.src.to_str().unwrap()]);
        f.snapshot = f.snapshots()[0].clone();
        assert!(
            f.packs().len() >= 5,
            "want several packs, got {}",
            f.packs().len()
        );
        f
    }

    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    fn cache_root(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// The cache directory of the one repository under the cache root.
    fn cache(&self) -> PathBuf {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(self.cache_root()).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(dirs.len(), 1, "{dirs:?}");
        dirs.pop().unwrap()
    }

    fn run(&self, args: &[&str]) -> Out {
        let o = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TIDEMARK_REPOSITORY", self.repo())
            .env("TIDEMARK_PASSWORD", "pw-verify-tests")
            .env("TIDEMARK_INSECURE_TEST_KDF", "1")
            // Every command but verify keeps the local cache: damage must be
            // found all the same.
            .env("TIDEMARK_CACHE_DIR", self.cache_root())
            .args(args)
            .output()
            .unwrap();
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn ok(&self, args: &[&str]) -> Out {
        let o = self.run(args);
        assert_eq!(
            o.code, 0,
            "tidemark {args:?}\nstdout:\n{}\nstderr:\n{}",
            o.stdout, o.stderr
        );
        o
    }

    /// Run verify with `--json`, expecting exit code `code`.
    fn verify_json(&self, extra: &[&str], code: i32) -> Value {
        let mut args = vec!["-q", "verify", "--json"];
        args.extend_from_slice(extra);
        let o = self.run(&args);
        assert_eq!(
            o.code, code,
            "verify {extra:?}\nstdout:\n{}\nstderr:\n{}",
            o.stdout, o.stderr
        );
        serde_json::from_str(&o.stdout).unwrap()
    }

    fn snapshots(&self) -> Vec<String> {
        let o = self.ok(&["snapshots", "--json"]);
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    }

    fn files(&self, dir: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in walk(&self.repo().join(dir)) {
            out.push(e);
        }
        out.sort();
        out
    }

    fn packs(&self) -> Vec<PathBuf> {
        self.files("data")
    }

    /// The largest pack: certainly one of file data, not of trees.
    fn data_pack(&self) -> PathBuf {
        self.packs()
            .into_iter()
            .max_by_key(|p| std::fs::metadata(p).unwrap().len())
            .unwrap()
    }

    fn src_files(&self) -> Vec<PathBuf> {
        let mut v = walk(&self.src);
        v.sort();
        v
    }

    /// Where `restore --target t` puts source file `f`.
    fn restored(&self, target: &Path, f: &Path) -> PathBuf {
        target.join(f.strip_prefix("/").unwrap())
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Deterministic incompressible bytes (xorshift), different per seed.
fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn flip_bit(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    b[at] ^= 0x04;
    std::fs::write(path, b).unwrap();
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_str().unwrap().to_string()
}

/// The (kind, id) of every problem of a verify report.
fn problems(v: &Value) -> BTreeSet<(String, String)> {
    v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_string(),
                p["id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every (snapshot, path) a problem of `kind` and `id` names.
fn affected(v: &Value, kind: &str, id: &str) -> BTreeSet<(String, String)> {
    let p = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == kind && p["id"] == id)
        .unwrap_or_else(|| panic!("no {kind} {id} in {v:#}"));
    let mut out = BTreeSet::new();
    for a in p["affected"].as_array().unwrap() {
        for path in a["paths"].as_array().unwrap() {
            out.insert((
                a["snapshot"].as_str().unwrap().to_string(),
                path.as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

#[test]
fn clean_repository_verifies_with_exit_0() {
    let f = Fixture::new();
    let o = f.ok(&["-q", "verify"]);
    assert!(o.stdout.contains("no damage found"), "{}", o.stdout);
    let v = f.verify_json(&["--read-data"], 0);
    assert_eq!(
        v["stats"]["packs_read"].as_u64().unwrap() as usize,
        f.packs().len()
    );
    assert!(v["problems"].as_array().unwrap().is_empty());
    // Subsets n/m together read every pack exactly once.
    let parts: u64 = (1..=3)
        .map(|n| {
            f.verify_json(&["--read-data-subset", &format!("{n}/3")], 0)["stats"]["packs_read"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(parts as usize, f.packs().len());
    let bad = f.run(&["verify", "--read-data-subset", "0%"]);
    assert_ne!(bad.code, 0);
}

#[test]
fn bit_flip_in_a_pack_is_found_by_read_data_and_named_with_its_file() {
    let f = Fixture::new();
    let pack = f.data_pack();
    let len = std::fs::metadata(&pack).unwrap().len() as usize;
    flip_bit(&pack, len / 3);
    // The size is unchanged: the structure check alone cannot see it.
    f.verify_json(&[], 0);
    let v = f.verify_json(&["--read-data"], 3);
    let id = name(&pack);
    assert!(problems(&v).contains(&("pack".into(), id.clone())), "{v:#}");
    let hit = affected(&v, "pack", &id);
    assert_eq!(hit.len(), 1, "one chunk of one file: {hit:?}");
    let (snap, path) = hit.into_iter().next().unwrap();
    assert_eq!(snap, f.snapshot);
    let big: Vec<String> = ["big1", "big2"]
        .iter()
        .map(|b| f.src.join(b).display().to_string())
        .collect();
    assert!(big.contains(&path), "{path} is not one of the big files");

    // The human form: one line per object, the affected path indented.
    let o = f.run(&["-q", "verify", "--read-data"]);
    assert_eq!(o.code, 3);
    assert!(
        o.stdout
            .lines()
            .any(|l| l.starts_with("damaged pack ") && l.contains(&id)),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .lines()
            .any(|l| l.starts_with("    snapshot ") && l.ends_with(&path)),
        "{}",
        o.stdout
    );
}

/// The local cache holds the stored (encrypted) bytes; a damaged copy is
/// read again from the repository; copies of forgotten snapshots go; and
/// verify checks the repository, not the cache.
#[test]
fn the_metadata_cache_holds_stored_bytes_and_never_hides_damage() {
    let f = Fixture::new();
    std::fs::write(f.src.join("docs/small0.txt"), "changed\n").unwrap();
    f.ok(&["-q", "backup", f.src.to_str().unwrap()]);
    let target = f.dir.path().join("restored");
    f.ok(&["-q", "restore", "latest", "--target", target.to_str().unwrap()]);
    let cache = f.cache();
    for dir in ["snapshots", "index"] {
        let stored = f.files(dir);
        assert!(!stored.is_empty());
        for s in &stored {
            let copy = cache.join(dir).join(name(s));
            assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(s).unwrap(), "{}", copy.display());
        }
    }
    let trees: Vec<PathBuf> = walk(&cache.join("trees"));
    assert!(!trees.is_empty(), "tree ranges are cached");
    for t in walk(&cache) {
        let b = std::fs::read(&t).unwrap();
        assert!(!b.windows(b"small file".len()).any(|w| w == b"small file"), "plaintext in {}", t.display());
    }

    // A damaged copy: read again from the repository, and replaced.
    let snap = f.files("snapshots")[0].clone();
    let copy = cache.join("snapshots").join(name(&snap));
    flip_bit(&copy, 30);
    assert_eq!(f.snapshots().len(), 2);
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&snap).unwrap());
    // Damaged tree copies: the restore still comes out whole.
    for t in &trees {
        flip_bit(t, 20);
    }
    let again = f.dir.path().join("again");
    let o = f.ok(&["restore", "latest", "--target", again.to_str().unwrap()]);
    assert!(o.stderr.contains("damaged"), "the damaged copy is reported: {}", o.stderr);
    for src in f.src_files() {
        assert_eq!(std::fs::read(f.restored(&again, &src)).unwrap(), std::fs::read(&src).unwrap());
    }

    // Damage in the repository with an intact cached copy: verify names it.
    let victim = f.files("snapshots").into_iter().find(|p| name(p) == f.snapshot).unwrap();
    flip_bit(&victim, 40);
    let v = f.verify_json(&[], 3);
    assert_eq!(problems(&v), BTreeSet::from([("snapshot".into(), f.snapshot.clone())]));
    // Asked to trust the cache, it checks the cached copy (and says nothing).
    f.verify_json(&["--with-cache"], 0);
    // A pack gone from the store is found either way.
    let gone = f.data_pack();
    let kept = std::fs::read(&gone).unwrap();
    std::fs::remove_file(&gone).unwrap();
    let v = f.verify_json(&["--with-cache"], 3);
    assert!(problems(&v).contains(&("pack".into(), name(&gone))), "{v:#}");
    std::fs::write(&gone, kept).unwrap();

    // Forgotten: the copy goes with the next listing.
    f.ok(&["-q", "forget", "--keep-last", "1"]);
    f.snapshots();
    assert_eq!(walk(&cache.join("snapshots")).len(), 1);
    assert!(!cache.join("snapshots").join(&f.snapshot).exists());

    // Verify reads nothing from the cache but keeps copies of what checks out.
    std::fs::remove_dir_all(f.cache_root()).unwrap();
    f.verify_json(&[], 0);
    let cache = f.cache();
    for dir in ["snapshots", "index"] {
        let copies: BTreeSet<String> = walk(&cache.join(dir)).iter().map(|p| name(p)).collect();
        let stored: BTreeSet<String> = f.files(dir).iter().map(|p| name(p)).collect();
        assert_eq!(copies, stored, "{dir}");
    }
}

#[test]
fn bit_flip_in_an_index_file_is_named() {
    let f = Fixture::new();
    let index = f.files("index");
    assert_eq!(index.len(), 1);
    flip_bit(&index[0], 40);
    let v = f.verify_json(&[], 3);
    assert!(
        problems(&v).contains(&("index".into(), name(&index[0]))),
        "{v:#}"
    );
    let o = f.run(&["-q", "verify"]);
    assert_eq!(o.code, 3);
    assert!(
        o.stdout
            .contains(&format!("damaged index {}: ", name(&index[0]))),
        "{}",
        o.stdout
    );
}

#[test]
fn bit_flip_in_a_snapshot_is_named_and_the_other_snapshot_is_fine() {
    let f = Fixture::new();
    std::fs::write(f.src.join("docs/small0.txt"), "changed\n").unwrap();
    f.ok(&["-q", "backup", f.src.to_str().unwrap()]);
    let snaps = f.files("snapshots");
    assert_eq!(snaps.len(), 2);
    let victim = snaps.iter().find(|p| name(p) == f.snapshot).unwrap();
    let len = std::fs::metadata(victim).unwrap().len() as usize;
    flip_bit(victim, len / 2);
    let v = f.verify_json(&[], 3);
    assert_eq!(
        problems(&v),
        BTreeSet::from([("snapshot".into(), f.snapshot.clone())])
    );
    let p = &v["problems"][0];
    assert_eq!(p["affected"][0]["whole"], true);
    assert_eq!(v["stats"]["snapshots"], 1);
}

#[test]
fn truncated_pack_is_named_without_reading_data() {
    let f = Fixture::new();
    let pack = f.data_pack();
    let b = std::fs::read(&pack).unwrap();
    std::fs::write(&pack, &b[..b.len() - 1000]).unwrap();
    let v = f.verify_json(&[], 3);
    let id = name(&pack);
    assert_eq!(problems(&v), BTreeSet::from([("pack".into(), id.clone())]));
    assert!(
        v["problems"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("size"),
        "{v:#}"
    );
    assert!(!affected(&v, "pack", &id).is_empty());
    let v = f.verify_json(&["--read-data"], 3);
    assert!(problems(&v).contains(&("pack".into(), id)), "{v:#}");
}

#[test]
fn deleted_pack_is_named_by_the_structure_check() {
    let f = Fixture::new();
    let pack = f.data_pack();
    std::fs::remove_file(&pack).unwrap();
    let v = f.verify_json(&[], 3);
    let id = name(&pack);
    assert_eq!(problems(&v), BTreeSet::from([("pack".into(), id.clone())]));
    assert!(
        v["problems"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("missing"),
        "{v:#}"
    );
    let hit = affected(&v, "pack", &id);
    // Small files may share the pack too; the big ones surely do.
    assert!(hit.iter().all(|(s, _)| s == &f.snapshot), "{hit:?}");
    assert!(hit.iter().any(|(_, p)| p.contains("/big")), "{hit:?}");
}

#[test]
fn restore_around_a_damaged_pack_restores_every_other_file() {
    let f = Fixture::new();
    let pack = f.data_pack();
    let len = std::fs::metadata(&pack).unwrap().len() as usize;
    flip_bit(&pack, len / 2);
    let v = f.verify_json(&["--read-data"], 3);
    let damaged: BTreeSet<String> = affected(&v, "pack", &name(&pack))
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert_eq!(damaged.len(), 1);

    let target = f.dir.path().join("out");
    let o = f.run(&[
        "-q",
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(o.code, 3, "stderr:\n{}", o.stderr);
    let mut restored_ok = 0;
    for src in f.src_files() {
        let out = f.restored(&target, &src);
        if damaged.contains(&src.display().to_string()) {
            assert!(
                o.stderr
                    .contains(&format!("not restored: {}", out.display())),
                "{}",
                o.stderr
            );
        } else {
            assert_eq!(
                std::fs::read(&out).unwrap(),
                std::fs::read(&src).unwrap(),
                "{}",
                src.display()
            );
            restored_ok += 1;
        }
    }
    assert_eq!(restored_ok, f.src_files().len() - 1);
}

#[test]
fn repair_index_after_losing_every_index_file_makes_restore_work() {
    let f = Fixture::new();
    for i in f.files("index") {
        std::fs::remove_file(i).unwrap();
    }
    let v = f.verify_json(&[], 3);
    assert!(!v["problems"].as_array().unwrap().is_empty());
    assert_ne!(
        f.run(&[
            "-q",
            "restore",
            "latest",
            "--target",
            f.dir.path().join("x").to_str().unwrap()
        ])
        .code,
        0
    );

    let o = f.ok(&["-q", "repair", "index"]);
    assert!(
        o.stdout
            .contains(&format!("rebuilt index: {} packs", f.packs().len())),
        "{}",
        o.stdout
    );
    f.verify_json(&["--read-data"], 0);
    let target = f.dir.path().join("out");
    f.ok(&[
        "-q",
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]);
    for src in f.src_files() {
        assert_eq!(
            std::fs::read(f.restored(&target, &src)).unwrap(),
            std::fs::read(&src).unwrap(),
            "{}",
            src.display()
        );
    }
}

#[test]
fn repair_index_skips_and_names_a_damaged_pack() {
    let f = Fixture::new();
    let pack = f.data_pack();
    let len = std::fs::metadata(&pack).unwrap().len() as usize;
    flip_bit(&pack, len - 8); // inside the sealed header
    let o = f.run(&["-q", "repair", "index"]);
    assert_eq!(o.code, 3, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stdout
            .contains(&format!("skipped damaged pack {}", name(&pack))),
        "{}",
        o.stdout
    );
    // Its blobs are gone from the index: verify names the files they held.
    let v = f.verify_json(&[], 3);
    assert!(
        v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["kind"] == "blob"),
        "{v:#}"
    );
    assert!(
        v["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains(&name(&pack))),
        "{v:#}"
    );
}

#[test]
fn truncated_index_and_snapshot_files_are_named() {
    let f = Fixture::new();
    let index = f.files("index").remove(0);
    let snap = f.files("snapshots").remove(0);
    for p in [&index, &snap] {
        let b = std::fs::read(p).unwrap();
        std::fs::write(p, &b[..b.len() / 2]).unwrap();
    }
    let v = f.verify_json(&[], 3);
    let want = BTreeSet::from([
        ("index".to_string(), name(&index)),
        ("snapshot".to_string(), name(&snap)),
    ]);
    assert_eq!(problems(&v), want, "{v:#}");
    let o = f.run(&["-q", "verify"]);
    assert_eq!(o.code, 3);
    for (kind, id) in want {
        let line = o
            .stdout
            .lines()
            .find(|l| l.contains(&id))
            .unwrap_or_else(|| panic!("{kind} {id} not named:\n{}", o.stdout));
        assert!(
            line.starts_with(&format!("damaged {kind} {id}: "))
                && line.contains("does not match its id"),
            "{line}"
        );
    }
}
