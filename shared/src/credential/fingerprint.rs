//! Keyed fingerprints of Twilio auth tokens: how the service knows which token the
//! slot, the Vapi credential and each Vapi number hold without keeping the token
//! (HMAC-SHA256 under a deployment secret, hex). Keyed, so a database reader cannot
//! test guesses offline; the key is never rotated (every fingerprint would change,
//! and every number would be PATCHed again by the next audit).

use std::fmt;

use aws_lc_rs::hmac;
use serde::{Deserialize, Serialize};

use crate::ids::AuthToken;

/// The deployment's fingerprint key (`TOKEN_FINGERPRINT_SECRET_ARN`'s
/// `fingerprintKey`, or `TOKEN_FINGERPRINT_KEY` locally), at least 32 bytes.
#[derive(Clone)]
pub struct FingerprintKey(hmac::Key);

impl fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FingerprintKey([REDACTED])")
    }
}

/// Shorter than 32 bytes: too weak to key an HMAC-SHA256.
#[derive(Debug, thiserror::Error)]
#[error("the token fingerprint key must be at least 32 bytes")]
pub struct WeakFingerprintKey;

impl FingerprintKey {
    pub const MIN_LEN: usize = 32;

    pub fn new(secret: &[u8]) -> Result<Self, WeakFingerprintKey> {
        if secret.len() < Self::MIN_LEN {
            return Err(WeakFingerprintKey);
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }

    /// The token's fingerprint under this key.
    pub fn of(&self, token: &AuthToken) -> TokenFingerprint {
        let tag = hmac::sign(&self.0, token.expose().as_bytes());
        let mut hex = String::with_capacity(64);
        for b in tag.as_ref() {
            hex.push_str(&format!("{b:02x}"));
        }
        TokenFingerprint(hex)
    }
}

impl FingerprintKey {
    /// The fingerprint of a token a provider reported, if it has a token's shape.
    pub fn of_reported(&self, token: &crate::ids::ReportedToken) -> Option<TokenFingerprint> {
        token.as_auth_token().map(|t| self.of(&t))
    }
}

/// A token's keyed fingerprint: 64 lowercase hex characters. Safe to store, log and
/// compare; it is not the token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenFingerprint(String);

impl TokenFingerprint {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A stored fingerprint, if well-formed.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Self(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(s: &str) -> AuthToken {
        s.parse().unwrap()
    }

    #[test]
    fn a_fingerprint_depends_on_the_token_and_the_key_and_never_shows_either() {
        let a = FingerprintKey::new(&[7u8; 32]).unwrap();
        let b = FingerprintKey::new(&[8u8; 32]).unwrap();
        let t1 = token("0123456789abcdef0123456789abcdef");
        let t2 = token("0123456789abcdef0123456789abcdee");
        assert_eq!(a.of(&t1), a.of(&t1));
        assert_ne!(a.of(&t1), a.of(&t2));
        assert_ne!(a.of(&t1), b.of(&t1));
        let fp = a.of(&t1);
        assert!(TokenFingerprint::parse(fp.as_str()).is_some());
        assert!(!fp.as_str().contains(t1.expose()));
        assert_eq!(format!("{a:?}"), "FingerprintKey([REDACTED])");
    }

    #[test]
    fn a_short_key_is_refused_and_a_malformed_fingerprint_is_not_parsed() {
        assert!(FingerprintKey::new(&[1u8; 31]).is_err());
        assert!(TokenFingerprint::parse("ABC").is_none());
        assert!(TokenFingerprint::parse(&"g".repeat(64)).is_none());
    }
}
