//! The provider clients a function builds once, at cold start: one HTTP client
//! (connection pool, TLS) shared by Vapi and Twilio, their base URLs and call
//! policy from the environment, and the secrets each is given.

use crate::config::{ConfigError, Env, ProviderUrls, SecretLoader, TwilioMainAccount, VapiKey};
use crate::providers::{CallPolicy, http_client};
use crate::tls::HttpClientError;
use crate::twilio::TwilioClient;
use crate::vapi::VapiClient;

/// What every provider client of an instance shares.
pub struct ClientKit {
    http: reqwest::Client,
    urls: ProviderUrls,
    policy: CallPolicy,
    /// Fetches a secret again after the provider refused it (401).
    secrets: SecretLoader,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the HTTP client could not be built: {0}")]
    Http(#[from] HttpClientError),
}

impl ClientKit {
    pub fn from_env(env: &Env, secrets: &SecretLoader) -> Result<Self, ClientError> {
        Ok(Self {
            http: http_client()?,
            urls: ProviderUrls::from_env(env),
            policy: CallPolicy::from_env(env)?,
            secrets: secrets.clone(),
        })
    }

    /// Vapi with the platform's private key.
    pub fn vapi(&self, key: VapiKey) -> VapiClient {
        VapiClient::new(
            self.http.clone(),
            self.urls.vapi.clone(),
            key,
            Some(self.secrets.clone()),
            self.policy.clone(),
        )
    }

    /// Twilio with an org's own credentials only (verifying a BYOC credential).
    pub fn twilio(&self) -> TwilioClient {
        TwilioClient::new(
            self.http.clone(),
            self.urls.twilio.clone(),
            self.policy.clone(),
        )
    }

    /// Twilio as the platform's main account too (its subaccounts, search, prices).
    pub fn twilio_main(&self, main: TwilioMainAccount) -> TwilioClient {
        self.twilio()
            .with_pricing_base(self.urls.twilio_pricing.clone())
            .with_accounts_base(self.urls.twilio_accounts.clone())
            .with_main_account(main, Some(self.secrets.clone()))
    }
}
