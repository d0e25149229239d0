//! Blobs: the unit of deduplication, compressed and sealed one by one.
//!
//! A blob is the plaintext of one chunk of file content (`Data`) or one
//! directory listing (`Tree`). Stored form: `seal(zstd(plaintext))`, or
//! `seal(plaintext)` when compression does not shrink it (already-compressed
//! or random data), flagged so the reader knows. zstd contexts are kept per
//! thread and reused, not rebuilt per blob.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};

use serde::{Deserialize, Serialize};

use crate::crypto::{Cipher, OVERHEAD};
use crate::error::{RepoError, Result};
use crate::id::Id;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum BlobType {
    Data = 0,
    Tree = 1,
}

impl BlobType {
    pub fn from_u8(b: u8) -> Option<BlobType> {
        match b {
            0 => Some(BlobType::Data),
            1 => Some(BlobType::Tree),
            _ => None,
        }
    }
}

/// Flag bit: the sealed plaintext is zstd-compressed.
pub const FLAG_COMPRESSED: u8 = 1;

/// A blob ready to be appended to a pack.
#[derive(Debug)]
pub struct SealedBlob {
    pub id: Id,
    pub kind: BlobType,
    pub flags: u8,
    pub raw_len: u32,
    pub bytes: Vec<u8>,
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compress with this thread's reused context; `None` when it does not shrink.
pub fn compress(level: i32, data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    compress_into(level, data, &mut out).then_some(out)
}

/// Compress into `out` (its old content is replaced, its capacity reused);
/// false when compression does not shrink `data` by at least 1/64.
pub fn compress_into(level: i32, data: &[u8], out: &mut Vec<u8>) -> bool {
    if level == 0 || data.len() < 64 {
        return false;
    }
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().map(|(l, _)| *l) != Some(level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level).expect("zstd level in range")));
        }
        let (_, c) = slot.as_mut().expect("just set");
        // Anything at or above the input size is useless: stop there.
        out.clear();
        out.reserve(data.len());
        matches!(c.compress_to_buffer(data, out), Ok(n) if n < data.len() - data.len() / 64)
    })
}

/// Whether the next chunk of one file is worth compressing.
///
/// Already-compressed files (media, archives, LZ4-compressed SSTables) do
/// not shrink under zstd, and trying costs about as much CPU as compressing.
/// The file's first chunk decides (the caller stores it before the others):
/// when it does not shrink, only every [`PROBE_EVERY`]th chunk after it is
/// tried; once one shrinks, every later chunk of the file is tried. So a
/// file that compresses anywhere loses at most a few chunks' compression
/// (a disk image that starts with random blocks), while a random file costs
/// an eighth of the attempts.
#[derive(Debug, Default)]
pub struct CompressProbe {
    state: AtomicU8,
    skipped: AtomicU32,
}

const UNTESTED: u8 = 0;
const TRYING: u8 = 1;
const SKIPPING: u8 = 2;

/// While skipping, one chunk in this many is still tried.
pub const PROBE_EVERY: u32 = 8;

impl CompressProbe {
    /// No chunk of the file tried yet: the caller stores its first chunk
    /// alone, so the chunks after it know whether to try.
    pub fn untested(&self) -> bool {
        self.state.load(Ordering::Relaxed) == UNTESTED
    }

    pub fn should_try(&self) -> bool {
        self.state.load(Ordering::Relaxed) != SKIPPING
            || self.skipped.fetch_add(1, Ordering::Relaxed) % PROBE_EVERY == PROBE_EVERY - 1
    }

    /// The outcome of one attempt.
    pub fn record(&self, shrank: bool) {
        let next = if shrank { TRYING } else { SKIPPING };
        // Only the first attempt may start skipping; any success ends it.
        let _ = self
            .state
            .compare_exchange(UNTESTED, next, Ordering::Relaxed, Ordering::Relaxed);
        if shrank {
            self.state.store(TRYING, Ordering::Relaxed);
        }
    }
}

pub fn decompress(data: &[u8], raw_len: usize, what: &dyn Fn() -> String) -> Result<Vec<u8>> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let d = slot.get_or_insert_with(|| zstd::bulk::Decompressor::new().expect("zstd context"));
        let out = d
            .decompress(data, raw_len)
            .map_err(|e| RepoError::corrupt(what(), format!("zstd: {e}")))?;
        if out.len() != raw_len {
            return Err(RepoError::corrupt(what(), "decompressed length differs from the index"));
        }
        Ok(out)
    })
}

/// Compress (when it helps) and encrypt one blob whose id is already known.
pub fn seal(cipher: &Cipher, id: Id, kind: BlobType, level: i32, plain: &[u8]) -> SealedBlob {
    let (flags, body) = match compress(level, plain) {
        Some(c) => (FLAG_COMPRESSED, c),
        None => (0, Vec::new()),
    };
    let src: &[u8] = if flags & FLAG_COMPRESSED != 0 { &body } else { plain };
    let mut bytes = Vec::with_capacity(src.len() + OVERHEAD);
    cipher.seal_into(src, &mut bytes);
    SealedBlob {
        id,
        kind,
        flags,
        raw_len: plain.len() as u32,
        bytes,
    }
}

