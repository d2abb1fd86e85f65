//! Proxy authentication: `Proxy-Authorization: Basic` checked against the users file's
//! argon2 hashes.
//!
//! argon2 is slow on purpose (tens of milliseconds), and a browser sends the header with
//! every request, so a successful check is remembered for a few minutes by a SHA-256 of
//! the credentials (never the password itself); the check runs on the blocking pool so
//! it never stalls other connections.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::core::identity::Identity;

/// Outcome of checking a `Proxy-Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthResult {
    /// No header.
    Missing,
    /// Good credentials for this user.
    User(String),
    /// A header that is not Basic, not decodable, an unknown user or a wrong password.
    Failed,
}

const CACHE_FOR: Duration = Duration::from_secs(300);
const CACHE_MAX: usize = 10_000;

/// Remembers recent successful checks.
#[derive(Default)]
pub struct AuthCache {
    ok: Mutex<HashMap<[u8; 32], (String, Instant)>>,
}

/// Splits a `Basic` header value into user and password.
pub fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

/// Why a password could not be hashed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// argon2 refused the password or its parameters (say, a password longer than it
    /// takes); its own words, as before this was typed.
    #[error("{0}")]
    Argon2(argon2::password_hash::Error),
}

/// Hashes a password for the users file (argon2id, random salt).
pub fn hash_password(password: &str) -> Result<String, HashError> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(HashError::Argon2)
}

/// Checks a password against a PHC hash string.
pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

impl AuthCache {
    /// Checks `header` (the `Proxy-Authorization` value, if any) against `identity`.
    pub async fn check(&self, header: Option<&str>, identity: &Identity) -> AuthResult {
        let Some(header) = header else {
            return AuthResult::Missing;
        };
        let Some((user, password)) = parse_basic(header) else {
            return AuthResult::Failed;
        };
        self.check_credentials(user, password, identity).await
    }

    /// Checks a user name and password already read from a `Basic` header.
    pub async fn check_credentials(
        &self,
        user: String,
        password: String,
        identity: &Identity,
    ) -> AuthResult {
        self.check_credentials_until(user, password, identity)
            .await
            .0
    }

    /// As [`AuthCache::check_credentials`]; for a success, also when the cache's memory
    /// of it runs out, so a caller that keeps the answer keeps it no longer.
    pub async fn check_credentials_until(
        &self,
        user: String,
        password: String,
        identity: &Identity,
    ) -> (AuthResult, Option<Instant>) {
        let Some(hash) = identity.user(&user).and_then(|u| u.password_hash.clone()) else {
            return (AuthResult::Failed, None);
        };
        let key: [u8; 32] = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .chain_update([0])
            .chain_update(hash.as_bytes())
            .finalize()
            .into();
        if let Ok(cache) = self.ok.lock() {
            if let Some((name, at)) = cache.get(&key) {
                let until = *at + CACHE_FOR;
                if Instant::now() < until {
                    return (AuthResult::User(name.clone()), Some(until));
                }
            }
        }
        let checked_at = Instant::now();
        let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
            .await
            .unwrap_or(false);
        if !ok {
            return (AuthResult::Failed, None);
        }
        if let Ok(mut cache) = self.ok.lock() {
            if cache.len() >= CACHE_MAX {
                cache.retain(|_, (_, at)| at.elapsed() < CACHE_FOR);
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(key, (user.clone(), checked_at));
        }
        (AuthResult::User(user), Some(checked_at + CACHE_FOR))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_header_table() {
        let rows: &[(&str, Option<(&str, &str)>)] = &[
            ("Basic YWxpY2U6c2VjcmV0", Some(("alice", "secret"))),
            ("basic  YWxpY2U6c2VjcmV0 ", Some(("alice", "secret"))),
            ("Basic YWxpY2U6czpl", Some(("alice", "s:e"))),
            ("Bearer abc", None),
            ("Basic !!!", None),
            ("Basic YWxpY2U=", None),
            ("", None),
        ];
        for (header, want) in rows {
            let got = parse_basic(header);
            assert_eq!(
                got.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
                *want,
                "{header}"
            );
        }
    }

    #[test]
    fn hashes_verify() {
        let h = hash_password("correct horse").expect("hashes");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "not a hash"));
    }
}
