//! Configuration: non-secrets from environment variables, secrets from Secrets
//! Manager (or, for local runs, from the environment).
//!
//! Every function loads only what it needs ([`SecretLoader`] has one method per
//! secret) and fetches its secrets concurrently at cold start. The loader is kept in
//! the function's state, so a secret rotated under a warm instance can be fetched
//! again after a provider 401 or a Postgres 28P01.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use aws_sdk_secretsmanager::error::DisplayErrorContext;
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::db::{DbAuth, DbConfig, TlsMode};
use crate::envelope::{Keyring, KmsKeyring, LocalKeyring};
use crate::ids::AccountSid;
use crate::rds_iam::RdsIamAuth;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name} is invalid: {why}")]
    Invalid { name: &'static str, why: String },
    #[error("secret {arn} could not be read: {why}")]
    Secret { arn: String, why: String },
}

fn invalid(name: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name,
        why: why.into(),
    }
}

/// A snapshot of environment variables. Tests build one from pairs instead of
/// mutating the process environment.
#[derive(Clone, Default)]
pub struct Env(HashMap<String, String>);

impl Env {
    pub fn from_process() -> Self {
        Self(std::env::vars().collect())
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    /// Set (or override) a variable in this snapshot.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.0.insert(name.to_owned(), value.into());
    }

    /// A set, non-empty variable.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn require(&self, name: &'static str) -> Result<&str, ConfigError> {
        self.get(name).ok_or(ConfigError::Missing(name))
    }

    pub fn parse_or<T: std::str::FromStr>(
        &self,
        name: &'static str,
        default: T,
    ) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e: T::Err| invalid(name, e.to_string())),
        }
    }
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values may be secrets (local runs put keys in the environment): names only.
        let mut names: Vec<_> = self.0.keys().collect();
        names.sort();
        f.debug_struct("Env").field("names", &names).finish()
    }
}

/// How callers are identified and authorised (see [`crate::identity`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityConfig {
    /// JWT claim holding the org id. `ORG_CLAIM`, default `org_id`.
    pub org_claim: String,
    /// Scope required by state-changing routes. `WRITE_SCOPE`, default `telephony:write`.
    pub write_scope: String,
}

impl IdentityConfig {
    pub fn from_env(env: &Env) -> Self {
        Self {
            org_claim: env.get("ORG_CLAIM").unwrap_or("org_id").to_owned(),
            write_scope: env
                .get("WRITE_SCOPE")
                .unwrap_or("telephony:write")
                .to_owned(),
        }
    }
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self::from_env(&Env::default())
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
                        .map_err(|e| invalid("LOCAL_KEYRING_FILE", e.to_string()))?
                        .trim()
                        .to_owned(),
                    (None, None) => return Err(ConfigError::Missing("LOCAL_KEYRING_KEY")),
                };
                Ok(Self::Local {
                    master_b64: SecretString::from(b64),
                })
            }
            other => Err(invalid("KEYRING", format!("{other:?} is not kms or local"))),
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
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(master_b64.expose_secret())
                    .map_err(|_| invalid("LOCAL_KEYRING_KEY", "not base64"))?;
                LocalKeyring::new(Zeroizing::new(bytes))
                    .map(Keyring::Local)
                    .map_err(|_| invalid("LOCAL_KEYRING_KEY", "must decode to 32 bytes"))
            }
        }
    }
}

/// Base URLs of the providers: the real ones unless `VAPI_BASE_URL` /
/// `TWILIO_BASE_URL` point elsewhere (tests, the local API's stand-ins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderUrls {
    pub vapi: String,
    pub twilio: String,
}

impl ProviderUrls {
    pub fn from_env(env: &Env) -> Self {
        let trim = |s: &str| s.trim_end_matches('/').to_owned();
        Self {
            vapi: trim(env.get("VAPI_BASE_URL").unwrap_or("https://api.vapi.ai")),
            twilio: trim(
                env.get("TWILIO_BASE_URL")
                    .unwrap_or("https://api.twilio.com/2010-04-01"),
            ),
        }
    }
}

/// The Vapi private key (`Authorization: Bearer …`).
#[derive(Clone)]
pub struct VapiKey(pub SecretString);

impl fmt::Debug for VapiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VapiKey([REDACTED])")
    }
}

