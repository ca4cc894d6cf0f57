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

use std::collections::HashMap;
use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_sdk_kms::error::DisplayErrorContext;
#[cfg(feature = "decrypt")]
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::config::{ConfigError, Env};
use crate::ids::{OrgId, Provider};

/// The only envelope layout written today. Readers reject anything else.
pub const ENVELOPE_VERSION: u8 = 1;
const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// Tampered data, a wrong context or a wrong key: deliberately indistinguishable.
    #[error("the envelope does not decrypt under this key and context")]
    Undecryptable,
    #[cfg(feature = "decrypt")]
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u8),
    #[cfg(feature = "decrypt")]
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
    pub fn seal(self, plaintext: &[u8]) -> Result<Envelope, CryptoError> {
        let nonce = random_nonce()?;
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

#[cfg(feature = "decrypt")]
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

/// Which keyring seals credentials: `KEYRING=kms` (with `KMS_KEY_ID`) or
/// `KEYRING=local` (with `LOCAL_KEYRING_KEY`, base64 of 32 bytes, or
/// `LOCAL_KEYRING_FILE` holding the same). There is no default and no fallback: a
/// function configured for KMS never seals with a local key.
#[derive(Clone)]
pub enum KeyringConfig {
    Kms { key_id: String },
    Local { master_b64: SecretString },
}

impl fmt::Debug for KeyringConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Kms { key_id } => f.debug_struct("Kms").field("key_id", key_id).finish(),
            Self::Local { .. } => f.write_str("Local { master_b64: [REDACTED] }"),
        }
    }
}

impl KeyringConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        match env.require("KEYRING")? {
            "kms" => Ok(Self::Kms {
                key_id: env.require("KMS_KEY_ID")?.to_owned(),
            }),
            "local" => {
                let b64 = match (env.get("LOCAL_KEYRING_KEY"), env.get("LOCAL_KEYRING_FILE")) {
                    (Some(k), _) => k.to_owned(),
                    (None, Some(path)) => std::fs::read_to_string(path)
                        .map_err(|e| ConfigError::invalid("LOCAL_KEYRING_FILE", e.to_string()))?
                        .trim()
                        .to_owned(),
                    (None, None) => return Err(ConfigError::Missing("LOCAL_KEYRING_KEY")),
                };
                Ok(Self::Local {
                    master_b64: SecretString::from(b64),
                })
            }
            other => Err(ConfigError::invalid(
                "KEYRING",
                format!("{other:?} is not kms or local"),
            )),
        }
    }

    /// Build the keyring. The KMS client is only used for `kms`.
    pub fn build(&self, aws: &aws_config::SdkConfig) -> Result<Keyring, ConfigError> {
        match self {
            Self::Kms { key_id } => Ok(Keyring::Kms(KmsKeyring::new(
                aws_sdk_kms::Client::new(aws),
                key_id.clone(),
            ))),
            Self::Local { master_b64 } => {
                let bytes = B64
                    .decode(master_b64.expose_secret())
                    .map_err(|_| ConfigError::invalid("LOCAL_KEYRING_KEY", "not base64"))?;
                LocalKeyring::new(Zeroizing::new(bytes))
                    .map(Keyring::Local)
                    .map_err(|_| {
                        ConfigError::invalid("LOCAL_KEYRING_KEY", "must decode to 32 bytes")
                    })
            }
        }
    }
}

/// Where data keys come from. Two real implementations, chosen by configuration.
pub enum Keyring {
    Kms(KmsKeyring),
    Local(LocalKeyring),
}

impl Keyring {
    /// A fresh data key bound to `context`.
    pub async fn generate_data_key(
        &self,
        context: &EncryptionContext,
    ) -> Result<DataKey, CryptoError> {
        match self {
            Keyring::Kms(k) => k.generate_data_key(context).await,
            Keyring::Local(k) => k.generate_data_key(context),
        }
    }

    /// Open an envelope sealed under `context`. Fails for any other context.
    ///
    /// Behind the `decrypt` feature: no route decrypts (a save seals what it was given
    /// and sends that plaintext to Vapi itself), so the functions are built without
    /// it. Tests enable it (through `testkit`), and so would a future holder of the
    /// decrypt role (say, a reconcile granted `kms:Decrypt` to finish a Vapi sync).
    #[cfg(feature = "decrypt")]
    pub async fn open(
        &self,
        context: &EncryptionContext,
        envelope: &Envelope,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if envelope.version != ENVELOPE_VERSION {
            return Err(CryptoError::UnsupportedVersion(envelope.version));
        }
        let key = match self {
            Keyring::Kms(k) => k.decrypt_data_key(context, envelope).await?,
            Keyring::Local(k) => k.decrypt_data_key(context, envelope)?,
        };
        open_with(
            &key,
            context.associated_data(),
            &envelope.nonce,
            &envelope.ciphertext,
        )
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Keyring::Kms(k) => f.debug_tuple("Kms").field(&k.key_id).finish(),
            Keyring::Local(k) => f.debug_tuple("Local").field(&k.key_id).finish(),
        }
    }
}

