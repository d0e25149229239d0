//! Shared helpers for the integration tests that run the real `tidemark`
//! binary: running it against a repository, generating deterministic source
//! trees with every kind of entry, and comparing a restored tree with its
//! source (bytes and metadata).
//!
//! Each test binary uses only part of this module.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub mod cql;

/// The passphrase every test repository is created with.
pub const PASSWORD: &str = "correct horse battery staple 7f3a";

/// A distinctive string written into a backed-up text file; it must never
/// appear in any repository file.
pub const CANARY: &str = "TIDEMARK-CANARY-plaintext-must-not-leak-5d1e";

/// Environment variables of the test process that would change how the
/// binary behaves; they are removed from every child.
const INHERITED_VARS: &[&str] = &[
    "TIDEMARK_REPOSITORY",
    "TIDEMARK_PASSWORD",
    "TIDEMARK_PASSWORD_FILE",
    "TIDEMARK_NEW_PASSWORD",
    "TIDEMARK_LOG",
    "TIDEMARK_CACHE_DIR",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_PROFILE",
];

/// The result of one run of the binary.
#[derive(Debug)]
pub struct Output {
    /// Exit code; -1 when killed by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// A repository location plus the environment the binary needs for it.
#[derive(Debug, Clone)]
pub struct Repo {
    pub location: String,
    pub env: Vec<(String, String)>,
}

impl Repo {
    /// A repository in a local directory (which need not exist yet).
    pub fn local(path: &Path) -> Repo {
        Repo {
            location: path.display().to_string(),
            env: base_env(),
        }
    }

    /// A repository on the shared SeaweedFS server of this test binary, in
    /// `bucket` under `prefix`.
    pub fn s3(bucket: &str, prefix: &str) -> Repo {
        let server = testbed::s3::shared();
        let mut env = base_env();
        env.push(("AWS_ACCESS_KEY_ID".into(), server.access_key.clone()));
        env.push(("AWS_SECRET_ACCESS_KEY".into(), server.secret_key.clone()));
        env.push(("AWS_DEFAULT_REGION".into(), server.region.clone()));
        Repo {
            location: format!("s3:{}/{bucket}/{prefix}", server.endpoint),
            env,
        }
    }

    /// The same repository, opened with another passphrase.
    pub fn with_password(&self, password: &str) -> Repo {
        self.with_env("TIDEMARK_PASSWORD", password)
    }

    /// The same repository with one more (or a replaced) variable.
    pub fn with_env(&self, key: &str, value: &str) -> Repo {
        let mut r = self.clone();
        r.env.retain(|(k, _)| k != key);
        r.env.push((key.into(), value.into()));
        r
    }

    /// The command line `tidemark -r REPO ARGS...`, not yet started.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
        for v in INHERITED_VARS {
            cmd.env_remove(v);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.arg("-r").arg(&self.location).args(args);
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Run to completion and capture everything.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_command(self.command(args))
    }

    /// Run and require exit code 0.
    pub fn ok<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args
            .into_iter()
            .map(|a| a.as_ref().to_os_string())
            .collect();
        let out = self.run(&args);
        assert_eq!(
            out.code, 0,
            "tidemark {args:?} failed:\nstdout:\n{}\nstderr:\n{}",
            out.stdout, out.stderr
        );
        out
    }

