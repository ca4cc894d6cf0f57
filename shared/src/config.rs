//! Configuration: non-secrets from environment variables, secrets from Secrets
//! Manager (or, for local runs, from the environment).
//!
//! Every function loads only what it needs ([`SecretLoader`] has one method per
//! secret) and fetches its secrets concurrently at cold start. The loader is kept in
//! the function's state, so a secret rotated under a warm instance can be fetched
//! again after a provider 401 or a Postgres 28P01 ([`Rotating`]).
//!
//! This module imports nothing but the vocabulary: each consumer assembles its own
//! configuration from the [`Env`] and the raw secrets here (`DbConfig::from_env` in
//! `db`, `KeyringConfig::from_env` in `envelope`, …).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use aws_sdk_secretsmanager::error::DisplayErrorContext;
use futures::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::ids::{AccountSid, FormatError};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name} is invalid: {why}")]
    Invalid { name: &'static str, why: String },
    #[error("secret {arn} could not be read: {why}")]
    Secret { arn: String, why: String },
}

impl ConfigError {
    /// [`ConfigError::Invalid`] for the setting `name`.
    pub fn invalid(name: &'static str, why: impl Into<String>) -> Self {
        Self::Invalid {
            name,
            why: why.into(),
        }
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
            Some(v) => v
                .parse()
                .map_err(|e: T::Err| ConfigError::invalid(name, e.to_string())),
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

/// Base URLs of the providers: the real ones unless `VAPI_BASE_URL` /
/// `TWILIO_BASE_URL` point elsewhere (tests, the local API's stand-ins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderUrls {
    pub vapi: String,
    pub twilio: String,
    /// Twilio's Pricing API (`TWILIO_PRICING_BASE_URL`, default
    /// `https://pricing.twilio.com/v1`).
    pub twilio_pricing: String,
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
            twilio_pricing: trim(
                env.get("TWILIO_PRICING_BASE_URL")
                    .unwrap_or("https://pricing.twilio.com/v1"),
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

impl SameSecret for VapiKey {
    fn same_secret(&self, other: &Self) -> bool {
        self.0.expose_secret() == other.0.expose_secret()
    }
}

impl SameSecret for TwilioMainAccount {
    fn same_secret(&self, other: &Self) -> bool {
        self.account_sid == other.account_sid
            && self.auth_token.expose_secret() == other.auth_token.expose_secret()
    }
}

/// Whether two values of a secret are the same, for [`Rotating`]. Secret types have
/// no `PartialEq`, so that comparing them stays a deliberate act (this comparison is
/// not constant-time: it only tells a refetched value from the one a server refused).
pub trait SameSecret {
    fn same_secret(&self, other: &Self) -> bool;
}

/// How a [`Rotating`] value is fetched again: one of [`SecretLoader`]'s methods, or a
/// consumer's `from_env` that calls them.
pub type Refetch<T> = for<'a> fn(&'a SecretLoader) -> BoxFuture<'a, Result<T, ConfigError>>;

/// A secret value in use that may be rotated under a warm instance: after a
/// provider's 401 or Postgres' 28P01 the caller hands back the value that was refused,
/// and [`Rotating::refetch_if_changed`] fetches it again once, keeping and answering
/// the new value only if it differs. So a refused call is repeated at most once, and
/// only when repeating can help. The value itself is never logged.
pub struct Rotating<T> {
    /// What the value is, for the log (`"the Vapi key"`).
    what: &'static str,
    current: RwLock<Arc<T>>,
    /// `None`: fixed (tests, values from the environment's `DATABASE_URL`).
    refetch: Option<(SecretLoader, Refetch<T>)>,
}

impl<T> Rotating<T> {
    /// Whether a refusal can be answered by fetching the value again.
    pub fn refetches(&self) -> bool {
        self.refetch.is_some()
    }
}

impl<T> fmt::Debug for Rotating<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rotating")
            .field("what", &self.what)
            .field("refetches", &self.refetches())
            .finish_non_exhaustive()
    }
}

impl<T: SameSecret> Rotating<T> {
    /// A value that is never fetched again.
    pub fn fixed(what: &'static str, value: T) -> Self {
        Self {
            what,
            current: RwLock::new(Arc::new(value)),
            refetch: None,
        }
    }

    /// A value fetched again with `fetch` through `secrets` after a refusal; fixed
    /// when there is no loader.
    pub fn refetched(
        what: &'static str,
        value: T,
        secrets: Option<SecretLoader>,
        fetch: Refetch<T>,
    ) -> Self {
        Self {
            refetch: secrets.map(|s| (s, fetch)),
            ..Self::fixed(what, value)
        }
    }

    /// The value in use.
    pub fn current(&self) -> Arc<T> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// After `used` was refused: the value to try once more, if there is one that
    /// differs from it. If another caller has already replaced `used`, that value is
    /// answered without fetching; otherwise it is fetched once (`Ok(None)` when fixed
    /// or unchanged: the refusal stands). A failed fetch is logged and returned.
    pub async fn refetch_if_changed(&self, used: &T) -> Result<Option<Arc<T>>, ConfigError> {
        let Some((secrets, fetch)) = &self.refetch else {
            return Ok(None);
        };
        let current = self.current();
        if !current.same_secret(used) {
            return Ok(Some(current));
        }
        let fresh = fetch(secrets).await.inspect_err(|e| {
            tracing::error!(error = %e, "could not fetch {} again", self.what);
        })?;
        if fresh.same_secret(used) {
            return Ok(None);
        }
        tracing::warn!("{} was rotated; using the new one", self.what);
        let fresh = Arc::new(fresh);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh.clone();
        Ok(Some(fresh))
    }
}

