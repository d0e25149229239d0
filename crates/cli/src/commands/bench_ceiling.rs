use std::path::PathBuf;

use anyhow::{Context, Result};
use tidemark_repo::ceiling::{measure, synthetic};
use tidemark_repo::config::RepoConfig;

use crate::ctx::{print_json, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Measure on the first MiB of these files instead of synthetic mixed data
    #[arg(long)]
    pub data: Vec<PathBuf>,
    /// MiB of data to hold in memory
    #[arg(long, default_value_t = 256)]
    pub mib: usize,
    /// zstd level (as `init --compression`)
    #[arg(long, default_value_t = RepoConfig::DEFAULT_COMPRESSION)]
    pub compression: i32,
    #[arg(long)]
    pub json: bool,
}

pub fn run(_g: &Global, a: Args) -> Result<i32> {
    let limit = a.mib << 20;
    let data = if a.data.is_empty() {
        synthetic(limit)
    } else {
        let mut buf = Vec::with_capacity(limit);
        let mut stack = a.data.clone();
        while let Some(p) = stack.pop() {
            if buf.len() >= limit {
                break;
            }
            if p.is_dir() {
                for e in std::fs::read_dir(&p).with_context(|| p.display().to_string())? {
                    stack.push(e?.path());
                }
            } else if p.is_file() {
                let b = std::fs::read(&p).with_context(|| p.display().to_string())?;
                let take = b.len().min(limit - buf.len());
                buf.extend_from_slice(&b[..take]);
            }
        }
        buf
    };
    let mut cfg = RepoConfig::new();
    cfg.compression = a.compression;
    let c = measure(&data, &cfg);
    if a.json {
        print_json(&c)?;
    } else {
        let m = |v: f64| v / 1048576.0;
        println!("{} MiB, {} chunks, zstd level {}", c.bytes >> 20, c.chunks, c.compression_level);
        println!("one core:  {:.0} MiB/s (chunk {:.0}, hash {:.0}, compress+encrypt {:.0})", m(c.one_core_bytes_per_sec), m(c.chunk_bytes_per_sec), m(c.hash_bytes_per_sec), m(c.compress_encrypt_bytes_per_sec));
        println!("{} cores: {:.0} MiB/s measured, {:.0} MiB/s = one core x cores", c.cores, m(c.all_cores_bytes_per_sec), m(c.one_core_bytes_per_sec) * c.cores as f64);
    }
    Ok(0)
}
