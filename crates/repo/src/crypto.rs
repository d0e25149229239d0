//! Keys, authenticated encryption and keyed ids.
//!
//! Every stored object except `config` and key files is sealed as
//! `nonce (12 bytes) || AES-256-GCM ciphertext || tag (16 bytes)` under the
//! master encryption key. Nonces are random (96 bits): the NIST bound of 2^32
//! messages per key is far above the object count of any repository (a
//! thousand million 1 MiB chunks is one PB). Blob ids are BLAKE3 keyed with a
//! separate id key, so ids reveal nothing about content to someone without
//! the key.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{RepoError, Result};
use crate::id::Id;

pub const TAG_LEN: usize = 16;
/// Bytes an encrypted object is longer than its plaintext.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

pub fn fill_random(buf: &mut [u8]) {
    SystemRandom::new()
        .fill(buf)
        .expect("the operating system's random source failed");
}

/// The secret of a repository. Lives only in memory and, wrapped, in key files.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    #[serde(with = "hex32")]
    encrypt: [u8; 32],
    #[serde(with = "hex32")]
    id: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    pub fn generate() -> MasterKey {
        let mut k = MasterKey {
            encrypt: [0; 32],
            id: [0; 32],
        };
        fill_random(&mut k.encrypt);
        fill_random(&mut k.id);
        k
    }

    pub fn cipher(&self) -> Cipher {
        Cipher::new(&self.encrypt)
    }

    /// Keyed BLAKE3 of a blob's plaintext.
    pub fn blob_id(&self, plaintext: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.id, plaintext).as_bytes())
    }

    /// Seed of the chunker's gear table: chunk boundaries depend on the key, so
    /// the sizes of stored chunks do not fingerprint known files.
    pub fn chunker_seed(&self) -> u64 {
        let d = blake3::derive_key("tidemark 2026 chunker seed v1", &self.id);
        u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
    }

    /// The id-key half, exposed only for tests of secrecy at rest.
    #[doc(hidden)]
    pub fn raw_parts(&self) -> (&[u8; 32], &[u8; 32]) {
        (&self.encrypt, &self.id)
    }
}

/// AES-256-GCM with a random nonce per message. Cheap to clone, `Sync`.
pub struct Cipher {
    key: LessSafeKey,
}

impl Cipher {
    pub fn new(key: &[u8; 32]) -> Cipher {
        let unbound = UnboundKey::new(&AES_256_GCM, key).expect("32-byte AES key");
        Cipher {
            key: LessSafeKey::new(unbound),
        }
    }

    /// Encrypt `plaintext`, appending `nonce || ciphertext || tag` to `out`.
    pub fn seal_into(&self, plaintext: &[u8], out: &mut Vec<u8>) {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        out.reserve(plaintext.len() + OVERHEAD);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut out[start..],
            )
            .expect("AES-GCM seal cannot fail below its size limit");
        out.extend_from_slice(tag.as_ref());
    }

    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        self.seal_into(plaintext, &mut out);
        out
    }

    /// Decrypt and authenticate; `what` names the object in the error.
    pub fn open(&self, sealed: &[u8], what: &dyn Fn() -> String) -> Result<Vec<u8>> {
        if sealed.len() < OVERHEAD {
            return Err(RepoError::Tampered { what: what() });
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let mut buf = rest.to_vec();
        let len = self.open_parts(nonce, &mut buf, what)?.len();
        buf.truncate(len);
        Ok(buf)
    }

    /// [`Cipher::open`] without a copy: decrypts inside `sealed` and
    /// returns the plaintext part of it.
    pub fn open_in_place<'a>(
        &self,
        sealed: &'a mut [u8],
        what: &dyn Fn() -> String,
    ) -> Result<&'a [u8]> {
        if sealed.len() < OVERHEAD {
            return Err(RepoError::Tampered { what: what() });
        }
        let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
        Ok(self.open_parts(nonce, rest, what)?)
    }

    /// Decrypt `body` (ciphertext and tag) in place with `nonce`.
    fn open_parts<'a>(
        &self,
        nonce: &[u8],
        body: &'a mut [u8],
        what: &dyn Fn() -> String,
    ) -> Result<&'a mut [u8]> {
        let nonce = Nonce::try_assume_unique_for_key(nonce).expect("12 bytes");
        self.key
            .open_in_place(nonce, Aad::empty(), body)
            .map_err(|_| RepoError::Tampered { what: what() })
    }
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut b = [0u8; 32];
        hex::decode_to_slice(&s, &mut b).map_err(serde::de::Error::custom)?;
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn seal_open_round_trip(data in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let k = MasterKey::generate();
            let c = k.cipher();
            let sealed = c.seal(&data);
            prop_assert_eq!(sealed.len(), data.len() + OVERHEAD);
            prop_assert_eq!(c.open(&sealed, &|| "t".into()).unwrap(), data);
        }

        #[test]
        fn any_bit_flip_is_detected(data in proptest::collection::vec(any::<u8>(), 1..2000), pos in any::<usize>(), bit in 0u8..8) {
            let c = MasterKey::generate().cipher();
            let mut sealed = c.seal(&data);
            let i = pos % sealed.len();
            sealed[i] ^= 1 << bit;
            let tampered = matches!(c.open(&sealed, &|| "t".into()), Err(RepoError::Tampered { .. }));
            prop_assert!(tampered);
        }
    }

    #[test]
    fn wrong_key_is_detected() {
        let a = MasterKey::generate().cipher();
        let b = MasterKey::generate().cipher();
        let sealed = a.seal(b"secret");
        assert!(matches!(
            b.open(&sealed, &|| "x".into()),
            Err(RepoError::Tampered { .. })
        ));
    }

    #[test]
    fn blob_ids_are_keyed() {
        let a = MasterKey::generate();
        let b = MasterKey::generate();
        assert_ne!(a.blob_id(b"same"), b.blob_id(b"same"));
        assert_eq!(a.blob_id(b"same"), a.blob_id(b"same"));
        assert_ne!(a.blob_id(b"same").0, *blake3::hash(b"same").as_bytes());
    }
}