    /// Start in the background (stdout and stderr to files in `log_dir`, so a
    /// killed child never blocks on a full pipe).
    pub fn spawn<I, S>(&self, args: I, log_dir: &Path, name: &str) -> Child
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(args);
        cmd.stdout(File::create(log_dir.join(format!("{name}.out"))).unwrap());
        cmd.stderr(File::create(log_dir.join(format!("{name}.err"))).unwrap());
        cmd.spawn().expect("starting tidemark")
    }

    /// `init` with cheap key derivation and any extra arguments.
    pub fn init(&self, extra: &[&str]) -> Output {
        let mut args = vec!["init"];
        args.extend_from_slice(extra);
        self.ok(args)
    }

    /// `backup --json PATHS EXTRA...`; requires exit 0 and returns the JSON.
    pub fn backup(&self, paths: &[&Path], extra: &[&str]) -> Value {
        let mut args: Vec<OsString> = vec!["backup".into(), "--json".into()];
        args.extend(extra.iter().map(OsString::from));
        args.extend(paths.iter().map(|p| p.as_os_str().to_os_string()));
        self.ok(args).json()
    }

    /// `snapshots --json`, oldest first.
    pub fn snapshots(&self) -> Vec<Value> {
        match self.ok(["snapshots", "--json"]).json() {
            Value::Array(a) => a,
            other => panic!("snapshots --json is not an array: {other}"),
        }
    }

    /// `restore SNAPSHOT --target TARGET EXTRA...`; requires exit 0.
    pub fn restore(&self, snapshot: &str, target: &Path, extra: &[&str]) -> Output {
        let mut args: Vec<OsString> = vec![
            "restore".into(),
            snapshot.into(),
            "--target".into(),
            target.into(),
        ];
        args.extend(extra.iter().map(OsString::from));
        self.ok(args)
    }

    /// `verify --read-data` must pass; skipped with a note when the binary
    /// has no `verify` command.
    pub fn verify_read_data(&self) {
        if !self.has_command("verify") {
            println!("note: `tidemark verify` does not exist yet; verify step skipped");
            return;
        }
        let out = self.run(["verify", "--read-data"]);
        assert_eq!(
            out.code, 0,
            "verify --read-data:\n{}\n{}",
            out.stdout, out.stderr
        );
    }

    /// Whether the binary has a `verify` command (another part of the work
    /// adds it).
    pub fn has_command(&self, name: &str) -> bool {
        self.run([name, "--help"]).code == 0
    }
}

fn base_env() -> Vec<(String, String)> {
    // The local metadata cache is on, as for a user, but in a directory of
    // this test process, not the user's ~/.cache.
    let cache = std::env::temp_dir().join(format!("tidemark-test-cache-{}", std::process::id()));
    vec![
        ("TIDEMARK_PASSWORD".into(), PASSWORD.into()),
        ("TIDEMARK_INSECURE_TEST_KDF".into(), "1".into()),
        ("TIDEMARK_CACHE_DIR".into(), cache.display().to_string()),
    ]
}

/// SIGKILL a child and require that the signal is what ended it.
pub fn kill9(child: &mut Child) {
    use std::os::unix::process::ExitStatusExt;
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "killed by SIGKILL, not ended otherwise: {status}"
    );
}

pub fn run_command(mut cmd: Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Where `source` (an absolute path that was backed up) lands under a restore
/// target: snapshots keep absolute paths below their root.
pub fn restored(target: &Path, source: &Path) -> PathBuf {
    target.join(source.strip_prefix("/").expect("absolute source path"))
}

/// A field of a backup's JSON summary.
pub fn summary(backup: &Value, field: &str) -> u64 {
    backup["snapshot"]["summary"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("summary has no {field}: {backup}"))
}

// ---------------------------------------------------------------------------
// Deterministic data

/// xorshift64*: fast, deterministic, good enough to defeat compression and
/// deduplication.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// `len` random bytes from `seed`.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    Rng::new(seed).fill(&mut v);
    v
}

/// Write a file of `len` random bytes from `seed`, in 1 MiB steps.
pub fn write_random_file(path: &Path, seed: u64, len: u64) {
    let mut f = File::create(path).unwrap();
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
}

fn mtime(secs: i64, nanos: u32) -> filetime::FileTime {
    filetime::FileTime::from_unix_time(secs, nanos)
}

/// The non-UTF-8 file name used in every full tree.
pub fn non_utf8_name() -> &'static OsStr {
    OsStr::from_bytes(b"latin1-\xe9t\xe9-\xff.bin")
}

/// What a generated tree contains, for tests that look at single entries.
pub struct TreeInfo {
    /// The text file holding [`CANARY`].
    pub canary_file: PathBuf,
    /// The large random file.
    pub big_file: PathBuf,
    pub big_len: u64,
    pub sparse_file: PathBuf,
    /// Total bytes of regular file content (hard links counted once).
    pub bytes: u64,
}