/// AWS KMS: the data key is generated and unwrapped by KMS under one symmetric key.
pub struct KmsKeyring {
    client: aws_sdk_kms::Client,
    key_id: String,
}

impl KmsKeyring {
    pub fn new(client: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        Self {
            client,
            key_id: key_id.into(),
        }
    }

    async fn generate_data_key(&self, context: &EncryptionContext) -> Result<DataKey, CryptoError> {
        let out = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(context.to_kms_map()))
            .send()
            .await
            .map_err(|e| CryptoError::Kms(DisplayErrorContext(&e).to_string()))?;
        let plaintext = out
            .plaintext
            .ok_or_else(|| CryptoError::Kms("GenerateDataKey returned no plaintext".into()))?;
        let encrypted = out
            .ciphertext_blob
            .ok_or_else(|| CryptoError::Kms("GenerateDataKey returned no ciphertext".into()))?;
        Ok(DataKey {
            plaintext: key_from_vec(plaintext.into_inner())?,
            encrypted: encrypted.into_inner(),
            // KMS answers with the key ARN even when we asked by alias: store that, so
            // decrypt stays pinned to the exact key after an alias moves.
            key_id: out.key_id.unwrap_or_else(|| self.key_id.clone()),
            context: context.clone(),
        })
    }

    #[cfg(feature = "decrypt")]
    async fn decrypt_data_key(
        &self,
        context: &EncryptionContext,
        envelope: &Envelope,
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
        let out = self
            .client
            .decrypt()
            .key_id(&envelope.key_id)
            .ciphertext_blob(Blob::new(envelope.encrypted_data_key.clone()))
            .set_encryption_context(Some(context.to_kms_map()))
            .send()
            .await
            .map_err(|e| {
                let invalid = e
                    .as_service_error()
                    .is_some_and(|s| s.is_invalid_ciphertext_exception());
                if invalid {
                    CryptoError::Undecryptable
                } else {
                    CryptoError::Kms(DisplayErrorContext(&e).to_string())
                }
            })?;
        let plaintext = out
            .plaintext
            .ok_or_else(|| CryptoError::Kms("Decrypt returned no plaintext".into()))?;
        key_from_vec(plaintext.into_inner())
    }
}

/// A development keyring: a 256-bit master key from the environment or a dev file
/// wraps each data key with AES-256-GCM under the same context. Produces the same
/// envelope layout as KMS, so everything downstream is exercised locally.
pub struct LocalKeyring {
    master: Zeroizing<[u8; KEY_LEN]>,
    key_id: String,
}

