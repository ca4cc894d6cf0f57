//! Which keyring seals credentials ([`KeyringConfig`]), read from the environment
//! and turned into a [`Keyring`]. The choice is explicit: nothing falls back from KMS
//! to a local key.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::{Keyring, KmsKeyring, LocalKeyring};
use crate::config::{ConfigError, Env};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
