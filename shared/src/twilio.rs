//! Twilio's REST API (`/2010-04-01`): HTTP Basic with an account SID and auth token,
//! JSON through the `.json` suffix, errors as `{"code","message","more_info","status"}`.

use std::sync::Arc;

use reqwest::Method;
use secrecy::ExposeSecret;
use serde::Deserialize;

use crate::config::{Rotating, SecretLoader, TwilioMainAccount};
use crate::ids::{AccountSid, AuthToken, PhoneNumberSid};
use crate::providers::{CallPolicy, ProviderError, call_idempotent};
use crate::vapi::urlencode;

const PROVIDER: &str = "twilio";

pub struct TwilioClient {
    http: reqwest::Client,
    base: String,
    policy: CallPolicy,
    /// The platform's main account, for releasing numbers of its subaccounts,
    /// fetched again after a 401. `None` for functions that never act as the
    /// platform (save-credential).
    main: Option<Rotating<TwilioMainAccount>>,
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
        }
    }

    /// Also act as the platform's main account; `secrets` re-reads it after a 401.
    pub fn with_main_account(
        mut self,
        main: TwilioMainAccount,
        secrets: Option<SecretLoader>,
    ) -> Self {
        self.main = Some(Rotating::refetched(
            "the Twilio main account's credentials",
            main,
            secrets,
            |s| Box::pin(s.twilio_main()),
        ));
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
        let attempt = |main: Arc<TwilioMainAccount>| {
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
        let Some(rotating) = &self.main else {
            return Err(ProviderError::Status {
                provider: PROVIDER,
                status: 401,
                code: None,
                message: Some("no main account configured".into()),
            });
        };
        let main = rotating.current();
        match attempt(main.clone()).await {
            Err(ProviderError::Status { status: 401, .. }) => {
                match rotating.refetch_if_changed(&main).await {
                    Ok(Some(fresh)) => attempt(fresh).await.map(drop),
                    Ok(None) | Err(_) => Err(ProviderError::Status {
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
}