/// Fill `root` (created if missing) with a deterministic tree holding every
/// kind of entry tidemark must restore: text, several MiB of random data,
/// empty file and dir, nested dirs, symlinks (one dangling), a hard-linked
/// pair, a sparse file, names with spaces and non-UTF-8 bytes, special modes
/// (0600, 0755, setgid dir), a foreign owner, a fifo, and custom mtimes with
/// nanoseconds on everything (set last, deepest first, so they stick).
pub fn make_full_tree(root: &Path, seed: u64) -> TreeInfo {
    fs::create_dir_all(root).unwrap();
    let p = |rel: &str| root.join(rel);

    fs::create_dir_all(p("docs/notes")).unwrap();
    fs::write(
        p("docs/readme.txt"),
        format!("A readme.\n{CANARY}\nseed {seed}\n"),
    )
    .unwrap();
    fs::write(p("docs/notes/todo.md"), "- back up\n- restore\n".repeat(50)).unwrap();
    fs::write(p("docs/name with spaces.txt"), "spaces in the name\n").unwrap();
    fs::write(root.join(non_utf8_name()), b"bytes under a latin-1 name\n").unwrap();

    fs::create_dir_all(p("bin")).unwrap();
    let big_len = 6 * 1024 * 1024 + 12345;
    write_random_file(&p("bin/random.bin"), seed, big_len);
    fs::write(p("bin/small.bin"), random_bytes(seed ^ 0xabcdef, 70_000)).unwrap();
    fs::write(p("bin/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(p("bin/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();

    fs::write(p("empty"), b"").unwrap();
    fs::create_dir_all(p("empty-dir")).unwrap();
    fs::create_dir_all(p("a/b/c/d/e")).unwrap();
    fs::write(p("a/b/c/d/e/deep.txt"), "deep down\n").unwrap();
    fs::write(p("a/b/mid.txt"), "in the middle\n").unwrap();

    fs::write(p("secret.key"), "private\n").unwrap();
    fs::set_permissions(p("secret.key"), fs::Permissions::from_mode(0o600)).unwrap();

    // A foreign owner (restored as root with lchown).
    fs::write(p("owned-by-1234.txt"), "someone else's file\n").unwrap();
    std::os::unix::fs::chown(p("owned-by-1234.txt"), Some(1234), Some(5678)).unwrap();

    fs::create_dir_all(p("shared")).unwrap();
    fs::write(p("shared/group-file"), "group writable dir\n").unwrap();
    fs::set_permissions(p("shared"), fs::Permissions::from_mode(0o2775)).unwrap();

    std::os::unix::fs::symlink("docs/readme.txt", p("link-to-readme")).unwrap();
    std::os::unix::fs::symlink("../nowhere/at/all", p("dangling-link")).unwrap();
    std::os::unix::fs::symlink("c/d", p("a/b/link-to-dir")).unwrap();

    fs::write(p("hard-1"), "two names, one inode\n".repeat(100)).unwrap();
    fs::hard_link(p("hard-1"), p("a/hard-2")).unwrap();

    // Sparse: 24 MiB with data at three offsets and holes between.
    let sparse = p("sparse.img");
    {
        let f = File::create(&sparse).unwrap();
        f.set_len(24 * 1024 * 1024).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&random_bytes(seed + 1, 100_000), 0).unwrap();
        f.write_all_at(&random_bytes(seed + 2, 4096), 9 * 1024 * 1024)
            .unwrap();
        f.write_all_at(b"tail", 24 * 1024 * 1024 - 4).unwrap();
    }

    let status = Command::new("mkfifo")
        .arg(p("a/fifo"))
        .status()
        .expect("mkfifo");
    assert!(status.success(), "mkfifo failed");

    set_times(root, seed);
    TreeInfo {
        canary_file: p("docs/readme.txt"),
        big_file: p("bin/random.bin"),
        big_len,
        sparse_file: sparse,
        bytes: tree_bytes(root),
    }
}

/// Give every entry under `root` (and `root`) a distinct mtime and atime
/// with nanoseconds: files and symlinks first, then directories deepest
/// first, so a later change inside does not move a directory's time.
pub fn set_times(root: &Path, seed: u64) {
    let mut entries = Vec::new();
    collect(root, &mut entries);
    entries.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    let base = 1_500_000_000 + (seed % 1000) as i64 * 1000;
    let (dirs, others): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(_, is_dir)| *is_dir);
    for (i, (path, _)) in others.iter().chain(dirs.iter()).enumerate() {
        let m = mtime(
            base + i as i64 * 3601,
            (i as u32 * 7_654_321 + 123) % 1_000_000_000,
        );
        let a = mtime(base + i as i64 * 3601 + 17, 999);
        filetime::set_symlink_file_times(path, a, m).unwrap();
    }
}

