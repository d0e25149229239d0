//! Helpers for the cluster backup tests: run `tidemark cluster ...` with a
//! testbed cluster's coordinator file, read the catalog through tidemark's
//! own library, and look at node snapshots and pack bytes in the repository.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use tidemark_cassandra::config::ClusterConfig;
use tidemark_cassandra::manifest::NodeDetail;
use tidemark_cluster::manifest::{self, ClusterManifest};
use tidemark_repo::blob::BlobType;
use tidemark_repo::walk::{Start, Walker};
use tidemark_repo::{FileKind, Id, Repository};

/// One run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// `tidemark cluster <args>`, nothing inherited that would change it.
pub fn cluster(args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    cmd.arg("cluster").args(args);
    for v in [
        "TIDEMARK_REPOSITORY",
        "TIDEMARK_PASSWORD",
        "TIDEMARK_PASSWORD_FILE",
        "TIDEMARK_LOG",
    ] {
        cmd.env_remove(v);
    }
    let out = cmd.output().expect("running tidemark");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Like [`cluster`], failing with the output unless it exits 0.
pub fn cluster_ok(args: &[&str]) -> Result<Run> {
    let r = cluster(args);
    ensure!(
        r.code == 0,
        "tidemark cluster {args:?} exited {}:\n{}\n{}",
        r.code,
        r.stdout,
        r.stderr
    );
    Ok(r)
}

/// The repository a cluster file names, opened in this process.
pub struct Catalog {
    pub repo: Repository,
    pub config: ClusterConfig,
    _rt: tokio::runtime::Runtime,
}

impl Catalog {
    pub fn open(config_file: &Path) -> Result<Catalog> {
        let config = ClusterConfig::load(config_file)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let pw = std::fs::read_to_string(&config.password_file)?;
        let repo = tidemark_repo::repo::open_location(
            &config.location(),
            &Default::default(),
            rt.handle().clone(),
            pw.lines().next().unwrap_or("").as_bytes(),
        )?;
        Ok(Catalog {
            repo,
            config,
            _rt: rt,
        })
    }

    /// This cluster's backups, oldest first.
    pub fn backups(&self) -> Result<Vec<(Id, ClusterManifest)>> {
        Ok(manifest::list(&self.repo, Some(&self.config.name))?)
    }

    pub fn manifest(&self, id: &str) -> Result<ClusterManifest> {
        Ok(manifest::find(&self.repo, Some(&self.config.name), id)?.1)
    }

    /// The directory of the repository (a local path in the testbed).
    pub fn dir(&self) -> PathBuf {
        PathBuf::from(&self.config.repository)
    }

    /// Where chunk `n` of `path` in node snapshot `snapshot` is stored:
    /// (pack file, offset of the chunk in it).
    pub fn chunk_place(&self, snapshot: &Id, path: &str, n: usize) -> Result<(PathBuf, u64)> {
        let snap = self.repo.load_snapshot(snapshot)?;
        let index = self.repo.load_index()?;
        let walker = Walker::new(&self.repo, &index);
        let Start::Node(_, node) = walker.locate(&snap.tree, Path::new(path))? else {
            anyhow::bail!("{path} is the root");
        };
        let chunk = node
            .content
            .get(n)
            .with_context(|| format!("{path} has no chunk {n}"))?;
        let loc = index
            .get(BlobType::Data, chunk)
            .context("chunk not indexed")?;
        Ok((
            self.dir().join(FileKind::Pack.key(&loc.pack)),
            loc.offset as u64,
        ))
    }
}

/// (keyspace, table) -> file name -> size.
pub type TableFiles = BTreeMap<(String, String), BTreeMap<String, u64>>;

/// Per node: (keyspace, table) -> file name -> size, from the manifest.
pub fn files_by_node(m: &ClusterManifest) -> Result<BTreeMap<String, TableFiles>> {
    let mut out = BTreeMap::new();
    for n in &m.nodes {
        let d: NodeDetail = n.detail()?;
        let tables = d
            .tables
            .iter()
            .map(|t| {
                (
                    (t.keyspace.clone(), t.table.clone()),
                    t.files.iter().map(|f| (f.name.clone(), f.size)).collect(),
                )
            })
            .collect();
        out.insert(n.node.clone(), tables);
    }
    Ok(out)
}

/// Flips one bit of a file and flips it back when dropped, so a shared
/// repository is whole again for the tests that follow.
pub struct FlippedBit {
    path: PathBuf,
    offset: u64,
}

impl FlippedBit {
    pub fn new(path: &Path, offset: u64) -> Result<FlippedBit> {
        flip(path, offset)?;
        Ok(FlippedBit {
            path: path.to_path_buf(),
            offset,
        })
    }
}

impl Drop for FlippedBit {
    fn drop(&mut self) {
        flip(&self.path, self.offset).expect("restoring the flipped bit");
    }
}

fn flip(path: &Path, offset: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    // Pack files are written read-only; the test owns the repository.
    let mut perm = std::fs::metadata(path)?.permissions();
    let mode = std::os::unix::fs::PermissionsExt::mode(&perm);
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, mode | 0o200);
    std::fs::set_permissions(path, perm)?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset)?;
    b[0] ^= 0x10;
    f.write_all_at(&b, offset)?;
    f.sync_all()?;
    let mut perm = std::fs::metadata(path)?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, mode);
    std::fs::set_permissions(path, perm)?;
    Ok(())
}
