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

mod aws_http;
mod rotating;
mod secrets;

pub use aws_http::{CONNECT_TIMEOUT as AWS_CONNECT_TIMEOUT, ReqwestSdkClient};
pub use rotating::{Refetch, Rotating, SameSecret};
pub use secrets::{DbSecret, SecretLoader, TwilioMainAccount, VapiKey};

use std::collections::HashMap;
use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name} is invalid: {why}")]
    Invalid { name: &'static str, why: String },
    #[error("secret {arn} could not be read: {why}")]
    Secret { arn: String, why: String },
    #[error("the AWS SDK's HTTP client could not be built: {0}")]
    HttpClient(String),
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
    /// Scope required by the read routes (status, search). `READ_SCOPE`, default
    /// `telephony:read`. The write scope does not imply it (least privilege: a
    /// token is good for exactly the scopes it carries; a dashboard asks for both).
    pub read_scope: String,
    /// Scope required to offboard the org (`OFFBOARD_SCOPE`, default
    /// `telephony:offboard`): ending an org is not implied by the write scope.
    pub offboard_scope: String,
}

impl IdentityConfig {
    pub fn from_env(env: &Env) -> Self {
        Self {
            org_claim: env.get("ORG_CLAIM").unwrap_or("org_id").to_owned(),
            write_scope: env
                .get("WRITE_SCOPE")
                .unwrap_or("telephony:write")
                .to_owned(),
            read_scope: env.get("READ_SCOPE").unwrap_or("telephony:read").to_owned(),
            offboard_scope: env
                .get("OFFBOARD_SCOPE")
                .unwrap_or("telephony:offboard")
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
    /// Twilio's Accounts API, for token rotation (`TWILIO_ACCOUNTS_BASE_URL`,
    /// default `https://accounts.twilio.com/v1`).
    pub twilio_accounts: String,
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
            twilio_accounts: trim(
                env.get("TWILIO_ACCOUNTS_BASE_URL")
                    .unwrap_or("https://accounts.twilio.com/v1"),
            ),
        }
    }
}

/// The AWS SDK configuration every function shares, from what Lambda puts in the
/// environment: `AWS_REGION` (or `AWS_DEFAULT_REGION`), the role's credentials in
/// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, and
/// `AWS_ENDPOINT_URL` when set (the emulator in tests and local runs). The HTTP client
/// is [`ReqwestSdkClient`]: the instance's one HTTP/TLS stack, no system certificate
/// store to load.
///
/// Deliberately not `aws_config::load_defaults`: its chains (profile files, SSO, STS
/// web identity, IMDS, ECS) never apply on Lambda, cost cold-start work (profile
/// reads, an IMDS probe without a region) and link SSO/STS clients and `ring` into
/// every binary. Retries are the SDK's standard mode with 3 attempts unless
/// `AWS_RETRY_MODE` (`standard` or `adaptive`) and `AWS_MAX_ATTEMPTS` (at least 1)
/// say otherwise, as the SDK's own loader reads them; a bad value fails the cold
/// start. The connect timeout is 3.1 s.
///
/// `AWS_CA_BUNDLE` (a PEM file), which the AWS CLI and the other SDKs read but the
/// Rust SDK's loader does not (awslabs/aws-sdk-rust#1362), replaces the trusted roots
/// of the AWS calls, as there: the cold-start benchmark's TLS relay, a private
/// endpoint behind an inspecting proxy. Unset on Lambda (the compiled-in roots).
///
/// Not read (they would be silently ignored, so they are listed here and in the
/// README): the per-service `AWS_ENDPOINT_URL_<SERVICE>` and
/// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`, `AWS_USE_FIPS_ENDPOINT` /
/// `AWS_USE_DUALSTACK_ENDPOINT`, and the container credentials
/// (`AWS_CONTAINER_CREDENTIALS_FULL_URI`, which Lambda SnapStart uses): a function
/// moved to SnapStart or a FIPS region needs them added here.
///
/// Region and endpoint come from `env`; the credentials from the process environment,
/// read by the SDK's environment provider.
pub fn aws_sdk_config(env: &Env) -> Result<aws_config::SdkConfig, ConfigError> {
    use aws_config::environment::EnvironmentVariableCredentialsProvider;
    use aws_config::timeout::TimeoutConfig;
    use aws_credential_types::provider::SharedCredentialsProvider;

    let ca_bundle = env.get("AWS_CA_BUNDLE").map(std::path::Path::new);
    let http = ReqwestSdkClient::new(ca_bundle).map_err(|e| match e {
        crate::tls::HttpClientError::Roots(why) => ConfigError::invalid("AWS_CA_BUNDLE", why),
        other => ConfigError::HttpClient(other.to_string()),
    })?;
    let region = env
        .get("AWS_REGION")
        .or_else(|| env.get("AWS_DEFAULT_REGION"))
        .map(|r| aws_config::Region::new(r.to_owned()));
    let mut b = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(region)
        .credentials_provider(SharedCredentialsProvider::new(
            EnvironmentVariableCredentialsProvider::new(),
        ))
        .http_client(http.shared())
        .retry_config(retry_config(env)?)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(AWS_CONNECT_TIMEOUT)
                .build(),
        )
        .time_source(aws_smithy_async::time::SystemTimeSource::new());
    b.set_sleep_impl(aws_smithy_async::rt::sleep::default_async_sleep());
    if let Some(url) = env.get("AWS_ENDPOINT_URL") {
        b = b.endpoint_url(url);
    }
    Ok(b.build())
}

