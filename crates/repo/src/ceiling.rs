//! The in-memory ceiling of the backup pipeline: chunk + hash + compress +
//! encrypt with no I/O at all, on one core and on every core. A backup can
//! at best approach this; the benchmark reports backups as a fraction of it.

use std::time::Instant;

use fastcdc::v2020::{FastCDC, Normalization};
use rayon::prelude::*;
use serde::Serialize;

use crate::blob::{self, BlobType};
use crate::config::RepoConfig;
use crate::crypto::MasterKey;

#[derive(Debug, Serialize)]
pub struct Ceiling {
    pub cores: usize,
    pub bytes: u64,
    pub chunks: u64,
    pub compression_level: i32,
    pub one_core_bytes_per_sec: f64,
    pub all_cores_bytes_per_sec: f64,
    /// Stage rates on one core, to show where the time goes.
    pub chunk_bytes_per_sec: f64,
    pub hash_bytes_per_sec: f64,
    pub compress_encrypt_bytes_per_sec: f64,
}

/// Deterministic mixed data: a third text-like, a third log lines, a third
/// random (already-compressed) bytes, in 4 MiB runs.
pub fn synthetic(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let words = ["fn", "let", "struct", "impl", "match", "return", "self", "tidemark", "chunk", "index", "=", "{", "}", ";"];
    let mut run = 0usize;
    while out.len() < len {
        let end = (out.len() + 4 * 1024 * 1024).min(len);
        match run % 3 {
            0 => {
                while out.len() < end {
                    out.extend_from_slice(words[(next() % words.len() as u64) as usize].as_bytes());
                    out.push(if next() % 8 == 0 { b'\n' } else { b' ' });
                }
            }
            1 => {
                while out.len() < end {
                    let v = next();
                    let line = format!("2026-11-25T10:{:02}:{:02} INFO request {} took {} ms\n", v % 60, (v >> 8) % 60, v >> 20, v % 997);
                    out.extend_from_slice(line.as_bytes());
                }
            }
            _ => {
                while out.len() < end {
                    out.extend_from_slice(&next().to_le_bytes());
                }
            }
        }
        out.truncate(end);
        run += 1;
    }
    out
}

fn pipeline(key: &MasterKey, cipher: &crate::crypto::Cipher, cfg: &RepoConfig, seed: u64, data: &[u8]) -> u64 {
    let c = &cfg.chunker;
    // As the packer does it: compress into a reused buffer, seal straight
    // into the pack buffer (emptied when a pack would be stored).
    let (mut scratch, mut pack) = (Vec::new(), Vec::with_capacity(cfg.pack_size as usize + c.max_size as usize));
    let mut n = 0;
    for ch in FastCDC::with_level_and_seed(data, c.min_size as usize, c.avg_size as usize, c.max_size as usize, Normalization::Level1, seed) {
        let d = &data[ch.offset..ch.offset + ch.length];
        std::hint::black_box(key.blob_id(d));
        let src: &[u8] = if blob::compress_into(cfg.compression, d, &mut scratch) { &scratch } else { d };
        cipher.seal_into(src, &mut pack);
        if pack.len() >= cfg.pack_size as usize {
            std::hint::black_box(&pack);
            pack.clear();
        }
        n += 1;
    }
    n
}

pub fn measure(data: &[u8], cfg: &RepoConfig) -> Ceiling {
    let key = MasterKey::generate();
    let cipher = key.cipher();
    let seed = key.chunker_seed();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let c = &cfg.chunker;
    let rate = |secs: f64, bytes: usize| bytes as f64 / secs.max(1e-9);

    // Warm caches and zstd contexts once.
    pipeline(&key, &cipher, cfg, seed, &data[..data.len().min(8 << 20)]);

    let t = Instant::now();
    let cuts: Vec<(usize, usize)> = FastCDC::with_level_and_seed(data, c.min_size as usize, c.avg_size as usize, c.max_size as usize, Normalization::Level1, seed)
        .map(|ch| (ch.offset, ch.length))
        .collect();
    let chunk = rate(t.elapsed().as_secs_f64(), data.len());
    let t = Instant::now();
    for &(o, l) in &cuts {
        std::hint::black_box(key.blob_id(&data[o..o + l]));
    }
    let hash = rate(t.elapsed().as_secs_f64(), data.len());
    let t = Instant::now();
    for &(o, l) in &cuts {
        std::hint::black_box(blob::seal(&cipher, crate::id::Id::default(), BlobType::Data, cfg.compression, &data[o..o + l]));
    }
    let seal = rate(t.elapsed().as_secs_f64(), data.len());

    let t = Instant::now();
    let chunks = pipeline(&key, &cipher, cfg, seed, data);
    let one = rate(t.elapsed().as_secs_f64(), data.len());

    // Every core on its own copy of the work, as independent files would be.
    let t = Instant::now();
    (0..cores).into_par_iter().for_each(|_| {
        std::hint::black_box(pipeline(&key, &cipher, cfg, seed, data));
    });
    let all = rate(t.elapsed().as_secs_f64(), data.len() * cores);

    Ceiling {
        cores,
        bytes: data.len() as u64,
        chunks,
        compression_level: cfg.compression,
        one_core_bytes_per_sec: one,
        all_cores_bytes_per_sec: all,
        chunk_bytes_per_sec: chunk,
        hash_bytes_per_sec: hash,
        compress_encrypt_bytes_per_sec: seal,
    }
}
