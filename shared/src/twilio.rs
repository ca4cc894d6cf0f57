//! Twilio's REST API (`/2010-04-01`): HTTP Basic with an account SID and auth token,
//! JSON through the `.json` suffix, errors as `{"code","message","more_info","status"}`.

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
        let path = format!(
            "/Accounts/{}/IncomingPhoneNumbers/{}.json",
            urlencode(subaccount.as_str()),
            urlencode(number.as_str())
        );
        self.as_main(MainCall::idempotent(
            Method::DELETE,
            "/Accounts/{AccountSid}/IncomingPhoneNumbers/{Sid}.json",
            path,
        ))
        .await
        .map(drop)
    }

    /// The platform's subaccount named `friendly_name` (active), if Twilio has one:
    /// `GET /Accounts.json?FriendlyName=…&Status=active` as the main account.
    pub async fn find_subaccount(
        &self,
        friendly_name: &str,
    ) -> Result<Option<Subaccount>, ProviderError> {
        let call = MainCall::idempotent(Method::GET, "/Accounts.json", "/Accounts.json".into())
            .query(&[
                ("FriendlyName", friendly_name),
                ("Status", "active"),
                ("PageSize", "20"),
            ]);
        let page: AccountPage = self.as_main(call).await?.json(PROVIDER)?;
        page.accounts
            .into_iter()
            .find(|a| a.friendly_name.as_deref() == Some(friendly_name) && a.status == "active")
            .map(Subaccount::try_from)
            .transpose()
    }

    /// `POST /Accounts.json` (`FriendlyName`) as the main account: a new subaccount,
    /// with its SID and auth token. Never retried: after an unknown outcome, look it
    /// up with [`TwilioClient::find_subaccount`].
    pub async fn create_subaccount(
        &self,
        friendly_name: &str,
    ) -> Result<Subaccount, ProviderError> {
        let call = MainCall::create("/Accounts.json", "/Accounts.json".into())
            .form(&[("FriendlyName", friendly_name)]);
        let account: AccountResource = self.as_main(call).await?.json(PROVIDER)?;
        Subaccount::try_from(account)
    }

    /// `GET /Accounts/{sid}.json` as the main account: the subaccount with its
    /// current auth token (the main account may read it), so no stored credential
    /// needs decrypting.
    pub async fn subaccount(&self, sid: &AccountSid) -> Result<Subaccount, ProviderError> {
        let path = format!("/Accounts/{}.json", urlencode(sid.as_str()));
        let call = MainCall::idempotent(Method::GET, "/Accounts/{AccountSid}.json", path);
        let account: AccountResource = self.as_main(call).await?.json(PROVIDER)?;
        Subaccount::try_from(account)
    }

    /// `GET /Accounts/{main}/AvailablePhoneNumbers/{ISO}/{Local|TollFree}.json` as
    /// the main account. A result is not a reservation.
    pub async fn available_numbers(
        &self,
        search: &AvailableSearch<'_>,
    ) -> Result<Vec<AvailableNumber>, ProviderError> {
        let main = self.main_account()?.current();
        let path = format!(
            "/Accounts/{}/AvailablePhoneNumbers/{}/{}.json",
            urlencode(main.account_sid.as_str()),
            urlencode(search.country),
            search.resource
        );
        let mut query: Vec<(&str, String)> = vec![
            ("VoiceEnabled", "true".into()),
            ("ExcludeAllAddressRequired", "true".into()),
            ("PageSize", search.page_size.to_string()),
        ];
        if let Some(code) = search.area_code {
            query.push(("AreaCode", code.to_owned()));
        }
        if let Some(pattern) = search.contains {
            query.push(("Contains", pattern.to_owned()));
        }
        let call = MainCall::idempotent(
            Method::GET,
            "/Accounts/{AccountSid}/AvailablePhoneNumbers/{IsoCountry}/{Type}.json",
            path,
        )
        .query(&query);
        let page: AvailablePage = self.as_main(call).await?.json(PROVIDER)?;
        Ok(page.available_phone_numbers)
    }

    /// `POST /Accounts/{sub}/IncomingPhoneNumbers.json` (`PhoneNumber`,
    /// `FriendlyName`) as the main account: buys exactly `number` on the subaccount.
    /// Never retried: after an unknown outcome, look it up with
    /// [`TwilioClient::find_bought`] and adopt it.
    pub async fn buy_number(
        &self,
        subaccount: &AccountSid,
        number: &E164,
        friendly_name: &str,
    ) -> Result<PhoneNumberSid, ProviderError> {
        let path = format!(
            "/Accounts/{}/IncomingPhoneNumbers.json",
            urlencode(subaccount.as_str())
        );
        let call =
            MainCall::create("/Accounts/{AccountSid}/IncomingPhoneNumbers.json", path).form(&[
                ("PhoneNumber", number.as_str()),
                ("FriendlyName", friendly_name),
            ]);
        let bought: IncomingNumber = self.as_main(call).await?.json(PROVIDER)?;
        bought.sid.parse().map_err(|_| bad_body(201))
    }

    /// The number's SID if the subaccount owns `number`:
    /// `GET /Accounts/{sub}/IncomingPhoneNumbers.json?PhoneNumber=…`.
    pub async fn find_bought(
        &self,
        subaccount: &AccountSid,
        number: &E164,
    ) -> Result<Option<PhoneNumberSid>, ProviderError> {
        let path = format!(
            "/Accounts/{}/IncomingPhoneNumbers.json",
            urlencode(subaccount.as_str())
        );
        let call = MainCall::idempotent(
            Method::GET,
            "/Accounts/{AccountSid}/IncomingPhoneNumbers.json",
            path,
        )
        .query(&[("PhoneNumber", number.as_str())]);
        let page: IncomingPage = self.as_main(call).await?.json(PROVIDER)?;
        page.incoming_phone_numbers
            .into_iter()
            .find(|n| n.phone_number.as_deref() == Some(number.as_str()))
            .map(|n| n.sid.parse().map_err(|_| bad_body(200)))
            .transpose()
    }

    /// `GET {pricing}/PhoneNumbers/Countries/{ISO}` as the main account: the monthly
    /// prices of the country's number types.
    pub async fn number_prices(&self, country: &str) -> Result<CountryPrices, ProviderError> {
        let url = format!(
            "{}/PhoneNumbers/Countries/{}",
            self.pricing_base,
            urlencode(country)
        );
        let call = MainCall::idempotent(
            Method::GET,
            "/PhoneNumbers/Countries/{IsoCountry}",
            String::new(),
        )
        .absolute(url);
        self.as_main(call).await?.json(PROVIDER)
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

/// A subaccount of the platform's main account, with its auth token.
#[derive(Debug, Clone)]
pub struct Subaccount {
    pub sid: AccountSid,
    pub auth_token: AuthToken,
}

#[derive(Deserialize)]
struct AccountResource {
    sid: String,
    auth_token: Option<String>,
    friendly_name: Option<String>,
    #[serde(default)]
    status: String,
}

impl TryFrom<AccountResource> for Subaccount {
    type Error = ProviderError;
    fn try_from(a: AccountResource) -> Result<Self, Self::Error> {
        // A token that is not Twilio's 32 hex characters is an answer we cannot use.
        let token = zeroize::Zeroizing::new(a.auth_token.unwrap_or_default());
        Ok(Self {
            sid: a.sid.parse().map_err(|_| bad_body(200))?,
            auth_token: token.parse().map_err(|_| bad_body(200))?,
        })
    }
}

#[derive(Deserialize)]
struct AccountPage {
    #[serde(default)]
    accounts: Vec<AccountResource>,
}

/// What to search for (already validated by the search route).
#[derive(Debug, Clone)]
pub struct AvailableSearch<'a> {
    /// ISO 3166-1 alpha-2, upper case.
    pub country: &'a str,
    /// `Local` or `TollFree`.
    pub resource: &'static str,
    pub area_code: Option<&'a str>,
    pub contains: Option<&'a str>,
    pub page_size: u32,
}

