//! Twilio's REST API (`/2010-04-01`): HTTP Basic with an account SID and auth token,
//! JSON through the `.json` suffix, errors as `{"code","message","more_info","status"}`.
//!
//! The client, acting with an org's own credentials (checking an account) or as the
//! platform's main account (releasing a number; the 401-then-refetch rule lives in
//! `as_main`). What the platform provisions for an org (subaccounts, numbers, prices)
//! is in `provisioning`.

mod auth_tokens;
mod inventory;
mod provisioning;

pub use inventory::{HeldNumber, ListedAccount, MAX_PAGE_SIZE, NumberRead, Page};
pub use provisioning::{
    AvailableNumber, AvailableSearch, Capabilities, CountryPrices, NumberPrice, Subaccount,
};

use std::sync::Arc;

use reqwest::Method;
use secrecy::ExposeSecret;
use serde::Deserialize;

use crate::config::{Rotating, SecretLoader, TwilioMainAccount};
use crate::ids::{AccountSid, AuthToken, E164, PhoneNumberSid};
use crate::providers::{Answer, CallPolicy, ProviderError, call_idempotent, call_once};
use crate::vapi::urlencode;

const PROVIDER: &str = "twilio";

pub struct TwilioClient {
    http: reqwest::Client,
    base: String,
    /// The Pricing API (`https://pricing.twilio.com/v1`).
    pricing_base: String,
    /// Twilio's Accounts API (`https://accounts.twilio.com/v1`): token rotation.
    accounts_base: String,
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
        let base = base.into();
        Self {
            pricing_base: format!("{base}/__pricing_not_configured"),
            accounts_base: "https://accounts.twilio.com/v1".to_owned(),
            http,
            base,
            policy,
            main: None,
        }
    }

    /// Where the Pricing API is (`TWILIO_PRICING_BASE_URL`).
    pub fn with_pricing_base(mut self, base: impl Into<String>) -> Self {
        self.pricing_base = base.into();
        self
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

    /// Whether `sid` is the platform's main account (never closed, never an org's).
    pub fn is_main_account(&self, sid: &AccountSid) -> bool {
        self.main
            .as_ref()
            .is_some_and(|m| m.current().account_sid == *sid)
    }

    /// `GET /Accounts/{sid}.json` with the org's own credentials.
    pub async fn check_account(
        &self,
        sid: &AccountSid,
        token: &AuthToken,
    ) -> Result<AccountCheck, ProviderError> {
        match self.check_account_answer(sid, token).await {
            Ok(status) => Ok(if status == "active" {
                AccountCheck::Active
            } else {
                AccountCheck::NotActive(status)
            }),
            // 401 (20003): wrong SID or token; 403/404 in Twilio's JSON: the SID is not
            // an account these credentials may read.
            Err(ProviderError::Status {
                status: 401 | 403 | 404,
                ..
            }) => Ok(AccountCheck::Rejected),
            Err(e) => Err(e),
        }
    }

    /// The account's `status` as it answers with its own credentials.
    async fn check_account_answer(
        &self,
        sid: &AccountSid,
        token: &AuthToken,
    ) -> Result<String, ProviderError> {
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
        .await?;
        Ok(answer.json::<Account>(PROVIDER)?.status)
    }

    /// `DELETE /Accounts/{subaccount}/IncomingPhoneNumbers/{PN}.json` as the main
    /// account (a main account's SID and token may act on its subaccounts). `Ok`
    /// when Twilio released it now, or when it was already gone *and a read
    /// confirmed it*: Twilio's 404 with code 20404 is also its answer to a path
    /// that does not exist or a wrong base URL, so before believing it the same
    /// account's number list is read (`GET …/IncomingPhoneNumbers.json?PhoneNumber=`).
    /// That read answering 200 proves the base URL and the account, and the number
    /// counts as gone only when neither its SID nor its E.164 is in the list.
    /// Anything else leaves the step failed: an unconfirmed 20404 is
    /// [`ProviderError::UnexpectedBody`] (`twilio_bad_response`), never done.
    pub async fn release_number(
        &self,
        subaccount: &AccountSid,
        number_sid: &PhoneNumberSid,
        number: &E164,
    ) -> Result<(), ProviderError> {
        let path = format!(
            "/Accounts/{}/IncomingPhoneNumbers/{}.json",
            urlencode(subaccount.as_str()),
            urlencode(number_sid.as_str())
        );
        let deleted = self
            .as_main(MainCall::idempotent(
                Method::DELETE,
                "/Accounts/{AccountSid}/IncomingPhoneNumbers/{Sid}.json",
                path,
            ))
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(e) if e.says_not_found() => self.confirm_gone(subaccount, number_sid, number).await,
            Err(e) => Err(e),
        }
    }

    /// After Twilio's 20404 for a number: `Ok` only when the subaccount's number
    /// list, read now, holds neither the number's SID nor its E.164.
    pub async fn confirm_gone(
        &self,
        subaccount: &AccountSid,
        number_sid: &PhoneNumberSid,
        number: &E164,
    ) -> Result<(), ProviderError> {
        let unconfirmed = |why: &'static str| {
            tracing::warn!(
                why,
                "Twilio answered 20404 for the number but could not confirm it gone; \
                 the step stays pending (check TWILIO_BASE_URL and the subaccount)"
            );
            bad_body(404)
        };
        match self.incoming_numbers(subaccount, number).await {
            Ok(held) if held.iter().any(|n| n.sid == number_sid.as_str()) => {
                Err(unconfirmed("the number's SID is still listed"))
            }
            Ok(held)
                if held
                    .iter()
                    .any(|n| n.phone_number.as_deref() == Some(number.as_str())) =>
            {
                Err(unconfirmed(
                    "the subaccount still holds the number under another SID",
                ))
            }
            Ok(_) => {
                tracing::info!(
                    provider = PROVIDER,
                    "already gone at Twilio (20404, confirmed by the number list)"
                );
                Ok(())
            }
            Err(e) if e.says_not_found() || e.status() == Some(404) => {
                Err(unconfirmed("the number list itself answered 404"))
            }
            Err(e) => Err(e),
        }
    }

    fn main_account(&self) -> Result<&Rotating<TwilioMainAccount>, ProviderError> {
        self.main.as_ref().ok_or(ProviderError::Status {
            provider: PROVIDER,
            status: 401,
            code: None,
            message: Some("no main account configured".into()),
        })
    }

    /// One call as the platform's main account; after a 401 the credentials are
    /// fetched again once ([`Rotating`]) and the call repeated if they changed.
    async fn as_main(&self, call: MainCall<'_>) -> Result<Answer, ProviderError> {
        let rotating = self.main_account()?;
        let url = call
            .url
            .clone()
            .unwrap_or_else(|| format!("{}{}", self.base, call.path));
        let attempt = |main: Arc<TwilioMainAccount>| {
            let url = url.clone();
            let call = &call;
            async move {
                let build = || {
                    let mut req = self.http.request(call.method.clone(), &url).basic_auth(
                        main.account_sid.as_str(),
                        Some(main.auth_token.expose_secret()),
                    );
                    if !call.query.is_empty() {
                        req = req.query(&call.query);
                    }
                    if !call.form.is_empty() {
                        req = req.form(&call.form);
                    }
                    req
                };
                if call.creates {
                    call_once(
                        PROVIDER,
                        call.method.clone(),
                        call.template,
                        build(),
                        &self.policy,
                    )
                    .await
                } else {
                    call_idempotent(
                        PROVIDER,
                        call.method.clone(),
                        call.template,
                        build,
                        &self.policy,
                    )
                    .await
                }
            }
        };
        let main = rotating.current();
        match attempt(main.clone()).await {
            Err(ProviderError::Status { status: 401, .. }) => {
                match rotating.refetch_if_changed(&main).await {
                    Ok(Some(fresh)) => attempt(fresh).await,
                    Ok(None) | Err(_) => Err(ProviderError::Status {
                        provider: PROVIDER,
                        status: 401,
                        code: Some(20003),
                        message: None,
                    }),
                }
            }
            other => other,
        }
    }
}

