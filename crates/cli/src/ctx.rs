//! Global options and opening the repository they name.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use tidemark_repo::repo::FileKind;
use tidemark_repo::{RepoError, Repository};
use tidemark_store::{DynStore, Location, OpenOptions};

pub const EXIT_INCOMPLETE: i32 = 3;

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Repository: a path, or s3:http://HOST:PORT/BUCKET/PREFIX
    #[arg(short = 'r', long, env = "TIDEMARK_REPOSITORY", global = true)]
    pub repo: Option<String>,
    /// File holding the passphrase (else TIDEMARK_PASSWORD)
    #[arg(long, env = "TIDEMARK_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Upload limit in KiB/s
    #[arg(long, global = true)]
    pub limit_upload: Option<u64>,
    /// Download limit in KiB/s
    #[arg(long, global = true)]
    pub limit_download: Option<u64>,
    /// No progress output
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More log output (-v, -vv)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Where to keep the local copy of repository metadata (snapshot and
    /// index files, trees; still encrypted) [default: $XDG_CACHE_HOME/tidemark
    /// or ~/.cache/tidemark]
    #[arg(long, env = "TIDEMARK_CACHE_DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
    /// Keep no local cache: read all metadata from the repository
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// Requests in flight at once: packs uploaded by a backup, packs read by
    /// a restore [default: 1 and 4 on a local disk, 4 and 8 on object
    /// storage]. More helps over a network with high latency; each upload
    /// in flight holds one pack in memory.
    #[arg(long, env = "TIDEMARK_CONNECTIONS", global = true, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub connections: Option<u16>,
}

pub fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TIDEMARK_LOG")
        .unwrap_or_else(|_| level.into());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour only for a person: logs and pipes get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

/// One runtime per process; engine threads block on it for storage I/O.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tidemark-io")
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

impl Global {
    pub fn location(&self) -> Result<Location> {
        let Some(r) = &self.repo else {
            bail!("no repository given: use --repo or TIDEMARK_REPOSITORY");
        };
        Ok(r.parse()?)
    }

    pub fn open_options(&self, lock_days: Option<u32>) -> OpenOptions {
        OpenOptions {
            lock_days,
            limit_upload: self.limit_upload.map(|k| k * 1024),
            limit_download: self.limit_download.map(|k| k * 1024),
            ..Default::default()
        }
    }

    pub fn store(&self, lock_days: Option<u32>) -> Result<DynStore> {
        Ok(self.location()?.open(&self.open_options(lock_days))?)
    }

    pub fn password(&self) -> Result<String> {
        read_password(self.password_file.as_ref(), "TIDEMARK_PASSWORD")
    }

    /// Open the repository, with Object Lock retention on writes when the
    /// repository asks for it.
    pub fn open(&self) -> Result<Repository> {
        self.open_with(&self.password()?)
    }

    /// Open the repository with a passphrase obtained elsewhere (copy's
    /// target has its own).
    pub fn open_with(&self, password: &str) -> Result<Repository> {
        self.open_with_prefetch(password, &[])
    }

    /// What commands that read the whole index and every snapshot fetch ahead.
    pub const INDEX_AND_SNAPSHOTS: &'static [FileKind] = &[FileKind::Index, FileKind::Snapshot];

    /// Open the repository, fetching the files of `kinds` while the key is
    /// derived: for commands that read them all right after opening.
    pub fn open_for(&self, kinds: &[FileKind]) -> Result<Repository> {
        self.open_with_prefetch(&self.password()?, kinds)
    }

    /// Open for commands that check what is stored (verify): every file is
    /// read from the repository, none from the local cache; the cache keeps
    /// copies of those that check out.
    pub fn open_uncached_for(&self, kinds: &[FileKind]) -> Result<Repository> {
        self.open_in(&self.password()?, kinds, true)
    }

    fn open_with_prefetch(&self, password: &str, kinds: &[FileKind]) -> Result<Repository> {
        self.open_in(password, kinds, false)
    }

    /// Where the local metadata cache lives (None: `--no-cache`).
    pub fn cache_root(&self) -> Option<PathBuf> {
        match (self.no_cache, &self.cache_dir) {
            (true, _) => None,
            (false, Some(dir)) => Some(dir.clone()),
            (false, None) => tidemark_repo::cache::Cache::default_root(),
        }
    }

    fn open_in(&self, password: &str, kinds: &[FileKind], write_only: bool) -> Result<Repository> {
        let root = self.cache_root();
        let loc = self.location()?;
        let opts = self.open_options(None);
        let mut repo = tidemark_repo::repo::open_location_cached(
            &loc,
            &opts,
            runtime().handle().clone(),
            password.as_bytes(),
            kinds,
            root.as_deref(),
            write_only,
        )?;
        repo.set_connections(self.connections.map(usize::from));
        Ok(repo)
    }

    pub fn progress(&self) -> Arc<crate::progress::CliProgress> {
        Arc::new(crate::progress::CliProgress::new(
            !self.quiet && std::io::stderr().is_terminal(),
            self.quiet,
        ))
    }
}

/// A passphrase from a file (first line) or an environment variable.
pub fn read_password(file: Option<&PathBuf>, var: &str) -> Result<String> {
    if let Some(f) = file {
        let s = std::fs::read_to_string(f)
            .with_context(|| format!("reading password file {}", f.display()))?;
        let line = s.lines().next().unwrap_or("").to_string();
        if line.is_empty() {
            bail!("password file {} is empty", f.display());
        }
        return Ok(line);
    }
    match std::env::var(var) {
        Ok(p) if !p.is_empty() => Ok(p),
        _ => bail!("no passphrase given: set {var} or use --password-file"),
    }
}

/// The error and its causes on one line.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut s = e.to_string();
    for c in e.chain().skip(1) {
        let c = c.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
    }
    s.replace('\n', " ")
}

pub fn exit_code(e: &anyhow::Error) -> i32 {
    match e.downcast_ref::<RepoError>() {
        Some(RepoError::NotARepository { .. }) => 10,
        Some(RepoError::WrongPassword) => 12,
        _ => 1,
    }
}

pub fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
