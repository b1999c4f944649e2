//! API keys: `Authorization: Bearer <key>` checked in constant time, and the
//! identity ([`Caller`]) that per-key limits are kept under.
//!
//! Keys are compared as SHA-256 digests, every configured key each time,
//! without early exit: how long a check takes depends neither on which key
//! matched nor on how much of a wrong key was right, nor on its length.

use std::fmt;
use std::net::IpAddr;

use axum::http::{header, HeaderMap};
use ring::digest::{digest, SHA256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// Who a request counts against: the API key it presented, or, on a server
/// without keys, its client's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Caller {
    /// The configured key at this index (never the key itself, so it can be logged).
    Key(usize),
    /// The client's IP address.
    Addr(IpAddr),
    /// Neither is known (a router served without connection info).
    Unknown,
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Key(i) => write!(f, "key#{i}"),
            Caller::Addr(ip) => write!(f, "{ip}"),
            Caller::Unknown => f.write_str("unknown"),
        }
    }
}

/// A set of keys, kept only as digests.
#[derive(Clone, Default)]
pub struct KeySet {
    digests: Vec<[u8; 32]>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeySet({} keys)", self.digests.len())
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

impl KeySet {
    /// The digests of `keys`.
    pub fn new<S: AsRef<str>>(keys: &[S]) -> Self {
        Self {
            digests: keys.iter().map(|k| sha256(k.as_ref().as_bytes())).collect(),
        }
    }

    /// Whether any key is configured (otherwise everything is open).
    pub fn is_enabled(&self) -> bool {
        !self.digests.is_empty()
    }

    /// The index of the key equal to `presented`, looking at every key.
    pub fn find(&self, presented: &[u8]) -> Option<usize> {
        let given = sha256(presented);
        let mut found = u64::MAX;
        for (i, d) in self.digests.iter().enumerate() {
            found.conditional_assign(&(i as u64), d.ct_eq(&given));
        }
        usize::try_from(found)
            .ok()
            .filter(|&i| i < self.digests.len())
    }
}

/// Why a request was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A key that is not one of ours.
    Invalid,
}

/// Checks a request's bearer token against `keys`.
pub fn authenticate(keys: &KeySet, headers: &HeaderMap) -> Result<usize, AuthFailure> {
    let token = bearer(headers).ok_or(AuthFailure::Missing)?;
    keys.find(token).ok_or(AuthFailure::Invalid)
}

/// The token of an `Authorization: Bearer <token>` header (scheme
/// case-insensitive, as RFC 7235 says).
pub fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = token.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(auth).expect("header"),
        );
        h
    }

    #[test]
    fn keys_are_found_by_index() {
        let keys = KeySet::new(&["alpha", "beta"]);
        assert_eq!(keys.find(b"alpha"), Some(0));
        assert_eq!(keys.find(b"beta"), Some(1));
        assert_eq!(keys.find(b"alph"), None);
        assert_eq!(keys.find(b""), None);
        assert!(!KeySet::new::<&str>(&[]).is_enabled());
    }

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        let keys = KeySet::new(&["sk-1"]);
        assert_eq!(authenticate(&keys, &headers("Bearer sk-1")), Ok(0));
        assert_eq!(authenticate(&keys, &headers("bearer  sk-1 ")), Ok(0));
        assert_eq!(
            authenticate(&keys, &headers("Bearer sk-2")),
            Err(AuthFailure::Invalid)
        );
        assert_eq!(
            authenticate(&keys, &headers("Basic sk-1")),
            Err(AuthFailure::Missing)
        );
        assert_eq!(
            authenticate(&keys, &headers("Bearer ")),
            Err(AuthFailure::Missing)
        );
        assert_eq!(
            authenticate(&keys, &HeaderMap::new()),
            Err(AuthFailure::Missing)
        );
    }
}
