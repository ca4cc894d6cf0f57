//! Twilio's REST API (`/2010-04-01`): HTTP Basic with an account SID and auth token,
//! JSON through the `.json` suffix, errors as `{"code","message","more_info","status"}`.

use reqwest::Method;
use secrecy::ExposeSecret;
use serde::Deserialize;

use crate::config::{SecretLoader, TwilioMainAccount};
use crate::ids::{AccountSid, AuthToken, PhoneNumberSid};
use crate::providers::{CallPolicy, ProviderError, call_idempotent};
use crate::vapi::urlencode;

const PROVIDER: &str = "twilio";

pub struct TwilioClient {
    http: reqwest::Client,
    base: String,
    policy: CallPolicy,
    /// The platform's main account, for releasing numbers of its subaccounts.
    /// `None` for functions that never act as the platform (save-credential).
    main: Option<std::sync::RwLock<TwilioMainAccount>>,
    secrets: Option<SecretLoader>,
}

/// What Twilio says about an account whose credentials it accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountCheck {
    Active,
    /// `suspended` or `closed`: the credentials work but the account cannot call.
    NotActive(String),
    /// 401 (code 20003): wrong SID or token; or 403/404 from Twilio for this SID.
    Rejected,
}

#[derive(Deserialize)]
struct Account {
    status: String,
}

impl TwilioClient {
    pub fn new(http: reqwest::Client, base: impl Into<String>, policy: CallPolicy) -> Self {
        Self {
            http,
            base: base.into(),
            policy,
            main: None,
            secrets: None,
        }
    }

    /// Also act as the platform's main account; `secrets` re-reads it after a 401.
    pub fn with_main_account(
        mut self,
        main: TwilioMainAccount,
        secrets: Option<SecretLoader>,
    ) -> Self {
        self.main = Some(std::sync::RwLock::new(main));
        self.secrets = secrets;
        self
    }

    /// `GET /Accounts/{sid}.json` with the org's own credentials.
    pub async fn check_account(
        &self,
        sid: &AccountSid,
        token: &AuthToken,
    ) -> Result<AccountCheck, ProviderError> {
        let url = format!("{}/Accounts/{}.json", self.base, sid.as_str());
        let answer = call_idempotent(
            PROVIDER,
            Method::GET,
            "/Accounts/{AccountSid}.json",
            || {
                self.http
                    .get(&url)
                    .basic_auth(sid.as_str(), Some(token.expose()))
            },
            &self.policy,
        )
        .await;
        match answer {
            Ok(a) => {
                let account: Account = a.json(PROVIDER)?;
                Ok(if account.status == "active" {
                    AccountCheck::Active
                } else {
                    AccountCheck::NotActive(account.status)
                })
            }
            // 401 (20003): wrong SID or token; 403/404 in Twilio's JSON: the SID is not
            // an account these credentials may read.
            Err(ProviderError::Status {
                status: 401 | 403 | 404,
                ..
            }) => Ok(AccountCheck::Rejected),
            Err(e) => Err(e),
        }
    }

    fn main_account(&self) -> Option<TwilioMainAccount> {
        self.main
            .as_ref()
            .map(|m| m.read().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// `DELETE /Accounts/{subaccount}/IncomingPhoneNumbers/{PN}.json` as the main
    /// account (a main account's SID and token may act on its subaccounts). A 404 is
    /// returned as an error; the release counts it as done only with code 20404
    /// ([`ProviderError::is_gone`]).
    pub async fn release_number(
        &self,
        subaccount: &AccountSid,
        number: &PhoneNumberSid,
    ) -> Result<(), ProviderError> {
        let url = format!(
            "{}/Accounts/{}/IncomingPhoneNumbers/{}.json",
            self.base,
            urlencode(subaccount.as_str()),
            urlencode(number.as_str())
        );
        let attempt = |main: TwilioMainAccount| {
            let url = url.clone();
            async move {
                call_idempotent(
                    PROVIDER,
                    Method::DELETE,
                    "/Accounts/{AccountSid}/IncomingPhoneNumbers/{Sid}.json",
                    || {
                        self.http.delete(&url).basic_auth(
                            main.account_sid.as_str(),
                            Some(main.auth_token.expose_secret()),
                        )
                    },
                    &self.policy,
                )
                .await
            }
        };
        let Some(main) = self.main_account() else {
            return Err(ProviderError::Status {
                provider: PROVIDER,
                status: 401,
                code: None,
                message: Some("no main account configured".into()),
            });
        };
        match attempt(main.clone()).await {
            Err(ProviderError::Status { status: 401, .. }) => {
                match self.refresh_main(&main).await {
                    Some(fresh) => attempt(fresh).await.map(drop),
                    None => Err(ProviderError::Status {
                        provider: PROVIDER,
                        status: 401,
                        code: Some(20003),
                        message: None,
                    }),
                }
            }
            other => other.map(drop),
        }
    }

    /// After a 401 as the main account: re-read it; `Some` if it changed.
    async fn refresh_main(&self, used: &TwilioMainAccount) -> Option<TwilioMainAccount> {
        let fresh = self.secrets.as_ref()?.twilio_main().await.ok()?;
        let changed = fresh.account_sid != used.account_sid
            || fresh.auth_token.expose_secret() != used.auth_token.expose_secret();
        if !changed {
            return None;
        }
        tracing::warn!("Twilio main account credentials were rotated; using the new ones");
        if let Some(m) = &self.main {
            *m.write().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
        }
        Some(fresh)
    }
}
