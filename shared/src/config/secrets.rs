//! The secrets themselves: [`SecretLoader`] reads each one from Secrets Manager or,
//! for local runs, from the environment, and answers it as a type that never prints
//! its value ([`VapiKey`], [`TwilioMainAccount`], [`DbSecret`]).

use std::fmt;

use aws_sdk_secretsmanager::error::DisplayErrorContext;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::{ConfigError, Env, SameSecret};
use crate::credential::fingerprint::FingerprintKey;
use crate::ids::{AccountSid, FormatError};

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
struct FingerprintSecret {
    fingerprint_key: SecretString,
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
        let any_arn = [
            "DB_SECRET_ARN",
            "DB_ROUTE_SECRET_ARN",
            "DB_READER_SECRET_ARN",
            "VAPI_SECRET_ARN",
            "TWILIO_MAIN_SECRET_ARN",
            "TOKEN_FINGERPRINT_SECRET_ARN",
        ]
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

    /// The database secret named by `DB_SECRET_ARN` (this function's own login), or
    /// `None` when it is unset.
    pub async fn db_secret(&self) -> Result<Option<DbSecret>, ConfigError> {
        self.db_secret_named("DB_SECRET_ARN").await
    }

    /// A database secret in the RDS layout whose ARN is in the variable `var` (the
    /// `migrate` function reads the route and reader logins' secrets this way), or
    /// `None` when it is unset.
    pub async fn db_secret_named(&self, var: &str) -> Result<Option<DbSecret>, ConfigError> {
        match self.env.get(var) {
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

    /// The key of the tokens' fingerprints ([`FingerprintKey`]):
    /// `TOKEN_FINGERPRINT_SECRET_ARN`'s `fingerprintKey`, or `TOKEN_FINGERPRINT_KEY`
    /// in the environment (local runs, tests).
    pub async fn fingerprint_key(&self) -> Result<FingerprintKey, ConfigError> {
        let secret = match self.env.get("TOKEN_FINGERPRINT_SECRET_ARN") {
            Some(arn) => {
                self.fetch_json::<FingerprintSecret>(arn)
                    .await?
                    .fingerprint_key
            }
            None => SecretString::from(self.env.require("TOKEN_FINGERPRINT_KEY")?.to_owned()),
        };
        FingerprintKey::new(secret.expose_secret().as_bytes())
            .map_err(|e| ConfigError::invalid("TOKEN_FINGERPRINT_KEY", e.to_string()))
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
}
