//! Envelope encryption of credential blobs.
//!
//! One fresh 256-bit data key per blob (KMS `GenerateDataKey`, `AES_256`), AES-256-GCM
//! with a random 96-bit nonce. The encryption context `{org_id, provider}` is given to
//! the keyring (KMS binds it to the encrypted data key) *and* used, canonically
//! serialised, as the GCM associated data, so a blob copied to another org's row does
//! not decrypt. Modelled on the AWS Encryption SDK's message format, minus the parts
//! (multiple data keys, signatures) a single-region KMS key does not need.
//!
//! Which keyring is used is an explicit setting ([`KeyringConfig`]); nothing here
//! falls back from KMS to the local keyring.
//!
//! Only sealing is compiled by default: no route decrypts. Opening an envelope
//! ([`Keyring::open`]) is behind the `decrypt` feature, for tests and a future holder
//! of the decrypt role.
//!
//! Here: the envelope format, the context it is bound to and the AES-GCM sealing and
//! opening; the keyrings that supply data keys are in `keyring`, the choice between
//! them in `config`.

mod config;
mod keyring;

pub use config::KeyringConfig;
pub use keyring::{Keyring, KmsKeyring, LocalKeyring};

use std::collections::HashMap;
use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::ids::{OrgId, Provider};

/// The only envelope layout written today. Readers reject anything else.
pub const ENVELOPE_VERSION: u8 = 1;
const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// Tampered data, a wrong context or a wrong key: deliberately indistinguishable.
    #[error("the envelope does not decrypt under this key and context")]
    Undecryptable,
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u8),
    #[error("the envelope was sealed by key {found}, this keyring holds {expected}")]
    WrongKeyring { expected: String, found: String },
    #[error("KMS call failed: {0}")]
    Kms(String),
    #[error("no secure randomness available")]
    Random,
}

/// The context a blob is bound to. Both values are non-secret and are also what KMS
/// logs in CloudTrail, so they must stay identifiers, never credential material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionContext {
    org_id: OrgId,
    provider: Provider,
}

impl EncryptionContext {
    pub fn new(org_id: OrgId, provider: Provider) -> Self {
        Self { org_id, provider }
    }

    /// A token rotation's secondary token ([`Provider::TwilioSecondary`]).
    pub fn is_rotation_secondary(&self) -> bool {
        self.provider == Provider::TwilioSecondary
    }

    fn pairs(&self) -> [(&'static str, String); 2] {
        // Sorted by key: the serialisation below must be canonical.
        [
            ("org_id", self.org_id.to_string()),
            ("provider", self.provider.as_str().to_owned()),
        ]
    }

    /// The map KMS receives (`EncryptionContext` parameter).
    fn to_kms_map(&self) -> HashMap<String, String> {
        self.pairs()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    /// Canonical bytes: the AWS Encryption SDK's layout (count, then length-prefixed
    /// key/value pairs sorted by key), prefixed by the envelope version so a blob can't
    /// be replayed under another layout.
    fn associated_data(&self) -> Vec<u8> {
        let pairs = self.pairs();
        let mut out = vec![ENVELOPE_VERSION];
        out.extend_from_slice(&(pairs.len() as u16).to_be_bytes());
        for (k, v) in pairs {
            for part in [k.as_bytes(), v.as_bytes()] {
                out.extend_from_slice(&(part.len() as u16).to_be_bytes());
                out.extend_from_slice(part);
            }
        }
        out
    }
}

/// What is stored in `org_credentials.encrypted_config` (as JSON).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    #[serde(rename = "v")]
    pub version: u8,
    /// The KMS key ARN (or local key id) that wrapped the data key.
    #[serde(rename = "kid")]
    pub key_id: String,
    #[serde(rename = "edk", with = "b64")]
    pub encrypted_data_key: Vec<u8>,
    #[serde(rename = "iv", with = "b64")]
    pub nonce: Vec<u8>,
    /// Ciphertext with the 16-byte GCM tag appended.
    #[serde(rename = "ct", with = "b64")]
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("version", &self.version)
            .field("key_id", &self.key_id)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

mod b64 {
    use super::B64;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s).map_err(serde::de::Error::custom)
    }
}

/// A fresh plaintext data key with its wrapped form. Consumed by [`DataKey::seal`], so
/// one key seals exactly one blob; the plaintext is zeroized on drop.
pub struct DataKey {
    plaintext: Zeroizing<[u8; KEY_LEN]>,
    encrypted: Vec<u8>,
    key_id: String,
    context: EncryptionContext,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl DataKey {
    /// Seal `plaintext` under this data key with a fresh random nonce.
    pub fn seal(self, plaintext: &[u8]) -> Result<Envelope, CryptoError> {
        self.seal_with_nonce(random_nonce()?, plaintext)
    }

    /// [`DataKey::seal`] with a given nonce: only for reproducing the published test
    /// vector (`docs/envelope.md`, checked by `tests/envelope_vector.rs`). A fixed
    /// nonce reused under one key breaks AES-GCM, so this exists only with the
    /// `decrypt` feature, which no function is built with; `seal` is the only path
    /// they have.
    #[cfg(feature = "decrypt")]
    #[doc(hidden)]
    pub fn seal_for_test_vector(
        self,
        nonce: [u8; NONCE_LEN],
        plaintext: &[u8],
    ) -> Result<Envelope, CryptoError> {
        self.seal_with_nonce(nonce, plaintext)
    }

    fn seal_with_nonce(
        self,
        nonce: [u8; NONCE_LEN],
        plaintext: &[u8],
    ) -> Result<Envelope, CryptoError> {
        let mut buf = plaintext.to_vec();
        let sealed = aead_key(&self.plaintext).seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(self.context.associated_data()),
            &mut buf,
        );
        if sealed.is_err() {
            buf.zeroize();
            return Err(CryptoError::Undecryptable);
        }
        Ok(Envelope {
            version: ENVELOPE_VERSION,
            key_id: self.key_id,
            encrypted_data_key: self.encrypted,
            nonce: nonce.to_vec(),
            ciphertext: buf,
        })
    }
}

fn aead_key(key: &[u8; KEY_LEN]) -> LessSafeKey {
    // A 32-byte key is always a valid AES-256 key; the constructor only fails on length.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("32-byte AES-256 key"))
}

fn random_nonce() -> Result<[u8; NONCE_LEN], CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| CryptoError::Random)?;
    Ok(nonce)
}

fn open_with(
    key: &[u8; KEY_LEN],
    aad: Vec<u8>,
    nonce: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Undecryptable)?;
    let mut buf = Zeroizing::new(sealed.to_vec());
    let len = aead_key(key)
        .open_in_place(nonce, Aad::from(aad), buf.as_mut_slice())
        .map_err(|_| CryptoError::Undecryptable)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

fn key_from_vec(mut v: Vec<u8>) -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    let ok = v.len() == KEY_LEN;
    if ok {
        key.copy_from_slice(&v);
    }
    v.zeroize();
    if ok {
        Ok(key)
    } else {
        Err(CryptoError::Undecryptable)
    }
}