fn collect(dir: &Path, out: &mut Vec<(PathBuf, bool)>) {
    out.push((dir.to_path_buf(), true));
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            collect(&e.path(), out);
        } else {
            out.push((e.path(), false));
        }
    }
}

/// Bytes of regular file content under `root`, each inode counted once.
pub fn tree_bytes(root: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut all = Vec::new();
    collect(root, &mut all);
    for (p, _) in all {
        let m = fs::symlink_metadata(&p).unwrap();
        if m.is_file() && seen.insert(m.ino()) {
            total += m.len();
        }
    }
    total
}

// ---------------------------------------------------------------------------
// Tree comparison

/// What is compared of one entry (atime and ctime are not: reading and
/// restoring change them).
#[derive(Debug, PartialEq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime_ns: i128,
    size: u64,
    target: Option<OsString>,
}

fn kind_name(m: &fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_dir() {
        "dir"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_file() {
        "file"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "chardev"
    } else {
        "blockdev"
    }
}

struct Scanned {
    entries: BTreeMap<PathBuf, Entry>,
    meta: HashMap<PathBuf, fs::Metadata>,
}

fn scan(root: &Path) -> Scanned {
    let mut all = Vec::new();
    collect(root, &mut all);
    let mut entries = BTreeMap::new();
    let mut meta = HashMap::new();
    for (p, _) in all {
        let m = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        let e = Entry {
            kind: kind_name(&m),
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            size: if m.is_file() { m.len() } else { 0 },
            target: m
                .file_type()
                .is_symlink()
                .then(|| fs::read_link(&p).unwrap().into_os_string()),
        };
        entries.insert(rel.clone(), e);
        meta.insert(rel, m);
    }
    Scanned { entries, meta }
}

/// Compare a restored tree with its source: the same paths, and for each the
/// same type, mode, owner, mtime (ns), size, bytes, symlink target; hard
/// links of the source are links of one inode in the restore; sparse files
/// are still sparse. Panics with every difference found.
pub fn assert_same_tree(source: &Path, restored: &Path) {
    let a = scan(source);
    let b = scan(restored);
    let mut problems = Vec::new();
    for p in a.entries.keys().filter(|p| !b.entries.contains_key(*p)) {
        problems.push(format!("missing in restore: {p:?}"));
    }
    for p in b.entries.keys().filter(|p| !a.entries.contains_key(*p)) {
        problems.push(format!("extra in restore: {p:?}"));
    }
    let mut inodes: HashMap<u64, Vec<&PathBuf>> = HashMap::new();
    for (p, ea) in &a.entries {
        let Some(eb) = b.entries.get(p) else { continue };
        if ea != eb {
            problems.push(format!(
                "{p:?} differs:\n  source   {ea:?}\n  restored {eb:?}"
            ));
            continue;
        }
        let (ma, mb) = (&a.meta[p], &b.meta[p]);
        if ea.kind == "file" {
            if !same_content(&source.join(p), &restored.join(p)) {
                problems.push(format!("{p:?}: content differs"));
            }
            if ma.nlink() > 1 {
                inodes.entry(ma.ino()).or_default().push(p);
            }
            let sparse = |m: &fs::Metadata| m.blocks() * 512 < m.len();
            if sparse(ma) && !sparse(mb) {
                problems.push(format!(
                    "{p:?}: sparse in source ({} blocks for {} bytes) but not restored sparse ({} blocks)",
                    ma.blocks(),
                    ma.len(),
                    mb.blocks()
                ));
            }
        }
    }
    for paths in inodes.values() {
        let restored_inodes: Vec<u64> = paths.iter().map(|p| b.meta[*p].ino()).collect();
        if restored_inodes.iter().any(|i| *i != restored_inodes[0]) {
            problems.push(format!("hard links {paths:?} restored as separate files"));
        }
    }
    assert!(
        problems.is_empty(),
        "restored tree {} differs from {}:\n{}",
        restored.display(),
        source.display(),
        problems.join("\n")
    );
}

/// Byte-for-byte comparison, streamed.
pub fn same_content(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

/// Every file under `dir` (recursively), for scanning a local repository.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    collect(dir, &mut all);
    all.into_iter()
        .filter(|(p, is_dir)| {
            !is_dir
                && fs::symlink_metadata(p)
                    .map(|m| m.is_file())
                    .unwrap_or(false)
        })
        .map(|(p, _)| p)
        .collect()
}

/// Whether `needle` occurs anywhere in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}
