//! Key files: the master key wrapped under a passphrase.
//!
//! `keys/<id>` is JSON (so a user can see which keys exist without the
//! passphrase): who created it and when, the Argon2id parameters and salt, and
//! the master key sealed with AES-256-GCM under the 32-byte Argon2id output.
//! The file's id is the BLAKE3 of its bytes. Several key files may wrap the
//! same master key (`key add`); removing one never touches the data.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::{fill_random, Cipher, MasterKey};
use crate::error::{RepoError, Result};

/// Argon2id cost parameters, stored in each key file.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct KdfParams {
    /// Memory in KiB. 64 MiB makes each guess cost real memory on a GPU while
    /// opening a repository stays well under a second on one core.
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// RFC 9106's second recommended option (64 MiB, 3 passes, 4 lanes),
    /// above OWASP's Argon2id minimum (19 MiB, 2 passes). The lanes run in
    /// parallel (argon2's `parallel` feature): a guess costs an attacker the
    /// same memory and work as with one lane, an open takes half the time on
    /// two cores.
    fn default() -> Self {
        KdfParams {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 4,
        }
    }
}

impl KdfParams {
    /// Cheap parameters for tests only; never the default.
    pub fn insecure_fast() -> Self {
        KdfParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        }
    }

    fn derive(&self, password: &[u8], salt: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        let params = argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| RepoError::Invalid(format!("argon2 parameters: {e}")))?;
        let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(password, salt, out.as_mut())
            .map_err(|e| RepoError::Invalid(format!("argon2: {e}")))?;
        Ok(out)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct KeyFile {
    pub created: DateTime<Utc>,
    pub hostname: String,
    pub username: String,
    pub kdf: String,
    pub params: KdfParams,
    /// 32 random bytes, hex.
    pub salt: String,
    /// The master key (JSON) sealed under the derived key, hex.
    pub data: String,
}

impl KeyFile {
    pub fn wrap(master: &MasterKey, password: &[u8], params: KdfParams) -> Result<KeyFile> {
        let mut salt = [0u8; 32];
        fill_random(&mut salt);
        let kek = params.derive(password, &salt)?;
        let plain = Zeroizing::new(serde_json::to_vec(master).expect("key serialises"));
        let sealed = Cipher::new(&kek).seal(&plain);
        Ok(KeyFile {
            created: Utc::now(),
            hostname: crate::hostname(),
            username: crate::username(),
            kdf: "argon2id".into(),
            params,
            salt: hex::encode(salt),
            data: hex::encode(sealed),
        })
    }

    /// The master key if `password` is right, `Ok(None)` if it is not.
    pub fn unwrap_key(&self, password: &[u8]) -> Result<Option<MasterKey>> {
        if self.kdf != "argon2id" {
            return Err(RepoError::corrupt("key file", format!("unknown kdf {:?}", self.kdf)));
        }
        let salt = hex::decode(&self.salt).map_err(|_| RepoError::corrupt("key file", "salt is not hex"))?;
        let sealed = hex::decode(&self.data).map_err(|_| RepoError::corrupt("key file", "data is not hex"))?;
        let kek = self.params.derive(password, &salt)?;
        match Cipher::new(&kek).open(&sealed, &|| "key file".into()) {
            Ok(plain) => {
                let plain = Zeroizing::new(plain);
                let key = serde_json::from_slice(&plain)
                    .map_err(|e| RepoError::corrupt("key file", e.to_string()))?;
                Ok(Some(key))
            }
            Err(RepoError::Tampered { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("key file serialises")
    }

    pub fn from_bytes(b: &[u8], what: &str) -> Result<KeyFile> {
        serde_json::from_slice(b).map_err(|e| RepoError::corrupt(what, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_and_unwrap() {
        let mk = MasterKey::generate();
        let kf = KeyFile::wrap(&mk, b"pw", KdfParams::insecure_fast()).unwrap();
        let back = KeyFile::from_bytes(&kf.to_bytes(), "k").unwrap();
        let got = back.unwrap_key(b"pw").unwrap().expect("right password");
        assert_eq!(got.raw_parts(), mk.raw_parts());
        assert!(back.unwrap_key(b"wrong").unwrap().is_none());
        // The file holds neither half of the master key in the clear.
        let bytes = kf.to_bytes();
        let text = String::from_utf8(bytes).unwrap();
        assert!(!text.contains(&hex::encode(mk.raw_parts().0)));
        assert!(!text.contains(&hex::encode(mk.raw_parts().1)));
    }
}