/// The platform's main Twilio account, which may act on its subaccounts.
#[derive(Clone)]
pub struct TwilioMainAccount {
    pub account_sid: AccountSid,
    pub auth_token: SecretString,
}

impl fmt::Debug for TwilioMainAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioMainAccount")
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"[REDACTED]")
            .finish()
    }
}

/// Reads each secret either from Secrets Manager (when its `*_SECRET_ARN` is set) or
/// from plain environment variables (local runs). Secret JSON layouts:
///
/// - `DB_SECRET_ARN`: the RDS layout `{"username","password","host"?,"port"?,"dbname"?}`;
///   `DB_HOST`/`DB_PORT`/`DB_NAME` override (the RDS Proxy endpoint is not the
///   instance host the secret names). Without it: `DATABASE_URL`. With `DB_AUTH=iam`
///   there is no database secret: `DB_HOST`, `DB_USER` (and `DB_PORT`, `DB_NAME`) say
///   where and as whom, and each login signs an IAM auth token ([`crate::rds_iam`]).
/// - `VAPI_SECRET_ARN`: `{"privateKey"}`. Without it: `VAPI_PRIVATE_KEY`.
/// - `TWILIO_MAIN_SECRET_ARN`: `{"accountSid","authToken"}`. Without it:
///   `TWILIO_MAIN_ACCOUNT_SID` and `TWILIO_MAIN_AUTH_TOKEN`.
#[derive(Clone)]
pub struct SecretLoader {
    env: Env,
    client: Option<aws_sdk_secretsmanager::Client>,
    /// For signing IAM database logins (region, credentials, clock).
    aws: aws_config::SdkConfig,
}

impl fmt::Debug for SecretLoader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretLoader")
            .field("secrets_manager", &self.client.is_some())
            .finish()
    }
}