/// `AWS_RETRY_MODE` and `AWS_MAX_ATTEMPTS`, as the SDK's own loader reads them.
fn retry_config(env: &Env) -> Result<aws_config::retry::RetryConfig, ConfigError> {
    use aws_config::retry::RetryConfig;
    let config = match env.get("AWS_RETRY_MODE") {
        None | Some("standard") => RetryConfig::standard(),
        Some("adaptive") => RetryConfig::adaptive(),
        Some(other) => {
            return Err(ConfigError::invalid(
                "AWS_RETRY_MODE",
                format!("{other:?} is not standard or adaptive (legacy is not supported)"),
            ));
        }
    };
    match env.get("AWS_MAX_ATTEMPTS") {
        None => Ok(config),
        Some(_) => {
            let n: u32 = env.parse_or("AWS_MAX_ATTEMPTS", 3)?;
            if n == 0 {
                return Err(ConfigError::invalid(
                    "AWS_MAX_ATTEMPTS",
                    "must be at least 1",
                ));
            }
            Ok(config.with_max_attempts(n))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdk_retry_settings_are_read_as_the_sdk_reads_them() {
        let sdk = |pairs: &[(&str, &str)]| aws_sdk_config(&Env::from_pairs(pairs.iter().copied()));
        let retry = |pairs: &[(&str, &str)]| {
            sdk(pairs)
                .expect("config")
                .retry_config()
                .cloned()
                .expect("a retry config")
        };
        let default = retry(&[]);
        assert_eq!(default.max_attempts(), 3);
        assert_eq!(default.mode(), aws_config::retry::RetryMode::Standard);
        let set = retry(&[("AWS_RETRY_MODE", "adaptive"), ("AWS_MAX_ATTEMPTS", "5")]);
        assert_eq!(set.max_attempts(), 5);
        assert_eq!(set.mode(), aws_config::retry::RetryMode::Adaptive);
        for bad in [
            ("AWS_RETRY_MODE", "legacy"),
            ("AWS_MAX_ATTEMPTS", "0"),
            ("AWS_MAX_ATTEMPTS", "many"),
        ] {
            let err = sdk(&[bad]).expect_err("refused");
            assert!(err.to_string().contains(bad.0), "{err}");
        }
    }

    #[test]
    fn an_aws_ca_bundle_is_read_or_fails_the_cold_start_naming_it() {
        let sdk = |path: &str| aws_sdk_config(&Env::from_pairs([("AWS_CA_BUNDLE", path)]));
        let err = sdk("/nonexistent/ca.pem").expect_err("no such file");
        assert!(err.to_string().contains("AWS_CA_BUNDLE"), "{err}");
        let dir = std::env::temp_dir().join(format!("ca-bundle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let err = sdk(empty.to_str().expect("utf-8")).expect_err("no certificate in it");
        assert!(err.to_string().contains("no certificate"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
        // Debian's bundle (ca-certificates, on every machine the tests run on).
        sdk("/etc/ssl/certs/ca-certificates.crt").expect("a bundle of PEM certificates");
    }

    #[test]
    fn identity_defaults() {
        let c = IdentityConfig::default();
        assert_eq!(c.org_claim, "org_id");
        assert_eq!(c.write_scope, "telephony:write");
        assert_eq!(c.read_scope, "telephony:read");
    }

    #[test]
    fn scopes_are_configurable() {
        let c = IdentityConfig::from_env(&Env::from_pairs([
            ("READ_SCOPE", "numbers/read"),
            ("WRITE_SCOPE", "numbers/write"),
        ]));
        assert_eq!(
            (c.read_scope.as_str(), c.write_scope.as_str()),
            ("numbers/read", "numbers/write")
        );
        // Set but empty is unset, as for every variable.
        let c = IdentityConfig::from_env(&Env::from_pairs([("READ_SCOPE", "")]));
        assert_eq!(c.read_scope, "telephony:read");
    }
}
