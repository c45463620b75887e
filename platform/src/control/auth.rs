//! Bearer tokens for the HTTP API: each has a role, `admin` (deploy, pause, resume,
//! rollback, delete) or `read` (everything else).
//!
//! Tokens come from a file (`--tokens FILE`) or `SLUICE_API_TOKENS`: entries separated by
//! newlines or commas, each `ROLE:TOKEN` or `NAME:ROLE:TOKEN` (the name is recorded as who
//! deployed a version); blank lines and lines starting with `#` are skipped.
//!
//! Invariants: a token is kept only as its sha256 and compared in constant time against
//! every configured token; no token ever reaches a log line or a `Debug` output.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Admin,
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// A token file that cannot be used. Never contains a token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token entry {entry}: expected ROLE:TOKEN or NAME:ROLE:TOKEN with ROLE admin or read")]
    Malformed { entry: usize },
    #[error("token entry {entry}: the token is empty")]
    Empty { entry: usize },
}

struct Token {
    name: String,
    role: Role,
    digest: [u8; 32],
}

/// The configured tokens. Empty means the API is open (allowed on loopback only).
#[derive(Default)]
pub struct Tokens {
    tokens: Vec<Token>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("count", &self.tokens.len())
            .finish_non_exhaustive()
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

fn role(text: &str) -> Option<Role> {
    match text {
        "admin" => Some(Role::Admin),
        "read" => Some(Role::Read),
        _ => None,
    }
}

impl Tokens {
    /// Parses the token list (see the module doc).
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let mut tokens = Vec::new();
        let entries = text
            .split(['\n', ','])
            .map(str::trim)
            .filter(|entry| !entry.is_empty() && !entry.starts_with('#'));
        for (index, entry) in entries.enumerate() {
            let number = index + 1;
            let (name, role, token) = match entry.split_once(':') {
                Some((first, rest)) if role(first).is_some() => {
                    (format!("{first}-token-{number}"), role(first), rest)
                }
                Some((name, rest)) => match rest.split_once(':') {
                    Some((role_text, token)) => (name.to_owned(), role(role_text), token),
                    None => (name.to_owned(), None, ""),
                },
                None => (String::new(), None, ""),
            };
            let role = role.ok_or(TokenError::Malformed { entry: number })?;
            if token.is_empty() {
                return Err(TokenError::Empty { entry: number });
            }
            tokens.push(Token {
                name,
                role,
                digest: digest(token.as_bytes()),
            });
        }
        Ok(Self { tokens })
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The caller an `Authorization` header value names, if any. With no tokens
    /// configured every request is an anonymous admin.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Option<Caller> {
        if self.tokens.is_empty() {
            return Some(Caller {
                name: "anonymous".to_owned(),
                role: Role::Admin,
            });
        }
        let presented = authorization?.strip_prefix(b"Bearer ")?;
        let presented = digest(presented);
        // Every token is compared, whatever matched, so timing says nothing about which.
        let mut found: Option<&Token> = None;
        for token in &self.tokens {
            if bool::from(token.digest[..].ct_eq(&presented[..])) {
                found = Some(token);
            }
        }
        found.map(|token| Caller {
            name: token.name.clone(),
            role: token.role,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_names_come_from_the_entries() {
        let tokens =
            Tokens::parse("# ops\nadmin:s3cret\nci:read:r-token,\n\nalice:admin:a:b").unwrap();
        let caller = |header: &str| tokens.authenticate(Some(header.as_bytes()));
        assert_eq!(caller("Bearer s3cret").unwrap().role, Role::Admin);
        let ci = caller("Bearer r-token").unwrap();
        assert_eq!((ci.name.as_str(), ci.role), ("ci", Role::Read));
        // A token may contain colons.
        assert_eq!(caller("Bearer a:b").unwrap().name, "alice");
        assert_eq!(caller("Bearer wrong"), None);
        assert_eq!(caller("s3cret"), None);
        assert_eq!(tokens.authenticate(None), None);
    }

    #[test]
    fn malformed_entries_are_refused_without_echoing_them() {
        let error = Tokens::parse("admin:ok\nroot:superuser:hunter2").unwrap_err();
        assert!(matches!(error, TokenError::Malformed { entry: 2 }));
        assert!(!error.to_string().contains("hunter2"));
        assert!(matches!(
            Tokens::parse("read:").unwrap_err(),
            TokenError::Empty { entry: 1 }
        ));
        let debug = format!("{:?}", Tokens::parse("admin:hunter2").unwrap());
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn no_tokens_means_open() {
        let tokens = Tokens::parse("").unwrap();
        assert!(tokens.is_empty());
        assert_eq!(tokens.authenticate(None).unwrap().role, Role::Admin);
    }
}