/// Reads each secret either from Secrets Manager (when its `*_SECRET_ARN` is set) or
/// from plain environment variables (local runs). Secret JSON layouts:
///
/// - `DB_SECRET_ARN`: the RDS layout `{"username","password","host"?,"port"?,"dbname"?}`,
///   returned as it is ([`DbSecret`]); the database configuration is assembled from it
///   and the environment by `db::DbConfig::from_env`.
/// - `VAPI_SECRET_ARN`: `{"privateKey"}`. Without it: `VAPI_PRIVATE_KEY`.
/// - `TWILIO_MAIN_SECRET_ARN`: `{"accountSid","authToken"}`. Without it:
///   `TWILIO_MAIN_ACCOUNT_SID` and `TWILIO_MAIN_AUTH_TOKEN`.
#[derive(Clone)]
pub struct SecretLoader {
    env: Env,
    client: Option<aws_sdk_secretsmanager::Client>,
    /// For the consumers that need more of AWS than secrets (signing IAM database
    /// logins: region, credentials, clock).
    aws: aws_config::SdkConfig,
}

impl fmt::Debug for SecretLoader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretLoader")
            .field("secrets_manager", &self.client.is_some())
            .finish()
    }
}

/// The database secret in the RDS layout, as fetched. `host`, `port` and `dbname`
/// are what the secret names; the environment may override them.
#[derive(Deserialize)]
pub struct DbSecret {
    pub username: String,
    pub password: SecretString,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub dbname: Option<String>,
}

impl fmt::Debug for DbSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbSecret")
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .finish()
    }
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

    /// The environment this loader reads.
    pub fn env(&self) -> &Env {
        &self.env
    }

    /// The AWS SDK configuration this loader was built with.
    pub fn aws(&self) -> &aws_config::SdkConfig {
        &self.aws
    }

    /// The database secret named by `DB_SECRET_ARN`, or `None` when it is unset.
    pub async fn db_secret(&self) -> Result<Option<DbSecret>, ConfigError> {
        match self.env.get("DB_SECRET_ARN") {
            Some(arn) => self.fetch_json(arn).await.map(Some),
            None => Ok(None),
        }
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
                .map_err(|e: FormatError| ConfigError::invalid("TWILIO_MAIN_ACCOUNT_SID", e.0))?,
            auth_token: token,
        })
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
    fn debug_of_config_and_secret_types_is_redacted() {
        let secret = "s3cr3t-value-never-printed";
        let vapi = VapiKey(SecretString::from(secret.to_owned()));
        let twilio = TwilioMainAccount {
            account_sid: "AC0123456789abcdef0123456789abcdef".parse().unwrap(),
            auth_token: SecretString::from(secret.to_owned()),
        };
        let env = Env::from_pairs([("VAPI_PRIVATE_KEY", secret)]);
        let db = DbSecret {
            username: "app".into(),
            password: SecretString::from(secret.to_owned()),
            host: None,
            port: None,
            dbname: None,
        };
        for dbg in [
            format!("{db:?}"),
            format!("{vapi:?}"),
            format!("{twilio:?}"),
            format!("{env:?}"),
        ] {
            assert!(!dbg.contains(secret), "leaks: {dbg}");
        }
    }

    #[tokio::test]
    async fn a_refused_value_is_fetched_again_once_and_only_a_new_one_is_answered() {
        let aws = aws_config::SdkConfig::builder().build();
        let key = |k: &str| VapiKey(SecretString::from(k.to_owned()));
        let loader = SecretLoader::new(&Env::from_pairs([("VAPI_PRIVATE_KEY", "new")]), &aws);
        let fetch: Refetch<VapiKey> = |s| Box::pin(s.vapi());

        let fixed = Rotating::fixed("the Vapi key", key("old"));
        assert!(
            fixed
                .refetch_if_changed(&key("old"))
                .await
                .unwrap()
                .is_none()
        );

        let rotating = Rotating::refetched("the Vapi key", key("old"), Some(loader), fetch);
        let fresh = rotating.refetch_if_changed(&key("old")).await.unwrap();
        assert_eq!(fresh.unwrap().0.expose_secret(), "new");
        assert_eq!(rotating.current().0.expose_secret(), "new");
        // A caller still holding the old value gets the new one.
        let again = rotating.refetch_if_changed(&key("old")).await.unwrap();
        assert_eq!(again.unwrap().0.expose_secret(), "new");
        // The new value refused too: fetching gives nothing newer.
        assert!(
            rotating
                .refetch_if_changed(&key("new"))
                .await
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn identity_defaults() {
        let c = IdentityConfig::default();
        assert_eq!(c.org_claim, "org_id");
        assert_eq!(c.write_scope, "telephony:write");
    }
}