impl LocalKeyring {
    /// `master` must be exactly 32 bytes.
    pub fn new(master: Zeroizing<Vec<u8>>) -> Result<Self, CryptoError> {
        let master = key_from_vec(master.to_vec())?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, master.as_slice());
        let fp: String = digest.as_ref()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Self {
            master,
            key_id: format!("local:{fp}"),
        })
    }

    fn generate_data_key(&self, context: &EncryptionContext) -> Result<DataKey, CryptoError> {
        let mut plaintext = Zeroizing::new([0u8; KEY_LEN]);
        SystemRandom::new()
            .fill(plaintext.as_mut_slice())
            .map_err(|_| CryptoError::Random)?;
        let nonce = random_nonce()?;
        let mut wrapped = plaintext.to_vec();
        aead_key(&self.master)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.associated_data()),
                &mut wrapped,
            )
            .map_err(|_| CryptoError::Undecryptable)?;
        let mut encrypted = nonce.to_vec();
        encrypted.extend_from_slice(&wrapped);
        Ok(DataKey {
            plaintext,
            encrypted,
            key_id: self.key_id.clone(),
            context: context.clone(),
        })
    }

    #[cfg(feature = "decrypt")]
    fn decrypt_data_key(
        &self,
        context: &EncryptionContext,
        envelope: &Envelope,
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
        if envelope.key_id != self.key_id {
            return Err(CryptoError::WrongKeyring {
                expected: self.key_id.clone(),
                found: envelope.key_id.clone(),
            });
        }
        let edk = &envelope.encrypted_data_key;
        if edk.len() < NONCE_LEN {
            return Err(CryptoError::Undecryptable);
        }
        let (nonce, sealed) = edk.split_at(NONCE_LEN);
        let key = open_with(&self.master, context.associated_data(), nonce, sealed)?;
        key_from_vec(key.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn keyring() -> Keyring {
        Keyring::Local(LocalKeyring::new(Zeroizing::new(vec![7u8; 32])).unwrap())
    }

    fn ctx() -> EncryptionContext {
        EncryptionContext::new(OrgId::new(Uuid::new_v4()), Provider::Twilio)
    }

    async fn seal(k: &Keyring, c: &EncryptionContext, plaintext: &[u8]) -> Envelope {
        k.generate_data_key(c)
            .await
            .unwrap()
            .seal(plaintext)
            .unwrap()
    }

    #[test]
    fn keyring_must_be_chosen_explicitly() {
        assert!(matches!(
            KeyringConfig::from_env(&Env::default()),
            Err(ConfigError::Missing("KEYRING"))
        ));
        assert!(matches!(
            KeyringConfig::from_env(&Env::from_pairs([("KEYRING", "kms")])),
            Err(ConfigError::Missing("KMS_KEY_ID"))
        ));
        // kms never falls back to a local key, even when one is present.
        let cfg = KeyringConfig::from_env(&Env::from_pairs([
            ("KEYRING", "kms"),
            ("KMS_KEY_ID", "alias/x"),
            ("LOCAL_KEYRING_KEY", "AAAA"),
        ]))
        .unwrap();
        assert!(matches!(cfg, KeyringConfig::Kms { key_id } if key_id == "alias/x"));
        assert!(KeyringConfig::from_env(&Env::from_pairs([("KEYRING", "auto")])).is_err());
    }

    #[test]
    fn debug_of_keyring_config_is_redacted() {
        let secret = "s3cr3t-value-never-printed";
        let local = KeyringConfig::Local {
            master_b64: SecretString::from(secret.to_owned()),
        };
        let dbg = format!("{local:?}");
        assert!(!dbg.contains(secret), "leaks: {dbg}");
    }

    #[tokio::test]
    async fn round_trip_and_fresh_key_per_blob() {
        let (k, c) = (keyring(), ctx());
        let a = seal(&k, &c, b"secret blob").await;
        let b = seal(&k, &c, b"secret blob").await;
        assert_ne!(a.encrypted_data_key, b.encrypted_data_key);
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
        assert_eq!(k.open(&c, &a).await.unwrap().as_slice(), b"secret blob");
        let json = serde_json::to_value(&a).unwrap();
        let back: Envelope = serde_json::from_value(json).unwrap();
        assert_eq!(back, a);
    }

    #[tokio::test]
    async fn any_flipped_bit_fails() {
        let (k, c) = (keyring(), ctx());
        let env = seal(&k, &c, b"secret blob").await;
        type Field = fn(&mut Envelope) -> &mut Vec<u8>;
        let fields: [Field; 3] = [
            |e| &mut e.ciphertext,
            |e| &mut e.nonce,
            |e| &mut e.encrypted_data_key,
        ];
        for field in fields {
            for i in [0usize, 5, 11] {
                let mut bad = env.clone();
                field(&mut bad)[i] ^= 0x01;
                assert!(matches!(
                    k.open(&c, &bad).await,
                    Err(CryptoError::Undecryptable)
                ));
            }
        }
    }

    #[tokio::test]
    async fn another_orgs_context_fails() {
        let k = keyring();
        let env = seal(&k, &ctx(), b"secret blob").await;
        assert!(matches!(
            k.open(&ctx(), &env).await,
            Err(CryptoError::Undecryptable)
        ));
    }

    #[tokio::test]
    async fn other_version_and_other_key_are_refused() {
        let (k, c) = (keyring(), ctx());
        let mut env = seal(&k, &c, b"x").await;
        env.version = 2;
        assert!(matches!(
            k.open(&c, &env).await,
            Err(CryptoError::UnsupportedVersion(2))
        ));
        let other = Keyring::Local(LocalKeyring::new(Zeroizing::new(vec![8u8; 32])).unwrap());
        let env = seal(&k, &c, b"x").await;
        assert!(matches!(
            other.open(&c, &env).await,
            Err(CryptoError::WrongKeyring { .. })
        ));
    }

    #[test]
    fn debug_prints_no_key_material() {
        let k = keyring();
        let dbg = format!("{k:?}");
        assert!(dbg.starts_with("Local(\"local:"), "{dbg}");
        assert!(LocalKeyring::new(Zeroizing::new(vec![1u8; 31])).is_err());
    }
}
