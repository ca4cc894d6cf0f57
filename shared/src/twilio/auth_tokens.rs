//! Rotating a subaccount's auth token, on Twilio's Accounts API
//! (`https://accounts.twilio.com/v1`, `TWILIO_ACCOUNTS_BASE_URL`): these calls act on
//! the account that authenticates, so they are made as the subaccount (its SID and a
//! token the main account read back), never as the main account, whose own token
//! they would rotate.
//!
//! - `POST /AuthTokens/Secondary` → 201 with `secondary_auth_token`. A second
//!   create replaces the first secondary (which stops working at once), so it is
//!   never repeated blind; the rotation stores a secondary before any Vapi entity is
//!   given it.
//! - `POST /AuthTokens/Promote` → 200: the secondary becomes the primary and the old
//!   primary fails at once (401, 20003). After an unknown outcome the main account
//!   reads the subaccount's token back to tell.

use reqwest::Method;
use serde::Deserialize;

use super::{PROVIDER, TwilioClient};
use crate::ids::{AccountSid, AuthToken};
use crate::providers::{ProviderError, call_once};

#[derive(Deserialize)]
struct SecondaryToken {
    secondary_auth_token: AuthToken,
}

impl TwilioClient {
    /// Where Twilio's Accounts API is (`TWILIO_ACCOUNTS_BASE_URL`).
    pub fn with_accounts_base(mut self, base: impl Into<String>) -> Self {
        self.accounts_base = base.into();
        self
    }

    /// A new secondary token for `sid`, authenticated as `sid` with `token` (its
    /// primary). One attempt: a repeat would replace the secondary it made.
    pub async fn create_secondary_token(
        &self,
        sid: &AccountSid,
        token: &AuthToken,
    ) -> Result<AuthToken, ProviderError> {
        self.refuse_main(sid)?;
        let url = format!("{}/AuthTokens/Secondary", self.accounts_base);
        let answer = call_once(
            PROVIDER,
            Method::POST,
            "/v1/AuthTokens/Secondary",
            self.http
                .post(&url)
                .basic_auth(sid.as_str(), Some(token.expose())),
            &self.policy,
        )
        .await?;
        Ok(answer
            .json::<SecondaryToken>(PROVIDER)?
            .secondary_auth_token)
    }

    /// Promote `sid`'s secondary token, authenticated as `sid` with that secondary.
    /// One attempt: after an unknown outcome, read the account back as the main
    /// account ([`TwilioClient::subaccount`]) and compare.
    pub async fn promote_secondary_token(
        &self,
        sid: &AccountSid,
        secondary: &AuthToken,
    ) -> Result<(), ProviderError> {
        self.refuse_main(sid)?;
        let url = format!("{}/AuthTokens/Promote", self.accounts_base);
        call_once(
            PROVIDER,
            Method::POST,
            "/v1/AuthTokens/Promote",
            self.http
                .post(&url)
                .basic_auth(sid.as_str(), Some(secondary.expose())),
            &self.policy,
        )
        .await
        .map(drop)
    }

    /// Whether Twilio still takes `token` for `sid` (`GET /Accounts/{sid}.json` as
    /// that account): only a 401 with Twilio's code 20003 says it does not. Anything
    /// else that is not a 200 for an active account (a 403 or 404, a suspended
    /// account, an outage) proves nothing about the token: an error, so a stored
    /// secondary that Vapi's numbers may hold is never thrown away on a guess.
    pub async fn token_works(
        &self,
        sid: &AccountSid,
        token: &AuthToken,
    ) -> Result<bool, ProviderError> {
        match self.check_account_answer(sid, token).await {
            Ok(status) if status == "active" => Ok(true),
            Ok(_) => Err(ProviderError::Status {
                provider: PROVIDER,
                status: 200,
                code: None,
                message: Some("the account is not active".into()),
            }),
            Err(ProviderError::Status {
                status: 401,
                code: Some(20003),
                ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The platform's own token is never rotated here: every function holds it.
    fn refuse_main(&self, sid: &AccountSid) -> Result<(), ProviderError> {
        if self.is_main_account(sid) {
            tracing::error!("refusing to rotate the platform's main account token");
            return Err(ProviderError::Status {
                provider: PROVIDER,
                status: 403,
                code: None,
                message: Some("the main account's token is not rotated here".into()),
            });
        }
        Ok(())
    }
}
