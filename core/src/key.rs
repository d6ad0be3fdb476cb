//! Object addresses: a validated namespace and a 64-hex-digit key (SPEC §3).

use std::fmt;

use sha2::{Digest, Sha256};

/// Why a namespace segment was refused (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamespaceError {
    /// The segment was empty.
    #[error("namespace is empty")]
    Empty,
    /// The first character was not a letter or digit.
    #[error("namespace starts with {0:?}; it must start with a letter or digit")]
    BadStart(char),
    /// A character outside letters, digits, '_' and '-'.
    #[error("namespace contains {0:?}; use letters, digits, '_' or '-'")]
    BadChar(char),
    /// Longer than [`Namespace::MAX_LEN`].
    #[error("namespace is {0} bytes long; at most 128 are allowed")]
    TooLong(usize),
}

/// A namespace matching `^[a-zA-Z0-9][a-zA-Z0-9_-]*$`: safe as a path segment and an S3 prefix.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Namespace(String);

impl Namespace {
    /// Longest namespace accepted, so that it always fits in a file name (255 bytes).
    pub const MAX_LEN: usize = 128;

    /// Validates a namespace segment.
    pub fn parse(segment: &str) -> Result<Namespace, NamespaceError> {
        let mut chars = segment.chars();
        let first = chars.next().ok_or(NamespaceError::Empty)?;
        if !first.is_ascii_alphanumeric() {
            return Err(NamespaceError::BadStart(first));
        }
        if let Some(bad) = chars.find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
            return Err(NamespaceError::BadChar(bad));
        }
        if segment.len() > Namespace::MAX_LEN {
            return Err(NamespaceError::TooLong(segment.len()));
        }
        Ok(Namespace(segment.to_owned()))
    }

    /// The namespace as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An object key: exactly 64 hex digits (safe as a file name and an S3 key), held inline so
/// that a key is copied, hashed and compared without touching the heap.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key([u8; 64]);

impl Key {
    /// The key for a path segment: 64 hex digits are used as given (SPEC §3, case kept, as
    /// cachew does); any other segment is replaced by the lower-case hex SHA-256 of its bytes.
    pub fn from_segment(segment: &str) -> Key {
        let mut digits = [0u8; 64];
        if segment.len() == 64 && segment.bytes().all(|b| b.is_ascii_hexdigit()) {
            digits.copy_from_slice(segment.as_bytes());
        } else {
            hex::encode_to_slice(Sha256::digest(segment.as_bytes()), &mut digits)
                .expect("a SHA-256 digest is 32 bytes, 64 hex digits");
        }
        Key(digits)
    }

    /// The 64 hex digits.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("a key holds 64 ASCII hex digits")
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an object lives: its namespace and key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// The namespace.
    pub namespace: Namespace,
    /// The key inside the namespace.
    pub key: Key,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_grammar_is_enforced() {
        assert!(Namespace::parse("ci-cache_2").is_ok());
        assert_eq!(Namespace::parse(""), Err(NamespaceError::Empty));
        assert_eq!(Namespace::parse("_x"), Err(NamespaceError::BadStart('_')));
        assert_eq!(Namespace::parse("a/../b"), Err(NamespaceError::BadChar('/')));
        assert_eq!(Namespace::parse("a.b"), Err(NamespaceError::BadChar('.')));
        assert_eq!(Namespace::parse(&"a".repeat(129)), Err(NamespaceError::TooLong(129)));
    }

    #[test]
    fn sixty_four_hex_digits_are_used_as_given_and_anything_else_is_hashed() {
        let hex64 = "AB".repeat(32);
        assert_eq!(Key::from_segment(&hex64).as_str(), hex64);
        assert_ne!(Key::from_segment(&hex64), Key::from_segment(&"ab".repeat(32)));
        // SHA-256 of "hello", a well-known vector.
        assert_eq!(
            Key::from_segment("hello").as_str(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(Key::from_segment("../etc").as_str().len(), 64);
    }
}
