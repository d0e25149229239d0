use anyhow::Result;
use tidemark_repo::config::RepoConfig;
use tidemark_repo::keyfile::KdfParams;
use tidemark_repo::{InitOptions, Repository};

use crate::ctx::{runtime, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Put every object under S3 Object Lock (COMPLIANCE) for this many days
    #[arg(long)]
    pub object_lock_days: Option<u32>,
    /// zstd level for file data (0 = no compression)
    #[arg(long, default_value_t = RepoConfig::DEFAULT_COMPRESSION)]
    pub compression: i32,
    /// Average chunk size in KiB (min is a quarter, max four times)
    #[arg(long, default_value_t = 1024)]
    pub chunk_size_kib: u32,
    /// Target pack size in MiB [default: 16]. Bigger packs mean fewer
    /// objects and requests on object storage, but more memory per upload
    /// in flight and more bytes rewritten by prune
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub pack_size_mib: Option<u32>,
    /// Argon2id memory in KiB for the key file
    #[arg(long, hide = true)]
    pub kdf_memory_kib: Option<u32>,
    /// Cheap key derivation: for tests only, never for real data
    #[arg(long, hide = true, env = "TIDEMARK_INSECURE_TEST_KDF", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure_test_kdf: bool,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let password = g.password()?;
    let mut config = RepoConfig::new();
    config.compression = a.compression;
    config.object_lock_days = a.object_lock_days;
    if let Some(m) = a.pack_size_mib {
        config.pack_size = m.saturating_mul(1024 * 1024);
    }
    let avg = a.chunk_size_kib * 1024;
    config.chunker.avg_size = avg;
    config.chunker.min_size = avg / 4;
    config.chunker.max_size = avg * 4;
    let mut kdf = if a.insecure_test_kdf { KdfParams::insecure_fast() } else { KdfParams::default() };
    if let Some(m) = a.kdf_memory_kib {
        kdf.memory_kib = m;
    }
    let store = g.store(a.object_lock_days)?;
    let repo = Repository::init(store, runtime().handle().clone(), password.as_bytes(), InitOptions { kdf, config })?;
    println!("created repository {} at {}", repo.config.id.short(), repo.describe());
    Ok(0)
}
