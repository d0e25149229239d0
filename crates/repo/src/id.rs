//! 32-byte identifiers, written as 64 lowercase hex digits.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::RepoError;

/// A 32-byte id: a keyed BLAKE3 of a blob's plaintext (blob ids) or the
/// unkeyed BLAKE3 of a stored file's bytes (pack, index, snapshot, key ids).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; 32]);

impl Id {
    pub const LEN: usize = 32;

    /// The storage id of a file: BLAKE3 of its stored (encrypted) bytes, so its
    /// integrity can be checked without the key.
    pub fn of_stored(bytes: &[u8]) -> Id {
        Id(*blake3::hash(bytes).as_bytes())
    }

    pub fn random() -> Id {
        let mut b = [0u8; 32];
        crate::crypto::fill_random(&mut b);
        Id(b)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex digits, as shown in listings.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    pub fn from_slice(b: &[u8]) -> Option<Id> {
        <[u8; 32]>::try_from(b).ok().map(Id)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl FromStr for Id {
    type Err = RepoError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b)
            .map_err(|_| RepoError::Invalid(format!("{s:?} is not a 64-digit hex id")))?;
        Ok(Id(b))
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

/// Parses the hex string in place: trees hold one id per chunk, and going
/// through a `String` (what `Cow<str>` deserializes to) allocated once per id.
struct HexVisitor;

impl serde::de::Visitor<'_> for HexVisitor {
    type Value = Id;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a 64-digit hex id")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Id, E> {
        s.parse().map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(HexVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_bad_hex() {
        let id = Id(*blake3::hash(b"x").as_bytes());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<Id>(&json).unwrap(), id);
        // Escaped strings reach the visitor as a transient &str, not borrowed.
        let escaped = format!("\"\\u0030{}\"", &id.to_hex()[1..]);
        let parsed: Id = serde_json::from_str(&escaped).unwrap();
        assert_eq!(parsed.to_hex()[1..], id.to_hex()[1..]);
        let err = serde_json::from_str::<Id>("\"abc\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a 64-digit hex id"), "{err}");
        assert!(serde_json::from_str::<Id>("42").is_err());
    }
}