#[derive(Deserialize)]
struct RdsSecret {
    username: String,
    password: SecretString,
    host: Option<String>,
    port: Option<u16>,
    dbname: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VapiSecret {
    private_key: SecretString,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TwilioSecret {
    account_sid: String,
    auth_token: SecretString,
}

impl SecretLoader {
    /// The Secrets Manager client is built only when some `*_SECRET_ARN` is set.
    pub fn new(env: &Env, aws: &aws_config::SdkConfig) -> Self {
        let any_arn = ["DB_SECRET_ARN", "VAPI_SECRET_ARN", "TWILIO_MAIN_SECRET_ARN"]
            .iter()
            .any(|n| env.get(n).is_some());
        Self {
            env: env.clone(),
            client: any_arn.then(|| aws_sdk_secretsmanager::Client::new(aws)),
            aws: aws.clone(),
        }
    }

    async fn fetch_json<T: for<'de> Deserialize<'de>>(&self, arn: &str) -> Result<T, ConfigError> {
        let err = |why: String| ConfigError::Secret {
            arn: arn.to_owned(),
            why,
        };
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| err("no Secrets Manager client".into()))?;
        let out = client
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| err(DisplayErrorContext(&e).to_string()))?;
        let text = Zeroizing::new(
            out.secret_string
                .ok_or_else(|| err("the secret has no SecretString".into()))?,
        );
        // serde_json's error names the position, never the content.
        serde_json::from_str(&text).map_err(|e| {
            err(format!(
                "unexpected layout ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ))
        })
    }

    pub async fn db(&self) -> Result<DbConfig, ConfigError> {
        let env = &self.env;
        let iam = match env.get("DB_AUTH").unwrap_or("password") {
            "password" => false,
            "iam" => true,
            other => {
                return Err(invalid(
                    "DB_AUTH",
                    format!("{other:?} is not password or iam"),
                ));
            }
        };
        let mut cfg = match (iam, env.get("DB_SECRET_ARN")) {
            (true, Some(_)) => {
                return Err(invalid(
                    "DB_SECRET_ARN",
                    "is not read with DB_AUTH=iam (the login is an IAM token): unset it",
                ));
            }
            (true, None) => DbConfig {
                host: env.require("DB_HOST")?.to_owned(),
                user: env.require("DB_USER")?.to_owned(),
                auth: DbAuth::Iam(RdsIamAuth::from_sdk_config(&self.aws)?),
                ..DbConfig::default()
            },
            (false, Some(arn)) => {
                let s: RdsSecret = self.fetch_json(arn).await?;
                DbConfig {
                    host: s.host.unwrap_or_default(),
                    port: s.port.unwrap_or(5432),
                    user: s.username,
                    auth: DbAuth::Password(s.password),
                    dbname: s.dbname.unwrap_or_else(|| "postgres".into()),
                    ..DbConfig::default()
                }
            }
            (false, None) => DbConfig::from_url(env.require("DATABASE_URL")?)?,
        };
        if let Some(h) = env.get("DB_HOST") {
            cfg.host = h.to_owned();
        }
        cfg.port = env.parse_or("DB_PORT", cfg.port)?;
        if let Some(n) = env.get("DB_NAME") {
            cfg.dbname = n.to_owned();
        }
        cfg.tls = match env.get("DB_TLS") {
            Some(v) => v.parse().map_err(|e: String| invalid("DB_TLS", e))?,
            None => cfg.tls,
        };
        cfg.ca_file = env.get("DB_CA_FILE").map(Into::into);
        cfg.pool_size = env.parse_or("DB_POOL_SIZE", cfg.pool_size)?;
        cfg.max_lifetime =
            Duration::from_secs(env.parse_or("DB_MAX_LIFETIME_SECS", cfg.max_lifetime.as_secs())?);
        if cfg.host.is_empty() {
            return Err(ConfigError::Missing("DB_HOST"));
        }
        cfg.check_tls()?;
        Ok(cfg)
    }

    pub async fn vapi(&self) -> Result<VapiKey, ConfigError> {
        match self.env.get("VAPI_SECRET_ARN") {
            Some(arn) => {
                let s: VapiSecret = self.fetch_json(arn).await?;
                Ok(VapiKey(s.private_key))
            }
            None => Ok(VapiKey(SecretString::from(
                self.env.require("VAPI_PRIVATE_KEY")?.to_owned(),
            ))),
        }
    }

    pub async fn twilio_main(&self) -> Result<TwilioMainAccount, ConfigError> {
        let (sid, token) = match self.env.get("TWILIO_MAIN_SECRET_ARN") {
            Some(arn) => {
                let s: TwilioSecret = self.fetch_json(arn).await?;
                (s.account_sid, s.auth_token)
            }
            None => (
                self.env.require("TWILIO_MAIN_ACCOUNT_SID")?.to_owned(),
                SecretString::from(self.env.require("TWILIO_MAIN_AUTH_TOKEN")?.to_owned()),
            ),
        };
        Ok(TwilioMainAccount {
            account_sid: sid
                .parse()
                .map_err(|e: crate::ids::FormatError| invalid("TWILIO_MAIN_ACCOUNT_SID", e.0))?,
            auth_token: token,
        })
    }
}

impl std::str::FromStr for TlsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "verify-full" => Ok(TlsMode::VerifyFull),
            "disable" => Ok(TlsMode::Disable),
            other => Err(format!("{other:?} is not verify-full or disable")),
        }
    }
}

/// The AWS SDK configuration every function shares. Honours the SDK's standard
/// settings, `AWS_ENDPOINT_URL` included (the emulator in tests and local runs).
pub async fn aws_sdk_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
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
    fn debug_of_config_and_secret_types_is_redacted() {
        let secret = "s3cr3t-value-never-printed";
        let local = KeyringConfig::Local {
            master_b64: SecretString::from(secret.to_owned()),
        };
        let vapi = VapiKey(SecretString::from(secret.to_owned()));
        let twilio = TwilioMainAccount {
            account_sid: "AC0123456789abcdef0123456789abcdef".parse().unwrap(),
            auth_token: SecretString::from(secret.to_owned()),
        };
        let env = Env::from_pairs([("VAPI_PRIVATE_KEY", secret)]);
        for dbg in [
            format!("{local:?}"),
            format!("{vapi:?}"),
            format!("{twilio:?}"),
            format!("{env:?}"),
        ] {
            assert!(!dbg.contains(secret), "leaks: {dbg}");
        }
    }

    #[test]
    fn identity_defaults() {
        let c = IdentityConfig::default();
        assert_eq!(c.org_claim, "org_id");
        assert_eq!(c.write_scope, "telephony:write");
    }
}