/// Decrypt and decompress a stored blob. The caller checks the id when it
/// needs to (verify, restore), since that costs a hash.
pub fn unseal(cipher: &Cipher, sealed: &[u8], flags: u8, raw_len: u32, what: &dyn Fn() -> String) -> Result<Vec<u8>> {
    let plain = cipher.open(sealed, what)?;
    if flags & FLAG_COMPRESSED != 0 {
        decompress(&plain, raw_len as usize, what)
    } else if plain.len() != raw_len as usize {
        Err(RepoError::corrupt(what(), "length differs from the index"))
    } else {
        Ok(plain)
    }
}

/// [`unseal`] without allocating: decrypts inside `sealed` and, for a
/// compressed blob, decompresses into `out` (reused across calls); the
/// plaintext is in one or the other.
pub fn unseal_in_place<'a>(
    cipher: &Cipher,
    sealed: &'a mut [u8],
    flags: u8,
    raw_len: u32,
    what: &dyn Fn() -> String,
    out: &'a mut Vec<u8>,
) -> Result<&'a [u8]> {
    let plain = cipher.open_in_place(sealed, what)?;
    if flags & FLAG_COMPRESSED == 0 {
        if plain.len() != raw_len as usize {
            return Err(RepoError::corrupt(what(), "length differs from the index"));
        }
        return Ok(plain);
    }
    out.clear();
    out.reserve(raw_len as usize);
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let d = slot.get_or_insert_with(|| zstd::bulk::Decompressor::new().expect("zstd context"));
        d.decompress_to_buffer(plain, out)
            .map_err(|e| RepoError::corrupt(what(), format!("zstd: {e}")))
    })?;
    if out.len() != raw_len as usize {
        return Err(RepoError::corrupt(what(), "decompressed length differs from the index"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn seal_unseal_round_trip(data in proptest::collection::vec(any::<u8>(), 0..20000), rep in 1usize..4) {
            let k = MasterKey::generate();
            let c = k.cipher();
            let plain: Vec<u8> = data.iter().cycle().take(data.len() * rep).copied().collect();
            let id = k.blob_id(&plain);
            let s = seal(&c, id, BlobType::Data, 3, &plain);
            let back = unseal(&c, &s.bytes, s.flags, s.raw_len, &|| "b".into()).unwrap();
            prop_assert_eq!(&back, &plain);
            // In place, with an output buffer reused from a bigger blob.
            let mut sealed = s.bytes.clone();
            let mut out = vec![7u8; 30000];
            let back = unseal_in_place(&c, &mut sealed, s.flags, s.raw_len, &|| "b".into(), &mut out).unwrap();
            prop_assert_eq!(back, &plain[..]);
            // A flipped bit anywhere is refused.
            let mut bad = s.bytes.clone();
            let i = (rep * 7919) % bad.len();
            bad[i] ^= 1;
            prop_assert!(unseal_in_place(&c, &mut bad, s.flags, s.raw_len, &|| "b".into(), &mut out).is_err());
        }
    }

    #[test]
    fn probe_skips_incompressible_files_but_keeps_probing() {
        let p = CompressProbe::default();
        assert!(p.should_try() && p.untested());
        p.record(false);
        assert!(!p.untested());
        let tries: Vec<bool> = (0..2 * PROBE_EVERY).map(|_| p.should_try()).collect();
        assert_eq!(tries.iter().filter(|t| **t).count(), 2, "{tries:?}");
        // A probe that shrinks turns compression back on for good.
        p.record(true);
        p.record(false);
        assert!((0..2 * PROBE_EVERY).all(|_| p.should_try()));

        // A file whose first chunk shrinks is never skipped.
        let p = CompressProbe::default();
        p.record(true);
        p.record(false);
        p.record(false);
        assert!((0..2 * PROBE_EVERY).all(|_| p.should_try()));
    }

    #[test]
    fn compress_into_reuses_the_buffer() {
        let text = "tidemark ".repeat(10_000);
        let mut out = vec![7u8; 5];
        assert!(compress_into(3, text.as_bytes(), &mut out));
        assert_eq!(decompress(&out, text.len(), &|| "b".into()).unwrap(), text.as_bytes());
        let mut random = vec![0u8; 10_000];
        crate::crypto::fill_random(&mut random);
        assert!(!compress_into(3, &random, &mut out));
    }

    #[test]
    fn incompressible_is_stored_raw_and_text_compressed() {
        let k = MasterKey::generate();
        let mut random = vec![0u8; 100_000];
        crate::crypto::fill_random(&mut random);
        let s = seal(&k.cipher(), k.blob_id(&random), BlobType::Data, 3, &random);
        assert_eq!(s.flags & FLAG_COMPRESSED, 0);
        let text = "tidemark ".repeat(10_000);
        let s = seal(&k.cipher(), k.blob_id(text.as_bytes()), BlobType::Data, 3, text.as_bytes());
        assert_eq!(s.flags & FLAG_COMPRESSED, FLAG_COMPRESSED);
        assert!(s.bytes.len() < text.len() / 10);
    }
}