/// One number Twilio offers (Twilio's field names).
#[derive(Debug, Clone, Deserialize)]
pub struct AvailableNumber {
    pub phone_number: String,
    pub friendly_name: Option<String>,
    pub locality: Option<String>,
    pub region: Option<String>,
    pub iso_country: Option<String>,
    #[serde(default)]
    pub capabilities: Capabilities,
    pub address_requirements: Option<String>,
}

/// Twilio writes `SMS` and `MMS` in capitals, `voice` not.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Capabilities {
    #[serde(default)]
    pub voice: bool,
    #[serde(default, rename = "SMS")]
    pub sms: bool,
    #[serde(default, rename = "MMS")]
    pub mms: bool,
}

#[derive(Deserialize)]
struct AvailablePage {
    #[serde(default)]
    available_phone_numbers: Vec<AvailableNumber>,
}

#[derive(Deserialize)]
struct IncomingNumber {
    sid: String,
    phone_number: Option<String>,
}

#[derive(Deserialize)]
struct IncomingPage {
    #[serde(default)]
    incoming_phone_numbers: Vec<IncomingNumber>,
}

/// The Pricing API's answer for one country.
#[derive(Debug, Clone, Deserialize)]
pub struct CountryPrices {
    #[serde(default)]
    pub phone_number_prices: Vec<NumberPrice>,
    pub price_unit: Option<String>,
}

/// `number_type` is `local`, `toll free`, `mobile`, `national`…; prices are strings.
#[derive(Debug, Clone, Deserialize)]
pub struct NumberPrice {
    pub number_type: String,
    pub base_price: Option<String>,
    pub current_price: Option<String>,
}
