//! Where data keys come from: [`KmsKeyring`] (AWS KMS, in every deployment) and
//! [`LocalKeyring`] (a master key from the environment, for local runs and tests),
//! behind the one [`Keyring`] the functions hold. Both wrap each data key under the
//! blob's [`EncryptionContext`] and produce the same envelope layout.

use std::fmt;

use aws_lc_rs::aead::{Aad, NONCE_LEN, Nonce};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_sdk_kms::error::DisplayErrorContext;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use zeroize::Zeroizing;

use super::{
    CryptoError, DataKey, EncryptionContext, KEY_LEN, aead_key, key_from_vec, random_nonce,
};
use super::{ENVELOPE_VERSION, Envelope, open_with};

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
    /// Behind the `decrypt` feature: no route decrypts a stored credential (a save
    /// seals what it was given and sends that plaintext to Vapi itself), so the
    /// functions are built without it. Tests enable it (through `testkit`), and so
    /// would a future holder of the decrypt role.
    #[cfg(feature = "decrypt")]
    pub async fn open(
        &self,
        context: &EncryptionContext,
        envelope: &Envelope,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        self.open_any(context, envelope).await
    }

    /// Open a token rotation's secondary token, sealed under `{org_id, provider:
    /// twilio-secondary}`: the only blobs a function without the `decrypt` feature
    /// may open (the key policy allows the rotating functions `kms:Decrypt` with
    /// that context only). Any other context is refused before KMS is asked.
    pub async fn open_rotation_secondary(
        &self,
        context: &EncryptionContext,
        envelope: &Envelope,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if !context.is_rotation_secondary() {
            return Err(CryptoError::Undecryptable);
        }
        self.open_any(context, envelope).await
    }

    async fn open_any(
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
        self.wrap(context, plaintext, random_nonce()?)
    }

    /// A [`DataKey`] for a given data key, wrapped with a given nonce: only for
    /// reproducing the published test vector (`docs/envelope.md`, checked by
    /// `tests/envelope_vector.rs`). Exists only with the `decrypt` feature, which no
    /// function is built with; they get fresh random keys and nonces from
    /// [`Keyring::generate_data_key`].
    #[cfg(feature = "decrypt")]
    #[doc(hidden)]
    pub fn data_key_for_test_vector(
        &self,
        context: &EncryptionContext,
        data_key: [u8; KEY_LEN],
        wrap_nonce: [u8; NONCE_LEN],
    ) -> Result<DataKey, CryptoError> {
        self.wrap(context, Zeroizing::new(data_key), wrap_nonce)
    }

    /// Wrap `plaintext` under the master key: `nonce || AES-256-GCM(ct || tag)`, with
    /// the context's associated data.
    fn wrap(
        &self,
        context: &EncryptionContext,
        plaintext: Zeroizing<[u8; KEY_LEN]>,
        nonce: [u8; NONCE_LEN],
    ) -> Result<DataKey, CryptoError> {
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

    use crate::envelope::Envelope;
    use crate::ids::{OrgId, Provider};

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