/// One request as the main account.
struct MainCall<'a> {
    method: Method,
    /// The path template for the log line.
    template: &'static str,
    /// Under the API base.
    path: String,
    /// Instead of base + path (the Pricing API has its own host).
    url: Option<String>,
    query: Vec<(&'a str, String)>,
    form: Vec<(&'a str, String)>,
    /// Creates something: one attempt, never retried.
    creates: bool,
}

impl<'a> MainCall<'a> {
    fn idempotent(method: Method, template: &'static str, path: String) -> Self {
        Self {
            method,
            template,
            path,
            url: None,
            query: Vec::new(),
            form: Vec::new(),
            creates: false,
        }
    }

    fn create(template: &'static str, path: String) -> Self {
        Self {
            creates: true,
            ..Self::idempotent(Method::POST, template, path)
        }
    }

    fn query<V: ToString>(mut self, pairs: &[(&'a str, V)]) -> Self {
        self.query
            .extend(pairs.iter().map(|(k, v)| (*k, v.to_string())));
        self
    }

    fn form<V: ToString>(mut self, pairs: &[(&'a str, V)]) -> Self {
        self.form
            .extend(pairs.iter().map(|(k, v)| (*k, v.to_string())));
        self
    }

    fn absolute(mut self, url: String) -> Self {
        self.url = Some(url);
        self
    }
}

fn bad_body(status: u16) -> ProviderError {
    ProviderError::UnexpectedBody {
        provider: PROVIDER,
        status,
    }
}
