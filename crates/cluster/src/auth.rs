//! The shared agent token, and secret files.
//!
//! Agents and the coordinator read the same secret from a file (mode 0600
//! expected); it travels as `Authorization: Bearer <token>` and is compared in
//! constant time. The token's `Debug` never shows it, so it cannot reach a log.

use std::fmt;
use std::path::Path;

use subtle::ConstantTimeEq;

use crate::error::{ClusterError, Result};

/// Shortest token accepted: 128 bits of hex.
pub const MIN_TOKEN_LEN: usize = 32;

#[derive(Clone)]
pub struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    pub fn new(secret: &str) -> Result<Token> {
        let t = secret.trim();
        if t.len() < MIN_TOKEN_LEN {
            return Err(ClusterError::Token {
                path: "<given>".into(),
                reason: format!("shorter than {MIN_TOKEN_LEN} characters"),
            });
        }
        if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ClusterError::Token {
                path: "<given>".into(),
                reason: "contains whitespace or control characters".into(),
            });
        }
        Ok(Token(t.to_string()))
    }

    /// Reads the token from a file (first line, trimmed).
    pub fn from_file(path: &Path) -> Result<Token> {
        let text = std::fs::read_to_string(path).map_err(|e| ClusterError::Token {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Token::new(text.lines().next().unwrap_or("")).map_err(|e| match e {
            ClusterError::Token { reason, .. } => ClusterError::Token { path: path.display().to_string(), reason },
            other => other,
        })
    }

    /// A new random token (hex of 32 random bytes), for set-up tools.
    pub fn generate() -> Token {
        Token(tidemark_repo::Id::random().to_hex())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Checks an `Authorization` header value.
    pub fn accepts(&self, header: Option<&str>) -> bool {
        let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        given.as_bytes().ct_eq(self.0.as_bytes()).into()
    }
}

/// A secret file's first line (a repository passphrase): files written by
/// `echo` end in a newline that is not part of the secret.
pub fn read_secret(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| ClusterError::file(path, e))?;
    let line = text.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        return Err(ClusterError::EmptySecret { path: path.display().to_string() });
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_the_exact_bearer_token() {
        let t = Token::generate();
        let good = format!("Bearer {}", t.expose());
        assert!(t.accepts(Some(&good)));
        assert!(!t.accepts(None));
        assert!(!t.accepts(Some(t.expose())));
        assert!(!t.accepts(Some(&good[..good.len() - 1])));
        assert!(!t.accepts(Some(&format!("{good}x"))));
        assert!(!format!("{t:?}").contains(t.expose()));
    }

    #[test]
    fn short_tokens_are_refused() {
        assert!(Token::new("short").is_err());
        assert!(Token::new(&"a".repeat(MIN_TOKEN_LEN)).is_ok());
    }
}
