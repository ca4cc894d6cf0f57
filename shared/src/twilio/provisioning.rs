//! What the platform provisions for an org at Twilio, as its main account: the org's
//! subaccount, the numbers available to buy, the purchase itself (and finding it again
//! after an unknown outcome), and the monthly prices; with the resource types Twilio
//! answers with.

use reqwest::Method;
use serde::Deserialize;

use super::{MainCall, PROVIDER, TwilioClient, bad_body};
use crate::ids::{AccountSid, AuthToken, E164, PhoneNumberSid};
use crate::providers::ProviderError;
use crate::vapi::urlencode;

impl TwilioClient {
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

    /// Close a subaccount for good, as the main account: `GET /Accounts/{sid}.json`
    /// (already `closed`: done), else `POST /Accounts/{sid}.json` `Status=closed`,
    /// whose answer must say `closed`. Twilio then releases every number the
    /// subaccount still holds. Never `suspended`: a suspended subaccount's numbers
    /// keep billing. A subaccount Twilio no longer has (closed ones are deleted after
    /// 30 days) is done only when the main account's list, read now, lacks it — a
    /// 20404 alone may be a wrong base URL.
    pub async fn close_subaccount(&self, sid: &AccountSid) -> Result<(), ProviderError> {
        let path = format!("/Accounts/{}.json", urlencode(sid.as_str()));
        let read = MainCall::idempotent(Method::GET, "/Accounts/{AccountSid}.json", path.clone());
        let status = match self.as_main(read).await {
            Ok(answer) => answer.json::<AccountStatus>(PROVIDER)?.status,
            Err(e) if e.says_not_found() => {
                return self.confirm_account_gone(sid).await;
            }
            Err(e) => return Err(e),
        };
        if status == "closed" {
            return Ok(());
        }
        // Setting a status is idempotent: repeated, it changes nothing more.
        let close = MainCall {
            form: vec![("Status", "closed".to_owned())],
            ..MainCall::idempotent(Method::POST, "/Accounts/{AccountSid}.json", path)
        };
        let closed: AccountStatus = self.as_main(close).await?.json(PROVIDER)?;
        if closed.status == "closed" {
            Ok(())
        } else {
            Err(bad_body(200))
        }
    }

    /// After a 20404 for an account: `Ok` only when the main account's list (a
    /// 200, which proves the base URL) does not hold it.
    async fn confirm_account_gone(&self, sid: &AccountSid) -> Result<(), ProviderError> {
        let mut next: Option<String> = None;
        loop {
            let page = self
                .accounts_page(super::MAX_PAGE_SIZE, next.as_deref())
                .await?;
            if page.items.iter().any(|a| a.sid == sid.as_str()) {
                return Err(bad_body(404));
            }
            match page.next {
                Some(n) if Some(&n) != next.as_ref() => next = Some(n),
                _ => return Ok(()),
            }
        }
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
        self.incoming_numbers(subaccount, number)
            .await?
            .into_iter()
            .find(|n| n.phone_number.as_deref() == Some(number.as_str()))
            .map(|n| n.sid.parse().map_err(|_| bad_body(200)))
            .transpose()
    }

    /// The subaccount's incoming numbers matching `number` (Twilio's filter; the
    /// caller checks the exact value). A 200 without the list is not an empty
    /// list: "nothing there" is concluded only from a list Twilio sent.
    pub(super) async fn incoming_numbers(
        &self,
        subaccount: &AccountSid,
        number: &E164,
    ) -> Result<Vec<IncomingNumber>, ProviderError> {
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
        Ok(page.incoming_phone_numbers)
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

/// An account's status only: its `auth_token` is never read where it is not needed.
#[derive(Deserialize)]
struct AccountStatus {
    #[serde(default)]
    status: String,
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

/// What a number can do. Twilio's casing of the keys varies: its spec and some
/// answers write `voice`, `sms`, `mms`; US local answers have written `SMS` and
/// `MMS` (and a `Voice` is not excluded). Each key is read in either casing; when
/// an answer carries both, a capability either one claims counts. A missing or
/// `null` key is `false`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "RawCapabilities")]
pub struct Capabilities {
    pub voice: bool,
    pub sms: bool,
    pub mms: bool,
}

/// Both casings of each key, as separate fields: a serde `alias` would refuse an
/// answer carrying both as a duplicate field.
#[derive(Deserialize)]
struct RawCapabilities {
    #[serde(default)]
    voice: Option<bool>,
    #[serde(default, rename = "Voice")]
    voice_upper: Option<bool>,
    #[serde(default)]
    sms: Option<bool>,
    #[serde(default, rename = "SMS")]
    sms_upper: Option<bool>,
    #[serde(default)]
    mms: Option<bool>,
    #[serde(default, rename = "MMS")]
    mms_upper: Option<bool>,
}

impl From<RawCapabilities> for Capabilities {
    fn from(r: RawCapabilities) -> Self {
        let either = |a: Option<bool>, b: Option<bool>| a.unwrap_or(false) || b.unwrap_or(false);
        Self {
            voice: either(r.voice, r.voice_upper),
            sms: either(r.sms, r.sms_upper),
            mms: either(r.mms, r.mms_upper),
        }
    }
}

#[derive(Deserialize)]
struct AvailablePage {
    #[serde(default)]
    available_phone_numbers: Vec<AvailableNumber>,
}

#[derive(Deserialize)]
pub(super) struct IncomingNumber {
    pub(super) sid: String,
    pub(super) phone_number: Option<String>,
}

#[derive(Deserialize)]
struct IncomingPage {
    /// Required: a 200 without it is not Twilio's list.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(json: &str) -> Capabilities {
        serde_json::from_str(json).expect("capabilities")
    }

    #[test]
    fn capabilities_are_read_in_either_casing() {
        let both_true = Capabilities {
            voice: true,
            sms: true,
            mms: true,
        };
        assert_eq!(
            caps(r#"{"voice":true,"SMS":true,"MMS":true,"fax":false}"#),
            both_true
        );
        assert_eq!(
            caps(r#"{"voice":true,"sms":true,"mms":true,"fax":false}"#),
            both_true
        );
        assert_eq!(caps(r#"{"Voice":true,"sms":true,"MMS":true}"#), both_true);
        assert_eq!(
            caps(r#"{"voice":true,"sms":false,"mms":false}"#),
            Capabilities {
                voice: true,
                ..Capabilities::default()
            }
        );
    }

    #[test]
    fn an_answer_with_both_casings_is_no_error_and_either_one_counts() {
        assert_eq!(
            caps(r#"{"voice":true,"sms":true,"SMS":true,"mms":false,"MMS":true}"#),
            Capabilities {
                voice: true,
                sms: true,
                mms: true,
            }
        );
        assert_eq!(
            caps(r#"{"voice":false,"Voice":false,"sms":false,"SMS":false,"mms":null}"#),
            Capabilities::default()
        );
        assert_eq!(caps("{}"), Capabilities::default());
    }

    #[test]
    fn a_search_page_with_lower_case_keys_shows_sms_and_mms() {
        let page: AvailablePage = serde_json::from_str(
            r#"{"available_phone_numbers":[{"phone_number":"+18335550100",
                "capabilities":{"voice":true,"sms":true,"mms":true,"fax":false}}]}"#,
        )
        .expect("page");
        let caps = page.available_phone_numbers[0].capabilities;
        assert!(caps.voice && caps.sms && caps.mms, "{caps:?}");
    }
}
